"""Long recordings around any edit graph, speaking only AUDIO: cut seconds a–b (with context) out and paste the edit
back, the rest of the file bit for bit; or split a whole song into overlapping windows and join the edited windows.

Paste (equal-power): across each boundary the original fades out as cos(π/2·u) and the edit fades in as sin(π/2·u),
u going 0 → 1 over the crossfade, so the summed power stays constant for uncorrelated signals. Join (constant-gain):
in an overlap the two windows are weighted 1 − u and u, which sum to one, so unedited windows join back to the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.placement import CPU
from ..core.errors import PAEInputError
from ..io.audio import check_audio, check_seconds, make_audio, resample, to_channels

MAX_WINDOWS = 4096
MAX_WINDOW_SECONDS = 600.0  # the Split Windows widget's maximum: no model takes a longer clip


@dataclass(frozen=True)
class Region:
    """Where a cut came from, in samples of the original (sample-exact)."""

    sample_rate: int
    num_samples: int     # the original's length
    channels: int
    clips: int           # clips in the original batch
    start: int           # the region itself: [start, end)
    end: int
    cut_start: int       # what was handed to the model: [cut_start, cut_end), the region plus context
    cut_end: int


@dataclass(frozen=True)
class Windows:
    """How a recording was split: window i covers [i·hop, i·hop + window) of each clip (the last one zero-padded)."""

    sample_rate: int
    num_samples: int
    channels: int
    clips: int
    window: int
    hop: int
    count: int           # windows per clip; the batch is clip-major: row = clip · count + window

    @property
    def overlap(self) -> int:
        return self.window - self.hop


def cut_region(audio: dict[str, Any], start: float, end: float, context: float = 0.0,
               max_seconds: float | None = None) -> tuple[dict[str, Any], Region]:
    """AUDIO [start − context, end + context) of every clip and where it came from; context is clamped to the file
    and, when max_seconds (the model's window) is given, so that region plus context fits it."""
    waveform, rate = check_audio(audio, "audio")
    total = waveform.shape[-1]
    first = int(round(check_seconds(start, "start") * rate))
    last = int(round(check_seconds(end, "end") * rate))
    if last <= first:
        raise PAEInputError("end", f"end ({end:g} s) must be after start ({start:g} s).")
    if first >= total:
        raise PAEInputError("start", f"start {start:g} s is past the end of the recording ({total / rate:.3f} s).")
    if last > total:
        raise PAEInputError("end", f"end {end:g} s is past the end of the recording ({total / rate:.3f} s); the "
                            "region must lie inside it.")
    pad = int(round(check_seconds(context, "context") * rate))
    if max_seconds is not None:
        room = int(math.floor(max_seconds * rate)) - (last - first)
        if room < 0:
            raise PAEInputError("end", f"the region is {(last - first) / rate:.2f} s but the model takes at most "
                                f"{max_seconds:g} s; cut a shorter region, or edit it in windows (Split Windows).")
        pad = min(pad, room // 2)
    cut_start, cut_end = max(0, first - pad), min(total, last + pad)
    region = Region(rate, total, waveform.shape[1], waveform.shape[0], first, last, cut_start, cut_end)
    return make_audio(waveform[..., cut_start:cut_end], rate), region


def _in_original_format(edited: dict[str, Any], rate: int, channels: int, length: int) -> torch.Tensor:
    """The edited clips at the original's rate and channel count, padded or trimmed to length."""
    waveform, edit_rate = check_audio(edited, "edited")
    waveform = to_channels(resample(waveform, edit_rate, rate), channels)
    if waveform.shape[-1] < length:
        waveform = torch.nn.functional.pad(waveform, (0, length - waveform.shape[-1]))
    return waveform[..., :length]


def _rows_per_clip(edited_rows: int, clips: int, input_name: str) -> int:
    if edited_rows % clips:
        raise PAEInputError(input_name, f"holds {edited_rows} clips for {clips} original clip(s); give one edit per "
                            "clip, or the same number of candidates for each.")
    return edited_rows // clips


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt()


def paste_region(original: dict[str, Any], edited: dict[str, Any], region: Any, crossfade_ms: float = 10.0,
                 match_loudness: bool = False) -> dict[str, Any]:
    """The original with the region replaced by the edit, one result per edited clip (candidates stay a batch).

    Outside [start − crossfade, end + crossfade] every sample is the original's, bit for bit. The crossfades are
    centred on the region's boundaries and kept inside what was cut, so the edit is defined wherever it is heard.
    """
    if not isinstance(region, Region):
        raise PAEInputError("region", "expected the region output of Cut Region.")
    waveform, rate = check_audio(original, "original")
    if (rate, waveform.shape[-1], waveform.shape[1], waveform.shape[0]) != \
            (region.sample_rate, region.num_samples, region.channels, region.clips):
        raise PAEInputError("original", f"is {waveform.shape[0]} x {waveform.shape[1]} ch x {waveform.shape[-1]} "
                            f"samples at {rate} Hz, but the region was cut from {region.clips} x {region.channels} ch "
                            f"x {region.num_samples} samples at {region.sample_rate} Hz; connect the audio Cut Region "
                            "was given.")
    span = region.cut_end - region.cut_start
    edit = _in_original_format(edited, rate, region.channels, span)
    per_clip = _rows_per_clip(edit.shape[0], region.clips, "edited")
    half = int(round(check_seconds(crossfade_ms, "crossfade") / 1000.0 * rate / 2))
    lo, hi = region.start - region.cut_start, region.end - region.cut_start  # the region inside the cut
    # Each fade is centred on its boundary: `before` samples of context outside the region, `inside` within it.
    before_in, inside_in = min(half, lo), min(half, (hi - lo) // 2)
    before_out, inside_out = min(half, span - hi), min(half, hi - lo - inside_in)
    first, last = lo - before_in, hi + before_out
    # the edit's weight over [first, last); the original's is sqrt(1 - gain²)
    gain = torch.ones(last - first, device=CPU)
    if before_in + inside_in:
        gain[:before_in + inside_in] = _equal_power_ramp(before_in + inside_in)
    if before_out + inside_out:
        gain[gain.numel() - before_out - inside_out:] = _equal_power_ramp(before_out + inside_out).flip(0)
    base = waveform.repeat_interleave(per_clip, dim=0)
    edit_part = edit[..., first:last]
    if match_loudness:
        reference, current = _rms(base[..., region.start:region.end]), _rms(edit[..., lo:hi])
        edit_part = edit_part * torch.where(current > 1e-9, reference / current.clamp_min(1e-9),
                                            torch.ones_like(current))
    out = base.clone()
    where = slice(region.cut_start + first, region.cut_start + last)
    out[..., where] = base[..., where] * torch.sqrt(1.0 - gain.pow(2)) + edit_part * gain
    return make_audio(out, rate)


def _equal_power_ramp(length: int) -> torch.Tensor:
    """sin(π/2·u) at the sample centres u = (n + ½) / length: the fade-in half of an equal-power crossfade."""
    return torch.sin(0.5 * math.pi * (torch.arange(length, dtype=torch.float32, device=CPU) + 0.5) / length)


def split_windows(audio: dict[str, Any], window: float, overlap: float = 1.0) -> tuple[dict[str, Any], Windows]:
    """Every clip as overlapping windows of `window` seconds (hop = window − overlap), one AUDIO batch, clip-major;
    the last window of a clip is zero-padded to the full length."""
    waveform, rate = check_audio(audio, "audio")
    if check_seconds(window, "window") > MAX_WINDOW_SECONDS:
        raise PAEInputError("window", f"{window:g} s is longer than any model's window; use at most "
                            f"{MAX_WINDOW_SECONDS:g} s (0 takes the linked model's own length).")
    size = int(round(window * rate))
    if size < 1:
        raise PAEInputError("window", f"{window:g} s holds no sample at {rate} Hz; use a window of a few seconds "
                            "(the model's own length, e.g. 10.24 s for AudioLDM2).")
    shared = int(round(check_seconds(overlap, "overlap") * rate))
    if shared >= size:
        raise PAEInputError("overlap", f"{overlap:g} s must be shorter than the window ({window:g} s).")
    total = waveform.shape[-1]
    hop = size - shared
    count = 1 if total <= size else 1 + math.ceil((total - size) / hop)
    if count > MAX_WINDOWS:
        raise PAEInputError("window", f"{count} windows per clip; at most {MAX_WINDOWS}: use longer windows.")
    padded = torch.nn.functional.pad(waveform, (0, (count - 1) * hop + size - total))
    rows = [padded[b, :, i * hop:i * hop + size] for b in range(waveform.shape[0]) for i in range(count)]
    info = Windows(rate, total, waveform.shape[1], waveform.shape[0], size, hop, count)
    return make_audio(torch.stack(rows), rate), info


def join_windows(edited: dict[str, Any], windows: Any) -> dict[str, Any]:
    """Overlap-add the edited windows back to each clip's length, with constant-gain crossfades over the overlaps;
    K candidates per window (rows window-major, as an edit returns them) give K results per clip."""
    if not isinstance(windows, Windows):
        raise PAEInputError("windows", "expected the windows output of Split Windows.")
    w = windows
    edit = _in_original_format(edited, w.sample_rate, w.channels, w.window)
    per_window = _rows_per_clip(edit.shape[0], w.clips * w.count, "edited")
    fade = torch.ones(w.window, device=CPU)
    if w.overlap:
        ramp = (torch.arange(w.overlap, device=CPU) + 0.5) / w.overlap
        fade_in, fade_out = fade.clone(), fade.clone()
        fade_in[:w.overlap], fade_out[-w.overlap:] = ramp, 1.0 - ramp
    results = []
    for clip in range(w.clips):
        for k in range(per_window):
            song = torch.zeros(w.channels, (w.count - 1) * w.hop + w.window, device=CPU)
            for i in range(w.count):
                gain = torch.ones(w.window, device=CPU)
                if w.overlap and i > 0:
                    gain = gain * fade_in
                if w.overlap and i < w.count - 1:
                    gain = gain * fade_out
                song[:, i * w.hop:i * w.hop + w.window] += edit[(clip * w.count + i) * per_window + k] * gain
            results.append(song[:, :w.num_samples])
    return make_audio(torch.stack(results), w.sample_rate)
