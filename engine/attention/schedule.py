"""PPAE's fusion ratio S(t): how much of the edited attention enters the target at each step.

The target's map is  S(t) · edited + (1 − S(t)) · its own.  t is the fraction of the edit's steps done (0 at the
first step, 1 after the last). Every schedule decays from η_max (until `start`) to η_min (from `end`):
- cosine: PPAE's cosine-annealing form  S = η_min + ½(η_max − η_min)(1 + cos(π (t − t_s)/(t_e − t_s)));
- linear: a straight line from η_max to η_min;
- exponential: η_min + (η_max − η_min)(e^(−k u) − e^(−k))/(1 − e^(−k)), u = (t − t_s)/(t_e − t_s), k = decay_rate;
- binary: η_max before `end`, η_min from it (η_max 1, η_min 0: plain Prompt-to-Prompt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.errors import PAEInputError

SCHEDULE_KINDS = ("cosine", "linear", "exponential", "binary")


@dataclass(frozen=True)
class FusionSchedule:
    """S(t) for t in [0, 1]; see the module text for the formulas."""

    kind: str = "cosine"
    start: float = 0.56
    end: float = 0.8
    eta_min: float = 0.0
    eta_max: float = 1.0
    decay_rate: float = 5.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise PAEInputError("schedule", f"'{self.kind}' is not one of {', '.join(SCHEDULE_KINDS)}.")
        if not 0.0 <= self.start <= self.end <= 1.0:
            raise PAEInputError("schedule_start", f"the decay window [{self.start:g}, {self.end:g}] must satisfy "
                                "0 <= start <= end <= 1 (fractions of the edit's steps).")
        for name, value in (("eta_min", self.eta_min), ("eta_max", self.eta_max)):
            if not 0.0 <= value <= 1.0:
                raise PAEInputError(name, f"{value:g} is not a ratio; use 0..1.")
        if self.eta_min > self.eta_max:
            raise PAEInputError("eta_min", f"{self.eta_min:g} is above eta_max {self.eta_max:g}; the ratio decays "
                                "from eta_max to eta_min, so eta_min <= eta_max (swap them, or set both equal for a "
                                "constant ratio).")
        if self.kind == "exponential" and self.decay_rate <= 0:
            raise PAEInputError("decay_rate", "the exponential decay rate must be positive.")

    def __call__(self, t: float) -> float:
        """The fusion ratio at fraction t of the steps."""
        if self.kind == "binary" or self.end <= self.start:
            return self.eta_max if t < self.end else self.eta_min
        if t <= self.start:
            return self.eta_max
        if t >= self.end:
            return self.eta_min
        u = (t - self.start) / (self.end - self.start)
        span = self.eta_max - self.eta_min
        if self.kind == "cosine":
            return self.eta_min + 0.5 * span * (1.0 + math.cos(math.pi * u))
        if self.kind == "linear":
            return self.eta_max - span * u
        k = self.decay_rate
        return self.eta_min + span * (math.exp(-k * u) - math.exp(-k)) / (1.0 - math.exp(-k))
