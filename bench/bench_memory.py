"""Peak memory of a PPAE edit with K = 1, 5 and 16 candidates against a plain generation of the same K clips.

Run: .venv/bin/python bench/bench_memory.py [--seconds 10] [--steps 4] [--candidates 1,5,16] [--device cpu|cuda]
AudioLDM2-base-size UNet with random weights (bench_ppae.py), the tiny text encoders, a 10 s clip. Each
configuration runs in its own process: the peak is that process's resident set on CPU (weights included), or
torch.cuda.max_memory_allocated on a GPU. The edit is the Fuser on an inversion made in the same process (steps
from the middle); the plain generation is Sample Audio from noise with batch K at the same guidance (2K rows).
An edit of K candidates runs 2(K + 1) rows (the source branch and K targets, each with its unconditional half), so
its activations grow with K as the generation's do, plus one source row pair; the attention maps are never
materialised (no local blend, no map preview). Nothing here is asserted by the tests.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ppae import real_size_unet  # noqa: E402
from common import bench_parser, peak_mib, run_each_in_process  # noqa: E402


def _run(config: str, args: dict, queue) -> None:
    import time

    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.backbones import registry
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.ppae import fuse_edit

    torch.manual_seed(0)
    bridge.set_directories(models=args["root"])
    backbone = registry.load_backbone("diffusers/bench", "fp32" if args["device"] == "cpu" else "fp16")
    backbone.pipeline.unet = real_size_unet(False).requires_grad_(False).to(backbone.device, backbone.dtype)
    kind, count = config.rsplit("_", 1)
    k = int(count)
    frames = int(round(args["seconds"] * 16000 / 640))
    latent = {"samples": torch.randn(1, 8, frames, 16)}
    source, target = "a dog barking in the rain", "a cat meowing in the rain"
    inversion = invert(backbone, latent, source, steps=args["steps"], edit_start=0.5) if kind == "edit" else None
    if backbone.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if kind == "edit":
        fuse_edit(backbone, inversion, make_attention_edit("replace", source, target),
                  guidance_scales=[5.0 + 5.0 * i for i in range(k)], attention_maps=False)
    else:
        sample(backbone, target, steps=args["steps"] // 2, guidance=10.0, batch_size=k, seconds=args["seconds"])
    queue.put((config, time.perf_counter() - started, peak_mib(backbone.device)))


def main() -> None:
    parser = bench_parser(seconds=10.0, steps=4, steps_help="inversion steps (the edit runs the second half)")
    parser.add_argument("--candidates", default="1,5,16")
    args = parser.parse_args()
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2

    counts = [int(c) for c in args.candidates.split(",")]
    configs = [f"{kind}_{k}" for k in counts for kind in ("generate", "edit")]
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="base")
        results = run_each_in_process(_run, configs, {**vars(args), "root": tmp})
    unit = "MiB peak RSS (process)" if args.device == "cpu" else "MiB peak GPU"
    print(f"AudioLDM2-base-size UNet, {args.seconds:g} s clip, device {args.device} ({unit})")
    print("| K | plain generation (2K rows) | edit (2(K+1) rows) | edit / generation |")
    print("|---|---|---|---|")
    for k in counts:
        plain, edit = results[f"generate_{k}"][1], results[f"edit_{k}"][1]
        print(f"| {k} | {plain:.0f} | {edit:.0f} | {edit / plain:.2f} |")


if __name__ == "__main__":
    main()
