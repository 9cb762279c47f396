"""SAO-Instruct (arXiv 2510.22795): edit a clip by a free-form instruction with Stable Audio Open's fine-tune.

The DiT reads the noisy latent and the clip's latent stacked on channels (64 + 64). Editing starts from the clip's
latent noised to `noise_level` (stable-audio-tools' init_noise_level: x = z + σ ε), and denoises on the model's
own σ schedule from there down to σ_min with DPM-Solver++(2M) SDE (the solver of Stable Audio Open's diffusers
scheduler), conditioned on the instruction and the clip's duration; the clip's latent conditions every step of
both guidance halves.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core import bridge
from ..core.placement import cpu_randn
from ..backbones.base import Backbone
from ..core.errors import PAEInputError
from ..core.checks import (check_clips_per_call, check_guidance, check_seed, check_steps, clean_prompt,
                           cpu_generator)
from ..diffusion.guidance import chunked_prediction, encode_prompts
from ..core.latent import latent_info, latent_with_info
from ..diffusion.steps import ddpm_sigma, noised, solver_step
from ..io.previews import latent_preview

# The paper's inference settings.
DEFAULT_STEPS = 100
DEFAULT_GUIDANCE = 5.0
# Not given in the paper. 1.0 is stable-audio-tools' default init_noise_level for audio-to-audio, the code base
# SAO-Instruct was trained and sampled with; at σ = 1 half the latent's variance is noise (ᾱ = 0.5), enough room
# to add or remove a sound while timing and most of the texture survive. Up to σ_max (500) the start is pure noise
# and the clip enters only through the channel concatenation.
DEFAULT_NOISE_LEVEL = 1.0
MAX_ROWS = 64


def instruct_model(backbone: Any, input_name: str = "model") -> Any:
    """The backbone, if it is SAO-Instruct; otherwise say what it is and what to load instead."""
    from ..backbones.stable_audio import StableAudioBackbone

    if not isinstance(backbone, StableAudioBackbone):
        family = getattr(backbone, "family", type(backbone).__name__)
        raise PAEInputError(input_name, f"this is a {family} model; instruction editing needs SAO-Instruct (a Stable "
                            "Audio Open DiT fine-tuned with the clip's latent as extra input); load it with Load "
                            "SAO-Instruct (PAE).")
    if not backbone.instruct:
        raise PAEInputError(input_name, f"'{backbone.name}' is Stable Audio Open: its DiT takes {backbone.in_channels} "
                            f"input channels, but SAO-Instruct's takes {2 * backbone.latent_channels} (the noisy "
                            "latent and the clip's latent); load an SAO-Instruct checkpoint.")
    return backbone


def list_instruct_models() -> list[str]:
    """Models that can be SAO-Instruct: single-file checkpoints whose DiT takes 128 channels (read from the header),
    diffusers Stable Audio folders whose DiT does, and stable-audio-tools folders (checked on load)."""
    from ..core import loading
    from ..core.files import read_json_dict
    from ..backbones.registry import find_model_folder, list_models
    from ..backbones.stable_audio_checkpoint import is_stable_audio_tools_folder, safetensors_header

    found = []
    for name in list_models(("checkpoints",)):  # single files: the DiT reads twice the channels it writes
        header = safetensors_header(loading.find_model("checkpoints", name.partition("/")[2], "model_name", "",
                                                       folder=False))
        tensors = header.tensors if header else {}
        pre = tensors.get("model.model.preprocess_conv.weight", {}).get("shape", ())
        post = tensors.get("model.model.postprocess_conv.weight", {}).get("shape", ())
        if len(pre) == 3 and len(post) == 3 and pre[1] == 2 * post[0]:  # input: noisy latent + the clip's latent
            found.append(name)
    for name in list_models(("diffusers",)):
        folder = find_model_folder(name)
        config = read_json_dict(folder / "transformer" / "config.json") or {}
        if is_stable_audio_tools_folder(folder) or config.get("_class_name") == "StableAudioDiTModel" and \
                int(config.get("in_channels", 0)) == 2 * int(config.get("out_channels", 64)):
            found.append(name)
    return found


def load_instruct_model(model_name: str, dtype_name: str = "auto") -> Any:
    """Load an SAO-Instruct model (diffusers folder or stable-audio-tools checkpoint), refusing anything else."""
    from ..backbones.registry import load_backbone

    return instruct_model(load_backbone(model_name, dtype_name), "model_name")


def parse_instructions(text: str) -> list[str]:
    """One instruction per non-empty line ('add rain in the background')."""
    instructions = [clean_prompt(line) for line in str(text).splitlines()]
    instructions = [i for i in instructions if i]
    if not instructions:
        raise PAEInputError("instruction", "write what to change, e.g. 'add rain in the background'; several "
                            "instructions go one per line.")
    return instructions


def _check(backbone: Backbone, steps: int, guidance: float, noise_level: float, batch_size: int, rows: int) -> None:
    sigma_max = float(backbone.scheduler_config.get("sigma_max", 500.0))
    check_steps(steps, "SAO-Instruct: 100")
    check_guidance(guidance, note=" (SAO-Instruct: 5)")
    if not 0.0 <= noise_level <= sigma_max:
        raise PAEInputError("noise_level", f"{noise_level:g} is outside 0..{sigma_max:g} (σ of the noise added to the "
                            f"clip's latent; {DEFAULT_NOISE_LEVEL:g} by default, {sigma_max:g} = pure noise).")
    if batch_size < 1:
        raise PAEInputError("batch_size", f"{batch_size}: use at least 1.")
    if rows > MAX_ROWS:
        raise PAEInputError("batch_size", f"{rows} edits (clips x instructions x batch_size) in one batch; at most "
                            f"{MAX_ROWS}. Split the instructions or lower batch_size.")


@torch.no_grad()
def instruct_edit(backbone: Any, latent: dict[str, Any], instruction: str, *, negative: str = "",
                  steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
                  noise_level: float = DEFAULT_NOISE_LEVEL, seed: int = 0, batch_size: int = 1,
                  clips_per_call: int = 0) -> dict[str, Any]:
    """Edit every clip by every instruction, batch_size seeds each (seed, seed + 1, ...); a LATENT batch, clip-major.
    clips_per_call bounds how many rows go through the DiT at once (0: all)."""
    backbone = instruct_model(backbone)
    info = latent_info(latent, backbone.family, backbone.latent_channels)
    backbone.check_latent_length(latent["samples"])
    instructions = parse_instructions(instruction)
    seed = check_seed(seed)
    clips = latent["samples"].shape[0]
    plan = [(c, i, k) for c in range(clips) for i in range(len(instructions)) for k in range(int(batch_size))]
    _check(backbone, int(steps), float(guidance), float(noise_level), int(batch_size), len(plan))
    clips_per_call = check_clips_per_call(clips_per_call)
    backbone.activate("denoiser")
    device = backbone.device
    clip_latents = latent["samples"].to(device, torch.float32)[[c for c, _, _ in plan]].contiguous()
    samples = clip_latents
    if noise_level > 0.0:
        samples = _denoise(backbone, clip_latents, instructions, plan, negative, int(steps), float(guidance),
                           float(noise_level), int(seed), int(batch_size), clips_per_call)
    out = {k: v for k, v in info.items() if k != "candidates"}
    gain = info.get("gain")
    if isinstance(gain, torch.Tensor) and gain.numel() == clips:
        out["gain"] = gain[[c for c, _, _ in plan]]
    out["candidates"] = [{"clip": c, "instruction": instructions[i], "target_prompt": instructions[i],
                          "seed": int(seed) + k, "noise_level": float(noise_level)} for c, i, k in plan]
    return latent_with_info(samples.cpu(), out)


def _denoise(backbone: Any, clip_latents: torch.Tensor, instructions: list[str], plan: list[tuple[int, int, int]],
             negative: str, steps: int, guidance: float, noise_level: float, seed: int, seeds: int,
             clips_per_call: int) -> torch.Tensor:
    device = clip_latents.device
    schedule = backbone.step_schedule(steps, sigma_start=noise_level)
    # One CPU generator per seed: row k of every clip and instruction sees the same noise, on any device.
    generators = [cpu_generator(seed, k) for k in range(seeds)]
    shape = tuple(clip_latents.shape[1:])

    def draw() -> torch.Tensor:
        per_seed = torch.stack([cpu_randn(shape, g) for g in generators])
        return per_seed[[k for _, _, k in plan]].to(device)

    x = noised(clip_latents, draw(), schedule.alphas[0])  # z + σ ε, in the model's VP form
    text = encode_prompts(backbone, [clean_prompt(negative)] + instructions, "instruction")
    uncond = text.rows([0] * len(plan))
    cond = text.rows([1 + i for _, i, _ in plan])
    scales = torch.full((len(plan),), guidance, device=device)
    previous = None
    with bridge.Progress(schedule.steps, "Instruct edit") as progress:
        for n in range(schedule.steps):
            t, alpha, alpha_next = schedule.timesteps[n], schedule.alphas[n], schedule.alphas_prev[n]
            output = chunked_prediction(backbone, x, t, uncond, cond, scales, clips_per_call, clip_latents)
            sigma = ddpm_sigma(alpha, alpha_next)
            x, previous = solver_step(output, x, alpha, alpha_next, sigma, schedule.prediction_type, previous)
            if sigma > 0.0:
                x = x + sigma * draw()
            progress.step(preview=lambda: latent_preview(previous[0][0]))
    return x
