"""convert_pickles (`pae models convert`) on tiny AP-Adapter, AudioMAE and Tango pickles in the released layouts: the
copies hold no pickle and load the same models, nothing is ever replaced or left half-written, the loaders read the
copies without touching the pickles; and AudioMAE's move from models/audio_encoders/ to models/audiomae/."""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from prompt_audio_edit.engine.backbones.tango import load_tango_backbone
from prompt_audio_edit.engine.core import loading
from prompt_audio_edit.engine.install.convert import CONVERTED, EXISTS, FAILED, SKIPPED, convert_pickles
from prompt_audio_edit.engine.methods import ap_adapter as ap
from prompt_audio_edit.engine.models import audiomae
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from prompt_audio_edit.standins.ap_adapter import build_tiny_audiomae
from tests.conftest import TINY_AP_ADAPTER, TINY_AUDIOMAE, TINY_TANGO
from tests.helpers import audio_clip

TANGO_FILES = ("pytorch_model_main.bin", "pytorch_model_vae.bin", "pytorch_model_stft.bin")
CPU = torch.device("cpu")


@pytest.fixture
def models(dirs, tiny_models_root):
    """A fresh models folder holding copies of the session's tiny adapter and Tango pickles and a tiny AudioMAE."""
    root = dirs["models"]
    (root / "ap_adapter").mkdir()
    shutil.copy(tiny_models_root / "ap_adapter" / TINY_AP_ADAPTER, root / "ap_adapter" / TINY_AP_ADAPTER)
    build_tiny_audiomae(root / "audiomae" / TINY_AUDIOMAE, seed=0)
    shutil.copytree(tiny_models_root / TINY_TANGO, root / TINY_TANGO)
    yield root
    loading.clear_cache()


def dropdown(input_name: str) -> list[str]:
    return NODE_CLASS_MAPPINGS["PAE_LoadAPAdapter"].INPUT_TYPES()["required"][input_name][0]


def hidden_files(root: Path) -> list[str]:
    return [os.path.join(folder, f) for folder, _, files in os.walk(root) for f in files if f.startswith(".")]


def assert_pure_safetensors(path: Path) -> None:
    """The file is exactly a safetensors header plus the tensors' bytes it describes: nothing else, no pickle."""
    data = path.read_bytes()
    assert not data.startswith((b"PK", b"\x80")), "a zip or pickle"
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    assert 8 + length + max(ends) == len(data)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def loaded_everything(models: Path):
    adapter = ap.load_ap_adapter(TINY_AP_ADAPTER, TINY_AUDIOMAE, "fp32")
    tango = load_tango_backbone(models / TINY_TANGO, torch.float32, CPU)
    return adapter, tango


def compare(before, after) -> None:
    (adapter0, tango0), (adapter1, tango1) = before, after
    assert adapter1 is not adapter0 and adapter1.encoder is not adapter0.encoder  # really loaded again
    assert adapter0.weights.layers.keys() == adapter1.weights.layers.keys()
    for name, (k, v) in adapter0.weights.layers.items():
        assert torch.equal(k, adapter1.weights.layers[name][0]) and torch.equal(v, adapter1.weights.layers[name][1])
    same_state(adapter0.encoder.model, adapter1.encoder.model)
    clip = audio_clip(1.0, 16000, kind="harmonics")
    assert torch.equal(adapter0.encoder.audio_tokens(clip, 2), adapter1.encoder.audio_tokens(clip, 2))
    for part in tango0.modules:
        same_state(tango0.modules[part], tango1.modules[part])
    assert torch.equal(tango0.mel.mel_basis, tango1.mel.mel_basis)
    prompts = ["a dog barks", "rain on a window"]
    assert torch.equal(tango0.encode_text(prompts).streams["t5"], tango1.encode_text(prompts).streams["t5"])


def test_copies_hold_no_pickle_and_load_the_same_models_without_reading_a_pickle(models, monkeypatch):
    main = torch.load(models / TINY_TANGO / TANGO_FILES[0], map_location="cpu", weights_only=True)
    tied = ("text_encoder.shared.weight", "text_encoder.encoder.embed_tokens.weight")
    assert main[tied[0]].data_ptr() == main[tied[1]].data_ptr()  # a tied weight, which safetensors cannot alias
    before = loaded_everything(models)

    lines: list[str] = []
    results = convert_pickles(report=lines.append)
    expected = {models / "ap_adapter" / "pytorch_model.safetensors", models / "audiomae" / "pretrained.safetensors",
                *(models / TINY_TANGO / name.replace(".bin", ".safetensors") for name in TANGO_FILES)}
    assert [r.status for r in results] == [CONVERTED] * 5
    assert {r.written for r in results} == expected
    assert len(lines) == 6 and all(str(r.source) in line for r, line in zip(results, lines))
    for path in expected:
        assert_pure_safetensors(path)
    assert hidden_files(models) == []

    # Break every pickle, and any torch.load: the loaders must read the copies only. (A new file in each one's place:
    # the models loaded before still map the old files' pages, which truncating them would pull away.)
    for result in results:
        result.source.unlink()
        result.source.write_bytes(b"not a pickle any more")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a pickle was read")

    monkeypatch.setattr(torch, "load", no_unpickling)
    loading.clear_cache()
    compare(before, loaded_everything(models))


def test_the_dropdowns_show_a_pair_once_and_a_lone_copy_loads_by_either_name(models):
    assert dropdown("adapter_name") == [TINY_AP_ADAPTER] and dropdown("audio_encoder") == [TINY_AUDIOMAE]
    convert_pickles(report=lambda line: None)
    # The pickle's name (what workflows store) stands for the pair.
    assert dropdown("adapter_name") == [TINY_AP_ADAPTER] and dropdown("audio_encoder") == [TINY_AUDIOMAE]
    (models / "ap_adapter" / TINY_AP_ADAPTER).unlink()
    (models / "audiomae" / TINY_AUDIOMAE).unlink()
    assert dropdown("adapter_name") == ["pytorch_model.safetensors"]
    assert dropdown("audio_encoder") == ["pretrained.safetensors"]
    stored = ap.load_ap_adapter(TINY_AP_ADAPTER, TINY_AUDIOMAE, "fp32")  # a shipped workflow's names
    assert stored.weights.path.name == "pytorch_model.safetensors"
    assert stored.encoder.path.name == "pretrained.safetensors"
    listed = ap.load_ap_adapter("pytorch_model.safetensors", "pretrained.safetensors", "fp32")
    assert listed.encoder is stored.encoder and listed.weights is stored.weights  # the same file, loaded once


def test_a_second_convert_skips_every_copy_and_no_existing_file_is_ever_replaced(models):
    theirs = models / "audiomae" / "pretrained.safetensors"
    theirs.write_bytes(b"someone else's file")
    os.utime(theirs, (1_000_000_000, 1_000_000_000))
    first = {r.source.name: r for r in convert_pickles(report=lambda line: None)}
    assert first[TINY_AUDIOMAE].status == EXISTS and first[TINY_AUDIOMAE].written is None
    assert theirs.read_bytes() == b"someone else's file" and theirs.stat().st_mtime == 1_000_000_000
    assert first[TINY_AP_ADAPTER].status == CONVERTED

    copies = sorted(models.rglob("*.safetensors"))
    stats = {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in copies}
    lines: list[str] = []
    second = convert_pickles(report=lines.append)
    assert [r.status for r in second] == [EXISTS] * 5 and all(r.written is None for r in second)
    assert all(line.startswith("exists:") for line in lines)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in copies} == stats
    assert hidden_files(models) == []


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_write_leaves_no_final_file_and_no_temporary(models, monkeypatch, failure):
    import safetensors.torch

    real_save = safetensors.torch.save_file

    def save_half_then_fail(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        assert Path(filename).parent in {models / "ap_adapter", models / "audiomae", models / TINY_TANGO}
        raise failure

    monkeypatch.setattr(safetensors.torch, "save_file", save_half_then_fail)
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            convert_pickles(report=lambda line: None)
    else:
        results = convert_pickles(report=lambda line: None)
        assert [r.status for r in results] == [FAILED] * 5
        assert all("No space left" in r.detail for r in results)
    assert list(models.rglob("*.safetensors")) == []
    assert hidden_files(models) == []


def test_audiomae_in_the_old_audio_encoders_folder_loads_with_one_notice(dirs, caplog):
    old, new = dirs["models"] / "audio_encoders", dirs["models"] / "audiomae"
    build_tiny_audiomae(old / "pretrained.pth", seed=0)
    build_tiny_audiomae(old / "both.pth", seed=1)
    build_tiny_audiomae(new / "both.pth", seed=2)
    build_tiny_audiomae(new / "sub" / "new.pth", seed=3)
    assert dropdown("audio_encoder") == ["both.pth", "pretrained.pth", "sub/new.pth"]  # both places, each name once

    with caplog.at_level(logging.WARNING, logger="prompt_audio_edit"):
        encoder = audiomae.load_audio_encoder("pretrained.pth", "fp32")
        loading.clear_cache()
        again = audiomae.load_audio_encoder("pretrained.pth", "fp32")
        both = audiomae.load_audio_encoder("both.pth", "fp32")
    assert again is not encoder and encoder.path == old / "pretrained.pth"
    notices = [r for r in caplog.records if "audio_encoders" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0].getMessage()
    assert "move it to models/audiomae/" in notices[0].getMessage() and "pretrained.pth" in notices[0].getMessage()
    assert "Audio Encoder Loader" in notices[0].getMessage()
    assert both.path == new / "both.pth"  # the new place wins, and says nothing
    stored = torch.load(new / "both.pth", weights_only=False)["model"]["cls_token"]
    assert torch.equal(both.model.cls_token, stored)
    loading.clear_cache()


def test_convert_puts_an_old_place_audiomae_copy_into_audiomae_and_skips_foreign_files(dirs, caplog):
    old = dirs["models"] / "audio_encoders"
    build_tiny_audiomae(old / "pretrained.pth", seed=0)
    torch.save({"encoder.weight": torch.ones(2, 2)}, old / "whisper.pt")  # one of ComfyUI's own, not AudioMAE
    (dirs["models"] / "ap_adapter").mkdir()
    torch.save({"not.an.adapter": torch.ones(1)}, dirs["models"] / "ap_adapter" / "junk.bin")
    before = audiomae.load_audio_encoder("pretrained.pth", "fp32")

    results = {r.source.name: r for r in convert_pickles(report=lambda line: None)}
    assert results["pretrained.pth"].status == CONVERTED
    assert results["pretrained.pth"].written == dirs["models"] / "audiomae" / "pretrained.safetensors"
    assert results["whisper.pt"].status == SKIPPED and results["junk.bin"].status == FAILED
    assert "AP-Adapter checkpoint" in results["junk.bin"].detail
    assert sorted(p.name for p in old.iterdir()) == ["pretrained.pth", "whisper.pt"]  # nothing added to the old place
    assert not (dirs["models"] / "ap_adapter" / "junk.safetensors").exists()

    loading.clear_cache()
    caplog.clear()  # the first load's notice
    with caplog.at_level(logging.WARNING, logger="prompt_audio_edit"):
        after = audiomae.load_audio_encoder("pretrained.pth", "fp32")
    assert after.path == dirs["models"] / "audiomae" / "pretrained.safetensors"
    assert not [r for r in caplog.records if "audio_encoders" in r.getMessage()]
    same_state(before.model, after.model)
    loading.clear_cache()


def test_nothing_to_convert_says_where_it_looked(dirs):
    lines: list[str] = []
    assert convert_pickles(report=lines.append) == []
    assert len(lines) == 1 and str(dirs["models"] / "audiomae") in lines[0]
