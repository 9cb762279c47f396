"""Inverting a clip's latent: edit-friendly DDPM inversion (PPAE's choice) and deterministic DDIM inversion.

DDPM ("edit-friendly", Huberman-Spiegelglas et al. 2024): every x_t is drawn independently from q(x_t | x_0);
for each step the residual  n_t = x_{t-1} − μ_t(x_t)  (σ_t z_t in the paper) is stored, so re-denoising with
the source prompt and guidance reproduces x_0 exactly, and the stored x_t are the source branch's own path.
DDIM (Song et al. 2021; as in null-text inversion, without the optimisation): x_0 is run up the deterministic
ODE with the source prompt; re-denoising returns close to x_0 but not exactly.
Both skip the first `skip` of the N steps: editing starts from the middle of the trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core import bridge
from ..core.placement import cpu_randn
from ..backbones.base import Backbone, refuse_audio_prompt
from ..core.errors import PAEInputError
from ..core.checks import (check_clips_per_call, check_guidance, check_seed, check_steps, clean_prompt,
                           cpu_generator)
from ..core.latent import latent_info
from .guidance import chunked_prediction, encode_prompts
from .steps import StepSchedule, ddpm_sigma, noised, solver_step, split_prediction
from ..io.previews import latent_preview

INVERSION_METHODS = ("ddpm", "ddim")


@dataclass
class Inversion:
    """An inverted clip batch: all an edit needs, so ComfyUI can cache it and many edits can reuse it."""

    method: str                     # "ddpm" or "ddim"
    family: str                     # backbone family and model folder that made it
    model: str
    prompt: str                     # the source prompt it was inverted with
    guidance: float                 # inversion (source) guidance
    steps: int                      # N, the whole schedule
    skip: int                       # steps skipped: the edit runs schedule.timesteps[skip:]
    seed: int
    schedule: StepSchedule
    start: torch.Tensor             # [B, C, T', F'] the latent where the edit starts
    trajectory: torch.Tensor | None  # [S + 1, B, C, T', F'] the source path (DDPM: exact; last entry = x_0)
    noise: torch.Tensor | None       # [S, B, C, T', F'] DDPM residuals n_t
    latent: dict[str, Any]          # the source LATENT's bookkeeping (lengths, rate, level) for the edits' outputs

    @property
    def edit_steps(self) -> int:
        return self.steps - self.skip

    @property
    def exact(self) -> bool:
        """True when the stored path is the source branch exactly (re-denoising reproduces it)."""
        return self.method == "ddpm"

    def step(self, index: int) -> tuple[int, float, float]:
        """(timestep, ᾱ_t, ᾱ_prev) of the edit's step `index` (0 = the first step after the skip)."""
        i = self.skip + index
        return self.schedule.timesteps[i], self.schedule.alphas[i], self.schedule.alphas_prev[i]

    def sigma(self, index: int) -> float:
        """Posterior σ of the edit's step `index`: DDPM's for DDPM inversions, 0 (DDIM) otherwise."""
        if self.method != "ddpm":
            return 0.0
        _, alpha, alpha_prev = self.step(index)
        return ddpm_sigma(alpha, alpha_prev)


def _check_settings(steps: int, skip_fraction: float, guidance: float, method: str) -> int:
    if method not in INVERSION_METHODS:
        raise PAEInputError("method", f"'{method}' is not one of {', '.join(INVERSION_METHODS)}.")
    check_steps(steps, "PPAE: 100", lowest=2)
    if not 0.0 <= skip_fraction < 1.0:
        raise PAEInputError("edit_start", f"{skip_fraction:g} must be in [0, 1): the fraction of the steps skipped.")
    check_guidance(guidance)
    skip = min(int(round(steps * skip_fraction)), steps - 1)
    return skip


@torch.no_grad()
def invert(backbone: Backbone, latent: dict[str, Any], prompt: str, *, method: str = "ddpm", steps: int = 100,
           guidance: float = 3.0, edit_start: float = 0.5, seed: int = 0, clips_per_call: int = 0) -> Inversion:
    """Invert a LATENT batch with the source prompt; the result feeds any number of edits. clips_per_call bounds
    how many clips (e.g. a song's windows) go through the denoiser at once (0: all)."""
    info = latent_info(latent, backbone.family, backbone.latent_channels)
    backbone.check_latent_length(latent["samples"])
    refuse_audio_prompt(backbone, "inversion")
    prompt = clean_prompt(prompt)
    if not prompt:
        raise PAEInputError("source_prompt", "describe the clip as it is (e.g. 'a dog barking in the rain'); "
                            "the edit swaps words of this description.")
    skip = _check_settings(int(steps), float(edit_start), float(guidance), method)
    seed = check_seed(seed)
    clips_per_call = check_clips_per_call(clips_per_call)
    schedule = backbone.step_schedule(int(steps))
    backbone.activate("denoiser")
    device = backbone.device
    # Contiguous: a latent in another memory layout (a VAE's channels-last output) takes other convolution kernels
    # than the trajectory stored from it, and the re-denoise would then differ in the last bits, amplified per step.
    x0 = latent["samples"].to(device, torch.float32).contiguous()
    batch = x0.shape[0]
    conditioning = encode_prompts(backbone, [""] * batch + [prompt] * batch, "source_prompt")
    uncond, cond = conditioning.rows(slice(0, batch)), conditioning.rows(slice(batch, 2 * batch))
    scales = torch.full((batch,), float(guidance), device=device)

    def predict(x: torch.Tensor, t: float) -> torch.Tensor:
        return chunked_prediction(backbone, x, t, uncond, cond, scales, clips_per_call)

    run = list(range(skip, steps))
    with bridge.Progress(len(run), f"{method.upper()} inversion") as progress:
        if method == "ddpm":
            trajectory, noise = _invert_ddpm(predict, x0, schedule, run, seed, progress)
        else:
            trajectory, noise = _invert_ddim(predict, x0, schedule, run, progress)
    return Inversion(method=method, family=backbone.family, model=backbone.name, prompt=prompt,
                     guidance=float(guidance), steps=int(steps), skip=skip, seed=int(seed), schedule=schedule,
                     start=trajectory[0].cpu(), trajectory=trajectory.cpu(),
                     noise=None if noise is None else noise.cpu(), latent=info)


def _invert_ddpm(predict, x0, schedule, run, seed, progress):
    # x_t ~ q(x_t | x_0) drawn independently per step, from a CPU generator so a seed means the same on any device.
    generator = cpu_generator(seed)
    path = []
    for i in run:
        alpha = schedule.alphas[i]
        eps = cpu_randn(x0.shape, generator).to(x0.device)
        path.append(noised(x0, eps, alpha))
    path.append(x0)
    noise = []
    previous = None
    for n, i in enumerate(run):
        t, alpha, alpha_prev = schedule.timesteps[i], schedule.alphas[i], schedule.alphas_prev[i]
        output = predict(path[n], t)
        mean, state = solver_step(output, path[n], alpha, alpha_prev, ddpm_sigma(alpha, alpha_prev),
                                  schedule.prediction_type, previous)
        previous = state if schedule.multistep else None
        noise.append(path[n + 1] - mean)
        # ZETA's numerical fix: store x_{t-1} as mean + residual, the very sum the re-denoise computes, so a
        # reconstruction meets bit-identical inputs at every step (mean + (x − mean) is not x in float).
        path[n + 1] = mean + noise[-1]
        progress.step(preview=lambda: latent_preview(state[0][0]))
    return torch.stack(path), torch.stack(noise)


def _invert_ddim(predict, x0, schedule, run, progress):
    # Walk the schedule backwards: from x_0 up to the first edit step, using ε̂(x, t_next) as null-text inversion does.
    x = x0
    path = [x0]
    for i in reversed(run):
        t, alpha, alpha_prev = schedule.timesteps[i], schedule.alphas[i], schedule.alphas_prev[i]
        output = predict(x, t)
        # The model reads x as if at t; convert with the ᾱ at t so v-prediction is handled too.
        eps, _ = split_prediction(output, x, alpha, schedule.prediction_type)
        pred_x0 = (x - (1.0 - alpha_prev) ** 0.5 * eps) / alpha_prev ** 0.5
        x = noised(pred_x0, eps, alpha)
        path.append(x)
        progress.step(preview=lambda: latent_preview(pred_x0[0]))
    return torch.stack(path[::-1]), None
