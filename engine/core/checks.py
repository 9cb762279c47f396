"""Checks and clean-ups every method applies to the same kind of input, each written once."""

from __future__ import annotations

from typing import Any

from .errors import PAEInputError

MAX_GUIDANCE = 100.0
MAX_STEPS = 1000  # the training schedules' length (AudioLDM2, Tango); longer runs only repeat timesteps


def clean_prompt(text: Any) -> str:
    """A prompt with every run of whitespace (newlines, tabs) made one space and the ends trimmed."""
    return " ".join(str(text).split())


def check_guidance(value: float, input_name: str = "guidance", note: str = "") -> float:
    """Refuse a classifier-free guidance scale outside 0..100; note names the method's default, e.g. ' (MusicGen: 3)'."""
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise PAEInputError(input_name, f"{value:g} is outside 0..{MAX_GUIDANCE:g}{note}.")
    return value


def check_steps(steps: int, default: str, lowest: int = 1) -> int:
    """Refuse a step count outside lowest..1000; default names the method's choice, e.g. 'PPAE: 100'."""
    if not lowest <= steps <= MAX_STEPS:
        raise PAEInputError("steps", f"{steps} steps: use {lowest}..{MAX_STEPS} ({default}).")
    return steps
