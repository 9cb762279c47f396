"""Audio files and waveforms: PyAV decode/encode, soxr resampling, channel and time edits on core `AUDIO` dicts."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import PAEInputError
from ..core.files import atomic_write_bytes

# Extensions the loader lists; PyAV reads more, but these are the ones users drop into ComfyUI.
READ_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".webm", ".aiff", ".aif")
WRITE_FORMATS = ("wav", "flac", "mp3")
MP3_QUALITIES = ("V0", "128k", "320k")

# (container format, codec) per written format; wav is 16-bit PCM unless float output is asked for.
_ENCODERS = {"wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac"), "mp3": ("mp3", "libmp3lame")}
# The wav muxer keeps only INFO tags it knows; pack other keys as JSON under this one.
_WAV_METADATA_KEY = "comment"


def make_audio(waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
    """Wrap a [B, C, T] float tensor as ComfyUI core's AUDIO dict."""
    return {"waveform": waveform.to(torch.float32).contiguous(), "sample_rate": int(sample_rate)}


def check_audio(audio: Any, input_name: str = "audio", *, allow_empty: bool = False) -> tuple[torch.Tensor, int]:
    """Validate an AUDIO dict (from this pack or core nodes) and return (waveform [B, C, T] float32, rate)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise PAEInputError(input_name, "expected an AUDIO dict with 'waveform' and 'sample_rate'; "
                            "connect a Load Audio node or another node that outputs AUDIO.")
    waveform = audio["waveform"]
    if not isinstance(waveform, torch.Tensor):
        waveform = torch.as_tensor(np.asarray(waveform))
    if waveform.dim() == 1:
        waveform = waveform[None, None]
    elif waveform.dim() == 2:
        waveform = waveform[None]
    if waveform.dim() != 3:
        raise PAEInputError(input_name, f"waveform must be [batch, channels, samples], got shape {tuple(waveform.shape)}.")
    if not waveform.dtype.is_floating_point:
        waveform = _pcm_to_float(waveform)
    waveform = waveform.to(torch.float32)
    sample_rate = int(audio["sample_rate"])
    if sample_rate <= 0:
        raise PAEInputError(input_name, f"sample rate must be positive, got {sample_rate}.")
    if not allow_empty and (waveform.shape[-1] == 0 or waveform.shape[0] == 0 or waveform.shape[1] == 0):
        raise PAEInputError(input_name, "the audio is empty (zero samples); load a longer clip or check the trim settings.")
    if not torch.isfinite(waveform).all():
        raise PAEInputError(input_name, "the waveform contains NaN or infinite samples; check the node that produced it "
                            "(a diverged edit or a broken file).")
    return waveform, sample_rate


def _pcm_to_float(waveform: torch.Tensor) -> torch.Tensor:
    """Scale integer PCM to [-1, 1) floats."""
    bits = {torch.int16: 15, torch.int32: 31, torch.int8: 7}.get(waveform.dtype)
    if bits is None:
        if waveform.dtype == torch.uint8:
            return (waveform.float() - 128.0) / 128.0
        raise PAEInputError("audio", f"unsupported sample type {waveform.dtype}.")
    return waveform.float() / float(2 ** bits)


def read_audio(path: str | os.PathLike, *, start_s: float = 0.0, duration_s: float | None = None,
               input_name: str = "audio") -> dict[str, Any]:
    """Decode the first audio stream of a file into an AUDIO dict, any channel count or sample format."""
    import av  # deferred: PyAV pulls in FFmpeg's libraries

    path = Path(path)
    if not path.is_file():
        raise PAEInputError(input_name, f"file not found: '{path.name}'. Put it in the input folder or upload it.")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise PAEInputError(input_name, f"'{path.name}' has no audio stream.")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # Convert every sample format (s16, s32, u8, planar or packed) to float planar at the same rate.
            converter = av.AudioResampler(format="fltp", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for converted in converter.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in converter.resample(None):
                chunks.append(converted.to_ndarray())
    except PAEInputError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise PAEInputError(input_name, f"'{path.name}' could not be decoded as audio ({exc.__class__.__name__}: "
                            f"{exc}). Is it really an audio file?") from None
    if not chunks or not rate:
        raise PAEInputError(input_name, f"'{path.name}' contains no audio samples (zero length).")
    data = np.concatenate(chunks, axis=1)  # planar float: [channels, samples]
    waveform = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    audio = make_audio(waveform, rate)
    if start_s or duration_s is not None:
        audio = trim(audio, start_s, duration_s)
    if audio["waveform"].shape[-1] == 0:
        raise PAEInputError(input_name, f"'{path.name}' contains no audio samples (zero length).")
    return audio


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Container and stream tags of a file, with the JSON-packed wav tags unpacked."""
    import av

    with av.open(str(path)) as container:
        tags = dict(container.metadata)
        if container.streams.audio:
            tags.update(container.streams.audio[0].metadata)
    packed = tags.get(_WAV_METADATA_KEY)
    if packed and str(path).lower().endswith(".wav"):
        try:
            unpacked = json.loads(packed)
        except json.JSONDecodeError:
            unpacked = None
        if isinstance(unpacked, dict):
            tags.pop(_WAV_METADATA_KEY)
            tags.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in unpacked.items()})
    return tags


def encode_audio(waveform: torch.Tensor, sample_rate: int, fmt: str, *, metadata: dict[str, str] | None = None,
                 mp3_quality: str = "V0") -> bytes:
    """Encode one clip [C, T] to wav, flac or mp3 bytes, with metadata tags."""
    import io

    import av

    if fmt not in _ENCODERS:
        raise PAEInputError("format", f"unknown format '{fmt}'; choose one of {', '.join(WRITE_FORMATS)}.")
    channels = waveform.shape[0]
    if channels > 2 and fmt == "mp3":
        raise PAEInputError("format", f"mp3 holds at most 2 channels, the audio has {channels}; use wav or flac.")
    container_fmt, codec = _ENCODERS[fmt]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_fmt) as container:
        tags = dict(metadata or {})
        if fmt == "wav" and tags:
            tags = {_WAV_METADATA_KEY: json.dumps(tags)}
        for key, value in tags.items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=int(sample_rate), layout=layout)
        if fmt == "mp3":
            if mp3_quality == "V0":
                stream.codec_context.qscale = 1
            else:
                stream.bit_rate = {"128k": 128_000, "320k": 320_000}[mp3_quality]
        samples = waveform.detach().to(torch.float32).clamp(-1.0, 1.0).cpu().numpy()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate = int(sample_rate)
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_audio(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, fmt: str, *,
                metadata: dict[str, str] | None = None, mp3_quality: str = "V0") -> Path:
    """Encode one clip [C, T] and write it atomically: the file appears whole or not at all."""
    data = encode_audio(waveform, sample_rate, fmt, metadata=metadata, mp3_quality=mp3_quality)
    return atomic_write_bytes(Path(path), data)


def resample(waveform: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample [..., T] with soxr (very high quality); a no-op when the rates match."""
    if int(from_rate) == int(to_rate):
        return waveform
    import soxr

    shape = waveform.shape
    frames = waveform.detach().to(torch.float32).cpu().reshape(-1, shape[-1]).numpy().T  # soxr wants [T, channels]
    out = soxr.resample(np.ascontiguousarray(frames), int(from_rate), int(to_rate), quality="VHQ")
    out = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*shape[:-1], -1)
    return out.to(waveform.device)


def to_channels(waveform: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert [B, C, T] to 1 or 2 channels: mono is the channel mean; stereo duplicates mono or keeps the front pair."""
    have = waveform.shape[1]
    if have == channels:
        return waveform
    if channels == 1:
        return waveform.mean(dim=1, keepdim=True)
    if channels == 2:
        if have == 1:
            return waveform.expand(-1, 2, -1).clone()
        # FFmpeg's standard layouts put front-left, front-right, front-centre first; fold the centre in at -3 dB.
        centre = waveform[:, 2:3] * math.sqrt(0.5)
        return waveform[:, :2] + centre
    raise PAEInputError("channels", f"can convert only to 1 (mono) or 2 (stereo) channels, not {channels}.")


def trim(audio: dict[str, Any], start_s: float = 0.0, duration_s: float | None = None, *,
         input_name: str = "start") -> dict[str, Any]:
    """Cut [start, start + duration) seconds out of an AUDIO dict; duration None or 0 means to the end."""
    waveform, rate = audio["waveform"], audio["sample_rate"]
    total = waveform.shape[-1]
    if start_s < 0:
        raise PAEInputError(input_name, f"start must be >= 0 seconds, got {start_s}.")
    first = int(round(start_s * rate))
    if first >= total:
        raise PAEInputError(input_name, f"start {start_s:.3f} s is past the end of the clip ({total / rate:.3f} s).")
    last = total if not duration_s else min(total, first + int(round(duration_s * rate)))
    if last <= first:
        raise PAEInputError("duration", f"duration {duration_s} s selects no samples.")
    return make_audio(waveform[..., first:last], rate)


def peak_normalise(waveform: torch.Tensor, peak: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each clip of [B, C, T] to the given peak; returns (scaled, gain) with scaled * gain = input."""
    current = waveform.abs().amax(dim=(1, 2), keepdim=True)
    gain = torch.where(current > 1e-8, current / peak, torch.ones_like(current))
    return waveform / gain, gain.flatten()


# Five anchor colours of a perceptual dark-to-bright map (magma-like), interpolated linearly.
_COLOURMAP = np.array([[0.0, 0.0, 0.02], [0.23, 0.06, 0.44], [0.55, 0.16, 0.51], [0.92, 0.37, 0.33],
                       [0.99, 0.99, 0.75]], dtype=np.float32)


def spectrogram_image(waveform: torch.Tensor, sample_rate: int, *, height: int = 256, max_width: int = 1024,
                      dynamic_range_db: float = 80.0) -> torch.Tensor:
    """Log-magnitude spectrogram of a clip [C, T] as an IMAGE tensor [H, W, 3] in [0, 1], time across, frequency up."""
    mono = waveform.detach().to(torch.float32).cpu().mean(dim=0)
    n_fft = 2 * (height - 1)
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    hop = max(n_fft // 4, math.ceil(mono.numel() / max_width))
    spec = torch.stft(mono, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20.0 * torch.log10(spec.clamp_min(1e-10))
    db = (db - db.max()).clamp_min(-dynamic_range_db) / dynamic_range_db + 1.0  # 0 = floor, 1 = loudest
    return colourise(db.flip(0))  # low frequencies at the bottom


def colourise(values: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] ([H, W]) through the pack's colour map to an IMAGE tensor [H, W, 3]."""
    position = values.detach().float().cpu().clamp(0.0, 1.0).numpy() * (len(_COLOURMAP) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_COLOURMAP) - 2)
    frac = (position - low)[..., None]
    rgb = _COLOURMAP[low] * (1.0 - frac) + _COLOURMAP[low + 1] * frac
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
