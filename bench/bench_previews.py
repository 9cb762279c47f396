"""What a live preview costs: a Fuser edit and a MusicGen generation with and without a preview drawn at every step.

Run: .venv/bin/python bench/bench_previews.py [--seconds 10] [--steps 8] [--repeats 3] [--device cpu|cuda]
The Fuser runs on an AudioLDM2-base-size UNet with random weights (bench_ppae.py), one candidate, a 10 s clip, the
edit's half of --steps; MusicGen on a MusicGen-small-size decoder (bench_editgen.py) for 2 s. "+preview" makes the
picture and encodes it as the JPEG ComfyUI sends, at every step: the worst case, since inside ComfyUI a preview is
drawn at most every 0.2 s. Goal: under 5 % of a step. Nothing here is asserted by the tests.
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_editgen import _small_size  # noqa: E402
from bench_ppae import real_size_unet  # noqa: E402
from common import bench_parser, measure, print_results, run_each_in_process  # noqa: E402

CONFIGS = ("fuser", "fuser+preview", "musicgen", "musicgen+preview")


def _preview_every_step() -> None:
    from PIL import Image

    from prompt_audio_edit.engine.core import bridge

    plain = bridge.Progress.step

    def step(self, n=1, preview=None):
        if preview is not None:
            Image.fromarray(preview()).save(io.BytesIO(), format="JPEG", quality=95)  # as ComfyUI's server does
        plain(self, n)

    bridge.Progress.step = step


def latent_frames(seconds: float) -> int:
    """AudioLDM2's latent frames for a clip: 16 kHz audio, 160-sample hop, the VAE's 4× downsampling."""
    return int(round(seconds * 16000 / 640))


def preview_cost(make: Callable[[], object], repeats: int = 50) -> float:
    """Median seconds of one preview as ComfyUI sends it: the picture, then its JPEG."""
    from PIL import Image

    times = []
    for _ in range(repeats + 3):
        started = time.perf_counter()
        Image.fromarray(make()).save(io.BytesIO(), format="JPEG", quality=95)
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.backbones import registry
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen

    torch.manual_seed(0)
    bridge.set_directories(models=args["root"])
    dtype = "fp32" if args["device"] == "cpu" else "fp16"
    if config.startswith("fuser"):
        backbone = registry.load_backbone("diffusers/bench", dtype)
        backbone.pipeline.unet = real_size_unet(False).requires_grad_(False).to(backbone.device, backbone.dtype)
        latent = {"samples": torch.randn(1, 8, latent_frames(args["seconds"]), 16)}
        inversion = invert(backbone, latent, "a dog barking", steps=args["steps"], edit_start=0.5)
        edit = make_attention_edit("replace", "a dog barking", "a cat meowing")
        device = backbone.device

        def once() -> None:
            fuse_edit(backbone, inversion, edit, guidance_scales="10", attention_maps=False)
    else:
        musicgen = load_musicgen("bench", dtype)
        _small_size(musicgen.model)
        musicgen.model.to(musicgen.device, musicgen.model.dtype).requires_grad_(False)
        device = musicgen.device

        def once() -> None:
            musicgen.generate_codes(["a jazz song"], 2.0, SamplingSettings(guidance=3.0, top_k=250), seed=0)
    if config.endswith("+preview"):
        _preview_every_step()
    measure(queue, config, once, args["repeats"], device)


def main() -> None:
    args = bench_parser(seconds=10.0, steps=8, steps_help="inversion steps (the edit runs the second half)"
                        ).parse_args()

    from prompt_audio_edit.engine.io.previews import latent_preview, token_preview
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2
    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="base")
        build_tiny_musicgen(Path(tmp) / "musicgen" / "bench")
        results = run_each_in_process(_run, CONFIGS, {**vars(args), "root": tmp})
    notes = []
    alone = {"fuser": preview_cost(lambda: latent_preview(torch.randn(8, latent_frames(args.seconds), 16))),
             "musicgen": preview_cost(lambda: token_preview(torch.randint(0, 2048, (4, 100)), 102, 2048))}
    for loop, steps in (("fuser", args.steps - args.steps // 2), ("musicgen", 100 + 3)):
        step = results[loop][0] / steps
        extra = results[f"{loop}+preview"][0] - results[loop][0]
        notes.append(f"{loop}: a step takes {1000 * step:.0f} ms; one preview (picture + JPEG, timed alone, median of "
                     f"50) {1000 * alone[loop]:.2f} ms = {100 * alone[loop] / step:.2f} % of a step; the runs differ "
                     f"by {1000 * extra / steps:+.1f} ms a step ({100 * extra / results[loop][0]:+.1f} %, run-to-run "
                     "noise included)")
    print_results(f"Live previews, device {args.device}, median of {args.repeats} after a warm-up", results,
                  args.device, notes)


if __name__ == "__main__":
    main()
