"""Time the pack's import and AudioLDM2's audio <-> latent path at real sizes (random weights, real architecture).

Run: .venv/bin/python bench/bench_vae.py [--seconds 10] [--repeats 3]
Prints medians of several runs; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch


def import_time(repeats: int) -> tuple[float, float]:
    """Median wall time of `import prompt_audio_edit` in a fresh interpreter, and of `import torch` alone."""
    def once(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", f"import time; t=time.perf_counter(); {code}; "
                              "print(time.perf_counter()-t)"], capture_output=True, text=True, check=True)
        return float(out.stdout.strip())
    pack = statistics.median(once("import prompt_audio_edit") for _ in range(repeats))
    torch_only = statistics.median(once("import torch") for _ in range(repeats))
    return pack, torch_only


def real_size_vae_and_vocoder():
    """AudioLDM2's VAE and HiFi-GAN with the released configurations, randomly initialised."""
    from diffusers import AutoencoderKL
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.4110932946)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024, upsample_rates=[5, 4, 2, 2, 2],
        upsample_kernel_sizes=[16, 16, 8, 4, 4], resblock_kernel_sizes=[3, 7, 11],
        resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], normalize_before=False))
    return vae.eval(), vocoder.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pack, torch_only = import_time(args.repeats)
    print(f"import prompt_audio_edit: {pack:.2f} s (of which import torch alone: {torch_only:.2f} s)")

    from prompt_audio_edit.engine.backbones.mel import MelFrontEnd

    vae, vocoder = real_size_vae_and_vocoder()
    samples = int(args.seconds * 16000)
    wave = torch.randn(1, samples) * 0.1
    mel_front = MelFrontEnd()
    timings: dict[str, list[float]] = {"mel": [], "vae encode": [], "vae decode": [], "vocoder": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            t = time.perf_counter()
            mel = mel_front(wave)
            timings["mel"].append(time.perf_counter() - t)
            t = time.perf_counter()
            latent = vae.encode(mel[:, None]).latent_dist.mode()
            timings["vae encode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            decoded = vae.decode(latent).sample
            timings["vae decode"].append(time.perf_counter() - t)
            t = time.perf_counter()
            vocoder(decoded[:, 0])
            timings["vocoder"].append(time.perf_counter() - t)
    print(f"{args.seconds:g} s clip, latent {tuple(latent.shape)}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}:")
    for name, values in timings.items():
        print(f"  {name:<11} {statistics.median(values):7.3f} s")


if __name__ == "__main__":
    main()
