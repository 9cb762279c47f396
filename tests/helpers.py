"""Helpers the tests share: test clips, a PyAV writer independent of the pack, and the input-error check.

Fixtures and the tiny models' names live in conftest.py; everything here is plain functions, imported with
`from tests.helpers import ...`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.core.errors import PAEInputError


# ------------------------------------------------------------------------------------------------ clips
def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A test signal [channels, samples]: a tone per channel (different pitch each) plus a little noise."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(0)
    rows = [0.4 * np.sin(2 * np.pi * freq * (1 + 0.25 * c) * t) + 0.01 * rng.standard_normal(t.size)
            for c in range(channels)]
    return np.stack(rows).astype(np.float32)


def _harmonics(seconds: float, rate: int, channels: int, freq: float) -> torch.Tensor:
    """[channels, samples]: a noiseless tone per channel (freq x (1 + 0.5 c)) with a quiet 3.1 x freq overtone."""
    t = torch.arange(int(round(seconds * rate))) / rate
    rows = [0.3 * torch.sin(2 * math.pi * freq * (1 + 0.5 * c) * t) + 0.05 * torch.sin(2 * math.pi * 3.1 * freq * t)
            for c in range(channels)]
    return torch.stack(rows)


CLIP_KINDS = ("tone", "harmonics", "noise")


def audio_clip(seconds: float, rate: int, channels: int = 1, *, kind: str = "tone", freq: float | None = None,
               seed: int = 0, clips: int = 1) -> dict[str, Any]:
    """An AUDIO dict {"waveform": float32 [clips, channels, samples], "sample_rate": rate} holding a test signal.

    kind "tone" (the default): tone() above, round(seconds * rate) samples, freq 440 Hz unless given; this is the
      clip ComfyUI core's LoadAudio would hand over for such a file (see core_style_audio).
    kind "harmonics": a noiseless tone per channel at freq x (1 + 0.5 c) (level 0.3, freq 330 Hz unless given) plus a
      3.1 x freq overtone (level 0.05), computed in torch, round(seconds * rate) samples.
    kind "noise": Gaussian noise of level 0.3 from a torch.Generator seeded with `seed`, int(seconds * rate) samples,
      `clips` independent rows.
    A tone or harmonics clip is the same signal in each of its `clips` rows.
    """
    if kind == "tone":
        waveform = torch.from_numpy(tone(seconds, rate, channels, 440.0 if freq is None else freq)).unsqueeze(0)
    elif kind == "harmonics":
        waveform = _harmonics(seconds, rate, channels, 330.0 if freq is None else freq)[None]
    elif kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return {"waveform": 0.3 * torch.randn(clips, channels, int(seconds * rate), generator=g), "sample_rate": rate}
    else:
        raise ValueError(f"kind {kind!r} is not one of {CLIP_KINDS}")
    if clips != 1:
        waveform = waveform.repeat(clips, 1, 1)
    return {"waveform": waveform, "sample_rate": rate}


def core_style_audio(seconds: float, rate: int, channels: int) -> dict:
    """An AUDIO dict shaped exactly as ComfyUI core's LoadAudio makes it (audio_clip's default tone)."""
    return audio_clip(seconds, rate, channels)


# ------------------------------------------------------------------------------------------------ files
def write_with_pyav(path: Path, data: np.ndarray, rate: int, container: str, codec: str,
                    sample_format: str = "flt") -> Path:
    """Encode [channels, samples] float data with PyAV (the test's own writer, independent of the pack)."""
    import av

    channels = data.shape[0]
    layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, f"{channels}c")
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame_data = data.T.reshape(1, -1)
        if sample_format == "s16":
            frame_data = np.round(frame_data * 32767).astype(np.int16)
        elif sample_format == "s32":
            frame_data = np.round(frame_data * 2147483647.0).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(frame_data), format=sample_format, layout=layout)
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------------------------- errors
def expect_input_error(call: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> PAEInputError:
    """Call call(*args, **kwargs), which must raise PAEInputError; return it for the caller's checks.

    call may be a node id ("PAE_LoadAudio"): that node is run with kwargs as its inputs. The error's str() is
    "<node>: input '<name>': <message>" where a node raised it; .input_name and .message name the input and the fix.
    """
    if isinstance(call, str):
        from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

        call = NODE_CLASS_MAPPINGS[call]().run
    with pytest.raises(PAEInputError) as info:
        call(*args, **kwargs)
    return info.value
