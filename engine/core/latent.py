"""The pack's LATENT dict: core's {"samples": ...} plus what a decoder needs to refuse or restore it."""

from __future__ import annotations

from typing import Any

import torch

from .checks import MAX_AUDIO_BYTES, MAX_SAMPLE_RATE
from .errors import PAEInputError

# Everything the pack adds lives under this key, so core's latent nodes pass it along untouched.
PAE_KEY = "pae"


def make_latent(samples: torch.Tensor, *, family: str, model: str, sample_rate: int, num_samples: int,
                source_sample_rate: int, source_num_samples: int, source_channels: int,
                gain: torch.Tensor) -> dict[str, Any]:
    """Build a LATENT dict recording the backbone and the clip's length, rate, channels and level."""
    return latent_with_info(samples.contiguous(), {
        "family": family,
        "model": model,
        "sample_rate": int(sample_rate),
        "num_samples": int(num_samples),
        "source_sample_rate": int(source_sample_rate),
        "source_num_samples": int(source_num_samples),
        "source_channels": int(source_channels),
        "gain": gain.detach().to(torch.float32).cpu(),
    })


def latent_with_info(samples: torch.Tensor, info: dict[str, Any]) -> dict[str, Any]:
    """A LATENT dict of samples with the pack's bookkeeping under PAE_KEY (core's latent nodes pass it along)."""
    return {"samples": samples, "type": "audio", PAE_KEY: info}


def _check_recorded_clip(info: Any, input_name: str) -> None:
    """The clip a LATENT says it came from must be one that could be decoded (no 10^12-sample claims)."""
    try:
        rate, length = int(info["source_sample_rate"]), int(info["source_num_samples"])
        channels = max(1, int(info["source_channels"]))
    except (KeyError, TypeError, ValueError):
        raise PAEInputError(input_name, "the latent's clip record is damaged; encode the clip again with VAE "
                            "Encode.") from None
    if not 0 < rate <= MAX_SAMPLE_RATE or not 0 < length * channels * 4 <= MAX_AUDIO_BYTES:
        raise PAEInputError(input_name, f"the latent claims a clip of {length} samples x {channels} channels at "
                            f"{rate} Hz, more than one clip may hold; encode the clip again with VAE Encode.")


def latent_info(latent: Any, family: str, latent_channels: int, input_name: str = "latent") -> dict[str, Any]:
    """Check a LATENT belongs to this backbone family and return its bookkeeping (defaults for foreign ones)."""
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise PAEInputError(input_name, "expected a LATENT (a dict with 'samples'); connect a VAE Encode node.")
    samples = latent["samples"]
    info = latent.get(PAE_KEY)
    if info is not None and info.get("family") != family:
        raise PAEInputError(input_name, f"this latent was made by a {info.get('family')} model "
                            f"('{info.get('model')}'), but the model here is {family}; decode it with the model "
                            "that encoded it.")
    if samples.dim() < 3 or samples.shape[1] != latent_channels:
        raise PAEInputError(input_name, f"latent has shape {tuple(samples.shape)} but a {family} latent has "
                            f"{latent_channels} channels; it comes from another kind of model.")
    if samples.shape[-1] == 0 or samples.shape[0] == 0:
        raise PAEInputError(input_name, f"the latent is empty (shape {tuple(samples.shape)}); encode a clip with "
                            "VAE Encode first.")
    if info is not None:
        _check_recorded_clip(info, input_name)
    if not torch.isfinite(samples).all():
        raise PAEInputError(input_name, "the latent contains NaN or infinite values; the node that made it diverged.")
    return dict(info) if info is not None else {}
