"""PPAE's edit sampler: source and K target branches in one batch, edited attention fused in on a schedule.

Rows of the batch for one clip:  [target uncond × K, (source uncond), source cond, target cond × K].
The source branch of a DDPM inversion is known exactly (its stored path), so it needs no prediction of its own,
only its conditional row for the attention maps; a DDIM inversion's source branch is denoised alongside.
Every target uses the same source maps, so K guidance scales cost K + 1 rows, not 2K.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..core import bridge
from ..attention.alignment import positional_mapping, token_word_spans, word_stream_mapping
from ..attention.control import (BLEND_MAPS, AttentionRecording, BranchLayout, FusionController,
                                 attention_control)
from ..attention.edit import AttentionEdit, find_phrase, prompt_words
from ..io.previews import attention_map_images, latent_preview
from ..backbones.base import Backbone, refuse_audio_prompt
from ..core.errors import PAEInputError
from ..core.checks import check_guidance
from ..attention.schedule import FusionSchedule
from ..diffusion.guidance import encode_prompts
from ..diffusion.inversion import Inversion
from ..core.latent import latent_with_info
from ..diffusion.steps import guide, solver_step

# P2P's LocalBlend starts blending after 20 % of the steps; PPAE does not say.
DEFAULT_BLEND_START = 0.2
MAX_CANDIDATES = 16


def parse_guidance_scales(text: str) -> list[float]:
    """'3, 7.5, 12' -> [3.0, 7.5, 12.0] (guidance bootstrapping: one candidate per scale)."""
    try:
        scales = [float(s) for s in str(text).replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise PAEInputError("guidance_scales", f"'{text}' is not a comma-separated list of numbers, e.g. "
                            "'3, 6, 12, 18, 25'.") from None
    if not scales:
        raise PAEInputError("guidance_scales", "give at least one guidance scale, e.g. '12' or '3, 6, 12, 18, 25'.")
    if len(scales) > MAX_CANDIDATES:
        raise PAEInputError("guidance_scales", f"{len(scales)} scales; at most {MAX_CANDIDATES} run in one batch.")
    for scale in scales:
        check_guidance(scale, "guidance_scales")
    return scales


def check_inversion(backbone: Backbone, inversion: Any) -> Inversion:
    """The inversion, if this model made it (and carries no audio prompt); otherwise say what to connect."""
    refuse_audio_prompt(backbone, "the PPAE edit")
    if not isinstance(inversion, Inversion):
        raise PAEInputError("inversion", "expected the output of DDIM/DDPM Invert.")
    if inversion.family != backbone.family or inversion.model != backbone.name:
        raise PAEInputError("inversion", f"this inversion was made with {inversion.family} '{inversion.model}' but "
                            f"the model here is {backbone.family} '{backbone.name}'; invert with the same model.")
    return inversion


def _stream_mappings(backbone: Backbone, edit: AttentionEdit, conditioning, source_row: int, target_row: int):
    word = backbone.word_stream
    length = conditioning.streams[word].shape[1]
    tokens = conditioning.tokens[word]
    mappings = {word: word_stream_mapping(edit, tokens[source_row], tokens[target_row], length)}
    if edit.streams == "all":
        for name, stream in conditioning.streams.items():
            if name != word:
                mask = conditioning.masks.get(name)
                real = stream.shape[1] if mask is None else int(mask[source_row].sum())
                mappings[name] = positional_mapping(real, stream.shape[1])
    return mappings


@torch.no_grad()
def run_branches(backbone: Backbone, inversion: Inversion, clip: int, target_prompt: str, scales: list[float],
                 edit: AttentionEdit | None = None, schedule: FusionSchedule | None = None,
                 blend_threshold: float = 0.0, blend_start: float = DEFAULT_BLEND_START,
                 preview: bool = False, prompt_input: str = "attention_edit", progress: Any = None,
                 blend_maps: str = BLEND_MAPS[0]) -> tuple[torch.Tensor, list[tuple[str, torch.Tensor]]]:
    """Denoise one clip's K target branches from its inversion (with the edit, when given); returns [K, C, T', F'].
    prompt_input names the node input a prompt the text encoder refuses came from; progress, a bridge.Progress
    shared by every clip of a batch (clips x steps), else one of this clip's own."""
    device = backbone.device
    count = len(scales)
    steps = inversion.edit_steps
    with_source = edit is not None
    source_predicted = with_source and not inversion.exact
    source_scale_row = source_predicted and inversion.guidance != 1.0
    # Row plan: prompts per row, and which rows are the branches' uncond / cond halves.
    prompts = [""] * count + ([""] if source_scale_row else [])
    source_cond = len(prompts) if with_source else None
    prompts += [inversion.prompt] if with_source else []
    target_cond = list(range(len(prompts), len(prompts) + count))
    prompts += [target_prompt] * count
    conditioning = encode_prompts(backbone, prompts, prompt_input)
    start = inversion.start[clip:clip + 1].to(device, torch.float32)
    targets = start.repeat(count, *[1] * (start.dim() - 1))
    source = start
    target_scales = torch.tensor(scales, device=device, dtype=torch.float32)

    controller = None
    if with_source:
        recording = AttentionRecording()
        word = backbone.word_stream
        source_words, target_words = edit.edited_words()
        source_groups = [g for _, g in token_word_spans(conditioning.tokens[word][source_cond], edit.source_prompt)]
        target_spans = token_word_spans(conditioning.tokens[word][target_cond[0]], edit.target_prompt)
        if blend_threshold > 0.0:
            recording.blend_tokens[source_cond] = [p for i in source_words for p in source_groups[i]]
            for row in target_cond:
                recording.blend_tokens[row] = [p for i in target_words for p in target_spans[i][1]]
        if preview:
            recording.preview_row = target_cond[0]
            recording.word_tokens = [g for _, g in target_spans]
        target_words = prompt_words(edit.target_prompt)
        word_columns = [([p for i in find_phrase(target_words, phrase) for p in target_spans[i][1]], fraction)
                        for phrase, fraction in edit.word_windows]
        grid = backbone.attention_grid(tuple(start.shape))
        controller = FusionController(edit, schedule or FusionSchedule(),
                                         _stream_mappings(backbone, edit, conditioning, source_cond, target_cond[0]),
                                         BranchLayout(source_cond, target_cond), grid, word, recording,
                                         backbone.query_prefix, backbone.single_resolution, blend_maps,
                                         word_columns)

    control = attention_control(backbone.denoiser, backbone.cross_attention_sites(), controller) \
        if controller is not None else contextlib.nullcontext()
    history = {"targets": None, "source": None}  # each branch's previous x̂0 for a multistep solver
    shared = progress is not None
    progress = progress if shared else bridge.Progress(steps, "PPAE edit")
    with control, contextlib.nullcontext() if shared else progress:
        for n in range(steps):
            t, alpha, alpha_prev = inversion.step(n)
            sigma = inversion.sigma(n)
            if controller is not None:
                controller.begin_step(n, steps)
            rows = [targets]
            if source_scale_row:
                rows.append(source)
            if with_source:
                rows.append(source)
            rows.append(targets)
            output = backbone.predict(torch.cat(rows), t, conditioning).float()
            guided = guide(output[:count], output[target_cond[0]:], target_scales)
            targets, history["targets"], predicted = _step(guided, targets, alpha, alpha_prev, sigma, inversion,
                                                           clip, n, device, history["targets"])
            if source_predicted:
                src_out = output[source_cond:source_cond + 1]
                if source_scale_row:
                    src_out = guide(output[count:count + 1], src_out,
                                    torch.tensor([inversion.guidance], device=device))
                source, history["source"], _ = _step(src_out, source, alpha, alpha_prev, sigma, inversion, clip, n,
                                                     device, history["source"])
            elif with_source:
                source = inversion.trajectory[n + 1, clip:clip + 1].to(device, torch.float32)
            # From step int(start · N) on, as Prompt-to-Prompt's LocalBlend counts.
            if controller is not None and blend_threshold > 0.0 and n >= int(blend_start * steps):
                masks = controller.blend_masks(blend_threshold)
                if masks is not None:
                    targets = source + masks.reshape(count, 1, *targets.shape[2:]) * (targets - source)
            progress.step(preview=lambda: latent_preview(predicted[0]))
    maps = []
    if controller is not None and preview and controller.recording.preview_sum is not None:
        rec = controller.recording
        mean = rec.preview_sum / rec.preview_count
        maps = [(word_text, mean[i].cpu()) for i, (word_text, _) in enumerate(target_spans)]
    return targets, maps


def _step(output, latents, alpha, alpha_prev, sigma, inversion, clip, n, device, previous):
    # A DDPM inversion made with the model's multistep solver is re-denoised with it too (the same means).
    multistep = inversion.schedule.multistep and inversion.noise is not None
    mean, state = solver_step(output, latents, alpha, alpha_prev, sigma, inversion.schedule.prediction_type,
                              previous if multistep else None)
    if inversion.noise is not None:
        mean = mean + inversion.noise[n, clip:clip + 1].to(device, torch.float32)
    return mean, state if multistep else None, state[0]


def candidates_latent(inversion: Inversion, samples: torch.Tensor, scales: list[float], target_prompt: str,
                      ) -> dict[str, Any]:
    """The candidates as one LATENT batch (clip-major), each row's clip, guidance and prompts recorded."""
    batch = inversion.start.shape[0]
    info = dict(inversion.latent)
    if isinstance(info.get("gain"), torch.Tensor):
        info["gain"] = info["gain"].repeat_interleave(len(scales))
    info["candidates"] = [{"clip": b, "guidance": s, "target_prompt": target_prompt, "source_prompt": inversion.prompt}
                          for b in range(batch) for s in scales]
    return latent_with_info(samples.cpu(), info)


def fuse_edit(backbone: Backbone, inversion: Any, edit: Any, *, guidance_scales: str | list[float] = "12",
              schedule: FusionSchedule | None = None, local_blend: float = 0.0,
              blend_start: float = DEFAULT_BLEND_START, attention_maps: bool = True,
              blend_maps: str = BLEND_MAPS[0]) -> tuple[dict[str, Any], torch.Tensor]:
    """The Fuser: edit every clip of an inversion, one candidate per guidance scale; LATENT batch + per-word maps."""
    inversion = check_inversion(backbone, inversion)
    if not isinstance(edit, AttentionEdit):
        raise PAEInputError("attention_edit", "expected the output of Attention Controller.")
    edit = edit.bind(inversion.prompt)
    scales = parse_guidance_scales(guidance_scales) if isinstance(guidance_scales, str) else list(guidance_scales)
    if not 0.0 <= local_blend < 1.0:
        raise PAEInputError("local_blend", f"{local_blend:g}: use 0 (off) or a threshold below 1 (P2P: 0.3).")
    if not 0.0 <= blend_start <= 1.0:
        raise PAEInputError("blend_start", f"{blend_start:g} is not a fraction of the steps; use 0..1.")
    if blend_maps not in BLEND_MAPS:
        raise PAEInputError("blend_maps", f"'{blend_maps}' is not one of {', '.join(BLEND_MAPS)}.")
    backbone.activate("denoiser")
    samples, maps = [], []
    clips = inversion.start.shape[0]
    # An edit that changes nothing, at the inversion's own guidance, is the re-denoise: run in the inversion's row
    # layout it returns the clip exactly, where a source row beside it would let a UNet's batch-dependent rounding
    # grow over the steps (~1e-2 after 200). It has no edited word, so no maps are drawn.
    plain = edit.changes_nothing() and all(scale == inversion.guidance for scale in scales)
    with bridge.Progress(clips * inversion.edit_steps, "PPAE edit") as progress:  # windows x steps for a song
        for clip in range(clips):
            latents, clip_maps = run_branches(backbone, inversion, clip, edit.target_prompt, scales,
                                              None if plain else edit, schedule,
                                              local_blend, blend_start, preview=attention_maps and clip == 0,
                                              progress=progress, blend_maps=blend_maps)
            samples.append(latents)
            maps = maps or clip_maps
    latent = candidates_latent(inversion, torch.cat(samples), scales, edit.target_prompt)
    return latent, attention_map_images(maps, backbone.attention_grid(tuple(inversion.start.shape)))
