"""Audio files and waveforms: PyAV decode/encode, soxr resampling, channel and time edits on core `AUDIO` dicts."""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.checks import MAX_AUDIO_BYTES, MAX_SAMPLE_RATE
from ..core.errors import PAEInputError
from ..core.files import atomic_write_bytes

log = logging.getLogger(__name__)

# Extensions the loader lists; PyAV reads more, but these are the ones users drop into ComfyUI.
READ_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".webm", ".aiff", ".aif")
WRITE_FORMATS = ("wav", "flac", "mp3")
MP3_QUALITIES = ("V0", "128k", "320k")
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what LAME encodes
_SEEK_PREROLL_S = 1.0
# Extra AUDIO key: one dict per batch row {"clip", "guidance", "target_prompt", "source_prompt"}; core nodes ignore it.
CANDIDATES_KEY = "pae_candidates"

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
        raise PAEInputError(input_name, "waveform must be [batch, channels, samples], got shape "
                                f"{tuple(waveform.shape)}.")
    if not waveform.dtype.is_floating_point:
        waveform = _pcm_to_float(waveform)
    waveform = waveform.to(torch.float32)
    try:
        sample_rate = int(audio["sample_rate"])
    except (TypeError, ValueError, OverflowError):
        raise PAEInputError(input_name, f"sample rate must be a whole number, got {audio['sample_rate']!r}.") from None
    if not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise PAEInputError(input_name, f"sample rate must be 1..{MAX_SAMPLE_RATE} Hz, got {sample_rate}.")
    if not allow_empty and (waveform.shape[-1] == 0 or waveform.shape[0] == 0 or waveform.shape[1] == 0):
        raise PAEInputError(input_name, "the audio is empty (zero samples); load a longer clip or check the trim "
                                "settings.")
    if not torch.isfinite(waveform).all():
        raise PAEInputError(input_name, "the waveform contains NaN or infinite samples; check the node that produced "
                            "it (a diverged edit or a broken file).")
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
               input_name: str = "audio", max_bytes: int = MAX_AUDIO_BYTES) -> dict[str, Any]:
    """Decode [start, start + duration) of a file's first audio stream into an AUDIO dict, any channel count or
    sample format; only that range is decoded (the file is sought to start) and at most max_bytes of float32 kept."""
    import av  # deferred: PyAV pulls in FFmpeg's libraries

    path = Path(path)
    if not path.is_file():
        raise PAEInputError(input_name, f"file not found: '{path.name}'. Put it in the input folder or upload it.")
    start_s = check_seconds(start_s, "start")
    duration_s = None if duration_s is None else check_seconds(duration_s, "duration")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise PAEInputError(input_name, f"'{path.name}' has no audio stream.")
            stream = container.streams.audio[0]
            context = stream.codec_context  # None when FFmpeg has no decoder for the stream's codec
            rate = context.sample_rate if context is not None else 0
            if context is None:
                raise PAEInputError(input_name, f"'{path.name}' holds audio in a codec FFmpeg cannot decode.")
            if not rate:
                raise PAEInputError(input_name, f"'{path.name}' contains no audio samples (zero length).")
            decoded = _decode_range(container, stream, rate, start_s, duration_s, path.name, max_bytes)
            stream_seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base \
                else None
    except PAEInputError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise PAEInputError(input_name, f"'{path.name}' could not be decoded as audio ({exc.__class__.__name__}: "
                            f"{exc}). Is it really an audio file?") from None
    if decoded is None:
        raise PAEInputError(input_name, f"'{path.name}' contains no audio samples (zero length).")
    data, total = decoded
    if not duration_s or data.shape[1] < int(round(duration_s * rate)):  # the decode ran to the stream's end
        _warn_if_truncated(stream_seconds, total / rate, path.name)
    first = int(round(start_s * rate))
    if first > 0 and data.shape[1] == 0:
        raise PAEInputError("start", f"start {start_s:.3f} s is past the end of the clip ({total / rate:.3f} s).")
    if data.shape[1] == 0:
        raise PAEInputError(input_name, f"'{path.name}' contains no audio samples (zero length).")
    return make_audio(torch.from_numpy(data)[None], rate)


def _warn_if_truncated(stated: float | None, decoded_until: float, name: str) -> None:
    """Say so in the log when a file's audio ends well before the length its header states (a cut download)."""
    if stated and decoded_until < 0.95 * stated - 0.05 and decoded_until > 0:
        log.warning("Prompt Audio Edit: '%s' says it is %.2f s long but its audio ends at %.2f s; the file may be "
                    "truncated", name, stated, decoded_until)


def check_seconds(value: Any, input_name: str) -> float:
    """A time in seconds: a finite number >= 0 (NaN and infinity come through --set and API prompts)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise PAEInputError(input_name, f"'{value}' is not a number of seconds.") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise PAEInputError(input_name, f"must be a finite number of seconds >= 0, got {value}.")
    return seconds


def _decode_range(container: Any, stream: Any, rate: int, start_s: float, duration_s: float | None, name: str,
                  max_bytes: int, seek: bool = True) -> tuple[np.ndarray, int] | None:
    """[channels, samples] float32 of [start, start + duration) and the last decoded position (samples); None when
    the stream holds no frame. Frames are converted to packed float: planar ndarray views of 8+ channels read past
    PyAV 18's frame and crash the process."""
    import av

    first = int(round(start_s * rate))
    wanted = None if not duration_s else int(round(duration_s * rate))
    if wanted == 0:
        raise PAEInputError("duration", f"duration {duration_s} s selects no samples.")
    position = None
    seek = seek and first > 0 and bool(stream.time_base)
    origin = stream.start_time or 0  # timestamps count from here (mp3: the encoder delay FFmpeg drops)
    if seek:
        try:
            # Seek a little early: decoders that overlap frames (mp3, aac, opus) need the frames before to be exact.
            target = max(0.0, start_s - _SEEK_PREROLL_S)
            container.seek(origin + int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            container.seek(0)
    converter = av.AudioResampler(format="flt", rate=rate)
    chunks, kept, channels = [], 0, None

    def take(frames: list[Any]) -> bool:
        nonlocal position, kept, channels
        for converted in frames:
            count = converted.samples
            channels = channels or len(converted.layout.channels)
            raw = np.frombuffer(bytes(converted.planes[0]), dtype=np.float32, count=count * channels)
            lo = max(first - position, 0)
            hi = count if wanted is None else min(count, first + wanted - position)
            if hi > lo:
                kept += (hi - lo) * channels * 4
                if kept > max_bytes:
                    raise PAEInputError("duration", f"'{name}' decodes to more than {max_bytes / 2 ** 30:g} GiB from "
                                        f"{start_s:g} s on; load a part of it with start and duration (at most "
                                        f"{max_bytes / (4 * channels * rate) / 60:.0f} min of this file at a time).")
                chunks.append(raw.reshape(count, channels)[lo:hi].T)
            position += count
            if wanted is not None and position >= first + wanted:
                return False
        return True

    for frame in container.decode(stream):
        if position is None:
            # After a seek the first frame may start before the target; its timestamp says where it is.
            position = 0
            if seek:
                if frame.pts is None or not frame.time_base:  # no timestamps to place the frame: read from the start
                    container.seek(0)
                    return _decode_range(container, stream, rate, start_s, duration_s, name, max_bytes, seek=False)
                position = int(round(float((frame.pts - origin) * frame.time_base) * rate))
            if position > first:  # the demuxer seeked past the target: read from the start instead
                container.seek(0)
                return _decode_range(container, stream, rate, start_s, duration_s, name, max_bytes, seek=False)
        if not take(converter.resample(frame)):
            break
    else:
        if position is None and seek:  # nothing after the seek point: read from the start to learn the length
            container.seek(0)
            return _decode_range(container, stream, rate, start_s, duration_s, name, max_bytes, seek=False)
        if position is None:
            return None
        take(converter.resample(None))
    if position is None:
        return None
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels or 1, 0), dtype=np.float32)
    return np.ascontiguousarray(data, dtype=np.float32), position


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
    if fmt == "mp3" and mp3_quality not in MP3_QUALITIES:
        raise PAEInputError("mp3_quality", f"'{mp3_quality}' is not one of {', '.join(MP3_QUALITIES)}.")
    if channels > 8 and fmt == "flac":
        raise PAEInputError("format", f"flac holds at most 8 channels, the audio has {channels}; use wav.")
    if fmt == "mp3" and int(sample_rate) not in MP3_RATES:
        rate = min((r for r in MP3_RATES if r >= int(sample_rate)), default=MP3_RATES[-1])
        log.warning("Prompt Audio Edit: mp3 cannot hold %d Hz; the clip is resampled to %d Hz for it",
                    int(sample_rate), rate)
        waveform, sample_rate = resample(waveform, int(sample_rate), rate), rate
    container_fmt, codec = _ENCODERS[fmt]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    tags = dict(metadata or {})
    if fmt == "wav" and tags:
        tags = {_WAV_METADATA_KEY: json.dumps(tags)}
    try:
        av.AudioLayout(layout)
    except ValueError:  # FFmpeg names layouts up to 8 channels (and 16); wav takes any count
        return _pcm_wav_bytes(waveform, int(sample_rate), tags.get(_WAV_METADATA_KEY, ""))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_fmt) as container:
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


def _pcm_wav_bytes(waveform: torch.Tensor, sample_rate: int, comment: str) -> bytes:
    """16-bit PCM WAV of any channel count, written directly (RIFF: fmt, LIST/INFO with ICMT as FFmpeg writes the
    comment tag, data), for channel counts FFmpeg has no layout for."""
    channels = waveform.shape[0]
    samples = np.round(waveform.detach().to(torch.float32).clamp(-1.0, 1.0).cpu().numpy().T * 32767.0)
    data = samples.astype("<i2").tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")

    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + chunk(b"fmt ", fmt)
    if comment:
        body += chunk(b"LIST", b"INFO" + chunk(b"ICMT", comment.encode("utf-8") + b"\x00"))
    body += chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


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
    """Convert [B, C, T] to `channels`: mono is the channel mean; stereo duplicates mono or keeps the front pair;
    more channels (a model's mono or stereo output back in a 5.1 / 7.1 / n-channel clip's format) put the model's
    channels first and the mono mix on the rest.
    """
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
    if channels > 2 and have <= 2:
        rest = waveform.mean(dim=1, keepdim=True).expand(-1, channels - 2, -1)
        return torch.cat([to_channels(waveform, 2), rest], dim=1)
    raise PAEInputError("channels", f"can convert {have} channels only to 1 (mono) or 2 (stereo), not {channels}.")


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
