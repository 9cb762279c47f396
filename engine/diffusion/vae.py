"""Engine entries for the VAE nodes: AUDIO -> LATENT and back, with length, rate and level restored."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..io.audio import CANDIDATES_KEY, check_audio, make_audio, resample, to_channels
from ..backbones.base import Backbone
from ..core.errors import PAEInputError
from ..core.latent import latent_info

log = logging.getLogger(__name__)

DECODE_RATES = ("source", "model")


def vae_encode(backbone: Backbone, audio: dict[str, Any]) -> dict[str, Any]:
    """Encode every clip of an AUDIO batch to the backbone's latent (resampled and downmixed as the model needs)."""
    waveform, sample_rate = check_audio(audio, "audio")
    return backbone.encode_audio(waveform, sample_rate)


def vae_decode(backbone: Backbone, latent: dict[str, Any], sample_rate: str = "source") -> dict[str, Any]:
    """Decode a LATENT to AUDIO, at the encoded clip's rate and channel count ('source') or the model's own."""
    if sample_rate not in DECODE_RATES:
        raise PAEInputError("sample_rate", f"choose one of {', '.join(DECODE_RATES)}, not '{sample_rate}'.")
    info = latent_info(latent, backbone.family, backbone.latent_channels, "latent")
    if info.get("model") not in (None, backbone.name):
        log.warning("Prompt Audio Edit: this latent was encoded by '%s' but is decoded by '%s'; both are %s models, "
                    "but their weights differ, so the audio may not be what was encoded", info["model"],
                    backbone.name, backbone.family)
    waveform = backbone.decode_latent(latent)
    if sample_rate == "model" or not info:
        return _with_candidates(make_audio(waveform, backbone.sample_rate), info)
    rate = info["source_sample_rate"]
    waveform = resample(waveform, backbone.sample_rate, rate)
    # soxr rounds the resampled length; the source length is recorded exactly.
    length = info["source_num_samples"]
    waveform = torch.nn.functional.pad(waveform, (0, max(0, length - waveform.shape[-1])))[..., :length]
    waveform = to_channels(waveform, max(1, int(info["source_channels"])))
    return _with_candidates(make_audio(waveform, rate), info)


def _with_candidates(audio: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Carry an edit's per-row candidate labels (guidance scale, prompts) into the AUDIO for CLAP Select."""
    candidates = info.get("candidates")
    if isinstance(candidates, list) and len(candidates) == audio["waveform"].shape[0]:
        audio[CANDIDATES_KEY] = [dict(c) for c in candidates]
    return audio
