"""AP-Adapter: the cost of applying the adapter to a new clip, and the sampler's step time with and without it.

Run: .venv/bin/python bench/bench_ap_adapter.py [--seconds 10] [--steps 3] [--repeats 3] [--device cpu|cuda]
Each configuration runs in its own process (so peak memory is its own); times are medians of --repeats runs.

- apply_cached: what PAE_APAdapterApply does per new clip: fbank, AudioMAE forward, pooling, with AudioMAE loaded
  once (the silent prompt's tokens are remembered per pooling rate).
- apply_rebuild: the reference's approach (pipeline_audioldm2.py): build AudioMAE, torch.load pretrained.pth,
  load it, then encode the clip and the all-zero fbank, on every call.
  Both read the same real-size random AudioMAE file (ViT-B/16 encoder + an 8-block MAE decoder).
- sample_plain / sample_adapter_w2 / sample_adapter_w1: Sample Audio at guidance 7.5 on an AudioLDM2-large-size
  UNet with random weights, without the adapter and with it at ω = 2 (128 audio tokens) and ω = 1 (512 tokens);
  per-step time = run time / steps (the text encoders are the tiny test ones and run once per prompt).
Nothing here is asserted by the tests.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ppae import real_size_unet  # noqa: E402
from common import bench_parser, measure, print_results, run_each_in_process  # noqa: E402

CONFIGS = ("apply_cached", "apply_rebuild", "sample_plain", "sample_adapter_w2", "sample_adapter_w1")


def _write_real_size_audiomae(path: Path) -> None:
    from prompt_audio_edit.engine.models.audiomae import AudioMAE

    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.02 for k, v in AudioMAE().state_dict().items()}  # ViT-B/16: 768 x 12 blocks
    decoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(512, 16, 2048, batch_first=True), 8)
    state.update({f"decoder_blocks.{k}": v for k, v in decoder.state_dict().items()})
    state.update({"decoder_embed.weight": torch.randn(512, 768) * 0.02, "mask_token": torch.zeros(1, 1, 512),
                  "decoder_pos_embed": torch.zeros(1, 513, 512), "decoder_pred.weight": torch.randn(256, 512) * 0.02})
    torch.save({"model": state}, path)


def _clip(seconds: float, index: int) -> dict:
    generator = torch.Generator().manual_seed(index)
    return {"waveform": 0.2 * torch.randn(1, 1, int(seconds * 16000), generator=generator), "sample_rate": 16000}


def _run(config: str, args: dict, queue) -> None:
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.engine.backbones import registry as models
    from prompt_audio_edit.engine.methods.ap_adapter import apply_ap_adapter, load_ap_adapter
    from prompt_audio_edit.engine.models.audiomae import AudioMAE, audio_features, load_audio_encoder, pool_audio_tokens
    from prompt_audio_edit.engine.diffusion.sampling import sample

    torch.manual_seed(0)
    root = Path(args["root"])
    bridge.set_directories(models=str(root))
    device = torch.device(args["device"])
    dtype_name = "fp32" if device.type == "cpu" else "fp16"
    dtype = torch.float32 if device.type == "cpu" else torch.float16
    calls = iter(range(10**6))

    if config == "apply_cached":
        encoder = load_audio_encoder("pretrained.pth", dtype_name)
        encoder.silence_tokens(2)

        def once() -> None:
            encoder.audio_tokens(_clip(args["seconds"], next(calls)), 2)
            encoder.silence_tokens(2)
    elif config == "apply_rebuild":
        def once() -> None:
            model = AudioMAE()
            data = torch.load(root / "audio_encoders" / "pretrained.pth", map_location="cpu", weights_only=True)
            model.load_state_dict(data["model"], strict=False)
            model = model.to(device, dtype).eval()
            fbank = audio_features(_clip(args["seconds"], next(calls))).to(device, dtype)
            with torch.no_grad():
                pool_audio_tokens(model(fbank).float(), 2)
                pool_audio_tokens(model(torch.zeros_like(fbank)).float(), 2)
    else:
        backbone = models.load_backbone("diffusers/bench", dtype_name)
        backbone.pipeline.unet = real_size_unet(True).requires_grad_(False).to(backbone.device, backbone.dtype)
        model = backbone
        if config != "sample_plain":
            from prompt_audio_edit.standins.ap_adapter import tiny_adapter_state

            torch.save(tiny_adapter_state(backbone.denoiser), root / "ap_adapter" / "large.bin")
            adapter = load_ap_adapter("large.bin", "pretrained.pth", dtype_name)
            model = apply_ap_adapter(backbone, adapter, _clip(args["seconds"], 0), 0.5,
                                     1 if config.endswith("w1") else 2)

        def once() -> None:
            sample(model, "a recording of a violin solo", "a recording of a piano solo", steps=args["steps"],
                   guidance=7.5, seed=0, seconds=args["seconds"])

    measure(queue, config, once, args["repeats"], device)


def main() -> None:
    parser = bench_parser(seconds=10.0, steps=3)
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    args = parser.parse_args()

    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2

    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_audioldm2(Path(tmp) / "diffusers" / "bench", layout="large")
        (Path(tmp) / "audio_encoders").mkdir()
        (Path(tmp) / "ap_adapter").mkdir()
        _write_real_size_audiomae(Path(tmp) / "audio_encoders" / "pretrained.pth")
        results = run_each_in_process(_run, args.only, {**vars(args), "root": tmp})
    notes = [f"{c}: {results[c][0] / args.steps:.2f} s/step" for c in results if c.startswith("sample")]
    if "apply_cached" in results and "apply_rebuild" in results:
        cached, rebuild = results["apply_cached"], results["apply_rebuild"]
        notes.append(f"new clip, cached AudioMAE / rebuilt per call: time {cached[0] / rebuild[0]:.3f}, "
                     f"peak {cached[1] / rebuild[1]:.2f}")
    for config in ("sample_adapter_w2", "sample_adapter_w1"):
        if config in results and "sample_plain" in results:
            notes.append(f"step time {config} / sample_plain = {results[config][0] / results['sample_plain'][0]:.2f}")
    print_results(f"AP-Adapter, {args.seconds:g} s clips, device {args.device}, median of {args.repeats} after a "
                  "warm-up", results, args.device, notes)

if __name__ == "__main__":
    main()
