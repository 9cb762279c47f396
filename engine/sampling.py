"""DDIM/DDPM step arithmetic shared by inversion and the edit sampler, for ε- and v-prediction models.

One place holds the formulas (DDIM, Song et al. 2021, eq. 12; v-parametrisation, Salimans & Ho 2022), so
inversion and re-denoising use exactly the same numbers and an inverted clip is reproduced to float error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class StepSchedule:
    """The timesteps of an N-step run and the cumulative alphas around each, taken from a diffusers scheduler."""

    timesteps: tuple[int, ...]       # denoising order (high noise first)
    alphas: tuple[float, ...]        # ᾱ at each timestep
    alphas_prev: tuple[float, ...]   # ᾱ at the step each one leads to (the final ᾱ after the last step)
    prediction_type: str
    scheduler_config: dict[str, Any]

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def make_step_schedule(scheduler: Any, steps: int, prediction_type: str) -> StepSchedule:
    """Timesteps and ᾱ values of a `steps`-step DDIM-style run of the backbone's own scheduler configuration."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    cumprod = scheduler.alphas_cumprod.double()
    final = float(getattr(scheduler, "final_alpha_cumprod", cumprod[0]))
    stride = scheduler.config.num_train_timesteps // steps
    alphas = [float(cumprod[t]) for t in timesteps]
    alphas_prev = [float(cumprod[t - stride]) if t - stride >= 0 else final for t in timesteps]
    return StepSchedule(tuple(timesteps), tuple(alphas), tuple(alphas_prev), prediction_type,
                        dict(scheduler.config))


def split_prediction(output: torch.Tensor, latents: torch.Tensor, alpha: float,
                     prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output at ᾱ as (predicted noise ε̂, predicted clean latent x̂0)."""
    a, s = alpha ** 0.5, (1.0 - alpha) ** 0.5
    if prediction_type == "v_prediction":
        # v = √ᾱ ε − √(1−ᾱ) x0  ⇒  x0 = √ᾱ x − √(1−ᾱ) v,  ε = √ᾱ v + √(1−ᾱ) x
        return a * output + s * latents, a * latents - s * output
    return output, (latents - s * output) / a


def ddpm_sigma(alpha: float, alpha_prev: float) -> float:
    """Posterior standard deviation of a DDPM step (DDIM with η = 1)."""
    return max(0.0, (1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev)) ** 0.5


def step_mean(eps: torch.Tensor, x0: torch.Tensor, alpha_prev: float, sigma: float = 0.0) -> torch.Tensor:
    """Mean of x_prev: √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε̂ (σ = 0: deterministic DDIM; σ = ddpm_sigma: DDPM)."""
    return alpha_prev ** 0.5 * x0 + max(0.0, 1.0 - alpha_prev - sigma ** 2) ** 0.5 * eps


def guide(uncond: torch.Tensor, cond: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance, one scale per row: uncond + w (cond − uncond)."""
    return uncond + scales.view(-1, *([1] * (cond.dim() - 1))).to(cond) * (cond - uncond)
