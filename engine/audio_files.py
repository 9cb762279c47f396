"""Engine entries for the file nodes: load a clip from the input folder, save a batch to the output folder."""

from __future__ import annotations

from typing import Any

import torch

from . import comfy_bridge as bridge
from .audio import (WRITE_FORMATS, check_audio, encode_audio, make_audio, read_audio, resample,
                    spectrogram_image, to_channels)
from .errors import PAEInputError
from .files import atomic_write_bytes, numbered_output_paths

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 192000


def load_audio_file(name: str, start_s: float = 0.0, duration_s: float = 0.0, sample_rate: int = 0,
                    mono: bool = False) -> dict[str, Any]:
    """Read a file the user picked from the input folder into an AUDIO dict, trimmed, resampled, downmixed."""
    if sample_rate != 0 and not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise PAEInputError("sample_rate", f"must be 0 (keep the file's rate) or {MIN_SAMPLE_RATE}-"
                            f"{MAX_SAMPLE_RATE} Hz, got {sample_rate}.")
    path = bridge.resolve_input_file(name, "audio")
    audio = read_audio(path, start_s=start_s, duration_s=duration_s or None, input_name="audio")
    waveform, rate = audio["waveform"], audio["sample_rate"]
    if mono:
        waveform = to_channels(waveform, 1)
    if sample_rate and sample_rate != rate:
        waveform, rate = resample(waveform, rate, sample_rate), sample_rate
    return make_audio(waveform, rate)


def save_audio_files(audio: dict[str, Any], filename_prefix: str, fmt: str, *, mp3_quality: str = "V0",
                     metadata: dict[str, str] | None = None, output_dir: str | None = None
                     ) -> tuple[list[dict[str, str]], torch.Tensor]:
    """Write one file per clip (each whole or not at all) and return ComfyUI's file list and spectrograms."""
    if fmt not in WRITE_FORMATS:
        raise PAEInputError("format", f"choose one of {', '.join(WRITE_FORMATS)}, not '{fmt}'.")
    waveform, rate = check_audio(audio, "audio")
    root = output_dir or bridge.output_directory()
    # Encode everything first: a bad clip stops the node before any file is written.
    encoded = [encode_audio(clip, rate, fmt, metadata=metadata, mp3_quality=mp3_quality) for clip in waveform]
    paths, subfolder = numbered_output_paths(root, filename_prefix, fmt, len(encoded))
    results = []
    for path, data in zip(paths, encoded):
        atomic_write_bytes(path, data)
        results.append({"filename": path.name, "subfolder": subfolder, "type": "output"})
    spectrograms = torch.stack([spectrogram_image(clip, rate) for clip in waveform])
    return results, spectrograms
