"""What the browser is given: spectrogram previews beside saved audio, and the Before / After node's pairs."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.io.previews import png_bytes
from tests.helpers import core_style_audio


@pytest.fixture
def temp_dir(dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("PAE_TEMP_DIR", str(tmp_path / "temp"))
    return tmp_path / "temp"


def decode_png(path) -> np.ndarray:
    """Decode with FFmpeg's PNG decoder (through PyAV), independent of the pack's writer."""
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def test_png_writer_round_trips_through_an_independent_decoder(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(pixels))
    assert np.array_equal(decode_png(path), pixels)


def test_save_audio_shows_a_spectrogram_preview_per_clip(dirs, temp_dir):
    audio = core_style_audio(1.0, 16000, 2)
    audio["waveform"] = torch.cat([audio["waveform"], 0.5 * audio["waveform"]])
    result = NODE_CLASS_MAPPINGS["PAE_SaveAudio"]().run(audio=audio, filename_prefix="t/x", format="wav")
    ui, (spectrograms,) = result["ui"], result["result"]
    assert [f["type"] for f in ui["audio"]] == ["output", "output"]
    assert len(ui["images"]) == 2 and all(f["type"] == "temp" for f in ui["images"])
    for file, image in zip(ui["images"], spectrograms):
        shown = decode_png(temp_dir / file["subfolder"] / file["filename"])
        expected = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(shown, expected)  # the preview is the node's IMAGE output, pixel for pixel


def test_before_after_pairs_one_source_with_every_edit(dirs, temp_dir):
    source = core_style_audio(1.0, 16000, 1)
    edits = core_style_audio(1.0, 44100, 2)
    edits["waveform"] = torch.cat([edits["waveform"], -edits["waveform"], 0.3 * edits["waveform"]])
    ui = NODE_CLASS_MAPPINGS["PAE_CompareAudio"]().run(before=source, after=edits)["ui"]
    pairs = ui["pae_compare"]
    assert len(pairs) == 3 and len({p["before"]["filename"] for p in pairs}) == 1
    assert len({p["after"]["filename"] for p in pairs}) == 3 and len(ui["images"]) == 6
    for pair in pairs:
        assert pair["before"]["type"] == pair["after"]["type"] == "temp"
    before = read_audio(temp_dir / pairs[0]["before"]["subfolder"] / pairs[0]["before"]["filename"])
    after = read_audio(temp_dir / pairs[2]["after"]["subfolder"] / pairs[2]["after"]["filename"])
    assert before["sample_rate"] == 16000 and torch.allclose(before["waveform"][0], source["waveform"][0], atol=1e-4)
    assert after["sample_rate"] == 44100 and torch.allclose(after["waveform"][0], edits["waveform"][2], atol=1e-4)
    assert not any(bridge.output_directory().iterdir())  # previews only: nothing in the output folder


def test_before_after_refuses_mismatched_batches(dirs, temp_dir):
    two = core_style_audio(0.5, 16000, 1)
    two["waveform"] = two["waveform"].repeat(2, 1, 1)
    three = core_style_audio(0.5, 16000, 1)
    three["waveform"] = three["waveform"].repeat(3, 1, 1)
    with pytest.raises(PAEInputError, match="PAE_CompareAudio: input 'before': holds 2 clips and 'after' 3"):
        NODE_CLASS_MAPPINGS["PAE_CompareAudio"]().run(before=two, after=three)
    assert not temp_dir.exists() or not any(temp_dir.rglob("*.flac"))
