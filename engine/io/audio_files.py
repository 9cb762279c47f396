"""Engine entries for the file nodes: load a clip from the input folder, save a batch to the output folder."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core import bridge
from .audio import WRITE_FORMATS, check_audio, encode_audio, make_audio, read_audio, resample, to_channels
from ..core.errors import PAEInputError
from ..core.files import save_numbered
from .previews import png_bytes, spectrogram_image

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
                     metadata: dict[str, str] | None = None, output_dir: str | None = None, folder_type: str = "output"
                     ) -> tuple[list[dict[str, str]], torch.Tensor]:
    """Write one file per clip (each whole or not at all) and return ComfyUI's file list and spectrograms."""
    if fmt not in WRITE_FORMATS:
        raise PAEInputError("format", f"choose one of {', '.join(WRITE_FORMATS)}, not '{fmt}'.")
    waveform, rate = check_audio(audio, "audio")
    root = output_dir or bridge.output_directory()
    # Encode everything first: a bad clip stops the node before any file is written.
    encoded = [encode_audio(clip, rate, fmt, metadata=metadata, mp3_quality=mp3_quality) for clip in waveform]
    paths, subfolder = save_numbered(root, filename_prefix, fmt, encoded)
    results = [{"filename": path.name, "subfolder": subfolder, "type": folder_type} for path in paths]
    spectrograms = torch.stack([spectrogram_image(clip, rate) for clip in waveform])
    return results, spectrograms


def write_image_previews(images: Sequence[torch.Tensor], filename_prefix: str) -> list[dict[str, str]]:
    """Write images [H, W, 3] in [0, 1] (an IMAGE batch or a list) as PNGs into the temp folder, for a node's
    image preview in the browser."""
    root = bridge.temp_directory()
    pictures = [png_bytes((image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
                for image in images]
    paths, subfolder = save_numbered(root, filename_prefix, "png", pictures)
    return [{"filename": path.name, "subfolder": subfolder, "type": "temp"} for path in paths]


def save_audio_with_previews(audio: dict[str, Any], filename_prefix: str, fmt: str, *, mp3_quality: str = "V0",
                             metadata: dict[str, str] | None = None) -> tuple[dict[str, list], torch.Tensor]:
    """Save Audio's work: the files, and what the node shows (players, spectrogram previews); plus the spectrograms."""
    files, spectrograms = save_audio_files(audio, filename_prefix, fmt, mp3_quality=mp3_quality, metadata=metadata)
    return {"audio": files, "images": write_image_previews(spectrograms, "PAE_spectrogram")}, spectrograms


def compare_previews(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list]:
    """Write source and edit clips to the temp folder as before/after pairs (one source may serve every edit), with
    their spectrograms side by side, for the Before / After node's players and image preview."""
    source, source_rate = check_audio(before, "before")
    edits, edit_rate = check_audio(after, "after")
    if source.shape[0] not in (1, edits.shape[0]):
        raise PAEInputError("before", f"holds {source.shape[0]} clips and 'after' {edits.shape[0]}; give one source "
                            "clip for all edits, or one per edit.")
    temp = str(bridge.temp_directory())
    before_files, before_images = save_audio_files(make_audio(source, source_rate), "PAE_compare/before", "flac",
                                                   output_dir=temp, folder_type="temp")
    after_files, after_images = save_audio_files(make_audio(edits, edit_rate), "PAE_compare/after", "flac",
                                                 output_dir=temp, folder_type="temp")
    pairs, images = [], []
    for index, after_file in enumerate(after_files):
        pick = index if len(before_files) > 1 else 0
        pairs.append({"before": before_files[pick], "after": after_file})
        images += [before_images[pick], after_images[index]]
    return {"pae_compare": pairs, "images": write_image_previews(images, "PAE_compare/spectrogram")}
