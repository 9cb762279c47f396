"""Sampling audio from a prompt with DDIM (η = 0): from noise, or from a clip's latent at a chosen denoise.

Works with any backbone, and with a model carrying an AP-Adapter audio prompt: then the conditional rows carry the
clip's audio tokens and the unconditional rows the silent prompt's (the reference's unconditional branch).
`denoise` follows ComfyUI's KSampler: the schedule is laid out for steps / denoise steps and the last `steps` run,
starting from the clip's latent noised to that level.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import bridge
from ..core.placement import CPU, cpu_randn
from ..methods.ap_adapter import audio_prompt_attention
from ..backbones.base import Backbone
from ..core.errors import PAEInputError
from ..core.checks import check_clips_per_call, check_guidance, check_steps, clean_prompt, cpu_generator
from .guidance import chunked_prediction, encode_prompt_pair
from ..core.latent import latent_info, latent_with_info, make_latent
from .steps import noised, split_prediction, step_mean
from ..io.previews import latent_preview

MAX_BATCH = 64


def _check(backbone: Backbone, steps: int, guidance: float, batch_size: int, seconds: float, denoise: float,
           has_latent: bool) -> int:
    check_steps(steps, "AP-Adapter: 50")
    check_guidance(guidance)
    if not 1 <= batch_size <= MAX_BATCH:
        raise PAEInputError("batch_size", f"{batch_size}: use 1..{MAX_BATCH}.")
    if not has_latent and not 0.0 < seconds <= backbone.max_duration_s:
        raise PAEInputError("seconds", f"{seconds:g} s: {backbone.family} generates up to "
                            f"{backbone.duration_limit()}.")
    if not 0.0 < denoise <= 1.0:
        raise PAEInputError("denoise", f"{denoise:g} must be in (0, 1]: 1 generates from noise, lower keeps more of "
                            "the input latent.")
    total = int(steps / denoise) if has_latent else steps
    if total > 1000:
        raise PAEInputError("denoise", f"{steps} steps at denoise {denoise:g} need a {total}-step schedule, longer "
                            "than the model's 1000; raise denoise or lower steps.")
    return total


def _clip_count(prompt_clips: int, latent_clips: int) -> int:
    if prompt_clips > 1 and latent_clips > 1 and prompt_clips != latent_clips:
        raise PAEInputError("latent", f"the latent holds {latent_clips} clips but the audio prompt {prompt_clips}; "
                            "give one of them a single clip, or the same number of clips to pair them.")
    return max(prompt_clips, latent_clips)


@torch.no_grad()
def sample(backbone: Backbone, positive: str, negative: str = "", *, steps: int = 50, guidance: float = 3.5,
           seed: int = 0, batch_size: int = 1, seconds: float = 10.0, latent: dict[str, Any] | None = None,
           denoise: float = 1.0, clips_per_call: int = 0) -> dict[str, Any]:
    """Generate batch_size clips per clip (of the audio prompt or the latent); returns a LATENT batch, clip-major.
    clips_per_call bounds how many rows go through the denoiser at once (0: all)."""
    info = None if latent is None else latent_info(latent, backbone.family, backbone.latent_channels)
    if latent is not None:
        backbone.check_latent_length(latent["samples"])
    total = _check(backbone, int(steps), float(guidance), int(batch_size), float(seconds), float(denoise),
                   latent is not None)
    clips_per_call = check_clips_per_call(clips_per_call)
    prompt = backbone.audio_prompt
    clips = _clip_count(prompt.clips if prompt is not None else 1, 1 if latent is None else latent["samples"].shape[0])
    rows = clips * int(batch_size)
    clip_of_row = [r // int(batch_size) for r in range(rows)]
    backbone.activate("denoiser")
    device = backbone.device
    schedule = backbone.step_schedule(total)
    first = total - int(steps)

    if latent is None:
        num_samples = max(1, int(round(float(seconds) * backbone.sample_rate)))
        shape = backbone.latent_shape(num_samples)
    else:
        shape = tuple(latent["samples"].shape[1:])
    # One CPU generator for the whole batch: a seed gives the same noise on any device, with or without the adapter.
    noise = cpu_randn((rows, *shape), cpu_generator(seed)).to(device)
    if latent is None or first == 0:
        x = noise
    else:
        source = latent["samples"].to(device, torch.float32).contiguous()
        x0 = source[[c if source.shape[0] > 1 else 0 for c in clip_of_row]]
        x = noised(x0, noise, schedule.alphas[first])

    text = encode_prompt_pair(backbone, clean_prompt(positive), clean_prompt(negative))
    uncond, cond = text.rows([0] * rows), text.rows([1] * rows)
    if prompt is not None:
        uncond = prompt.extend(uncond, [None] * rows)
        cond = prompt.extend(cond, [c if prompt.clips > 1 else 0 for c in clip_of_row])
    scales = torch.full((rows,), float(guidance), device=device)
    run = range(first, total)
    with bridge.Progress(len(run), "Sampling") as progress, audio_prompt_attention(backbone) as control:
        for n, i in enumerate(run):
            if control is not None:
                control.begin_step(n, len(run))
            output = chunked_prediction(backbone, x, schedule.timesteps[i], uncond, cond, scales, clips_per_call)
            eps, pred_x0 = split_prediction(output, x, schedule.alphas[i], schedule.prediction_type)
            x = step_mean(eps, pred_x0, schedule.alphas_prev[i])
            progress.step(preview=lambda: latent_preview(pred_x0[0]))
    return _output_latent(backbone, x, info, clip_of_row, seconds)


def _output_latent(backbone: Backbone, samples: torch.Tensor, info: dict[str, Any] | None, clip_of_row: list[int],
                   seconds: float) -> dict[str, Any]:
    rows = samples.shape[0]
    if not info:  # from noise, or from a latent with no record (core's Empty Latent Audio): its length counts
        num_samples = max(1, int(round(float(seconds) * backbone.sample_rate))) if info is None else \
            backbone.num_samples_of(tuple(samples.shape[1:]))
        return make_latent(samples.cpu(), family=backbone.family, model=backbone.name,
                           sample_rate=backbone.sample_rate, num_samples=num_samples,
                           source_sample_rate=backbone.sample_rate, source_num_samples=num_samples,
                           source_channels=backbone.channels, gain=torch.ones(rows, device=CPU))
    info = {k: v for k, v in info.items() if k != "candidates"}
    gain = info.get("gain")
    if isinstance(gain, torch.Tensor) and gain.numel() > 1:
        info["gain"] = gain[clip_of_row]
    elif isinstance(gain, torch.Tensor):
        info["gain"] = gain.reshape(-1)[:1].repeat(rows)
    return latent_with_info(samples.cpu(), info)
