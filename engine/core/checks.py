"""Checks and clean-ups every method applies to the same kind of input, each written once."""

from __future__ import annotations

from typing import Any

import torch

from .errors import PAEInputError

MAX_GUIDANCE = 100.0
# The most one clip may take in memory as float32 (about 1 h 30 min of 48 kHz stereo): longer files load in parts.
MAX_AUDIO_BYTES = 2 * 2 ** 30
MAX_SAMPLE_RATE = 768_000  # the highest rate FFmpeg's codecs and soxr take
MAX_SEED = 2 ** 64 - 1  # ComfyUI's seed widgets: 0..0xFFFFFFFFFFFFFFFF
MAX_CLIPS_PER_CALL = 1024  # a chunk of a batch through one model call
MAX_STEPS = 1000  # the training schedules' length (AudioLDM2, Tango); longer runs only repeat timesteps


def clean_prompt(text: Any) -> str:
    """A prompt with every run of whitespace (newlines, tabs) made one space and the ends trimmed."""
    return " ".join(str(text).split())


def check_guidance(value: float, input_name: str = "guidance", note: str = "") -> float:
    """Refuse a classifier-free guidance scale outside 0..100; note names the method's default, e.g.
    ' (MusicGen: 3)'.
    """
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise PAEInputError(input_name, f"{value:g} is outside 0..{MAX_GUIDANCE:g}{note}.")
    return value


def check_steps(steps: int, default: str, lowest: int = 1) -> int:
    """Refuse a step count outside lowest..1000; default names the method's choice, e.g. 'PPAE: 100'."""
    if not lowest <= steps <= MAX_STEPS:
        raise PAEInputError("steps", f"{steps} steps: use {lowest}..{MAX_STEPS} ({default}).")
    return steps


def check_seed(seed: Any, input_name: str = "seed") -> int:
    """Refuse a seed outside ComfyUI's range 0..2^64-1 (the same check ComfyUI's widget makes)."""
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        raise PAEInputError(input_name, f"'{seed}' is not a whole number.") from None
    if not 0 <= value <= MAX_SEED:
        raise PAEInputError(input_name, f"{value} is outside 0..{MAX_SEED} (ComfyUI's seed range).")
    return value


def cpu_generator(seed: int, offset: int = 0) -> torch.Generator:
    """A CPU generator for seed + offset (wrapping at 2^64): noise is drawn on the CPU so that a seed means the same
    numbers on any device, then moved to the model's device."""
    return torch.Generator().manual_seed((check_seed(seed) + offset) % (MAX_SEED + 1))


def check_clips_per_call(clips_per_call: Any) -> int:
    """A chunk size for a long batch: 0 (all clips in one model call) or 1..MAX_CLIPS_PER_CALL."""
    try:
        value = int(clips_per_call)
    except (TypeError, ValueError):
        value = -1
    if not 0 <= value <= MAX_CLIPS_PER_CALL:
        raise PAEInputError("clips_per_call", f"{clips_per_call}: use 0 (all clips in one call) or "
                            f"1..{MAX_CLIPS_PER_CALL}; lower it when a long batch (a song's windows) runs out of "
                            "memory.")
    return value
