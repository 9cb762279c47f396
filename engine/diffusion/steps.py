"""DDIM/DDPM step arithmetic shared by inversion and the edit sampler, for ε- and v-prediction models.

One place holds the formulas (DDIM, Song et al. 2021, eq. 12; v-parametrisation, Salimans & Ho 2022), so
inversion and re-denoising use exactly the same numbers and an inverted clip is reproduced to float error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class StepSchedule:
    """The timesteps of an N-step run and the cumulative alphas around each, taken from a diffusers scheduler."""

    timesteps: tuple[float, ...]     # model time of each step, denoising order (high noise first)
    alphas: tuple[float, ...]        # ᾱ at each timestep
    alphas_prev: tuple[float, ...]   # ᾱ at the step each one leads to (the final ᾱ after the last step)
    prediction_type: str
    scheduler_config: dict[str, Any]
    multistep: bool = False          # stochastic steps use DPM-Solver++(2M)'s x̂0 (the model's own solver)

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def make_step_schedule(scheduler: Any, steps: int, prediction_type: str) -> StepSchedule:
    """Timesteps and ᾱ values of a `steps`-step DDIM-style run of the backbone's own scheduler configuration."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    scheduler.set_timesteps(steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    # steps_offset (1 for AudioLDM2 and Tango) puts the first timestep at T itself in a T-step run, past the trained
    # range: shift the run down into it (the schedule steps_offset 0 gives).
    excess = timesteps[0] - (int(scheduler.config.num_train_timesteps) - 1)
    if excess > 0:
        timesteps = [t - excess for t in timesteps]
    cumprod = scheduler.alphas_cumprod.double()
    final = float(getattr(scheduler, "final_alpha_cumprod", cumprod[0]))
    stride = scheduler.config.num_train_timesteps // steps
    alphas = [float(cumprod[t]) for t in timesteps]
    alphas_prev = [float(cumprod[t - stride]) if t - stride >= 0 else final for t in timesteps]
    return StepSchedule(tuple(timesteps), tuple(alphas), tuple(alphas_prev), prediction_type,
                        dict(scheduler.config))


def schedule_from_sigmas(sigmas: list[float], prediction_type: str, config: dict[str, Any],
                         multistep: bool = False) -> StepSchedule:
    """A variance-exploding σ schedule (σ_0 > … > σ_N, last usually 0) as VP steps: ᾱ = 1/(1 + σ²), t = atan(σ)·2/π.

    x_vp = x_ve / √(1 + σ²) turns x_ve = x0 + σ ε into √ᾱ x0 + √(1 − ᾱ) ε, so the DDIM/DDPM formulas below apply;
    t is the model time of the cosine parametrisation (diffusers' CosineDPMSolverMultistepScheduler).
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {prediction_type!r} is not one of {PREDICTION_TYPES}")
    alphas = [1.0 / (1.0 + s * s) for s in sigmas]
    times = [math.atan(s) * 2.0 / math.pi for s in sigmas[:-1]]
    return StepSchedule(tuple(times), tuple(alphas[:-1]), tuple(alphas[1:]), prediction_type, dict(config),
                        multistep)


def split_prediction(output: torch.Tensor, latents: torch.Tensor, alpha: float,
                     prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output at ᾱ as (predicted noise ε̂, predicted clean latent x̂0)."""
    a, s = alpha ** 0.5, (1.0 - alpha) ** 0.5
    if prediction_type == "v_prediction":
        # v = √ᾱ ε − √(1−ᾱ) x0  ⇒  x0 = √ᾱ x − √(1−ᾱ) v,  ε = √ᾱ v + √(1−ᾱ) x
        return a * output + s * latents, a * latents - s * output
    return output, (latents - s * output) / a


def noised(x0: torch.Tensor, noise: torch.Tensor, alpha: float) -> torch.Tensor:
    """A clean latent taken to the noise level ᾱ: x_t = √ᾱ x0 + √(1 − ᾱ) ε (a draw from q(x_t | x0), DDPM eq. 4)."""
    return alpha ** 0.5 * x0 + (1.0 - alpha) ** 0.5 * noise


def ddpm_sigma(alpha: float, alpha_prev: float) -> float:
    """Posterior standard deviation of a DDPM step (DDIM with η = 1)."""
    return max(0.0, (1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev)) ** 0.5


def step_mean(eps: torch.Tensor, x0: torch.Tensor, alpha_prev: float, sigma: float = 0.0) -> torch.Tensor:
    """Mean of x_prev: √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε̂ (σ = 0: deterministic DDIM; σ = ddpm_sigma: DDPM)."""
    return alpha_prev ** 0.5 * x0 + max(0.0, 1.0 - alpha_prev - sigma ** 2) ** 0.5 * eps


def guide(uncond: torch.Tensor, cond: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance, one scale per row: uncond + w (cond − uncond)."""
    return uncond + scales.view(-1, *([1] * (cond.dim() - 1))).to(cond) * (cond - uncond)


def log_snr(alpha: float) -> float:
    """λ = log(√ᾱ / √(1 − ᾱ)), DPM-Solver's time variable (+inf at ᾱ = 1)."""
    return math.inf if alpha >= 1.0 else 0.5 * math.log(alpha / (1.0 - alpha))


def multistep_x0(x0: torch.Tensor, previous_x0: torch.Tensor | None, alpha_before: float, alpha: float,
                 alpha_next: float) -> torch.Tensor:
    """DPM-Solver++(2M)'s clean-latent estimate for the step ᾱ → ᾱ_next: x̂0 + ½ (h / h_prev)(x̂0 − x̂0_prev).

    Lu et al. 2022, midpoint form as in diffusers' CosineDPMSolverMultistepScheduler. First order (x̂0 alone) when
    there is no previous step or the step ends at ᾱ = 1 (the scheduler's lower-order final step).
    """
    if previous_x0 is None or alpha_next >= 1.0 or alpha <= alpha_before:
        return x0
    h = log_snr(alpha_next) - log_snr(alpha)
    h_prev = log_snr(alpha) - log_snr(alpha_before)
    return x0 + 0.5 * (h / h_prev) * (x0 - previous_x0)


def noise_from_x0(latents: torch.Tensor, x0: torch.Tensor, alpha: float) -> torch.Tensor:
    """The ε̂ that together with x̂0 makes up x at ᾱ: (x − √ᾱ x̂0) / √(1 − ᾱ)."""
    return (latents - alpha ** 0.5 * x0) / (1.0 - alpha) ** 0.5


def solver_step(output: torch.Tensor, latents: torch.Tensor, alpha: float, alpha_next: float, sigma: float,
                prediction_type: str, previous: tuple[torch.Tensor, float] | None = None,
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, float]]:
    """Mean of x_next, and (x̂0, ᾱ) to pass as `previous` to the next step for DPM-Solver++(2M).

    previous None: the first-order step (DDIM at σ = 0, the DDPM posterior at σ = ddpm_sigma, which is also
    first-order SDE-DPM-Solver++). With previous: DPM-Solver++(2M), its SDE form when σ = ddpm_sigma.
    """
    eps, x0 = split_prediction(output, latents, alpha, prediction_type)
    estimate = x0
    if previous is not None:
        estimate = multistep_x0(x0, previous[0], previous[1], alpha, alpha_next)
        eps = noise_from_x0(latents, estimate, alpha)
    return step_mean(eps, estimate, alpha_next, sigma), (x0, alpha)
