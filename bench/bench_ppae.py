"""Time and peak memory of PPAE (inversion + edit) on an AudioLDM2-size UNet with random weights.

Run: .venv/bin/python bench/bench_ppae.py [--seconds 10] [--steps 10] [--repeats 3] [--device cpu|cuda]
Each configuration runs in its own process (so peak memory is its own); times are medians of --repeats runs.
Reports: 1 vs 5 guidance scales, one batched run of 5 against five separate runs, and the edit against a plain
generation of the same length and step count. Nothing here is asserted by the tests.

The UNet has AudioLDM2's released architecture (128 channels x [1, 2, 3, 5], two resnets per level, attention at
1/2, 1/4 and 1/8 with 32-wide heads, GPT-2 768 + T5 1024 cross-attention; --large: two transformer layers per
block). Text encoders are the tiny test ones: they run once per prompt and do not change the per-step cost.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, median_time, peak_mib, print_results, run_each_in_process  # noqa: E402

CONFIGS = ("generate", "invert", "edit_1", "edit_5_batched", "edit_5_separate")


def real_size_unet(large: bool):
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    dims = [None, 768, 1024, None] if large else [None, 768, 1024]
    return AudioLDM2UNet2DConditionModel(
        sample_size=256, in_channels=8, out_channels=8, block_out_channels=(128, 256, 384, 640),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, attention_head_dim=[4, 8, 12, 20], cross_attention_dim=[dims] * 4,
        transformer_layers_per_block=2 if large else 1, norm_num_groups=32).eval()


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.backbones import registry as models
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.methods.zeta import redenoise
    from prompt_audio_edit.engine.diffusion.inversion import invert

    torch.manual_seed(0)
    root = Path(args["root"])
    bridge.set_directories(models=str(root))
    backbone = models.load_backbone("diffusers/bench", "fp32" if args["device"] == "cpu" else "fp16")
    backbone.pipeline.unet = real_size_unet(args["large"]).requires_grad_(False).to(backbone.device, backbone.dtype)
    frames = int(round(args["seconds"] * 16000 / 640))
    latent = {"samples": torch.randn(1, 8, frames, 16)}
    source, target = "a dog barking in the rain", "a cat meowing in the rain"
    spec = make_attention_edit("replace", source, target)
    scales = [5.0, 10.0, 15.0, 20.0, 25.0]
    # Generation runs every step; the edit runs the steps after edit_start (the inversion was made with skip).
    inversion = invert(backbone, latent, source, steps=args["steps"], edit_start=args["edit_start"])
    full = invert(backbone, latent, source, steps=args["steps"], edit_start=0.0) if config == "generate" else None

    def once() -> None:
        if config == "generate":
            redenoise(backbone, full, prompt=target, guidance=10.0)
        elif config == "invert":
            invert(backbone, latent, source, steps=args["steps"], edit_start=args["edit_start"])
        elif config == "edit_1":
            fuse_edit(backbone, inversion, spec, guidance_scales=[10.0], attention_maps=False)
        elif config == "edit_5_batched":
            fuse_edit(backbone, inversion, spec, guidance_scales=scales, attention_maps=False)
        else:
            for s in scales:
                fuse_edit(backbone, inversion, spec, guidance_scales=[s], attention_maps=False)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()

    if backbone.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = median_time(once, args["repeats"], backbone.device)
    queue.put((config, seconds, peak_mib(backbone.device)))


def main() -> None:
    parser = bench_parser(seconds=10.0, steps=10, steps_help="whole schedule (PPAE: 100)")
    parser.add_argument("--edit-start", type=float, default=0.5)
    parser.add_argument("--large", action="store_true", help="AudioLDM2-large: two transformer layers per block")
    args = parser.parse_args()

    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="large" if args.large else "base")
        results = run_each_in_process(_run, CONFIGS, {**vars(args), "root": tmp})
    edit_steps = args.steps - round(args.steps * args.edit_start)
    batched, separate = results["edit_5_batched"][0], results["edit_5_separate"][0]
    edit = results["invert"][0] + results["edit_1"][0]
    print_results(f"AudioLDM2{'-large' if args.large else ''}-size UNet, {args.seconds:g} s clip, {args.steps} steps "
                  f"({edit_steps} edit steps), device {args.device}, median of {args.repeats}", results, args.device,
                  [f"5 scales: one batched run / five separate runs = {batched / separate:.2f}",
                   f"inversion + edit (1 scale) / plain generation ({args.steps} steps) = "
                   f"{edit / results['generate'][0]:.2f}",
                   f"inversion + edit (5 scales) / plain generation = "
                   f"{(results['invert'][0] + batched) / results['generate'][0]:.2f}"])

if __name__ == "__main__":
    main()
