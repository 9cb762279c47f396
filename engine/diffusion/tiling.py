"""Time tiles for a VAE: encode or decode a long clip a window at a time, blended over the overlaps.

The same idea as ComfyUI core's tiled audio decode: the clip is cut into overlapping tiles along time, each tile
goes through the VAE alone, and each output sample is the weighted mean of the tiles covering it, the weights
ramping linearly across each inner overlap. Memory is then bounded by the tile, not by the clip.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..core.placement import CPU


def tile_spans(frames: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame spans of tiles of `tile` frames overlapping by at least `overlap`, covering 0..frames.

    The last tile is aligned to the end (so every tile is whole); a clip of at most one tile is one span.
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tile {tile} with overlap {overlap}: need 0 <= overlap < tile")
    if frames <= tile:
        return [(0, frames)]
    step = tile - overlap
    starts = list(range(0, frames - tile, step)) + [frames - tile]
    return [(s, s + tile) for s in starts]


def _ramp_weights(length: int, ramp: int, left: bool, right: bool) -> torch.Tensor:
    """1 inside, (k + 1)/(ramp + 1) rising over the first `ramp` samples and falling over the last (inner edges)."""
    weights = torch.ones(length, dtype=torch.float32, device=CPU)
    ramp = min(ramp, length)
    rising = torch.arange(1, ramp + 1, dtype=torch.float32, device=CPU) / (ramp + 1)
    if left and ramp:
        weights[:ramp] = torch.minimum(weights[:ramp], rising)
    if right and ramp:
        weights[-ramp:] = torch.minimum(weights[-ramp:], rising.flip(0))
    return weights


def tiled_along_time(apply: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, frames: int, tile: int,
                     overlap: int, in_per_frame: int, out_per_frame: int) -> torch.Tensor:
    """apply() on overlapping time tiles of x [..., frames · in_per_frame], blended into [..., frames · out_per_frame].

    A frame is the VAE's unit of time: `in_per_frame` input positions become `out_per_frame` output positions
    (decode: 1 latent frame -> hop samples; encode: hop samples -> 1 frame). One tile is apply(x) exactly.
    """
    spans = tile_spans(frames, tile, overlap)
    if len(spans) == 1:
        return apply(x)
    out = weight = None
    for index, (start, end) in enumerate(spans):
        part = apply(x[..., start * in_per_frame:end * in_per_frame]).float()
        if out is None:
            out = part.new_zeros((*part.shape[:-1], frames * out_per_frame))
            weight = part.new_zeros(frames * out_per_frame)
        w = _ramp_weights(part.shape[-1], overlap * out_per_frame, index > 0, index < len(spans) - 1).to(part.device)
        out[..., start * out_per_frame:end * out_per_frame] += part * w
        weight[start * out_per_frame:end * out_per_frame] += w
    return out / weight
