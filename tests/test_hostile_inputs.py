"""Ordinary and hostile input, as users and hostile files send it: every case ends in a clear error naming the node
and the input, or is handled correctly; nothing is written outside its folder, no existing file changes, nothing
hangs (bounded wall time), and nothing crashes the process (multi-channel decodes run in a child process)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.core import files as files_module
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.diffusion.steps import make_step_schedule
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.engine.methods.editgen import parse_indices
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from prompt_audio_edit.runner.cli import main as pae
from prompt_audio_edit.runner.workflow import WorkflowError, execution_order
from tests.conftest import TINY_MODEL
from tests.fake_comfy import FakeComfy
from tests.helpers import audio_clip, expect_input_error, write_with_pyav

REPO = Path(__file__).resolve().parent.parent
ROUNDTRIP = REPO / "workflows" / "api" / "audio_roundtrip_api.json"
LoadAudio, SaveAudio = NODE_CLASS_MAPPINGS["PAE_LoadAudio"], NODE_CLASS_MAPPINGS["PAE_SaveAudio"]


def pcm_wav(path: Path, channels: int, rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """A 16-bit WAV of any channel count written with the standard library; returns its samples as floats."""
    frames = int(rate * seconds)
    data = (np.random.default_rng(channels).standard_normal((frames, channels)) * 3000).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data.tobytes())
    return data.T.astype(np.float32) / 32768.0


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def save(prefix: str, fmt: str = "wav", audio: dict | None = None) -> dict:
    return SaveAudio().run(audio=audio or audio_clip(0.2, 16000, 1), filename_prefix=prefix, format=fmt,
                           mp3_quality="V0")


# ------------------------------------------------------------------------------------ 1. many channels
@pytest.mark.parametrize("channels", [8, 9, 64])
def test_wav_with_many_channels_decodes_without_crashing(tmp_path, channels):
    expected = pcm_wav(tmp_path / "many.wav", channels)
    code = ("import sys, numpy; from prompt_audio_edit.engine.io.audio import read_audio; "
            f"a = read_audio({str(tmp_path / 'many.wav')!r}, start_s=0.25, duration_s=0.5)['waveform'][0].numpy(); "
            f"numpy.save({str(tmp_path / 'out.npy')!r}, a)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]  # -11 was a segfault that would take ComfyUI down
    decoded = np.load(tmp_path / "out.npy")
    assert decoded.shape == (channels, 8000) and np.array_equal(decoded, expected[:, 4000:12000])


def test_vae_decode_gives_back_the_channel_count_it_was_given(tiny_backbone):
    encode, decode = NODE_CLASS_MAPPINGS["PAE_VAEEncode"](), NODE_CLASS_MAPPINGS["PAE_VAEDecode"]()
    audio = audio_clip(0.5, 16000, 8)
    (latent,) = encode.run(model=tiny_backbone, audio=audio)
    (back,) = decode.run(model=tiny_backbone, latent=latent, sample_rate="source")
    assert tuple(back["waveform"].shape) == (1, 8, 8000) and back["sample_rate"] == 16000


def test_many_channels_save_as_wav_and_refuse_flac_clearly(dirs):
    audio = audio_clip(0.1, 16000, 12)
    (name,) = [f["filename"] for f in save("many", "wav", audio)["ui"]["audio"]]
    back = read_audio(dirs["output"] / name)["waveform"]
    assert back.shape == (1, 12, 1600) and torch.allclose(back, audio["waveform"], atol=1 / 16384)
    err = expect_input_error(SaveAudio().run, audio=audio_clip(0.1, 16000, 9), filename_prefix="x", format="flac",
                             mp3_quality="V0")
    assert str(err).startswith("PAE_SaveAudio: input 'format':") and "8 channels" in err.message


# --------------------------------------------------------------------------- 2. writing outside a folder
@pytest.mark.parametrize("prefix", [".", "audio/..", "./", "a/b/../..", "x/\x00y", "n" * 300])
def test_save_prefix_that_names_the_folder_itself_or_is_unusable(dirs, prefix):
    parent_before = sorted(p.name for p in dirs["output"].parent.iterdir())
    err = expect_input_error(SaveAudio().run, audio=audio_clip(0.2, 16000, 1), filename_prefix=prefix,
                             format="wav", mp3_quality="V0")
    assert str(err).startswith("PAE_SaveAudio: input 'filename_prefix':")
    assert sorted(p.name for p in dirs["output"].parent.iterdir()) == parent_before
    assert not list(dirs["output"].rglob("*"))


@pytest.mark.parametrize("name", ["", "..", "/etc/evil.flac", "..\\..\\evil.flac", "a/../../evil.flac"])
def test_server_output_names_stay_inside_out(tmp_path, name):
    server = FakeComfy(tmp_path / "server", "names", names=[name]).start()
    try:
        (tmp_path / "input").mkdir()
        (tmp_path / "input" / "example.wav").write_bytes(b"RIFF example")
        started = time.monotonic()
        code = pae(["run", str(ROUNDTRIP), "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out"),
                    "--reconnect-wait", "1", "--server", server.url])
        assert time.monotonic() - started < 30
    finally:
        server.stop()
    assert code == 1
    inside = {p.resolve() for p in (tmp_path / "out").rglob("*")}
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and p.resolve() not in inside
               and "server" not in p.relative_to(tmp_path).parts and p.parent != tmp_path / "input"]
    assert outside == [] and not list(tmp_path.parent.glob("evil*")) and not (tmp_path / "out (2)").exists()


def test_demo_stand_ins_only_inside_the_stand_in_folder_and_never_over_a_file(tmp_path, monkeypatch):
    from prompt_audio_edit.engine.core import bridge
    from prompt_audio_edit.standins.workflow import build_stand_ins

    models = tmp_path / "models"
    (models / "diffusers" / "mine").mkdir(parents=True)
    mine = models / "diffusers" / "mine" / "tokenizer_config.json"
    mine.write_text('{"mine": true}')
    bridge.set_directories(models=str(models))
    demo_root = tmp_path / "demo"
    (demo_root / "models" / "diffusers" / "half").mkdir(parents=True)
    user_file = demo_root / "models" / "diffusers" / "half" / "config.json"
    user_file.write_text("{}")
    workflow = {str(i): {"class_type": "PAE_LoadModel", "inputs": {"model_name": name}} for i, name in enumerate(
        ["diffusers/../../escaped", f"diffusers/{tmp_path}/abs", "diffusers/half", "../x/y"])}
    try:
        notes = build_stand_ins(workflow, demo_root)
    finally:
        bridge.reset_directories()
    assert notes == []
    assert mine.read_text() == '{"mine": true}' and user_file.read_text() == "{}"
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.parent.glob("escaped*"))
    assert sorted(p.name for p in (demo_root / "models" / "diffusers").iterdir()) == ["half"]


# ------------------------------------------------------------------------------------------------ 3. hangs
def test_a_frozen_server_loses_its_job_to_the_others(tmp_path, capsys):
    frozen = FakeComfy(tmp_path / "frozen", "freeze").start()
    healthy = FakeComfy(tmp_path / "healthy").start()
    takes = tmp_path / "takes"
    takes.mkdir()
    for index in range(3):
        (takes / f"take{index}.wav").write_bytes(f"RIFF take {index}".encode())
    (tmp_path / "input").mkdir()
    started = time.monotonic()
    try:
        code = pae(["run", str(ROUNDTRIP), "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out"),
                    "--reconnect-wait", "1", "--server", f"{frozen.url},{healthy.url}", "--input", str(takes)])
    finally:
        frozen.frozen = False
        frozen.stop()
        healthy.stop()
    assert time.monotonic() - started < 60
    assert code == 0
    saved = sorted(p.name for p in (tmp_path / "out").rglob("*.flac"))
    assert len(saved) == 3 and len(healthy.completed) == 3
    assert len([line for line in capsys.readouterr().out.splitlines() if line.endswith(".flac")]) == 3


@pytest.mark.parametrize("fault", ["stall_view", "endless_view"])
def test_a_stalled_or_endless_download_ends(tmp_path, fault):
    server = FakeComfy(tmp_path / "server", fault).start()
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "example.wav").write_bytes(b"RIFF example")
    started = time.monotonic()
    try:
        code = pae(["run", str(ROUNDTRIP), "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out"),
                    "--reconnect-wait", "1", "--max-download-mb", "1", "--server", server.url])
    finally:
        server.stop()
    assert time.monotonic() - started < 60 and code == 1
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def _bounded(call, seconds: float = 10.0):
    result: list = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "hung"
    return result[0]


def test_fifos_named_like_audio_or_model_files_do_not_hang(dirs):
    os.mkfifo(dirs["input"] / "pipe.wav")
    folder = dirs["models"] / "diffusers" / "piped"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "model_index.json")
    options = _bounded(lambda: LoadAudio.INPUT_TYPES()["required"]["audio"][0])
    assert "pipe.wav" not in options
    assert _bounded(lambda: LoadAudio.IS_CHANGED(audio="pipe.wav")) == ""
    models = _bounded(lambda: NODE_CLASS_MAPPINGS["PAE_LoadModel"].INPUT_TYPES()["required"]["model_name"][0])
    assert "diffusers/piped" not in models


# ------------------------------------------------------------------------------------------- 4. lost files
def test_a_save_never_replaces_a_file_that_takes_its_number_meanwhile(dirs, monkeypatch):
    save("race")
    first = dirs["output"] / "race_00001_.wav"
    original = first.read_bytes()
    monkeypatch.setattr(files_module, "_next_number", lambda folder, stem: 1)  # as if another run took 1 just now
    (name,) = [f["filename"] for f in save("race", audio=audio_clip(0.3, 16000, 1))["ui"]["audio"]]
    assert name == "race_00002_.wav" and first.read_bytes() == original


def test_concurrent_saves_into_one_folder_keep_every_file(dirs):
    threads = [threading.Thread(target=save, args=("together",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(list(dirs["output"].glob("together_*_.wav"))) == 6
    assert not list(dirs["output"].glob(".*partial"))


def test_a_full_disk_saves_no_clip_of_the_batch_and_says_so(dirs, monkeypatch):
    written = []
    real = files_module.write_temporary

    def fills_up(folder, name, data):
        if written:
            raise OSError(28, "No space left on device")
        written.append(name)
        return real(folder, name, data)

    monkeypatch.setattr(files_module, "write_temporary", fills_up)
    err = expect_input_error(SaveAudio().run, audio=audio_clip(0.2, 16000, 1, clips=3), filename_prefix="batch",
                             format="wav", mp3_quality="V0")
    assert str(err).startswith("PAE_SaveAudio: input 'filename_prefix':") and "nothing was saved" in err.message
    assert list(dirs["output"].rglob("*")) == []


# --------------------------------------------------------------------------------------- 5. unbounded work
def test_load_audio_decodes_only_the_part_asked_for(tmp_path):
    rate, minutes = 8000, 10
    write_with_pyav(tmp_path / "long.flac", np.zeros((1, rate * 60 * minutes), np.float32), rate, "flac", "flac",
                    "s16")
    whole = rate * 60 * minutes * 4
    part = read_audio(tmp_path / "long.flac", start_s=300.0, duration_s=1.0, max_bytes=whole // 100)
    assert part["waveform"].shape == (1, 1, rate)
    with pytest.raises(PAEInputError, match="start and duration"):
        read_audio(tmp_path / "long.flac", max_bytes=whole // 100)


def test_a_mistyped_layer_range_is_refused_before_it_is_built():
    started = time.monotonic()
    with pytest.raises(PAEInputError, match="this model has layers 0..23"):
        parse_indices("0-30000000", "layers", 24)
    with pytest.raises(PAEInputError, match="spans"):
        parse_indices("0-30000000", "layers")
    assert time.monotonic() - started < 1


# ----------------------------------------------------------------------------------- 6. the widget maximum
def test_a_thousand_steps_is_a_valid_schedule(tiny_backbone):
    schedule = tiny_backbone.step_schedule(1000)
    assert schedule.steps == 1000 and max(schedule.timesteps) <= 999 and min(schedule.timesteps) >= 0
    assert len(set(schedule.timesteps)) == 1000
    again = make_step_schedule(tiny_backbone.make_scheduler(), 999, tiny_backbone.prediction_type)
    assert max(again.timesteps) <= 999


# ------------------------------------------------------------------------------------- 7. clear one-liners
@pytest.mark.parametrize("field, value", [("start", math.nan), ("start", math.inf), ("duration", math.nan),
                                          ("duration", -1.0)])
def test_non_finite_times_in_load_audio(dirs, field, value):
    write_with_pyav(dirs["input"] / "ok.wav", np.zeros((1, 1600), np.float32), 16000, "wav", "pcm_s16le", "s16")
    inputs = {"audio": "ok.wav", "start": 0.0, "duration": 0.0, "sample_rate": 0, "mono": False, field: value}
    err = expect_input_error(LoadAudio().run, **inputs)
    assert str(err).startswith(f"PAE_LoadAudio: input '{field}':")


@pytest.mark.parametrize("name", ["a\x00b.wav", "x" * 300 + ".wav"])
def test_unusable_file_names_in_load_audio(dirs, name):
    err = expect_input_error(LoadAudio().run, audio=name, start=0.0, duration=0.0, sample_rate=0, mono=False)
    assert str(err).startswith("PAE_LoadAudio: input 'audio':")


def test_mp3_at_a_rate_lame_cannot_take_is_resampled_to_one_it_can(dirs):
    audio = audio_clip(0.5, 7000, 1)
    (name,) = [f["filename"] for f in save("odd", "mp3", audio)["ui"]["audio"]]
    assert read_audio(dirs["output"] / name)["sample_rate"] == 8000


@pytest.mark.parametrize("rate", [10 ** 12, 0, "fast"])
def test_impossible_sample_rates_in_an_audio_dict(dirs, rate):
    audio = {"waveform": torch.zeros(1, 1, 100), "sample_rate": rate}
    err = expect_input_error(SaveAudio().run, audio=audio, filename_prefix="x", format="wav", mp3_quality="V0")
    assert str(err).startswith("PAE_SaveAudio: input 'audio':") and "sample rate" in err.message


@pytest.mark.parametrize("seed", [2 ** 64, -1])
def test_seeds_outside_comfyuis_range(tiny_backbone, seed):
    encode = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]()
    (latent,) = encode.run(model=tiny_backbone, audio=audio_clip(0.3, 16000, 1))
    err = expect_input_error("PAE_DDIMInvert", model=tiny_backbone, latent=latent, source_prompt="a dog", steps=4,
                             seed=seed)
    assert str(err).startswith("PAE_DDIMInvert: input 'seed':")
    err = expect_input_error("PAE_Sample", model=tiny_backbone, positive="a dog", steps=2, seed=seed, seconds=0.5)
    assert str(err).startswith("PAE_Sample: input 'seed':")


def test_latents_with_no_frames_or_an_impossible_source(tiny_backbone):
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=audio_clip(0.3, 16000, 1))
    empty = dict(latent, samples=latent["samples"][..., :0])
    err = expect_input_error("PAE_VAEDecode", model=tiny_backbone, latent=empty, sample_rate="source")
    assert str(err).startswith("PAE_VAEDecode: input 'latent':") and "empty" in err.message
    huge = dict(latent, pae=dict(latent["pae"], source_num_samples=10 ** 12))
    err = expect_input_error("PAE_VAEDecode", model=tiny_backbone, latent=huge, sample_rate="source")
    assert str(err).startswith("PAE_VAEDecode: input 'latent':")


def test_a_pickle_that_weights_only_refuses_is_a_clear_load_error(tiny_dirs, tmp_path, monkeypatch):
    import pickle

    from prompt_audio_edit.engine.backbones import registry

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed: GLOBAL os.system was not an allowed global")

    registry.clear_cache()
    monkeypatch.setitem(registry._LOADERS, "audioldm2", refuse)
    err = expect_input_error("PAE_LoadModel", model_name=TINY_MODEL, dtype="fp32")
    assert str(err).startswith("PAE_LoadModel: input 'model_name': could not load") and "UnpicklingError" in str(err)
    registry.clear_cache()


def test_malicious_pickles_are_refused_and_run_nothing(dirs, tmp_path):
    from prompt_audio_edit.engine.core.checkpoints import read_checkpoint

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(1), "evil": Evil()}, path)
    with pytest.raises(PAEInputError):
        read_checkpoint(path, "adapter_name", "the adapter", "download it again")
    assert not marker.exists()


def run_in_process(tmp_path: Path, *args: str, workflow: Path = ROUNDTRIP) -> int:
    return pae(["run", str(workflow), "--input-dir", str(tmp_path / "input"), "--models", str(tmp_path / "models"),
                *args])


def test_runner_refusals_before_any_model_loads(tmp_path, capsys):
    (tmp_path / "input").mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    not_json = tmp_path / "ui.json"
    not_json.write_text("{nope")
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    cases = [
        (("--out", str(tmp_path / "out"), "--set", "1.bogus=3"), "bogus"),
        (("--out", str(a_file)), "output folder"),
        (("--out", str(tmp_path / "out"), "--ui-workflow", str(tmp_path / "missing.json")), "not found"),
        (("--out", str(tmp_path / "out"), "--ui-workflow", str(not_json)), "not readable JSON"),
    ]
    for args, said in cases:
        assert run_in_process(tmp_path, *args) == 2, args
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (args, err)
    assert run_in_process(tmp_path, "--out", str(tmp_path / "out"), workflow=nested) == 2
    err = capsys.readouterr().err
    assert "too deeply" in err and "Traceback" not in err
    assert a_file.read_text() == "x"
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()] if (tmp_path / "out").exists() else True


def test_a_long_chain_of_nodes_is_ordered_without_recursion():
    class Node:
        OUTPUT_NODE = False

    class Out:
        OUTPUT_NODE = True

    workflow = {"0": {"class_type": "N", "inputs": {}}}
    for index in range(1, 3000):
        workflow[str(index)] = {"class_type": "N", "inputs": {"x": [str(index - 1), 0]}}
    workflow["3000"] = {"class_type": "O", "inputs": {"x": ["2999", 0]}}
    order = execution_order(workflow, {"N": Node, "O": Out})
    assert order == [str(i) for i in range(3001)]
    workflow["0"]["inputs"]["x"] = ["2999", 0]
    with pytest.raises(WorkflowError, match="cycle"):
        execution_order(workflow, {"N": Node, "O": Out})


def test_deeply_nested_model_json_skips_that_folder_and_lists_the_others(tiny_dirs, tmp_path):
    from prompt_audio_edit.engine.backbones.registry import list_models

    broken = tiny_dirs["models"] / "diffusers" / "zz-nested"
    broken.mkdir(exist_ok=True)
    try:
        (broken / "model_index.json").write_text("[" * 100000 + "]" * 100000)
        listed = _bounded(list_models)
        assert TINY_MODEL in listed and "diffusers/zz-nested" not in listed
    finally:
        (broken / "model_index.json").unlink()
        broken.rmdir()


def test_edit_by_prompt_names_its_own_input_for_an_overlong_prompt(tiny_backbone):
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=audio_clip(0.3, 16000, 1))
    (inversion,) = NODE_CLASS_MAPPINGS["PAE_DDIMInvert"]().run(model=tiny_backbone, latent=latent,
                                                               source_prompt="a dog barking", steps=4)
    err = expect_input_error("PAE_PromptEdit", model=tiny_backbone, inversion=inversion,
                             target_prompt="a dog barking " * 80, guidance_scales="3")
    assert str(err).startswith("PAE_PromptEdit: input 'target_prompt':")


# --------------------------------------------------------------------------------------- 8. silently taken
def test_symlinked_model_folders_are_followed_but_names_may_not_climb_out(tiny_dirs, tmp_path):
    from prompt_audio_edit.engine.backbones import registry

    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    real = tiny_dirs["models"] / TINY_MODEL
    link = tiny_dirs["models"] / "diffusers" / "linked"
    link.symlink_to(real, target_is_directory=True)
    try:
        assert "diffusers/linked" in registry.list_models()
        assert registry.find_model_folder("diffusers/linked") == link
        for name in ("diffusers/../diffusers/linked/..", "diffusers/" + str(real)):
            with pytest.raises(PAEInputError):
                registry.find_model_folder(name)
    finally:
        link.unlink()


def test_a_falling_schedule_must_fall():
    from prompt_audio_edit.engine.attention.schedule import FusionSchedule

    with pytest.raises(PAEInputError, match="eta_min <= eta_max") as info:
        FusionSchedule("cosine", eta_min=0.9, eta_max=0.2)
    assert info.value.input_name == "eta_min"
    assert FusionSchedule("cosine", eta_min=0.5, eta_max=0.5)(0.3) == 0.5


def test_a_latent_decoded_by_another_model_of_its_family_is_named_in_the_log(tiny_dirs, caplog):
    from prompt_audio_edit.engine.backbones import registry
    from tests.conftest import TINY_V_MODEL

    eps, v = registry.load_backbone(TINY_MODEL, "fp32"), registry.load_backbone(TINY_V_MODEL, "fp32")
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=eps, audio=audio_clip(0.3, 16000, 1))
    with caplog.at_level("WARNING"):
        NODE_CLASS_MAPPINGS["PAE_VAEDecode"]().run(model=eps, latent=latent, sample_rate="source")
        assert "weights differ" not in caplog.text
        NODE_CLASS_MAPPINGS["PAE_VAEDecode"]().run(model=v, latent=latent, sample_rate="source")
    assert "encoded by 'tiny-audioldm2' but is decoded by 'tiny-audioldm2-v'" in caplog.text


def test_a_truncated_mp3_loads_what_it_has_and_says_so(tmp_path, caplog):
    from prompt_audio_edit.engine.io.audio import encode_audio

    data = encode_audio(audio_clip(4.0, 16000, 1)["waveform"][0], 16000, "mp3")  # its Xing header says 4 s
    (tmp_path / "full.mp3").write_bytes(data)
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])
    with caplog.at_level("WARNING"):
        audio = read_audio(tmp_path / "cut.mp3")
    assert 1.8 < audio["waveform"].shape[-1] / 16000 < 2.2
    assert "may be truncated" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        read_audio(tmp_path / "full.mp3")
        read_audio(tmp_path / "cut.mp3", start_s=0.5, duration_s=1.0)
    assert "truncated" not in caplog.text
