"""What the benchmarks share: one process per configuration (so each peak is its own), medians, peak memory."""

from __future__ import annotations

import argparse

import multiprocessing
import resource
import statistics
import time
from typing import Any, Callable

import torch


def run_each_in_process(target: Callable, configs: list[str] | tuple[str, ...], settings: dict[str, Any]
                        ) -> dict[str, tuple[float, float]]:
    """target(config, settings, queue) in a fresh spawned process per configuration -> {config: (seconds, peak)}."""
    results = {}
    context = multiprocessing.get_context("spawn")
    for config in configs:
        queue = context.Queue()
        process = context.Process(target=target, args=(config, settings, queue))
        process.start()
        results[config] = queue.get()[1:]
        process.join()
    return results


def median_time(once: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median wall time of `repeats` calls (synchronising the GPU around each)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(queue: Any, config: str, once: Callable[[], None], repeats: int, device: torch.device) -> None:
    """Warm up once, reset the GPU peak, then report (config, median time, peak MiB) to the parent process."""
    once()  # first-call allocations and kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    queue.put((config, median_time(once, repeats, device), peak_mib(device)))


def peak_mib(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else this process's peak resident set, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        # VmHWM belongs to this process's own address space. ru_maxrss does not: Linux carries the parent's
        # high-water mark over fork + exec, so a spawned child would report at least its parent's peak.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_results(title: str, results: dict[str, tuple[float, float]], device: str, notes: list[str]) -> None:
    """The title, one row per configuration (time, peak), the ratio notes, then the results as JSON."""
    import json

    unit = "MiB peak GPU" if device != "cpu" else "MiB peak RSS (process)"
    width = max(len(c) for c in results)
    print(title)
    for config, (seconds, peak) in results.items():
        print(f"  {config:{width}s} {seconds:8.2f} s   {peak:9.0f} {unit}")
    for note in notes:
        print(f"  {note}")
    print(json.dumps({k: {"seconds": v[0], "peak": v[1]} for k, v in results.items()}))


def bench_parser(seconds: float, steps: int | None = None, steps_help: str | None = None) -> argparse.ArgumentParser:
    """The options every bench takes: clip length, (steps), repeats and device; a bench adds its own after."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=seconds)
    if steps is not None:
        parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    return parser
