"""What the pack's diffusers attention processors share: AttnProcessor2_0's arithmetic split around the core,
and installing processors for one run with the originals restored afterwards.

A processor computes  out = to_out(core(q, k, v))  around a diffusers `Attention` module; only the core differs
between methods (PPAE's fused maps, AP-Adapter's extra audio attention). `open_attention` and `close_attention`
are the parts before and after the core, in the same order as diffusers' AttnProcessor2_0, so a processor whose
core is plain SDPA gives exactly diffusers' numbers. Stable Audio's DiT adds two things its own processor
(StableAudioAttnProcessor2_0) does: fewer key/value heads than query heads (repeated to match), and a rotary
embedding on the first part of each head of the query (and of the key in self-attention).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch


@dataclass
class AttentionCall:
    """One attention call, opened: the query in heads, the projected-ready context, the mask, and how to close it."""

    query: torch.Tensor              # [B, H, Lq, d]
    context: torch.Tensor            # [B, Lk, C]: what keys and values are projected from (normed when the layer says)
    mask: torch.Tensor | None        # [B, H, Lq, Lk] additive mask, or None
    residual: torch.Tensor
    input_shape: tuple[int, ...] | None  # (B, C, H, W) when the hidden states came in as an image
    rotary: Any = None               # (cos, sin) of the DiT's rotary embedding, or None

    def heads(self, attn: Any, projected: torch.Tensor) -> torch.Tensor:
        """[B, L, H·d] -> [B, H, L, d]."""
        batch = projected.shape[0]
        return projected.view(batch, -1, attn.heads, projected.shape[-1] // attn.heads).transpose(1, 2)


def open_attention(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None,
                   attention_mask: torch.Tensor | None, temb: torch.Tensor | None, rotary: Any = None,
                   ) -> AttentionCall:
    """Everything AttnProcessor2_0 does before the attention core (norms, query projection, mask layout)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    input_shape = None
    if hidden_states.ndim == 4:
        input_shape = tuple(hidden_states.shape)
        batch, channel, height, width = input_shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    batch, key_length, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch)
        attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if encoder_hidden_states is None:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(encoder_hidden_states)
    else:
        context = encoder_hidden_states
    call = AttentionCall(query=query, context=context, mask=attention_mask, residual=residual,
                         input_shape=input_shape, rotary=rotary)
    call.query = call.heads(attn, query)
    if attn.norm_q is not None:
        call.query = attn.norm_q(call.query)
    if rotary is not None:
        call.query = _rotate(call.query, rotary)
    return call


def _rotate(x: torch.Tensor, rotary: Any) -> torch.Tensor:
    """Rotary embedding on the first rot_dim features of each head, in float32 (StableAudioAttnProcessor2_0)."""
    from diffusers.models.embeddings import apply_rotary_emb

    rot_dim = rotary[0].shape[-1]
    turned = apply_rotary_emb(x[..., :rot_dim].float(), rotary, use_real=True, use_real_unbind_dim=-2)
    return torch.cat((turned, x[..., rot_dim:].float()), dim=-1).to(x.dtype)


def project_keys(attn: Any, call: AttentionCall, context: torch.Tensor,
                 to_k: Any = None, to_v: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [B, H, L, d] of a context, by the layer's own projections or the given ones.

    Grouped-query layers (fewer key/value heads) have their heads repeated to the query's count.
    """
    key, value = (_kv_heads(attn, call, proj(context)) for proj in (to_k or attn.to_k, to_v or attn.to_v))
    if attn.norm_k is not None and to_k is None:
        key = attn.norm_k(key)
    if call.rotary is not None and not attn.is_cross_attention:
        key = _rotate(key, call.rotary)
    return key, value


def _kv_heads(attn: Any, call: AttentionCall, projected: torch.Tensor) -> torch.Tensor:
    batch, head_dim = projected.shape[0], call.query.shape[-1]
    heads = projected.view(batch, -1, projected.shape[-1] // head_dim, head_dim).transpose(1, 2)
    if heads.shape[1] != attn.heads:
        heads = torch.repeat_interleave(heads, attn.heads // heads.shape[1], dim=1)
    return heads


def close_attention(attn: Any, out: torch.Tensor, call: AttentionCall) -> torch.Tensor:
    """Everything AttnProcessor2_0 does after the core: merge heads, output projection, residual, rescale."""
    batch = out.shape[0]
    out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[-1]).to(call.query.dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if call.input_shape is not None:
        out = out.transpose(-1, -2).reshape(*call.input_shape)
    if attn.residual_connection:
        out = out + call.residual
    return out / attn.rescale_output_factor


@contextlib.contextmanager
def processors_installed(denoiser: torch.nn.Module, replacements: Mapping[str, Any]) -> Iterator[None]:
    """Swap some attention processors for one run; the originals (the same objects) come back afterwards."""
    originals = dict(denoiser.attn_processors)
    unknown = sorted(set(replacements) - set(originals))
    if unknown:
        raise KeyError(f"no attention processor named {unknown[0]!r} in the denoiser")
    denoiser.set_attn_processor({name: replacements.get(name, processor) for name, processor in originals.items()})
    try:
        yield
    finally:
        denoiser.set_attn_processor(originals)
