"""Reading and writing audio files through the pack, against files made independently with PyAV."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.io.audio import read_audio, read_metadata, resample, to_channels, trim, write_audio
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.helpers import tone, write_with_pyav

LoadAudio = NODE_CLASS_MAPPINGS["PAE_LoadAudio"]
SaveAudio = NODE_CLASS_MAPPINGS["PAE_SaveAudio"]

# (file name, container, codec, sample format, rate, channels, lossless)
READ_CASES = [
    ("s16.wav", "wav", "pcm_s16le", "s16", 16000, 1, True),
    ("s32.wav", "wav", "pcm_s32le", "s32", 44100, 2, True),
    ("float.wav", "wav", "pcm_f32le", "flt", 48000, 2, True),
    ("six.wav", "wav", "pcm_s16le", "s16", 48000, 6, True),
    ("clip.flac", "flac", "flac", "flt", 44100, 2, True),
    ("clip.mp3", "mp3", "libmp3lame", "flt", 44100, 2, False),
    ("clip.ogg", "ogg", "libopus", "flt", 48000, 1, False),
    ("clip.opus", "ogg", "libopus", "flt", 48000, 2, False),
    ("clip.m4a", "ipod", "aac", "flt", 44100, 2, False),
]


@pytest.mark.parametrize("name,container,codec,sample_format,rate,channels,lossless", READ_CASES)
def test_read_every_format(tmp_path, name, container, codec, sample_format, rate, channels, lossless):
    import av

    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    data = tone(1.0, rate, channels)
    path = write_with_pyav(tmp_path / name, data, rate, container, codec, sample_format)
    audio = read_audio(path)
    waveform = audio["waveform"]
    assert audio["sample_rate"] == rate
    assert waveform.dtype == torch.float32 and waveform.shape[:2] == (1, channels)
    if lossless:
        assert waveform.shape[-1] == data.shape[1]
        tolerance = 1e-4 if sample_format != "flt" or codec == "flac" else 1e-6
        assert np.abs(waveform[0].numpy() - data).max() < tolerance + (1 / 32768 if codec == "flac" else 0)
    else:
        # Lossy codecs add priming/padding; the length is close and the channels keep their own tones.
        assert abs(waveform.shape[-1] - data.shape[1]) < 0.1 * rate
        assert waveform.abs().max() > 0.1


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_multichannel_write_round_trip(tmp_path, fmt):
    data = torch.from_numpy(tone(0.2, 48000, 6))
    back = read_audio(write_audio(tmp_path / f"six.{fmt}", data, 48000, fmt))["waveform"][0]
    assert back.shape == data.shape and (back - data).abs().max() < 2 / 32768


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
def test_write_read_round_trip_keeps_metadata(tmp_path, fmt):
    data = torch.from_numpy(tone(0.5, 44100, 2))
    metadata = {"prompt": json.dumps({"1": {"class_type": "PAE_LoadAudio"}}), "workflow": json.dumps({"nodes": []})}
    path = write_audio(tmp_path / f"out.{fmt}", data, 44100, fmt, metadata=metadata)
    back = read_audio(path)
    assert back["sample_rate"] == 44100 and back["waveform"].shape[1] == 2
    if fmt != "mp3":
        assert back["waveform"].shape[-1] == data.shape[-1]
        assert (back["waveform"][0] - data).abs().max() < 2 / 32768
    tags = read_metadata(path)
    assert json.loads(tags["prompt"]) == {"1": {"class_type": "PAE_LoadAudio"}}
    assert json.loads(tags["workflow"]) == {"nodes": []}


def test_load_node_trims_resamples_and_downmixes(dirs):
    write_with_pyav(dirs["input"] / "stereo.flac", tone(2.0, 44100, 2), 44100, "flac", "flac")
    (audio,) = LoadAudio().run(audio="stereo.flac", start=0.5, duration=1.0, sample_rate=16000, mono=True)
    assert audio["sample_rate"] == 16000
    assert tuple(audio["waveform"].shape) == (1, 1, 16000)


def test_load_node_lists_files_in_subfolders(dirs):
    (dirs["input"] / "takes").mkdir()
    write_with_pyav(dirs["input"] / "takes" / "a.wav", tone(0.1, 8000), 8000, "wav", "pcm_s16le", "s16")
    (dirs["input"] / "notes.txt").write_text("not audio")
    choices = LoadAudio.INPUT_TYPES()["required"]["audio"][0]
    assert choices == ["takes/a.wav"]


def test_resample_and_channels():
    x = torch.from_numpy(tone(1.0, 44100, 2))[None]
    y = resample(x, 44100, 16000)
    assert y.shape == (1, 2, 16000)
    assert torch.allclose(to_channels(x, 1)[0, 0], x[0].mean(0))
    assert to_channels(to_channels(x, 1), 2).shape == (1, 2, 44100)
    five_one = torch.from_numpy(tone(0.1, 8000, 6))[None]
    assert to_channels(five_one, 2).shape == (1, 2, 800)


def test_trim_by_seconds():
    audio = {"waveform": torch.arange(100.0).reshape(1, 1, 100), "sample_rate": 10}
    cut = trim(audio, 2.0, 3.0)
    assert cut["waveform"].flatten().tolist() == list(map(float, range(20, 50)))
    assert trim(audio, 9.0, 0)["waveform"].shape[-1] == 10


def test_save_node_writes_batch_with_metadata_and_spectrograms(dirs):
    batch = torch.from_numpy(np.stack([tone(0.5, 16000, 1), tone(0.5, 16000, 1, freq=880)]))
    node = SaveAudio()
    out = node.run(audio={"waveform": batch, "sample_rate": 16000}, filename_prefix="edits/take", format="flac",
                   mp3_quality="V0", prompt={"1": {"class_type": "X"}}, extra_pnginfo={"workflow": {"nodes": [1]}})
    files = out["ui"]["audio"]
    assert [f["filename"] for f in files] == ["take_00001_.flac", "take_00002_.flac"]
    assert all(f["subfolder"] == "edits" and f["type"] == "output" for f in files)
    path = dirs["output"] / "edits" / "take_00002_.flac"
    assert json.loads(read_metadata(path)["workflow"]) == {"nodes": [1]}
    assert torch.allclose(read_audio(path)["waveform"][0], batch[1], atol=2 / 32768)
    (spectrograms,) = out["result"]
    assert spectrograms.shape[0] == 2 and spectrograms.shape[-1] == 3
    assert 0.0 <= spectrograms.min() and spectrograms.max() <= 1.0
    # The 880 Hz clip's brightest row sits higher (frequency up: smaller row index) than the 440 Hz one.
    rows = [int(s.mean(dim=(1, 2)).argmax()) for s in spectrograms]
    assert rows[1] < rows[0]
    # The counter continues after existing files.
    again = node.run(audio={"waveform": batch[:1], "sample_rate": 16000}, filename_prefix="edits/take",
                     format="wav", mp3_quality="V0")
    assert again["ui"]["audio"][0]["filename"] == "take_00003_.wav"
