"""SAO-Instruct: an instruction edit of a clip against a plain text-to-audio generation of the same length.

Run: .venv/bin/python bench/bench_sao_instruct.py [--seconds 10] [--steps 3] [--repeats 3] [--device cpu|cuda]
Stable Audio Open 1.0's DiT architecture (24 layers, width 1536, 24 query / 12 key-value heads, 768-d conditioning)
with random weights: 64 input channels for the plain generation, 128 (noisy + clip latent) for the edit. T5, the
VAE and the timing conditioners are the tiny test ones (the clip is encoded before the timing; a real T5-base runs
once per prompt). Both run at guidance 5 (two rows per clip). Each configuration runs in its own process; times are
medians of --repeats runs after a warm-up. Nothing here is asserted by the tests.
- generate: sample() from noise, DDIM, `steps` steps (the pack's text-to-audio path on Stable Audio Open);
- instruct edit: instruct_edit() from the clip's latent at noise level 1, DPM-Solver++(2M) SDE, `steps` steps.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, measure, print_results, run_each_in_process  # noqa: E402

CONFIGS = ("generate", "instruct edit")


def _real_size_dit(backbone, in_channels: int) -> None:
    """Swap the tiny DiT for one of Stable Audio Open 1.0's size with random weights."""
    from diffusers import StableAudioDiTModel

    torch.manual_seed(0)
    backbone.transformer = StableAudioDiTModel(sample_size=1024, in_channels=in_channels, num_layers=24,
                                               attention_head_dim=64, num_attention_heads=24,
                                               num_key_value_attention_heads=12, out_channels=64,
                                               cross_attention_dim=768, time_proj_dim=256,
                                               global_states_input_dim=1536, cross_attention_input_dim=768).eval()
    backbone.in_channels = in_channels
    backbone.max_duration_s = 1024 * 2048 / 44100
    backbone._rotary.clear()


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.backbones import registry as models
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.instruct import instruct_edit

    bridge.set_directories(models=args["root"])
    backbone = models.load_backbone("diffusers/bench-instruct" if config == "instruct edit" else "diffusers/bench",
                                    "fp32" if args["device"] == "cpu" else "fp16")
    clip = {"waveform": 0.1 * torch.randn(1, 2, int(args["seconds"] * 44100), generator=torch.Generator()
                                          .manual_seed(0)), "sample_rate": 44100}
    latent = backbone.encode_audio(clip["waveform"], 44100)
    _real_size_dit(backbone, 128 if config == "instruct edit" else 64)
    backbone.transformer.to(backbone.vae.device, backbone.vae.dtype).requires_grad_(False)
    device = backbone.device

    def once() -> None:
        if config == "generate":
            sample(backbone, "rain on a tin roof", steps=args["steps"], guidance=5.0, seconds=args["seconds"])
        else:
            instruct_edit(backbone, latent, "add rain in the background", steps=args["steps"], guidance=5.0)

    measure(queue, config, once, args["repeats"], device)


def main() -> None:
    args = bench_parser(seconds=10.0, steps=3).parse_args()

    from prompt_audio_edit.standins.stable_audio import build_tiny_stable_audio

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_stable_audio(Path(tmp) / "diffusers" / "bench", max_seconds=47.0)
        build_tiny_stable_audio(Path(tmp) / "diffusers" / "bench-instruct", in_channels=128, max_seconds=47.0)
        results = run_each_in_process(_run, CONFIGS, {**vars(args), "root": tmp})
    frames = -(-int(args.seconds * 44100) // 2048)
    edit, plain = results["instruct edit"], results["generate"]
    print_results(f"Stable-Audio-Open-size DiT, {args.seconds:g} s ({frames} latent frames), {args.steps} steps at "
                  f"guidance 5, device {args.device}, median of {args.repeats} after a warm-up", results, args.device,
                  [f"instruct edit / generate: time {edit[0] / plain[0]:.2f}, peak {edit[1] / plain[1]:.2f}"])


if __name__ == "__main__":
    main()
