"""Jobs per minute of a batch: one `pae run` per job (each process loads the model) against `pae run --ray` with 1
and 2 workers (each worker loads the model once), with the tiny AudioLDM2 and with an AudioLDM2-size UNet.

Run: .venv/bin/python bench/bench_ray.py [--jobs 6] [--steps 3] [--seconds 2] [--repeats 1] [--sizes tiny,real]
The batch is --jobs/2 takes × 2 prompts through Load Audio → Load Model → VAE Encode → Sample (denoise 0.5) →
VAE Decode → Save Audio. Times are wall clock of the whole command, Ray's start included (medians of --repeats).
Nothing here is asserted by the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser  # noqa: E402

PROMPTS = ("a violin melody", "a piano ballad")


def workflow(model: str, steps: int, seconds: float) -> dict:
    return {
        "1": {"class_type": "PAE_LoadAudio", "inputs": {"audio": "take0.wav", "start": 0.0, "duration": seconds,
                                                        "sample_rate": 0, "mono": False}},
        "2": {"class_type": "PAE_LoadModel", "inputs": {"model_name": model, "dtype": "auto"}},
        "3": {"class_type": "PAE_VAEEncode", "inputs": {"model": ["2", 0], "audio": ["1", 0]}},
        "4": {"class_type": "PAE_Sample", "inputs": {"model": ["2", 0], "positive": PROMPTS[0], "negative": "",
                                                     "seed": 0, "steps": steps, "guidance": 3.0, "batch_size": 1,
                                                     "seconds": seconds, "denoise": 0.5, "latent": ["3", 0]}},
        "5": {"class_type": "PAE_VAEDecode", "inputs": {"model": ["2", 0], "latent": ["4", 0],
                                                        "sample_rate": "source"}},
        "6": {"class_type": "PAE_SaveAudio", "inputs": {"audio": ["5", 0], "filename_prefix": "edit",
                                                        "format": "flac", "mp3_quality": "V0"}},
    }


def build_models(root: Path) -> None:
    """The tiny AudioLDM2, and a copy whose UNet has AudioLDM2-base's size (random weights)."""
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2
    from bench_ppae import real_size_unet

    tiny = build_tiny_audioldm2(root / "diffusers" / "tiny", layout="base", seed=0)
    real = shutil.copytree(tiny, root / "diffusers" / "real")
    shutil.rmtree(real / "unet")
    real_size_unet(large=False).save_pretrained(real / "unet")


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0"))
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])}... failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = bench_parser(seconds=2.0, steps=3, steps_help="Sample steps per job")
    parser.add_argument("--jobs", type=int, default=6, help="jobs in the batch (an even number: takes × 2 prompts)")
    parser.add_argument("--sizes", default="tiny,real", help="tiny, real (AudioLDM2-base-size UNet) or both")
    args = parser.parse_args()
    from tests.helpers import tone, write_with_pyav

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="pae-bench-ray-") as scratch:
        root = Path(scratch)
        build_models(root / "models")
        takes = root / "takes"
        takes.mkdir()
        for index in range(args.jobs // 2):
            write_with_pyav(takes / f"take{index}.wav", tone(args.seconds, 16000, 1, freq=200.0 * (index + 1)),
                            16000, "wav", "pcm_s16le", "s16")
        (root / "prompts.txt").write_text("\n".join(PROMPTS))
        rows = []
        for size in args.sizes.split(","):
            graph = root / f"{size}.json"
            graph.write_text(json.dumps(workflow(f"diffusers/{size}", args.steps, args.seconds)))
            common = ["--models", str(root / "models"), "--input-dir", str(takes)]
            times: dict[str, list[float]] = {"one pae run per job": [], "--ray, 1 worker": [],
                                             "--ray, 2 workers": []}
            for repeat in range(args.repeats):
                out = root / f"out-{size}-{repeat}"

                def each_job() -> None:
                    for take in sorted(takes.iterdir()):
                        for prompt in PROMPTS:
                            subprocess.run([python, "-m", "prompt_audio_edit", "run", str(graph), *common,
                                            "--set", f"1.audio={take.name}", "--set", f"4.positive={prompt}",
                                            "--out", str(out / "single")], check=True, capture_output=True)

                started = time.perf_counter()
                each_job()
                times["one pae run per job"].append(time.perf_counter() - started)
                for workers in (1, 2):
                    command = [python, "-m", "prompt_audio_edit", "run", str(graph), *common, "--input", str(takes),
                               "--sweep", f"4.positive=@{root / 'prompts.txt'}", "--out", str(out / f"ray{workers}"),
                               "--ray", "--ray-workers", str(workers)]
                    times[f"--ray, {workers} worker" + ("s" if workers > 1 else "")].append(timed(command, root))
            base = statistics.median(times["one pae run per job"])
            for name, values in times.items():
                seconds = statistics.median(values)
                rows.append((size, name, seconds, args.jobs / seconds * 60, seconds / base))
        print(f"{args.jobs} jobs ({args.jobs // 2} takes x 2 prompts), Sample {args.steps} steps on "
              f"{args.seconds:g} s, {os.cpu_count()} CPUs, medians of {args.repeats}")
        print(f"  {'model':5s} {'how':22s} {'wall s':>8s} {'jobs/min':>9s} {'x one-per-job':>14s}")
        for size, name, seconds, rate, ratio in rows:
            print(f"  {size:5s} {name:22s} {seconds:8.1f} {rate:9.1f} {ratio:14.2f}")


if __name__ == "__main__":
    main()
