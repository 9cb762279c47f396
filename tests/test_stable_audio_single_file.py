"""Stable Audio Open and SAO-Instruct as ComfyUI users have them: one stable-audio-tools .safetensors in
models/checkpoints/ and T5-base's weights file in models/text_encoders/, loaded strictly and predicting exactly as the
diffusers folder of the same weights."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.backbones import stable_audio_checkpoint
from prompt_audio_edit.engine.backbones.stable_audio import t5_support_files
from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode
from prompt_audio_edit.engine.methods.instruct import load_instruct_model
from prompt_audio_edit.nodes.model_nodes import LoadModel

from tests.helpers import audio_clip, expect_input_error

SAO_FOLDER = "diffusers/sao-64"             # the diffusers folder of the weights below
INSTRUCT_FOLDER = "diffusers/sao-instruct-64"
SAO_FILE = "checkpoints/stable-audio-open-1.0.safetensors"
INSTRUCT_FILE = "checkpoints/sao/sao-instruct.safetensors"  # in a subfolder, as ComfyUI lists them
T5 = "t5-base.safetensors"
PROMPT = "rain on a tin roof"


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """A models folder in ComfyUI's layout, with the diffusers folders of the same weights beside it, a
    non-Stable-Audio safetensors and a pickle in checkpoints/, and a CLIP file in text_encoders/."""
    from safetensors.torch import save_file

    from prompt_audio_edit.standins.stable_audio import (build_tiny_stable_audio, save_single_file_checkpoint,
                                                         save_t5_text_encoder)

    root = tmp_path_factory.mktemp("comfy-models")
    # The released head width (64): a single file's shapes do not say it. 47.55 s: the released 1024-frame window.
    sao = build_tiny_stable_audio(root / SAO_FOLDER, seed=0, max_seconds=47.55, head_dim=64, heads=2)
    instruct = build_tiny_stable_audio(root / INSTRUCT_FOLDER, seed=0, in_channels=128, max_seconds=47.55,
                                       head_dim=64, heads=2)
    save_single_file_checkpoint(sao, root / SAO_FILE)
    save_single_file_checkpoint(instruct, root / INSTRUCT_FILE)
    save_t5_text_encoder(sao, root / "text_encoders" / T5, root / "text_encoders" / "t5-base")
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(4, 4)},
              str(root / "checkpoints" / "sd15-like.safetensors"))
    torch.save({stable_audio_checkpoint.ROTARY_KEY: torch.zeros(16)}, root / "checkpoints" / "sao-pickle.ckpt")
    save_file({"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(8, 768)},
              str(root / "text_encoders" / "clip_l.safetensors"))
    return root


@pytest.fixture
def models(dirs, layout) -> Path:
    bridge.set_directories(models=str(layout))
    return layout


def _own_root(tmp_path: Path, layout: Path, *names: str) -> Path:
    """A models folder linking only the named files and folders of the layout (a test changes it freely)."""
    root = tmp_path / "own-models"
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(layout / name)
    bridge.set_directories(models=str(root))
    return root


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _public(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _placed_alike(*backbones) -> None:
    """Give every weight fresh (64-byte aligned) storage. A memory-mapped diffusers file and a loaded state dict
    leave equal weights at different alignments, and CPU kernels then round differently (~1e-7); placed alike,
    equal models give bitwise equal outputs."""
    for backbone in backbones:
        for module in backbone.modules.values():
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()


# ------------------------------------------------------------------------------------------- listing
def test_the_dropdowns_list_single_files_from_their_headers_only(models, monkeypatch):
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("listing read a whole weights file")

    stable_audio_checkpoint._headers.clear()
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    types_ = LoadModel.INPUT_TYPES()
    choices = types_["required"]["model_name"][0]
    assert {SAO_FILE, INSTRUCT_FILE, SAO_FOLDER, INSTRUCT_FOLDER} <= set(choices)
    assert not [c for c in choices if c.endswith(("sd15-like.safetensors", ".ckpt"))]
    from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

    instruct = NODE_CLASS_MAPPINGS["PAE_LoadSAOInstruct"].INPUT_TYPES()["required"]["model_name"][0]
    assert INSTRUCT_FILE in instruct and SAO_FILE not in instruct  # 128 input channels, read from the header
    # One new optional input, at the end: saved workflows keep their widget positions.
    assert list(types_["required"]) == ["model_name", "dtype"] and list(types_["optional"]) == ["text_encoder"]
    encoders, options = types_["optional"]["text_encoder"]
    assert options["default"] == T5 and encoders == [T5]  # the CLIP file is not a T5-base
    assert "checkpoints/" in options["tooltip"]
    from scripts.node_contract import current_contract

    assert current_contract()["PAE_LoadModel"]["inputs"] == ["model_name:COMBO", "dtype:COMBO", "text_encoder:COMBO"]


def test_an_empty_models_folder_still_offers_the_default_text_encoder(dirs):
    types_ = LoadModel.INPUT_TYPES()
    assert types_["optional"]["text_encoder"][0] == [T5]
    assert not [c for c in types_["required"]["model_name"][0] if c.startswith("checkpoints/")]


# ------------------------------------------------------------------------------------------- loading
def test_stable_audio_open_single_file_loads_strictly_and_predicts_as_its_folder(models):
    folder = model_registry.load_backbone(SAO_FOLDER, "fp32")
    single = LoadModel().run(model_name=SAO_FILE, dtype="fp32", text_encoder=T5)[0]
    assert single is not folder and single.name == "stable-audio-open-1.0" and not single.instruct
    for part in ("transformer", "vae", "projection", "text_encoder"):
        assert _states_equal(getattr(folder, part), getattr(single, part)), part  # nothing missing or left over
    # Geometry read from the shapes (and the released window) is the folder's configuration.
    assert _public(single.transformer.config) == _public(folder.transformer.config)
    assert _public(single.vae.config) == _public(folder.vae.config)
    assert single.max_duration_s == pytest.approx(1024 * 2048 / 44100)
    assert single.tokenizer.model_max_length == 128
    # The σ range is diffusers' release scheduler's, for the single file as for the folder (not core's 0.03).
    assert (single.scheduler_config["sigma_min"], single.scheduler_config["sigma_max"]) == (0.3, 500.0)
    assert single.step_schedule(9).timesteps == folder.step_schedule(9).timesteps

    x = torch.randn(2, 64, 11, generator=torch.Generator().manual_seed(0))
    as_loaded = single.predict(x, 0.6, single.encode_text(["", PROMPT]))
    torch.testing.assert_close(as_loaded, folder.predict(x, 0.6, folder.encode_text(["", PROMPT])), rtol=0, atol=1e-6)
    _placed_alike(folder, single)
    text_folder, text_single = folder.encode_text(["", PROMPT]), single.encode_text(["", PROMPT])
    assert text_single.tokens == text_folder.tokens
    assert torch.equal(text_single.streams["t5"], text_folder.streams["t5"])
    assert torch.count_nonzero(text_single.streams["t5"][1]) > 0
    assert torch.equal(single.predict(x, 0.6, text_single), folder.predict(x, 0.6, text_folder))
    clip = audio_clip(1.0, 44100, 2, kind="noise", seed=3)
    latent_folder, latent_single = vae_encode(folder, clip), vae_encode(single, clip)
    assert torch.equal(latent_single["samples"], latent_folder["samples"])
    assert torch.equal(vae_decode(single, latent_folder)["waveform"], vae_decode(folder, latent_folder)["waveform"])


def test_sao_instruct_single_file_takes_128_channels_and_predicts_as_its_folder(models):
    folder = load_instruct_model(INSTRUCT_FOLDER, "fp32")
    single = load_instruct_model(INSTRUCT_FILE, "fp32")
    assert single.instruct and single.in_channels == 128
    for part in ("transformer", "vae", "projection", "text_encoder"):
        assert _states_equal(getattr(folder, part), getattr(single, part)), part
    assert _public(single.transformer.config) == _public(folder.transformer.config)
    g = torch.Generator().manual_seed(1)
    x, clip = torch.randn(2, 64, 9, generator=g), torch.randn(2, 64, 9, generator=g)
    torch.testing.assert_close(single.predict(x, 0.4, single.encode_text(["", "add rain"]), input_latent=clip),
                               folder.predict(x, 0.4, folder.encode_text(["", "add rain"]), input_latent=clip),
                               rtol=0, atol=1e-6)
    _placed_alike(folder, single)
    assert torch.equal(single.predict(x, 0.4, single.encode_text(["", "add rain"]), input_latent=clip),
                       folder.predict(x, 0.4, folder.encode_text(["", "add rain"]), input_latent=clip))


def test_the_stable_audio_tools_folder_and_the_single_file_build_the_same_model(models, tmp_path):
    """One builder behind both layouts: the folder's model_config.json and the file's shapes agree."""
    from prompt_audio_edit.standins.stable_audio import save_stable_audio_tools_checkpoint

    root = _own_root(tmp_path, models, SAO_FILE, f"text_encoders/{T5}", "text_encoders/t5-base")
    save_stable_audio_tools_checkpoint(models / SAO_FOLDER, root / "diffusers" / "sao-sat")
    folder = model_registry.load_backbone("diffusers/sao-sat", "fp32")
    single = model_registry.load_backbone(SAO_FILE, "fp32")
    for part in ("transformer", "vae", "projection"):
        assert _public(getattr(folder, part).config) == _public(getattr(single, part).config), part
        assert _states_equal(getattr(folder, part), getattr(single, part)), part


def test_the_text_encoder_choice_is_part_of_what_is_shared(models, tmp_path):
    root = _own_root(tmp_path, models, SAO_FILE, "text_encoders/t5-base")
    shutil.copyfile(models / "text_encoders" / T5, root / "text_encoders" / T5)
    shutil.copyfile(models / "text_encoders" / T5, root / "text_encoders" / "t5-copy.safetensors")
    first = model_registry.load_backbone(SAO_FILE, "fp32")
    assert model_registry.load_backbone(SAO_FILE, "fp32", T5) is first
    other = model_registry.load_backbone(SAO_FILE, "fp32", "t5-copy.safetensors")
    assert other is not first and _states_equal(other.text_encoder, first.text_encoder)


# -------------------------------------------------------------------------------------------- errors
def _one_line(error) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_missing_t5_pieces_say_which_file_goes_where(models, tmp_path):
    err = expect_input_error("PAE_LoadModel", model_name=SAO_FILE, dtype="fp32", text_encoder="t5-gone.safetensors")
    assert err.input_name == "text_encoder"
    assert _one_line(err).startswith("PAE_LoadModel: input 'text_encoder': no T5-base weights file 't5-gone")
    assert "t5-base.safetensors" in err.message and "text_encoders" in err.message

    root = _own_root(tmp_path, models, SAO_FILE, f"text_encoders/{T5}")
    err = expect_input_error(model_registry.load_backbone, SAO_FILE, "fp32")
    assert err.input_name == "text_encoder" and "pae models get t5-base" in _one_line(err)
    assert f"config.json and tokenizer.json are missing from {root / 'text_encoders' / 't5-base'}" in err.message
    support = root / "text_encoders" / "t5-base"
    support.mkdir()
    shutil.copyfile(models / "text_encoders" / "t5-base" / "config.json", support / "config.json")
    err = expect_input_error(model_registry.load_backbone, SAO_FILE, "fp32")
    assert "T5-base's tokenizer.json is missing from" in _one_line(err)


def test_a_foreign_text_encoder_file_is_refused_by_its_keys(models):
    err = expect_input_error(model_registry.load_backbone, SAO_FILE, "fp32", "clip_l.safetensors")
    assert err.input_name == "text_encoder"
    assert "'text_encoders/clip_l.safetensors' does not fit T5's encoder" in _one_line(err)
    assert "unexpected: text_model.encoder.layers.0.mlp.fc1.weight" in err.message


def test_truncated_foreign_pickled_and_garbage_checkpoints_are_refused_in_one_line(models, tmp_path):
    root = _own_root(tmp_path, models, "checkpoints/sd15-like.safetensors", "checkpoints/sao-pickle.ckpt",
                     f"text_encoders/{T5}", "text_encoders/t5-base")
    data = (models / SAO_FILE).read_bytes()
    (root / "checkpoints" / "cut.safetensors").write_bytes(data[:len(data) // 2])
    (root / "checkpoints" / "garbage.safetensors").write_bytes(b"\x00\x10" * 64)
    # A cut download keeps its header, so it is listed, and loading says what is wrong.
    assert [c for c in model_registry.list_models(model_registry.DIFFUSION_KINDS)] == ["checkpoints/cut.safetensors"]
    cases = {"checkpoints/cut.safetensors": f"is truncated: its header lists {len(data)} bytes but the file holds "
                                            f"{len(data) // 2}; download it again",
             "checkpoints/sd15-like.safetensors": "is not a Stable Audio Open or SAO-Instruct checkpoint",
             "checkpoints/sao-pickle.ckpt": "read as .safetensors only",
             "checkpoints/garbage.safetensors": "is not a readable safetensors file",
             "checkpoints/none.safetensors": "no checkpoint 'none.safetensors'"}
    for name, expected in cases.items():
        err = expect_input_error("PAE_LoadModel", model_name=name, dtype="fp32", text_encoder=T5)
        assert err.input_name == "model_name" and expected in _one_line(err), (name, err.message)


def _edited_checkpoint(models: Path, tmp_path: Path, edit) -> str:
    from safetensors.torch import load_file, save_file

    root = _own_root(tmp_path, models, f"text_encoders/{T5}", "text_encoders/t5-base")
    state = load_file(str(models / SAO_FILE))
    edit(state)
    (root / "checkpoints").mkdir()
    save_file(state, str(root / "checkpoints" / "edited.safetensors"))
    return "checkpoints/edited.safetensors"


def test_shapes_that_contradict_each_other_are_refused(models, tmp_path):
    # A 32-entry rotary buffer means 128-wide heads, which this DiT's 128-wide attention keys cannot hold.
    name = _edited_checkpoint(models, tmp_path, lambda s: s.update({stable_audio_checkpoint.ROTARY_KEY:
                                                                    torch.ones(32)}))
    err = expect_input_error(model_registry.load_backbone, name, "fp32")
    assert "cross-attention key width 64 are not whole numbers of 128-wide heads" in _one_line(err)


def test_timing_conditioners_that_do_not_fit_the_dit_are_refused(models, tmp_path):
    key = "conditioner.conditioners.seconds_start.embedder.embedding.1.weight"
    name = _edited_checkpoint(models, tmp_path, lambda s: s.update({key: s[key][:512]}))
    err = expect_input_error(model_registry.load_backbone, name, "fp32")
    assert "takes 768-wide text keys and a 1536-wide global condition, but its timing conditioners give 512" \
        in _one_line(err)


def test_a_renamed_weight_is_named_by_the_strict_load(models, tmp_path):
    old = "model.model.transformer.layers.1.cross_attn.to_q.weight"
    name = _edited_checkpoint(models, tmp_path, lambda s: s.update({old + "s": s.pop(old)}))
    err = expect_input_error(model_registry.load_backbone, name, "fp32")
    assert "1 missing: transformer_blocks.1.attn2.to_q.weight; 1 unexpected: transformer_blocks.1.attn2.to_q.weights" \
        in _one_line(err)


def test_a_missing_part_is_named(models, tmp_path):
    name = _edited_checkpoint(models, tmp_path, lambda s: [s.pop(k) for k in list(s)
                                                           if k.startswith("conditioner.conditioners.seconds_total.")])
    err = expect_input_error(model_registry.load_backbone, name, "fp32")
    assert "is not a Stable Audio Open or SAO-Instruct checkpoint" in _one_line(err)  # recognised by name first
    name = _edited_checkpoint(models, tmp_path / "2", lambda s: s.pop("model.model.to_global_embed.0.weight"))
    err = expect_input_error(model_registry.load_backbone, name, "fp32")
    assert "lacks model.model.to_global_embed.0.weight" in _one_line(err)


# ----------------------------------------------------------------------------------- ComfyUI's files
def test_inside_comfyui_t5_config_and_tokenizer_come_from_the_models_folder_or_comfyui(models, monkeypatch, tmp_path):
    assert bridge.comfy_text_encoder_dir() is None  # standalone
    assert t5_support_files() == (models / "text_encoders" / "t5-base" / "config.json",
                                  models / "text_encoders" / "t5-base")
    shipped = tmp_path / "ComfyUI" / "comfy" / "text_encoders"
    (shipped / "t5_tokenizer").mkdir(parents=True)
    (shipped / "sa_t5.py").write_text("")
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models)
    folder_paths.folder_names_and_paths = {"text_encoders": ([str(models / "text_encoders")], set())}
    folder_paths.get_folder_paths = lambda kind: list(folder_paths.folder_names_and_paths[kind][0])
    modules = {"folder_paths": folder_paths, "comfy": types.ModuleType("comfy"),
               "comfy.model_management": types.ModuleType("comfy.model_management"),
               "comfy.text_encoders": types.ModuleType("comfy.text_encoders"),
               "comfy.text_encoders.sa_t5": types.ModuleType("comfy.text_encoders.sa_t5")}
    modules["comfy.text_encoders.sa_t5"].__file__ = str(shipped / "sa_t5.py")
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert bridge.in_comfyui() and bridge.comfy_text_encoder_dir() == shipped.resolve()
    # An older ComfyUI without the files: the models folder's t5-base/ still serves.
    assert t5_support_files()[1] == models / "text_encoders" / "t5-base"
    shutil.copyfile(models / "text_encoders" / "t5-base" / "config.json", shipped / "t5_config_base.json")
    shutil.copyfile(models / "text_encoders" / "t5-base" / "tokenizer.json", shipped / "t5_tokenizer" /
                    "tokenizer.json")
    # The models folder's own t5-base/ (placed by the user or `pae models get t5-base`) comes first.
    assert t5_support_files()[1] == models / "text_encoders" / "t5-base"
    from prompt_audio_edit.engine.backbones import stable_audio

    monkeypatch.setattr(stable_audio, "T5_SUPPORT_FOLDER", "not-there")
    assert t5_support_files() == (shipped.resolve() / "t5_config_base.json", shipped.resolve() / "t5_tokenizer")
