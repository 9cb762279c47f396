"""Attention control inside MusicGen's decoder through transformers' registrable attention function.

No `forward` is patched. For one run the decoder's attention implementation is switched to a function registered
under `CONTROLLED_ATTENTION`; each attention module is tagged with its site and the run's controller, and the
function hands the controller the attention probabilities before they weight the values. Afterwards the decoder's
previous implementation comes back and the tags are removed, leaving the model exactly as it was.

Generation runs one frame at a time with a KV cache, so a call's query length is 1 and materialising the
probabilities is cheap: [rows, heads, 1, text tokens] for cross-attention, [rows, heads, 1, frames so far] for
self-attention.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

import torch

from ..attention.control import StepController

CONTROLLED_ATTENTION = "pae_controlled"
_SITE, _CONTROLLER = "_pae_site", "_pae_controller"


@dataclass(frozen=True)
class DecoderAttentionSite:
    """One attention module of the MusicGen decoder."""

    kind: str    # "self" or "cross"
    layer: int
    heads: int

    @property
    def call_index(self) -> int:
        """Position among a step's attention calls (self then cross, layer by layer): 2·layer (+1 for cross)."""
        return 2 * self.layer + (1 if self.kind == "cross" else 0)


class DecoderController(StepController, Protocol):
    """A StepController for MusicGen's decoder: the attention function asks it for the probabilities to use."""

    def edit(self, site: DecoderAttentionSite, probs: torch.Tensor) -> torch.Tensor:
        """probs [rows, heads, queries, keys] -> the probabilities that weight the values."""


def decoder_attention_sites(model: Any) -> list[tuple[DecoderAttentionSite, torch.nn.Module]]:
    """Every self- and cross-attention module of a MusicGen decoder, with its site (melody models have no cross)."""
    sites = []
    for index, layer in enumerate(model.decoder.model.decoder.layers):
        for kind, name in (("self", "self_attn"), ("cross", "encoder_attn")):
            module = getattr(layer, name, None)
            if module is not None:
                sites.append((DecoderAttentionSite(kind, index, int(module.num_heads)), module))
    return sites


def _controlled_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                          **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention (query/key/value [B, H, L, d]) whose probabilities pass through the run's controller."""
    scores = torch.matmul(query, key.transpose(2, 3)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    controller = getattr(module, _CONTROLLER, None)
    if controller is not None:
        probs = controller.edit(getattr(module, _SITE), probs)
    out = torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous()
    return out, probs


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CONTROLLED_ATTENTION, _controlled_attention)
    # Without a mask function registered under the same name, transformers hands the function no masks at all.
    AttentionMaskInterface.register(CONTROLLED_ATTENTION, eager_mask)


@contextlib.contextmanager
def decoder_attention_control(model: Any, controller: DecoderController) -> Iterator[
        list[DecoderAttentionSite]]:
    """Route the decoder's attention through the controller for one run; restore the implementation after."""
    _register()
    decoder = model.decoder
    previous = decoder.config._attn_implementation
    sites = decoder_attention_sites(model)
    for site, module in sites:
        setattr(module, _SITE, site)
        setattr(module, _CONTROLLER, controller)
    model.set_attn_implementation({"decoder": CONTROLLED_ATTENTION})
    try:
        yield [site for site, _ in sites]
    finally:
        model.set_attn_implementation({"decoder": previous})
        for _, module in sites:
            for name in (_SITE, _CONTROLLER):
                if hasattr(module, name):
                    delattr(module, name)
