"""A tiny, randomly initialised Tango saved in the released file layout, for tests and the demo; never real weights."""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np
import torch

from .common import reinit, t5_tokenizer

# What is kept from the real releases (declare-lab/tango, declare-lab/tango2 on Hugging Face):
# - File layout: main_config.json, pytorch_model_main.bin (the reference's AudioDiffusion state dict: 'unet.*' is a
#   diffusers UNet2DConditionModel, 'text_encoder.*' a T5 encoder), vae_config.json + pytorch_model_vae.bin (AudioLDM's
#   own AutoencoderKL with its HiFi-GAN under 'vocoder.', original key names, weight norm already removed),
#   stft_config.json + pytorch_model_stft.bin (TacotronSTFT buffers: mel_basis, stft_fn.forward_basis/inverse_basis).
#   The FLAN-T5 tokenizer files sit beside them, as the README asks users to put them.
# - Fixed widths: T5 d_model 1024 (the UNet's cross-attention width), 8 latent channels, the VAE's /4 in both axes,
#   64 mel bins, hop 160 (HiFi-GAN strides 5, 4, 2, 2, 2), the real STFT buffers (n_fft 1024), T5 limit 512 tokens.
# - Shrunk: UNet 2 levels of widths 8/16 with 1 resnet each (real: 4 levels, 320-1280, 2 resnets), T5 one layer,
#   VAE 32 channels at every level and 1 resnet per level (real: 128/256/512, 2), HiFi-GAN 32 initial channels
#   (real 1024). The VAE keeps 32 channels because the original's GroupNorm always has 32 groups.
# - The tiny UNet and T5 cannot use the pack's built-in full-size configs, so their configs are written as
#   unet_config.json and t5_config.json, which the loader takes in preference to the built-in ones.

_T5_WIDTH = 1024
T5_MAX_LENGTH = 512  # google/flan-t5-large's tokenizer_config.json
_VAE_DDCONFIG: dict[str, Any] = {
    "double_z": True, "z_channels": 8, "resolution": 256, "downsample_time": False, "in_channels": 1, "out_ch": 1,
    "ch": 32, "ch_mult": [1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0,
}
_VAE_SCALE = 0.9227914214134216  # the released vae_config.json's scale_factor (AudioLDM-S-full's learnt scale)
_HIFIGAN = {"initial": 32, "mels": 64, "rates": [5, 4, 2, 2, 2], "kernels": [16, 16, 8, 4, 4],
            "res_kernels": [3, 7, 11]}
_STFT = {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "n_mel_channels": 64, "sampling_rate": 16000,
         "mel_fmin": 0, "mel_fmax": 8000}
_MAIN = {"text_encoder_name": "google/flan-t5-large", "scheduler_name": "stabilityai/stable-diffusion-2-1",
         "unet_model_name": None, "unet_model_config_path": "configs/diffusion_model_config.json", "snr_gamma": 5.0}


class _Weights:
    """Random tensors named as in the original code, scaled by fan-in so activations stay O(1)."""

    def __init__(self, generator: torch.Generator, gain: float = 1.0):
        self.state: dict[str, torch.Tensor] = {}
        self.generator, self.gain = generator, gain

    def conv(self, name: str, shape: tuple[int, ...], transposed: bool = False) -> None:
        fan_in = math.prod(shape[1:])
        self.state[name + ".weight"] = torch.randn(shape, generator=self.generator) * (self.gain / math.sqrt(fan_in))
        out_channels = shape[1] if transposed else shape[0]  # a transposed convolution's weight is [in, out, k]
        self.state[name + ".bias"] = torch.randn(out_channels, generator=self.generator) * 0.02

    def norm(self, name: str, channels: int) -> None:
        self.state[name + ".weight"] = torch.ones(channels)
        self.state[name + ".bias"] = torch.zeros(channels)


def _original_vae(weights: _Weights, dd: dict[str, Any], embed_dim: int) -> None:
    """AudioLDM's AutoencoderKL (encoder, decoder, quant convs) in its own layout and key names."""

    def resnet(name: str, cin: int, cout: int) -> None:
        weights.norm(f"{name}.norm1", cin)
        weights.conv(f"{name}.conv1", (cout, cin, 3, 3))
        weights.norm(f"{name}.norm2", cout)
        weights.conv(f"{name}.conv2", (cout, cout, 3, 3))
        if cin != cout:
            weights.conv(f"{name}.nin_shortcut", (cout, cin, 1, 1))

    def middle(side: str, channels: int) -> None:
        resnet(f"{side}.mid.block_1", channels, channels)
        weights.norm(f"{side}.mid.attn_1.norm", channels)
        for part in ("q", "k", "v", "proj_out"):
            weights.conv(f"{side}.mid.attn_1.{part}", (channels, channels, 1, 1))
        resnet(f"{side}.mid.block_2", channels, channels)

    ch, mult, blocks, z = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"]
    weights.conv("encoder.conv_in", (ch, dd["in_channels"], 3, 3))
    width = ch
    for level, m in enumerate(mult):
        for block in range(blocks):
            resnet(f"encoder.down.{level}.block.{block}", width, ch * m)
            width = ch * m
        if level != len(mult) - 1:
            weights.conv(f"encoder.down.{level}.downsample.conv", (width, width, 3, 3))
    middle("encoder", width)
    weights.norm("encoder.norm_out", width)
    weights.conv("encoder.conv_out", (2 * z if dd["double_z"] else z, width, 3, 3))

    width = ch * mult[-1]
    weights.conv("decoder.conv_in", (width, z, 3, 3))
    middle("decoder", width)
    for level in reversed(range(len(mult))):
        for block in range(blocks + 1):
            resnet(f"decoder.up.{level}.block.{block}", width, ch * mult[level])
            width = ch * mult[level]
        if level != 0:
            weights.conv(f"decoder.up.{level}.upsample.conv", (width, width, 3, 3))
    weights.norm("decoder.norm_out", width)
    weights.conv("decoder.conv_out", (dd["out_ch"], width, 3, 3))
    weights.conv("quant_conv", (2 * embed_dim, 2 * z, 1, 1))
    weights.conv("post_quant_conv", (z, embed_dim, 1, 1))


def _original_hifigan(weights: _Weights) -> None:
    """AudioLDM's HiFi-GAN Generator (weight norm removed, as the reference does before loading) under 'vocoder.'."""
    initial, kernels = _HIFIGAN["initial"], _HIFIGAN["kernels"]
    weights.conv("vocoder.conv_pre", (initial, _HIFIGAN["mels"], 7))
    for i, k in enumerate(kernels):
        weights.conv(f"vocoder.ups.{i}", (initial // 2 ** i, initial // 2 ** (i + 1), k), transposed=True)
    index = 0
    for i in range(len(kernels)):
        channels = initial // 2 ** (i + 1)
        for k in _HIFIGAN["res_kernels"]:
            for group in ("convs1", "convs2"):
                for j in range(3):
                    weights.conv(f"vocoder.resblocks.{index}.{group}.{j}", (channels, channels, k))
            index += 1
    weights.conv("vocoder.conv_post", (1, initial // 2 ** len(kernels), 7))


def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-scale, area-normalised triangular filters [n_mels, n_fft // 2 + 1] (librosa.filters.mel's defaults),
    computed here independently of the pack's front end so a test can compare the two."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, log_step = min_log_hz / f_sp, math.log(6.4) / 27.0

    def to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, dtype=np.float64)
        return np.where(hz >= min_log_hz, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / log_step,
                        hz / f_sp)

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= min_log_mel, min_log_hz * np.exp(log_step * (mel - min_log_mel)), mel * f_sp)

    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    rising = (bins[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / np.diff(edges)[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters.astype(np.float32)


def tacotron_stft_buffers(stft: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The buffers of AudioLDM's TacotronSTFT: a Hann-windowed real DFT basis, its pseudo-inverse, the mel filters."""
    n, hop = int(stft["filter_length"]), int(stft["hop_length"])
    k = np.arange(n // 2 + 1)[:, None]
    angle = 2.0 * np.pi * k * np.arange(n)[None, :] / n
    basis = np.concatenate([np.cos(angle), -np.sin(angle)])  # real and imaginary rows of the DFT matrix
    # Rows are orthogonal, so the pseudo-inverse's transpose is each row over its squared norm (zero rows stay zero).
    energy = (basis ** 2).sum(axis=1, keepdims=True)
    inverse = np.divide(basis, energy, out=np.zeros_like(basis), where=energy > 0.5) / (n / hop)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic Hann, as scipy's get_window(fftbins=True)
    mel = slaney_mel_filters(int(stft["sampling_rate"]), n, int(stft["n_mel_channels"]), float(stft["mel_fmin"]),
                             float(stft["mel_fmax"]))
    return {
        "mel_basis": torch.from_numpy(mel),
        "stft_fn.forward_basis": torch.from_numpy((basis * window)[:, None, :].astype(np.float32)),
        "stft_fn.inverse_basis": torch.from_numpy((inverse * window)[:, None, :].astype(np.float32)),
    }


def _write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)


def build_tiny_tango(folder: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build a tiny random Tango in the released file layout (plus tokenizer and small configs) and return the path."""
    from diffusers import UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel

    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = t5_tokenizer()
    tokenizer.model_max_length = T5_MAX_LENGTH

    unet_config = {
        "sample_size": [32, 2],
        "in_channels": 8,
        "out_channels": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],  # the real one: three with attention, then none
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": [2, 2],  # heads, in diffusers' legacy naming
        "cross_attention_dim": _T5_WIDTH,
        "use_linear_projection": True,
        "upcast_attention": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    t5_config = T5Config(vocab_size=len(tokenizer), d_model=_T5_WIDTH, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                         feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         decoder_start_token_id=tokenizer.pad_token_id)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        text_encoder = T5EncoderModel(t5_config)
        reinit(unet)
        reinit(text_encoder)
        generator = torch.Generator().manual_seed(seed + 1)
        vae = _Weights(generator)
        _original_vae(vae, _VAE_DDCONFIG, embed_dim=_VAE_DDCONFIG["z_channels"])
        # The leaky-ReLU HiFi-GAN stack loses variance per stage; a little extra gain keeps its output audible.
        vocoder = _Weights(generator, gain=1.2)
        _original_hifigan(vocoder)

    main_state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    main_state.update({f"text_encoder.{k}": v for k, v in text_encoder.state_dict().items()})
    torch.save(main_state, out / "pytorch_model_main.bin")
    torch.save({**vae.state, **vocoder.state}, out / "pytorch_model_vae.bin")
    torch.save(tacotron_stft_buffers(_STFT), out / "pytorch_model_stft.bin")

    _write_json(out / "main_config.json", _MAIN)
    _write_json(out / "vae_config.json", {"image_key": "fbank", "subband": 1, "embed_dim": _VAE_DDCONFIG["z_channels"],
                                          "time_shuffle": 1, "ddconfig": _VAE_DDCONFIG, "scale_factor": _VAE_SCALE})
    _write_json(out / "stft_config.json", _STFT)
    _write_json(out / "unet_config.json", {"_class_name": "UNet2DConditionModel", **unet_config})
    _write_json(out / "t5_config.json", t5_config.to_dict())
    tokenizer.save_pretrained(out)
    return out
