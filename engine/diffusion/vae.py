"""Engine entries for the VAE nodes: AUDIO -> LATENT and back, with length, rate and level restored."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..io.audio import CANDIDATES_KEY, check_audio, make_audio, resample, to_channels
from ..backbones.base import Backbone
from ..core.checks import check_clips_per_call
from ..core.errors import PAEInputError
from ..core.latent import PAE_KEY, latent_info, latent_with_info

log = logging.getLogger(__name__)

DECODE_RATES = ("source", "model")


def _row_chunks(rows: int, clips_per_call: int) -> list[slice]:
    chunk = clips_per_call if 0 < clips_per_call < rows else rows
    return [slice(i, i + chunk) for i in range(0, rows, chunk)]


def vae_encode(backbone: Backbone, audio: dict[str, Any], clips_per_call: int = 0) -> dict[str, Any]:
    """Encode every clip of an AUDIO batch to the backbone's latent (resampled and downmixed as the model needs),
    clips_per_call clips at a time (0: all at once) so a song's windows need one chunk's activations, not all."""
    waveform, sample_rate = check_audio(audio, "audio")
    chunks = _row_chunks(waveform.shape[0], check_clips_per_call(clips_per_call))
    parts = [backbone.encode_audio(waveform[rows], sample_rate) for rows in chunks]
    if len(parts) == 1:
        return parts[0]
    info = dict(parts[0][PAE_KEY])
    info["gain"] = torch.cat([p[PAE_KEY]["gain"] for p in parts])
    return latent_with_info(torch.cat([p["samples"] for p in parts]), info)


def _latent_rows(latent: dict[str, Any], info: dict[str, Any], rows: slice) -> dict[str, Any]:
    """The LATENT of some rows of a batch, with its per-row gain (what decode reads)."""
    if not info:
        return {"samples": latent["samples"][rows]}
    part = {k: v for k, v in info.items() if k != "candidates"}
    gain = info.get("gain")
    if isinstance(gain, torch.Tensor) and gain.numel() == latent["samples"].shape[0]:
        part["gain"] = gain.reshape(-1)[rows]
    return latent_with_info(latent["samples"][rows], part)


def vae_decode(backbone: Backbone, latent: dict[str, Any], sample_rate: str = "source",
               clips_per_call: int = 0) -> dict[str, Any]:
    """Decode a LATENT to AUDIO, at the encoded clip's rate and channel count ('source') or the model's own,
    clips_per_call clips at a time (0: all at once)."""
    if sample_rate not in DECODE_RATES:
        raise PAEInputError("sample_rate", f"choose one of {', '.join(DECODE_RATES)}, not '{sample_rate}'.")
    info = latent_info(latent, backbone.family, backbone.latent_channels, "latent")
    chunks = _row_chunks(latent["samples"].shape[0], check_clips_per_call(clips_per_call))
    if info.get("model") not in (None, backbone.name):
        log.warning("Prompt Audio Edit: this latent was encoded by '%s' but is decoded by '%s'; both are %s models, "
                    "but their weights differ, so the audio may not be what was encoded", info["model"],
                    backbone.name, backbone.family)
    waveform = torch.cat([backbone.decode_latent(_latent_rows(latent, info, rows)) for rows in chunks])
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
