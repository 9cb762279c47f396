"""Attention control: a controller (plain state and policy) and the diffusers processors that consult it.

The batch holds the source branch and K target branches (one per guidance scale). In the target's conditional
rows the controller fuses the edited attention in with ratio S(t); everything else attends as usual.
Edits are linear in the key axis, so they act on the values and run on fused SDPA kernels:
    source_map @ M @ V_t  =  SDPA(q_src, k_src, M V_t)
with the K targets' values stacked along the feature axis (one SDPA call reads the source map for all K).
Maps are materialised only for the local blend and for per-word previews (cross-attention, small).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import torch
import torch.nn.functional as F

from .alignment import TokenMapping
from .processors import close_attention, open_attention, processors_installed, project_keys
from .edit import AttentionEdit
from ..backbones.base import CrossAttentionSite, processor_name
from .schedule import FusionSchedule


class StepController(Protocol):
    """The per-run attention policy every method has (PPAE's FusionController, EditGenController,
    AudioPromptController): plain state that the installed processors consult, told where the run is before each
    denoiser call. Installing it and removing it leaves the model as it was."""

    def begin_step(self, index: int, total: int) -> None:
        """Step `index` of `total` is next: set this step's ratios and windows."""


@dataclass
class BranchLayout:
    """Where each branch sits in the batch (indices into the rows the denoiser sees)."""

    source_cond: int
    target_cond: list[int]


@dataclass
class AttentionRecording:
    """Cross-attention maps gathered during a run, on the latent grid: for the local blend and for previews."""

    blend_tokens: dict[int, list[int]] = field(default_factory=dict)  # row -> word-stream key positions
    word_tokens: list[list[int]] = field(default_factory=list)        # preview: key positions of each word
    preview_row: int | None = None
    blend_sum: torch.Tensor | None = None    # [rows, T', F'] this step (blend_maps "this step, every layer")
    blend_count: int = 0
    blend_levels: dict[int, torch.Tensor] = field(default_factory=dict)  # downsampling -> [rows, h, w], all steps
    preview_sum: torch.Tensor | None = None  # [words, T', F'] all steps
    preview_count: int = 0


def site_grid(latent_grid: tuple[int, int], queries: int) -> tuple[int, int, int]:
    """Time x frequency shape of a layer's queries and its downsampling: the latent grid halved (rounding up) until
    it fits.
    """
    height, width = latent_grid
    downsampling = 1
    while height * width > queries and (height > 1 or width > 1):
        height, width = math.ceil(height / 2), math.ceil(width / 2)
        downsampling *= 2
    if height * width != queries:
        raise RuntimeError(f"cannot place {queries} queries on the latent grid {latent_grid}")
    return height, width, downsampling


# The local blend's maps: Prompt-to-Prompt's (every step so far, at the layers of 1/4 the latent's resolution, pooled
# there and enlarged nearest-neighbour) or the pack's former (this step's maps from every layer, on the latent grid).
BLEND_MAPS = ("all steps, 1/4 resolution", "this step, every layer")
_BLEND_DOWNSAMPLING = 4


def window_steps(fraction: float, steps: int, cross: bool) -> int:
    """Steps a window of `fraction` covers, counted as Prompt-to-Prompt does: int(w · (N + 1)) for the cross window
    (its per-step alphas have N + 1 rows), int(w · N) for the self window."""
    return int(fraction * (steps + 1)) if cross else int(fraction * steps)


class FusionController:
    """PPAE's StepController: which rows, which keys, how strongly the edited attention is fused in, at which step."""

    def __init__(self, edit: AttentionEdit, schedule: FusionSchedule, mappings: dict[str, TokenMapping],
                 layout: BranchLayout, latent_grid: tuple[int, int], word_stream: str,
                 recording: AttentionRecording | None = None, query_prefix: int = 0,
                 single_resolution: bool = False, blend_maps: str = BLEND_MAPS[0],
                 word_columns: list[tuple[list[int], float]] | None = None):
        self.edit = edit
        self.blend_maps = blend_maps
        self.word_columns = list(word_columns or [])  # word-stream key positions with their own cross window
        self.default_on = False                       # the cross window of every other key this step
        self.word_on: list[bool] = []
        self.query_prefix = query_prefix            # queries before the latent's positions (DiT's global token)
        self.single_resolution = single_resolution  # every layer at full resolution: self_min_downsampling moot
        self.schedule = schedule
        self.mappings = mappings
        self.layout = layout
        self.latent_grid = latent_grid
        self.word_stream = word_stream
        self.recording = recording or AttentionRecording()
        self.fusion = 0.0
        self.self_active = False
        self._on_device: dict[tuple[str, str, torch.dtype], TokenMapping] = {}

    # --------------------------------------------------------------------------------------- steps
    def begin_step(self, index: int, total: int) -> None:
        """Set the step's fusion ratio and windows; t is the fraction of the edit's steps already done."""
        total = max(total, 1)
        t = index / total
        self.default_on = index < window_steps(self.edit.cross_window, total, True)
        self.word_on = [index < window_steps(fraction, total, True) for _, fraction in self.word_columns]
        self.fusion = self.schedule(t) if self.default_on or any(self.word_on) else 0.0
        self.self_active = index < window_steps(self.edit.self_window, total, False)
        rec = self.recording
        rec.blend_sum, rec.blend_count = None, 0

    def _mapping(self, stream: str, device: torch.device, dtype: torch.dtype) -> TokenMapping:
        key = (stream, str(device), dtype)
        if key not in self._on_device:
            m = self.mappings[stream]
            self._on_device[key] = TokenMapping(m.from_source.to(device, dtype), m.own.to(device, dtype),
                                                m.weights.to(device, dtype))
        return self._on_device[key]

    # ----------------------------------------------------------------------------------- attention
    def attend(self, site: CrossAttentionSite | None, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
        """Attention output [B, heads, N, d] with the edit applied; site None means a self-attention layer."""
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        if site is None:
            if self.self_active and self._coarse_enough(query.shape[2]):
                self._inject(out, query, key, value, None, None)
            return out
        if site.stream == self.word_stream:
            self._record(query, key, mask)
        if self.fusion > 0.0 and site.stream in self.mappings:
            active = self._active_columns(key.shape[2], key.device, key.dtype) \
                if site.stream == self.word_stream else None
            if site.stream == self.word_stream or self.default_on:
                self._inject(out, query, key, value, mask, self._mapping(site.stream, query.device, query.dtype),
                             active)
        return out

    def _active_columns(self, length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
        """1 for the word-stream keys edited this step, 0 for those whose window has ended (None: all edited)."""
        if not self.word_columns:
            return None  # one window for every key: the edit acts on all of them whenever it acts
        active = torch.full((length,), float(self.default_on), device=device, dtype=dtype)
        for (positions, _), on in zip(self.word_columns, self.word_on):
            active[[p for p in positions if p < length]] = float(on)
        return None if bool(active.all()) else active

    def _coarse_enough(self, queries: int) -> bool:
        if self.single_resolution:
            return True
        return site_grid(self.latent_grid, queries - self.query_prefix)[2] >= self.edit.self_min_downsampling

    def _inject(self, out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None, mapping: TokenMapping | None, active: torch.Tensor | None = None) -> None:
        """Overwrite the target rows of `out` with the edited attention (self: the source's map, fully).

        active [L]: per target key, 1 where the edit acts this step, 0 where the key's own window has ended and the
        target keeps its own attention there (Prompt-to-Prompt's per-word alphas); the map stays linear in values.
        """
        s, targets = self.layout.source_cond, self.layout.target_cond
        own_values = value[targets]
        values = own_values                                       # [K, h, L, d]
        count, heads, length, dim = values.shape
        if mapping is not None:
            values = values * mapping.weights[:, None]
            edited_values = values if active is None else values * active[:, None]
            moved = torch.einsum("ij,khjd->khid", mapping.from_source, edited_values)
        else:
            moved = values
        stacked = moved.permute(1, 2, 0, 3).reshape(1, heads, length, count * dim)
        source_mask = None if mask is None else mask[s:s + 1]
        edited = F.scaled_dot_product_attention(query[s:s + 1], key[s:s + 1], stacked, attn_mask=source_mask)
        edited = edited.reshape(heads, -1, count, dim).permute(2, 0, 1, 3)  # [K, h, N, d]
        if mapping is None:
            out[targets] = edited
            return
        kept = values * mapping.own[:, None]
        if active is not None:  # keys outside their window: the target's own attention, unweighted
            kept = kept + own_values * ((1.0 - mapping.own) * (1.0 - active))[:, None]
        if mapping.own.any() or active is not None:
            own_mask = None if mask is None else mask[targets]
            edited = edited + F.scaled_dot_product_attention(query[targets], key[targets], kept, attn_mask=own_mask)
        out[targets] = self.fusion * edited + (1.0 - self.fusion) * out[targets]

    # ----------------------------------------------------------------------------------- recording
    def _record(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None) -> None:
        rec = self.recording
        rows = sorted(set(rec.blend_tokens) | ({rec.preview_row} if rec.preview_row is not None else set()))
        if not rows:
            return
        scores = query[rows] @ key[rows].transpose(-1, -2) / math.sqrt(query.shape[-1])
        if mask is not None:
            scores = scores + mask[rows]
        probs = scores.float().softmax(dim=-1).mean(dim=1)[:, self.query_prefix:]  # [R, N, L], heads averaged
        height, width, _ = site_grid(self.latent_grid, probs.shape[1])

        def on_grid(maps: torch.Tensor) -> torch.Tensor:          # [M, N] -> [M, T', F']
            maps = maps.reshape(-1, 1, height, width)
            return F.interpolate(maps, size=self.latent_grid, mode="bilinear", align_corners=False)[:, 0]

        if rec.blend_tokens:
            picked = torch.stack([probs[rows.index(r), :, rec.blend_tokens[r]].sum(-1)
                                  for r in sorted(rec.blend_tokens)])
            if self.blend_maps == BLEND_MAPS[0]:
                level = 1 if self.single_resolution else site_grid(self.latent_grid, probs.shape[1])[2]
                native = picked.reshape(-1, height, width)
                previous = rec.blend_levels.get(level)
                rec.blend_levels[level] = native if previous is None else previous + native
            else:
                maps = on_grid(picked)
                rec.blend_sum = maps if rec.blend_sum is None else rec.blend_sum + maps
                rec.blend_count += 1
        if rec.preview_row is not None and rec.word_tokens:
            row = probs[rows.index(rec.preview_row)]
            maps = on_grid(torch.stack([row[:, positions].sum(-1) for positions in rec.word_tokens]))
            rec.preview_sum = maps if rec.preview_sum is None else rec.preview_sum + maps
            rec.preview_count += 1

    def blend_masks(self, threshold: float) -> torch.Tensor | None:
        """Local-blend masks [K, T', F'] for the target branches (P2P's LocalBlend): union of source and target
        words.
        """
        rec = self.recording
        if self.blend_maps == BLEND_MAPS[0]:
            if not rec.blend_levels:
                return None
            # The 1/4-resolution layers; a model without them uses the level nearest to it, coarser first.
            level = min(rec.blend_levels, key=lambda d: (abs(math.log2(d / _BLEND_DOWNSAMPLING)), -d))
            maps = F.max_pool2d(rec.blend_levels[level][:, None], kernel_size=3, stride=1, padding=1)
            maps = F.interpolate(maps, size=self.latent_grid, mode="nearest")[:, 0]
        elif rec.blend_sum is None:
            return None
        else:
            maps = rec.blend_sum / rec.blend_count
            maps = F.max_pool2d(maps[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)
        masks = maps / peak[:, None, None] > threshold
        order = sorted(rec.blend_tokens)
        source = masks[order.index(self.layout.source_cond)]
        return torch.stack([source | masks[order.index(r)] for r in self.layout.target_cond]).float()


class EditProcessor:
    """A diffusers attention processor (AttnProcessor2_0's arithmetic) whose attention core asks the controller."""

    def __init__(self, controller: FusionController, site: CrossAttentionSite | None):
        self.controller = controller
        self.site = site

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 rotary_emb: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        # rotary_emb is named: diffusers drops keyword arguments a processor's signature does not list (DiT).
        call = open_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, rotary_emb)
        key, value = project_keys(attn, call, call.context)
        out = self.controller.attend(self.site, call.query, key, value, call.mask)
        return close_attention(attn, out, call)


@contextlib.contextmanager
def attention_control(denoiser: torch.nn.Module, sites: list[CrossAttentionSite],
                      controller: FusionController) -> Iterator[None]:
    """Install the controller's processors on every cross- and self-attention layer; restore the originals after."""
    by_name = {site.name: site for site in sites}
    patched = {}
    modules = {processor_name(path): module for path, module in denoiser.named_modules()}
    for name in denoiser.attn_processors:
        if name in by_name:
            patched[name] = EditProcessor(controller, by_name[name])
        elif not getattr(modules[name], "is_cross_attention", False):
            patched[name] = EditProcessor(controller, None)
    with processors_installed(denoiser, patched):
        yield
