"""Bad input gets an error naming the node, the input and the fix, and leaves no half-written file."""

from __future__ import annotations

import json
import os

import pytest
import torch

from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.helpers import core_style_audio, expect_input_error, tone, write_with_pyav

LoadAudio = NODE_CLASS_MAPPINGS["PAE_LoadAudio"]
SaveAudio = NODE_CLASS_MAPPINGS["PAE_SaveAudio"]
LoadModel = NODE_CLASS_MAPPINGS["PAE_LoadModel"]
VAEEncode = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]
VAEDecode = NODE_CLASS_MAPPINGS["PAE_VAEDecode"]


def load(name: str, **kwargs):
    return LoadAudio().run(audio=name, start=kwargs.get("start", 0.0), duration=kwargs.get("duration", 0.0),
                           sample_rate=0, mono=False)


def test_missing_file(dirs):
    err = expect_input_error(load, "nowhere.wav")
    assert str(err).startswith("PAE_LoadAudio: input 'audio':") and "not found" in str(err)
    assert "not found" in LoadAudio.VALIDATE_INPUTS(audio="nowhere.wav")
    for empty in ({}, {"audio": None}, {"audio": ""}):  # an empty input folder: ComfyUI sends no value
        message = LoadAudio.VALIDATE_INPUTS(**empty)
        assert message.startswith("PAE_LoadAudio: input 'audio': no file chosen") and "upload" in message
        assert LoadAudio.IS_CHANGED(**empty) == ""


def test_corrupt_file(dirs):
    good = write_with_pyav(dirs["input"] / "good.flac", tone(1.0, 16000), 16000, "flac", "flac")
    (dirs["input"] / "broken.flac").write_bytes(good.read_bytes()[:64] + os.urandom(2000))
    err = expect_input_error(load, "broken.flac")
    assert "PAE_LoadAudio" in str(err) and err.input_name == "audio"


def test_text_file_named_wav(dirs):
    (dirs["input"] / "notes.wav").write_text("these are my notes, not audio\n" * 20)
    err = expect_input_error(load, "notes.wav")
    assert err.input_name == "audio" and "audio" in err.message


def test_zero_length_audio(dirs):
    import wave

    with wave.open(str(dirs["input"] / "empty.wav"), "wb") as header_only:  # a valid header, no samples
        header_only.setnchannels(1)
        header_only.setsampwidth(2)
        header_only.setframerate(16000)
    err = expect_input_error(load, "empty.wav")
    assert "no audio samples" in err.message
    err = expect_input_error(VAEEncode().run, model=None,
                             audio={"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})
    assert str(err).startswith("PAE_VAEEncode: input 'audio':") and "empty" in err.message


@pytest.mark.parametrize("rate", [7, 3999, 250000])
def test_unusable_target_sample_rate(dirs, rate):
    write_with_pyav(dirs["input"] / "ok.wav", tone(0.5, 16000), 16000, "wav", "pcm_s16le", "s16")
    err = expect_input_error(LoadAudio().run, audio="ok.wav", start=0.0, duration=0.0, sample_rate=rate, mono=False)
    assert str(err).startswith("PAE_LoadAudio: input 'sample_rate':") and "4000" in err.message


def test_trim_past_the_end(dirs):
    write_with_pyav(dirs["input"] / "short.wav", tone(1.0, 16000), 16000, "wav", "pcm_s16le", "s16")
    err = expect_input_error(load, "short.wav", start=5.0)
    assert err.input_name == "start" and "past the end" in err.message


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.wav", "~/secret.wav"])
def test_paths_escaping_the_input_folder(dirs, name):
    err = expect_input_error(load, name)
    assert err.input_name == "audio" and ("outside" in err.message or "absolute" in err.message)
    assert isinstance(LoadAudio.VALIDATE_INPUTS(audio=name), str)


def test_symlink_escaping_the_input_folder(dirs, tmp_path):
    secret = tmp_path / "secret.wav"
    write_with_pyav(secret, tone(0.1, 16000), 16000, "wav", "pcm_s16le", "s16")
    os.symlink(secret, dirs["input"] / "link.wav")
    assert "outside" in expect_input_error(load, "link.wav").message


@pytest.mark.parametrize("prefix", ["../escape", "/tmp/abs", "a/../../b"])
def test_save_refuses_paths_outside_the_output_folder(dirs, prefix):
    audio = core_style_audio(0.2, 16000, 1)
    err = expect_input_error(SaveAudio().run, audio=audio, filename_prefix=prefix, format="wav", mp3_quality="V0")
    assert str(err).startswith("PAE_SaveAudio: input 'filename_prefix':")
    assert not any(dirs["output"].parent.glob("escape*")) and not list(dirs["output"].rglob("*"))


def test_nan_waveform_is_refused_before_anything_is_written(dirs):
    audio = core_style_audio(0.2, 16000, 1)
    audio["waveform"][0, 0, 100] = float("nan")
    err = expect_input_error(SaveAudio().run, audio=audio, filename_prefix="x", format="flac", mp3_quality="V0")
    assert "NaN" in err.message
    assert list(dirs["output"].rglob("*")) == []
    err = expect_input_error(VAEEncode().run, model=None, audio=audio)
    assert str(err).startswith("PAE_VAEEncode: input 'audio':") and "NaN" in err.message


def test_failed_write_leaves_no_partial_file(dirs, monkeypatch):
    import prompt_audio_edit.engine.core.files as files

    def broken_replace(src, dst):
        raise OSError("disk full")

    # Files are claimed with a hard link (or, where there are none, an exclusive create and a rename): break both.
    monkeypatch.setattr(files.os, "link", broken_replace)
    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        SaveAudio().run(audio=core_style_audio(0.2, 16000, 1), filename_prefix="x", format="wav", mp3_quality="V0")
    assert list(dirs["output"].rglob("*")) == []


def test_unknown_model_folder(dirs):
    junk = dirs["models"] / "diffusers" / "junk"
    junk.mkdir(parents=True)
    (junk / "readme.txt").write_text("hello")
    assert "diffusers/junk" not in LoadModel.INPUT_TYPES()["required"]["model_name"][0]
    err = expect_input_error(LoadModel().run, model_name="diffusers/junk", dtype="fp32")
    assert str(err).startswith("PAE_LoadModel: input 'model_name':") and "not a model folder" in err.message
    err = expect_input_error(LoadModel().run, model_name="diffusers/absent", dtype="fp32")
    assert "no model folder 'absent'" in err.message
    err = expect_input_error(LoadModel().run, model_name="diffusers/../../etc", dtype="fp32")
    assert "outside" in err.message


def test_audioldm_v1_is_explained(dirs):
    folder = dirs["models"] / "diffusers" / "audioldm-s"
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    err = expect_input_error(LoadModel().run, model_name="diffusers/audioldm-s")
    assert "no text cross-attention" in err.message


def test_incomplete_model_folder(tiny_dirs, tmp_path):
    import shutil

    broken = tiny_dirs["models"] / "diffusers" / "broken-audioldm2"
    shutil.copytree(tiny_dirs["models"] / "diffusers" / "tiny-audioldm2", broken)
    try:
        for weights in (broken / "vocoder").glob("*.safetensors"):
            weights.unlink()
        shutil.rmtree(broken / "unet")
        err = expect_input_error(LoadModel().run, model_name="diffusers/broken-audioldm2", dtype="fp32")
        assert "incomplete" in err.message and "unet/" in err.message and "vocoder/ weights" in err.message
    finally:
        shutil.rmtree(broken)


def test_latent_from_another_backbone(tiny_backbone):
    (latent,) = VAEEncode().run(model=tiny_backbone, audio=core_style_audio(0.5, 16000, 1))
    foreign = dict(latent, pae=dict(latent["pae"], family="stable_audio", model="stable-audio-open-1.0"))
    err = expect_input_error(VAEDecode().run, model=tiny_backbone, latent=foreign, sample_rate="source")
    assert str(err).startswith("PAE_VAEDecode: input 'latent':") and "stable_audio" in err.message
    # A core Stable Audio latent (64 channels, no pack bookkeeping) is refused by its shape.
    err = expect_input_error(VAEDecode().run, model=tiny_backbone, latent={"samples": torch.zeros(1, 64, 100)},
                             sample_rate="source")
    assert "64" in err.message or "channels" in err.message


def test_clip_longer_than_the_backbone_takes(tiny_backbone):
    limit = tiny_backbone.max_duration_s
    audio = {"waveform": torch.zeros(1, 1, int((limit + 1) * 8000)), "sample_rate": 8000}
    err = expect_input_error(VAEEncode().run, model=tiny_backbone, audio=audio)
    assert err.input_name == "audio" and f"at most {limit:g} s" in err.message


def test_prompt_longer_than_the_text_encoder_takes(tiny_backbone):
    pipeline = tiny_backbone.pipeline
    limits = {pipeline.tokenizer.model_max_length, pipeline.tokenizer_2.model_max_length}
    err = expect_input_error(tiny_backbone.encode_text, ["dog " * (max(limits) + 5)])
    assert err.input_name == "prompt" and "shorten" in err.message
    assert any(f"at most {limit}" in err.message for limit in limits)


@pytest.mark.parametrize("failure", [ModuleNotFoundError("No module named 'torchaudio'", name="torchaudio"),
                                     RuntimeError("Failed to import diffusers.pipelines.audioldm2.pipeline_audioldm2 "
                                                  "because of the following error (look up to see its traceback):\n"
                                                  "No module named 'torchaudio'")])
def test_a_failed_import_names_the_environment_not_the_folder(tiny_dirs, monkeypatch, failure):
    from prompt_audio_edit.engine.backbones import registry as model_registry
    from prompt_audio_edit.engine.core import loading
    from prompt_audio_edit.engine.core.errors import PAEInputError
    from tests.conftest import TINY_MODEL

    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setitem(model_registry._LOADERS, "audioldm2", broken)
    model_registry.clear_cache()
    with pytest.raises(PAEInputError) as caught:
        model_registry.load_backbone(TINY_MODEL, "fp32")
    message = str(caught.value)
    assert "torchaudio" in message and "the model folder is not the cause" in message
    assert "pip install --force-reinstall torchaudio" in message and "damaged" not in message
    assert loading.environment_message(ImportError("cannot import name 'x' from 'soxr'")).count("soxr") >= 2
