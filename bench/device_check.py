"""One prepared check for a GPU: every method at the papers' settings on real-size random denoisers, in half
precision and in fp32, and one table of time, peak memory, agreement and the ratios that matter.

Run on a CUDA machine:  python bench/device_check.py [--quick] [--dtypes fp16,bf16,fp32]
Show it works on CPU:   python bench/device_check.py --device cpu --quick [--seconds 2]

Each (method, dtype) runs in its own spawned process, so its peak (torch.cuda.max_memory_allocated, or the process's
peak RSS on CPU) is its own. The denoisers have the released sizes with random weights: AudioLDM2-large's UNet,
Tango 2's UNet, Stable Audio Open 1.0's DiT (64 input channels; 128 for SAO-Instruct), MusicGen-small's and
-medium's decoders with a T5-base-size encoder, and a ViT-B AudioMAE with an adapter on every 768-key layer. The
other parts (CLAP/T5/GPT-2 text encoders, VAEs, vocoders, EnCodec) are the tiny test ones with the released widths:
each runs once per prompt or clip, so the table's peaks leave out their weights; the `weights not counted` column
gives those from the released parameter counts (fp16 bytes, an estimate, not a measurement).

Settings (full): PPAE 100 steps edited from step 50 with 5 guidance scales; ZETA 200 steps edited from 100;
AP-Adapter 50 steps at guidance 7.5; EditGen 10 s; SAO-Instruct 100 steps at guidance 5; all on 10 s clips.
--quick: a tenth of the steps (EditGen 2 s). Ratios: against a plain generation by the same denoiser with the
same rows and steps, and for PPAE against the ZETA way (5 x an inversion and a text edit, one per scale).
Agreement: the relative L2 distance of the method's output latent (or codes' audio) to the fp32 run's.
Nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_ppae import real_size_unet  # noqa: E402
from common import peak_mib  # noqa: E402

SCALES = [5.0, 10.0, 15.0, 20.0, 25.0]
SOURCE, TARGET = "a dog barking in the rain", "a cat meowing in the rain"
# Released parameter counts of the parts the check keeps tiny (text encoders, VAE, vocoder, codec), in millions.
UNCOUNTED_MPARAMS = {"audioldm2-large": 125 + 124 + 341 + 55 + 14,  # CLAP text, GPT-2, FLAN-T5-L enc., VAE, vocoder
                     "tango2": 341 + 55 + 14, "stable-audio-open": 110 + 157, "sao-instruct": 110 + 157,  # T5-base, VAE
                     "musicgen-small": 110 + 57, "musicgen-medium": 110 + 57}  # T5-base encoder, EnCodec 32 kHz


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(device: torch.device, run: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    started = time.perf_counter()
    out = run()
    _sync(device)
    return time.perf_counter() - started, out


def real_size_tango_unet(cross_dim: int) -> torch.nn.Module:
    """Tango 2's UNet (Stable Diffusion's layout on 8 latent channels); cross_dim: the text encoder's width (1024)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        in_channels=8, out_channels=8, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=cross_dim,
        attention_head_dim=8).eval()


def _latent(backbone: Any, seconds: float) -> dict:
    generator = torch.Generator().manual_seed(0)
    waveform = 0.1 * torch.randn(1, backbone.channels, int(seconds * backbone.sample_rate), generator=generator)
    return backbone.encode_audio(waveform, backbone.sample_rate)


def _diffusion_backbone(name: str, root: Path, dtype_name: str) -> Any:
    """The tiny folder's backbone with its denoiser swapped for a real-size one on the compute device."""
    from prompt_audio_edit.engine.backbones import registry

    folder = {"audioldm2-large": "diffusers/al2", "tango2": "tango/tango", "stable-audio-open": "diffusers/sao",
              "sao-instruct": "diffusers/sao-instruct"}[name]
    if name == "sao-instruct":
        from prompt_audio_edit.engine.methods.instruct import load_instruct_model

        backbone = load_instruct_model(folder, dtype_name)
    else:
        backbone = registry.load_backbone(folder, dtype_name)
    torch.manual_seed(0)
    with torch.device(backbone.device):  # random init on the GPU: seconds, not minutes
        if name == "audioldm2-large":
            backbone.pipeline.unet = real_size_unet(large=True)
            denoiser = backbone.pipeline.unet
        elif name == "tango2":
            backbone.unet = real_size_tango_unet(backbone.text_encoder.config.d_model)
            denoiser = backbone.unet
        else:
            from bench_sao_instruct import _real_size_dit

            _real_size_dit(backbone, 128 if name == "sao-instruct" else 64)
            denoiser = backbone.transformer
    denoiser.requires_grad_(False).to(backbone.device, backbone.dtype)
    return backbone


def check_ppae(name: str, root: Path, dtype_name: str, quick: bool, seconds: float) -> dict:
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.methods.zeta import redenoise

    backbone = _diffusion_backbone(name, root, dtype_name)
    device, steps = backbone.device, 10 if quick else 100
    latent = _latent(backbone, seconds)
    spec = make_attention_edit("replace", SOURCE, TARGET)
    invert(backbone, latent, SOURCE, steps=2, edit_start=0.5)  # warm-up: kernels, allocator
    _reset(device)

    def method() -> Any:
        inversion = invert(backbone, latent, SOURCE, steps=steps, edit_start=0.5)
        return fuse_edit(backbone, inversion, spec, guidance_scales=SCALES, attention_maps=False)[0]

    seconds_method, out = _timed(device, method)
    peak = peak_mib(device)
    plain, _ = _timed(device, lambda: sample(backbone, TARGET, steps=steps, guidance=10.0, batch_size=len(SCALES),
                                             seconds=seconds))

    def zeta_way() -> None:
        for scale in SCALES:
            redenoise(backbone, invert(backbone, latent, SOURCE, steps=steps, edit_start=0.5), prompt=TARGET,
                      guidance=scale)

    zeta, _ = _timed(device, zeta_way)
    return {"seconds": seconds_method, "peak": peak, "output": out["samples"], "plain": plain, "zeta": zeta}


def check_zeta(name: str, root: Path, dtype_name: str, quick: bool, seconds: float) -> dict:
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.zeta import redenoise

    backbone = _diffusion_backbone(name, root, dtype_name)
    device, steps = backbone.device, 20 if quick else 200
    latent = _latent(backbone, seconds)
    invert(backbone, latent, SOURCE, steps=2, edit_start=0.5)
    _reset(device)
    spent, out = _timed(device, lambda: redenoise(backbone, invert(backbone, latent, SOURCE, steps=steps,
                                                                   edit_start=0.5), prompt=TARGET, guidance=12.0))
    peak = peak_mib(device)
    plain, _ = _timed(device, lambda: sample(backbone, TARGET, steps=steps, guidance=12.0, seconds=seconds))
    return {"seconds": spent, "peak": peak, "output": out["samples"], "plain": plain}


def check_ap_adapter(name: str, root: Path, dtype_name: str, quick: bool, seconds: float) -> dict:
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.ap_adapter import apply_ap_adapter, load_ap_adapter
    from prompt_audio_edit.standins.ap_adapter import tiny_adapter_state

    backbone = _diffusion_backbone("audioldm2-large", root, dtype_name)
    device, steps = backbone.device, 5 if quick else 50
    torch.save(tiny_adapter_state(backbone.denoiser), root / "ap_adapter" / "large.bin")  # shapes only; CPU numbers
    adapter = load_ap_adapter("large.bin", "audiomae.pth", dtype_name)
    generator = torch.Generator().manual_seed(1)
    clip = {"waveform": 0.2 * torch.randn(1, 1, int(10.24 * 16000), generator=generator), "sample_rate": 16000}
    prompt, negative = "a recording of a violin solo", "a recording of a piano solo"
    sample(backbone, prompt, negative, steps=1, guidance=7.5, seconds=seconds)
    _reset(device)

    def method() -> Any:
        model = apply_ap_adapter(backbone, adapter, clip, 0.5, 2)
        return sample(model, prompt, negative, steps=steps, guidance=7.5, seed=0, seconds=seconds)

    spent, out = _timed(device, method)
    peak = peak_mib(device)
    plain, _ = _timed(device, lambda: sample(backbone, prompt, negative, steps=steps, guidance=7.5, seed=0,
                                             seconds=seconds))
    return {"seconds": spent, "peak": peak, "output": out["samples"], "plain": plain}


def check_sao_instruct(name: str, root: Path, dtype_name: str, quick: bool, seconds: float) -> dict:
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.instruct import instruct_edit

    backbone = _diffusion_backbone("sao-instruct", root, dtype_name)
    device, steps = backbone.device, 10 if quick else 100
    latent = _latent(backbone, seconds)
    instruct_edit(backbone, latent, "add rain in the background", steps=1, guidance=5.0)
    _reset(device)
    spent, out = _timed(device, lambda: instruct_edit(backbone, latent, "add rain in the background", steps=steps,
                                                      guidance=5.0))
    peak = peak_mib(device)
    backbone = None  # freed before the plain model is built
    plain_backbone = _diffusion_backbone("stable-audio-open", root, dtype_name)
    plain, _ = _timed(device, lambda: sample(plain_backbone, "rain on a tin roof", steps=steps, guidance=5.0,
                                             seconds=seconds))
    return {"seconds": spent, "peak": peak, "output": out["samples"], "plain": plain}


def check_editgen(name: str, root: Path, dtype_name: str, quick: bool, seconds: float) -> dict:
    from bench_editgen import _small_size
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.methods.editgen import EditGenSettings, edit_music
    from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen

    musicgen = load_musicgen("musicgen", dtype_name)
    torch.manual_seed(0)
    with torch.device(musicgen.device):
        _small_size(musicgen.model, medium=name == "musicgen-medium")
    musicgen.model.to(musicgen.device, musicgen.model.dtype).requires_grad_(False)
    device, length = musicgen.device, min(seconds, 2.0) if quick else seconds
    sampling = SamplingSettings(guidance=3.0, top_k=250)
    edit = make_attention_edit("replace", "a jazz song with piano and drums", "a jazz song with guitar and drums",
                               self_window=1.0, cross_window=1.0)
    edit_music(musicgen, edit, EditGenSettings(), seconds=0.1, sampling=sampling, seed=0)
    _reset(device)
    spent, (codes, _) = _timed(device, lambda: edit_music(musicgen, edit, EditGenSettings(), seconds=length,
                                                          sampling=sampling, seed=0))
    peak = peak_mib(device)
    plain, _ = _timed(device, lambda: musicgen.generate_codes([edit.source_prompt, edit.target_prompt], length,
                                                              sampling, seed=0))
    # Codes are integers: agreement is the share of code positions that differ from the fp32 run's.
    return {"seconds": spent, "peak": peak, "output": codes.cpu(), "plain": plain}


# method -> (model, check); the table's rows, in this order
CHECKS: dict[str, tuple[str, Callable[..., dict]]] = {
    "PPAE (AudioLDM2-large)": ("audioldm2-large", check_ppae),
    "PPAE (Tango 2)": ("tango2", check_ppae),
    "ZETA (AudioLDM2-large)": ("audioldm2-large", check_zeta),
    "AP-Adapter": ("audioldm2-large", check_ap_adapter),
    "EditGen (MusicGen-small)": ("musicgen-small", check_editgen),
    "EditGen (MusicGen-medium)": ("musicgen-medium", check_editgen),
    "SAO-Instruct": ("sao-instruct", check_sao_instruct),
}


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _child(method: str, dtype_name: str, settings: dict, queue: Any) -> None:
    from prompt_audio_edit.engine.core import bridge

    try:
        bridge.set_directories(models=settings["root"])
        model, check = CHECKS[method]
        result = check(model, Path(settings["root"]), dtype_name, settings["quick"], settings["seconds"])
        output = result.pop("output")
        result["finite"] = bool(torch.isfinite(output.float()).all()) if output.is_floating_point() else True
        # As numpy: a torch tensor crosses the queue as a shared-memory handle that dies with this process.
        queue.put((result, (output.float() if output.is_floating_point() else output).numpy(), None))
    except Exception as exc:  # noqa: BLE001 - a row of the table says what failed; the others still run
        queue.put(({}, None, f"{exc.__class__.__name__}: {str(exc)[:200]}"))


def build_folders(root: Path) -> None:
    """The tiny folders whose denoisers are swapped (released layouts), and a real-size AudioMAE file."""
    from bench_ap_adapter import _write_real_size_audiomae
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2
    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen
    from prompt_audio_edit.standins.stable_audio import build_tiny_stable_audio
    from prompt_audio_edit.standins.tango import build_tiny_tango

    build_tiny_audioldm2(root / "diffusers" / "al2", layout="large")
    build_tiny_tango(root / "tango" / "tango")
    build_tiny_stable_audio(root / "diffusers" / "sao", max_seconds=47.0)
    build_tiny_stable_audio(root / "diffusers" / "sao-instruct", in_channels=128, max_seconds=47.0)
    build_tiny_musicgen(root / "musicgen" / "musicgen")
    (root / "audio_encoders").mkdir(parents=True, exist_ok=True)
    (root / "ap_adapter").mkdir(parents=True, exist_ok=True)
    _write_real_size_audiomae(root / "audio_encoders" / "audiomae.pth")


def _agreement(output: Any, reference: Any) -> str:
    if output is None or reference is None or output.shape != reference.shape:
        return "-"
    if not output.is_floating_point():
        return f"{(output != reference).float().mean().item():.1%} codes"
    distance = ((output - reference).norm() / reference.norm().clamp_min(1e-12)).item()
    return f"{distance:.2e}" if math.isfinite(distance) else "nan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps (fits 5 minutes on one H200)")
    parser.add_argument("--dtypes", default="fp16,bf16,fp32", help="comma-separated; fp32 is the agreement reference")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (the papers' 10 s)")
    parser.add_argument("--methods", default="", help="comma-separated substrings of the row names (default: all)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_check: no CUDA device here; run with --device cpu --quick to see it work")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    methods = [m for m in CHECKS if not args.methods or any(s.strip() in m for s in args.methods.split(","))]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pae-device-check-") as root:
        build_folders(Path(root))
        settings = {"root": root, "quick": args.quick, "seconds": args.seconds}
        for method in methods:
            outputs = {}
            for dtype_name in dtypes:
                queue = context.Queue()
                process = context.Process(target=_child, args=(method, dtype_name, settings, queue))
                process.start()
                result, output, error = queue.get()
                process.join()
                outputs[dtype_name] = None if output is None else torch.from_numpy(output)
                rows.append((method, dtype_name, result, error))
            reference = outputs.get("fp32")
            for index in range(len(rows) - len(dtypes), len(rows)):
                method_name, dtype_name, result, error = rows[index]
                result["agreement"] = "ref" if dtype_name == "fp32" else _agreement(outputs[dtype_name], reference)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device_check on {gpu}, {'quick' if args.quick else 'full'} settings, {args.seconds:g} s clips, "
          f"{time.perf_counter() - started:.0f} s in all")
    unit = "peak VRAM MiB" if args.device == "cuda" else "peak RSS MiB"
    print(f"| method | dtype | wall s | {unit} | vs fp32 | finite | x plain | x ZETA way | weights not counted |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, dtype_name, result, error in rows:
        if error:
            print(f"| {method} | {dtype_name} | failed: {error} | | | | | | |")
            continue
        extra = UNCOUNTED_MPARAMS.get(CHECKS[method][0], 0) * 2
        zeta = f"{result['seconds'] / result['zeta']:.2f}" if result.get("zeta") else "-"
        print(f"| {method} | {dtype_name} | {result['seconds']:.1f} | {result['peak']:.0f} | {result['agreement']} | "
              f"{'yes' if result['finite'] else 'NO'} | {result['seconds'] / result['plain']:.2f} | {zeta} | "
              f"~{extra} MiB (est.) |")


if __name__ == "__main__":
    main()
