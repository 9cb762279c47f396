"""Where a step's time goes on CPU: one Fuser step at K = 5 (AudioLDM2-base-size UNet, 10 s) and one EditGen step
(MusicGen-small-size decoder, 2 prompts), profiled with torch.profiler after a warm-up.

Run: .venv/bin/python bench/profile_steps.py [--top 12]
Prints, per step: wall time, the share spent inside PyTorch operators (the rest is Python: the pack's control,
diffusers' and transformers' module code), and the operators with the most self time. Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ppae import real_size_unet  # noqa: E402


def profile(label: str, run: Callable[[], None], steps: int, top: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run()  # warm-up: allocations, kernel choice, text encodings remembered
    started = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    wall = time.perf_counter() - started
    events = prof.key_averages()
    # Self time of the aten operators (the profiler's own bookkeeping and Python-level ranges left out).
    ops = [e for e in events if e.key.startswith("aten::")]
    inside = sum(e.self_cpu_time_total for e in ops) / 1e6
    print(f"{label}: {wall / steps * 1000:.0f} ms per step (profiled), {inside / wall:.0%} inside PyTorch operators, "
          f"{1 - inside / wall:.0%} Python and dispatch")
    for event in sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"  {event.key:40s} {event.self_cpu_time_total / 1e6 / wall:6.1%}  calls {event.count / steps:7.1f}/step")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from bench_editgen import SOURCE, TARGET, _small_size
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.backbones import registry
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.methods.editgen import EditGenSettings, edit_music
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2
    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="base")
        build_tiny_musicgen(Path(tmp) / "musicgen" / "bench")
        bridge.set_directories(models=tmp)
        torch.manual_seed(0)
        backbone = registry.load_backbone("diffusers/bench", "fp32")
        backbone.pipeline.unet = real_size_unet(False).requires_grad_(False)
        latent = {"samples": torch.randn(1, 8, int(round(args.seconds * 25)), 16)}
        source, target = "a dog barking in the rain", "a cat meowing in the rain"
        inversion = invert(backbone, latent, source, steps=2, edit_start=0.5)  # one edit step
        spec = make_attention_edit("replace", source, target)
        profile("Fuser step, K = 5 (12 rows)", lambda: fuse_edit(backbone, inversion, spec,
                                                                  guidance_scales=[5.0, 10.0, 15.0, 20.0, 25.0],
                                                                  attention_maps=False), 1, args.top)
        musicgen = load_musicgen("bench", "fp32")
        _small_size(musicgen.model)
        musicgen.model.requires_grad_(False)
        edit = make_attention_edit("replace", SOURCE, TARGET, self_window=1.0, cross_window=1.0)
        sampling = SamplingSettings(guidance=3.0, top_k=250)
        frames = 10
        profile(f"EditGen step (2 prompts x 2 guidance rows, averaged over {frames + 3} steps)",
                lambda: edit_music(musicgen, edit, EditGenSettings(), seconds=frames / 50, sampling=sampling, seed=0),
                frames + 3, args.top)


if __name__ == "__main__":
    main()
