"""ZETA's text edit (Manor & Michaeli 2024, zero-shot editing with DDPM inversion): re-denoise an edit-friendly
DDPM inversion with a target prompt and target guidance, the stored noise maps added back at every step and the
attention left alone. It is PPAE's edit sampler without an attention edit, so it runs on the same branches; with the
source prompt and guidance it reproduces the clip.
"""

from __future__ import annotations

from typing import Any

import torch

from ..backbones.base import Backbone
from ..core import bridge
from ..core.checks import clean_prompt
from ..core.errors import PAEInputError
from .ppae import candidates_latent, check_inversion, parse_guidance_scales, run_branches


def redenoise(backbone: Backbone, inversion: Any, prompt: str | None = None, guidance: float | None = None,
              ) -> dict[str, Any]:
    """Denoise an inversion without any edit (the source prompt and guidance by default: reconstructs the clip)."""
    inversion = check_inversion(backbone, inversion)
    prompt = inversion.prompt if prompt is None else prompt
    return prompt_edit(backbone, inversion, prompt, [inversion.guidance if guidance is None else float(guidance)])


def prompt_edit(backbone: Backbone, inversion: Any, target_prompt: str,
                guidance_scales: str | list[float] = "12") -> dict[str, Any]:
    """ZETA's text edit: re-denoise with the target prompt and the inversion's noise; one candidate per scale."""
    inversion = check_inversion(backbone, inversion)
    target_prompt = clean_prompt(target_prompt)
    if not target_prompt:
        raise PAEInputError("target_prompt", "describe what the clip should become, e.g. 'a cat meowing in the rain'.")
    scales = parse_guidance_scales(guidance_scales) if isinstance(guidance_scales, str) else list(guidance_scales)
    backbone.activate("denoiser")
    clips = inversion.start.shape[0]
    with bridge.Progress(clips * inversion.edit_steps, "ZETA edit") as progress:  # clips x steps
        samples = torch.cat([run_branches(backbone, inversion, b, target_prompt, scales, prompt_input="target_prompt",
                                          progress=progress)[0] for b in range(clips)])
    return candidates_latent(inversion, samples, scales, target_prompt)
