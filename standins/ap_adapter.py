"""Tiny, randomly initialised AP-Adapter and AudioMAE files in the released layouts, for tests and the demo."""

from __future__ import annotations

import argparse
import os
import pathlib

import torch

from ..engine.models.audiomae import GRID, AudioMAE

AUDIOMAE_WIDTH = 768  # fixed by the adapter: its to_k_ip / to_v_ip read 768-wide AudioMAE tokens


def _sincos_table(width: int) -> torch.Tensor:
    """AudioMAE's fixed 2-D sin-cos position table [1, 1 + 64 * 8, width] (CLS row zero), as the release stores it."""
    def one_axis(positions: torch.Tensor, dim: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
        angles = positions.reshape(-1, 1).double() * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    freq, time = torch.meshgrid(torch.arange(GRID[1]), torch.arange(GRID[0]), indexing="xy")
    table = torch.cat([one_axis(freq, width // 2), one_axis(time, width // 2)], dim=1)
    return torch.cat([torch.zeros(1, width, dtype=torch.float64), table]).float()[None]


def tiny_audiomae_state(*, depth: int = 1, mlp_hidden: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random AudioMAE encoder's weights plus a small stand-in MAE decoder (ignored by the loader, as released)."""
    generator = torch.Generator().manual_seed(seed)
    model = AudioMAE(dim=AUDIOMAE_WIDTH, depth=depth, heads=AUDIOMAE_WIDTH // 64, mlp_hidden=mlp_hidden)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "pos_embed":
            state[name] = _sincos_table(AUDIOMAE_WIDTH)
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
            state[name] = torch.ones_like(tensor)
        elif name.endswith("bias"):
            state[name] = torch.zeros_like(tensor)
        else:
            fan_in = tensor[0].numel() if tensor.dim() > 1 else tensor.numel()
            state[name] = torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5
    decoder_width = 16
    state.update({
        "mask_token": torch.zeros(1, 1, decoder_width),
        "decoder_embed.weight": torch.randn(decoder_width, AUDIOMAE_WIDTH, generator=generator) * 0.02,
        "decoder_embed.bias": torch.zeros(decoder_width),
        "decoder_pos_embed": torch.zeros(1, 1 + GRID[0] * GRID[1], decoder_width),
        "decoder_blocks.0.attn.tau": torch.ones(1, 4, 1, 1),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(3 * decoder_width, decoder_width, generator=generator) * 0.02,
        "decoder_norm.weight": torch.ones(decoder_width),
        "decoder_pred.weight": torch.randn(256, decoder_width, generator=generator) * 0.02,
    })
    return state


def build_tiny_audiomae(path: str | os.PathLike, *, depth: int = 1, mlp_hidden: int = 128, seed: int = 0,
                        with_training_state: bool = True) -> pathlib.Path:
    """Write a pretrained.pth as AudioMAE's training script saves it: {'model': ..., 'epoch', 'args'}."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    data: dict = {"model": tiny_audiomae_state(depth=depth, mlp_hidden=mlp_hidden, seed=seed)}
    if with_training_state:
        data.update(epoch=32, args=argparse.Namespace(model="mae_vit_base_patch16", mask_ratio=0.8, audio_exp=True))
    torch.save(data, out)
    return out


def adapted_layer_shapes(unet: torch.nn.Module) -> dict[str, int]:
    """{processor name: hidden width} for every cross-attention whose keys take 768 inputs (found module by module)."""
    from diffusers.models.attention_processor import Attention

    shapes = {}
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and module.is_cross_attention and module.to_k.in_features == AUDIOMAE_WIDTH:
            shapes[f"{name}.processor"] = module.to_k.out_features
    return shapes


def tiny_adapter_state(unet: torch.nn.Module, *, seed: int = 0, std: float = 0.05) -> dict[str, torch.Tensor]:
    """Random to_k_ip / to_v_ip weights for every adapted layer of a UNet, under the released key names."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, hidden in sorted(adapted_layer_shapes(unet).items()):
        for which in ("to_k_ip", "to_v_ip"):
            state[f"{name}.{which}.weight"] = torch.randn(hidden, AUDIOMAE_WIDTH, generator=generator) * std
    return state


def build_tiny_ap_adapter(path: str | os.PathLike, model_folder: str | os.PathLike, *, seed: int = 0) -> pathlib.Path:
    """Write a pytorch_model.bin (flat dict, released key names) fitting the AudioLDM2 saved in model_folder."""
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    unet = AudioLDM2UNet2DConditionModel.from_pretrained(str(pathlib.Path(model_folder) / "unet"))
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_adapter_state(unet, seed=seed), out)
    return out
