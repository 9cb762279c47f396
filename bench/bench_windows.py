"""Time and peak memory of a windowed PPAE edit of a whole recording (Split Windows -> VAE Encode -> Invert -> Fuser ->
VAE Decode -> Join Windows) on an AudioLDM2-size UNet with random weights, for recordings of several lengths.

Run: .venv/bin/python bench/bench_windows.py [--lengths 30 60 180] [--steps 4] [--repeats 1] [--device cpu|cuda]
Each length runs in its own process (its own peak); time should grow with the number of windows, memory stay flat
where every stage works window by window. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ppae import real_size_unet  # noqa: E402
from common import bench_parser, median_time, peak_mib, print_results, run_each_in_process  # noqa: E402


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.backbones import registry as models
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.methods.regions import join_windows, split_windows

    torch.manual_seed(0)
    bridge.set_directories(models=str(Path(args["root"])))
    backbone = models.load_backbone("diffusers/bench", "fp32" if args["device"] == "cpu" else "fp16")
    backbone.pipeline.unet = real_size_unet(False).requires_grad_(False).to(backbone.device, backbone.dtype)
    seconds = float(config.removesuffix(" s"))
    song = {"waveform": 0.1 * torch.randn(1, 1, int(seconds * 16000)), "sample_rate": 16000}
    source, target = "a dog barking in the rain", "a cat meowing in the rain"
    spec = make_attention_edit("replace", source, target)

    def once() -> None:
        windows, layout = split_windows(song, backbone.native_duration_s, 1.0)
        latent = vae_encode(backbone, windows, args["clips_per_call"])
        inversion = invert(backbone, latent, source, steps=args["steps"], edit_start=0.5,
                           clips_per_call=args["clips_per_call"])
        edited, _ = fuse_edit(backbone, inversion, spec, guidance_scales=[10.0], attention_maps=False)
        join_windows(vae_decode(backbone, edited, clips_per_call=args["clips_per_call"]), layout)

    elapsed = median_time(once, args["repeats"], backbone.device)
    queue.put((config, elapsed, peak_mib(backbone.device)))


def main() -> None:
    parser = bench_parser(seconds=0.0, steps=4, steps_help="whole schedule; the edit runs the second half")
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 60.0, 180.0])
    parser.add_argument("--clips-per-call", type=int, default=0,
                        help="windows per model call in VAE Encode, Invert and VAE Decode (0: all at once)")
    args = parser.parse_args()
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2

    configs = [f"{length:g} s" for length in args.lengths]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="base")
        results = run_each_in_process(_run, configs, {**vars(args), "root": tmp})
    counts = [1 + max(0, math.ceil((length - 10.24) / 9.24)) for length in args.lengths]
    per_window = [results[c][0] / n for c, n in zip(configs, counts)]
    print_results(f"windowed PPAE edit, AudioLDM2-size UNet, 10.24 s windows with 1 s overlap, {args.steps} steps "
                  f"(edit from the middle), 1 guidance scale, {args.clips_per_call or 'all'} window(s) "
                  f"per call, device {args.device}", results, args.device,
                  [f"windows: {', '.join(f'{c}: {n}' for c, n in zip(configs, counts))}",
                   f"seconds per window: {', '.join(f'{c}: {s:.2f}' for c, s in zip(configs, per_window))}"])


if __name__ == "__main__":
    main()
