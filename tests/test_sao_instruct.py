"""SAO-Instruct: its checkpoints (diffusers folder, stable-audio-tools layout converted on load) and instruction
edits."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.methods.instruct import instruct_edit, list_instruct_models, load_instruct_model
from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode
from prompt_audio_edit.nodes.instruct_nodes import InstructEdit, LoadSAOInstruct

from tests.conftest import TINY_MODEL, TINY_SAO, TINY_SAO_INSTRUCT, TINY_SAO_INSTRUCT_SAT
from tests.helpers import audio_clip

RAIN = "add rain in the background"


@pytest.fixture
def instruct(tiny_dirs):
    return load_instruct_model(TINY_SAO_INSTRUCT, "fp32")


def _latent(model, seconds=1.0, clips=1, seed=0):
    return vae_encode(model, audio_clip(seconds, 44100, 2, kind="noise", seed=seed, clips=clips))


def test_stable_audio_tools_checkpoint_converts_with_nothing_missing_and_predicts_the_same(tiny_dirs):
    direct = model_registry.load_backbone(TINY_SAO_INSTRUCT, "fp32")
    converted = model_registry.load_backbone(TINY_SAO_INSTRUCT_SAT, "fp32")
    assert converted.instruct and converted.in_channels == 128
    for part in ("transformer", "vae", "projection"):
        a, b = getattr(direct, part).state_dict(), getattr(converted, part).state_dict()
        assert a.keys() == b.keys()  # strict load: nothing missing, nothing unexpected
        assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 64, 11, generator=torch.Generator().manual_seed(1))
    clip = torch.randn(2, 64, 11, generator=torch.Generator().manual_seed(2))
    text = direct.encode_text(["", RAIN])
    assert torch.equal(direct.predict(x, 0.5, text, input_latent=clip),
                       converted.predict(x, 0.5, converted.encode_text(["", RAIN]), input_latent=clip))
    assert set(list_instruct_models()) >= {TINY_SAO_INSTRUCT, TINY_SAO_INSTRUCT_SAT}
    assert TINY_SAO not in list_instruct_models()


def test_a_lightning_ckpt_loads_and_a_renamed_key_is_named(tiny_dirs, tmp_path):
    root = tmp_path / "models"
    source = tiny_dirs["models"] / TINY_SAO_INSTRUCT
    from prompt_audio_edit.standins.stable_audio import save_stable_audio_tools_checkpoint

    folder = save_stable_audio_tools_checkpoint(source, root / "diffusers" / "sat-ckpt", weights_name="model.ckpt")
    bridge.set_directories(models=str(root))
    model = load_instruct_model("diffusers/sat-ckpt", "fp32")
    assert model.instruct
    model_registry.clear_cache()
    from safetensors.torch import load_file, save_file

    broken = shutil.copytree(tiny_dirs["models"] / TINY_SAO_INSTRUCT_SAT, root / "diffusers" / "sat-broken")
    state = load_file(str(broken / "model.safetensors"))
    state["model.model.transformer.layers.0.cross_attn.to_kv.weights"] = state.pop(
        "model.model.transformer.layers.0.cross_attn.to_kv.weight")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(PAEInputError, match=r"2 missing: transformer_blocks\.0\.attn2\.to_k\.weight.*unexpected"):
        load_instruct_model("diffusers/sat-broken", "fp32")
    (folder / "model.ckpt").unlink()
    with pytest.raises(PAEInputError, match="no weights"):
        load_instruct_model("diffusers/sat-ckpt", "fp32")


def test_stable_audio_given_where_sao_instruct_is_needed_says_64_not_128(tiny_dirs):
    with pytest.raises(PAEInputError, match=r"takes 64 input channels, but SAO-Instruct's takes 128"):
        load_instruct_model(TINY_SAO, "fp32")
    sao = model_registry.load_backbone(TINY_SAO, "fp32")
    with pytest.raises(PAEInputError, match=r"PAE_InstructEdit.*input 'model'.*64 input channels"):
        InstructEdit().run(model=sao, latent=_latent(sao), instruction=RAIN)
    audioldm2 = model_registry.load_backbone(TINY_MODEL, "fp32")
    with pytest.raises(PAEInputError, match="audioldm2 model; instruction editing needs SAO-Instruct"):
        instruct_edit(audioldm2, {"samples": torch.zeros(1, 8, 4, 4)}, RAIN)
    # The instruct model refuses methods that would feed it no clip latent.
    instruct = load_instruct_model(TINY_SAO_INSTRUCT, "fp32")
    from prompt_audio_edit.engine.diffusion.sampling import sample

    with pytest.raises(PAEInputError, match="SAO-Instruct .* use it with Instruct Edit"):
        sample(instruct, "rain", steps=1, seconds=0.5)


def test_lowest_noise_returns_the_clip_and_small_noise_stays_close(instruct):
    latent = _latent(instruct)
    exact = instruct_edit(instruct, latent, RAIN, noise_level=0.0, steps=5)
    assert torch.equal(exact["samples"], latent["samples"])
    near = instruct_edit(instruct, latent, RAIN, noise_level=1e-3, steps=3)
    assert (near["samples"] - latent["samples"]).abs().max() < 5e-3
    far = instruct_edit(instruct, latent, RAIN, noise_level=2.0, steps=3)
    assert (far["samples"] - latent["samples"]).abs().max() > 0.1


def test_batches_over_clips_instructions_and_seeds_match_single_runs(instruct):
    latent = _latent(instruct, clips=2, seed=3)
    both = instruct_edit(instruct, latent, f"{RAIN}\n\nmake the dog bark louder\n", noise_level=3.0, steps=3,
                         seed=10, batch_size=2)
    assert both["samples"].shape == (8, 64, 22)
    labels = both["pae"]["candidates"]
    assert [(c["clip"], c["instruction"], c["seed"]) for c in labels[:4]] == [
        (0, RAIN, 10), (0, RAIN, 11), (0, "make the dog bark louder", 10), (0, "make the dog bark louder", 11)]
    # Three rows per DiT call (chunks across clip boundaries): the same edits up to float rounding.
    chunked = instruct_edit(instruct, latent, f"{RAIN}\n\nmake the dog bark louder\n", noise_level=3.0, steps=3,
                            seed=10, batch_size=2, clips_per_call=3)
    torch.testing.assert_close(chunked["samples"], both["samples"], rtol=1e-5, atol=1e-5)
    assert chunked["pae"]["candidates"] == labels
    one_clip = {"samples": latent["samples"][1:2], "type": "audio", "pae": dict(latent["pae"])}
    single = instruct_edit(instruct, one_clip, "make the dog bark louder", noise_level=3.0, steps=3, seed=11)
    torch.testing.assert_close(single["samples"][0], both["samples"][7], rtol=1e-5, atol=1e-5)
    again = instruct_edit(instruct, one_clip, "make the dog bark louder", noise_level=3.0, steps=3, seed=11)
    assert torch.equal(single["samples"], again["samples"])
    other = instruct_edit(instruct, one_clip, "make the dog bark louder", noise_level=3.0, steps=3, seed=12)
    assert not torch.equal(single["samples"], other["samples"])


def test_stereo_in_stereo_out_at_the_clip_length(instruct):
    latent = _latent(instruct, seconds=0.7)
    edited = InstructEdit().run(model=instruct, latent=latent, instruction=RAIN, steps=2, noise_level=1.0)[0]
    audio = vae_decode(instruct, edited)
    assert audio["waveform"].shape == (1, 2, int(0.7 * 44100)) and audio["sample_rate"] == 44100
    assert torch.isfinite(audio["waveform"]).all()


def test_bad_instruction_inputs(instruct):
    latent = _latent(instruct)
    with pytest.raises(PAEInputError, match=r"PAE_InstructEdit.*'instruction'.*add rain"):
        InstructEdit().run(model=instruct, latent=latent, instruction=" \n  ")
    with pytest.raises(PAEInputError, match="noise_level"):
        instruct_edit(instruct, latent, RAIN, noise_level=600.0)
    with pytest.raises(PAEInputError, match="at most 64"):
        instruct_edit(instruct, latent, "\n".join(f"instruction {i}" for i in range(9)), batch_size=8)
    too_long = {**latent, "samples": latent["samples"].repeat(1, 1, 7)}  # 7 s of latent frames; the window is 6
    with pytest.raises(PAEInputError, match="DiT takes at most"):
        instruct_edit(instruct, too_long, RAIN)
    with pytest.raises(PAEInputError, match="clips_per_call"):
        instruct_edit(instruct, latent, RAIN, clips_per_call=2000)
    tango_latent = {"samples": torch.zeros(1, 8, 4, 4), "pae": {"family": "tango", "model": "t"}}
    with pytest.raises(PAEInputError, match="made by a tango model"):
        instruct_edit(instruct, tango_latent, RAIN)


def test_loader_node_lists_and_loads(tiny_dirs):
    choices = LoadSAOInstruct.INPUT_TYPES()["required"]["model_name"][0]
    assert TINY_SAO_INSTRUCT in choices and TINY_SAO not in choices
    model = LoadSAOInstruct().run(model_name=TINY_SAO_INSTRUCT_SAT, dtype="fp32")[0]
    assert model.instruct
    config = json.loads((tiny_dirs["models"] / TINY_SAO_INSTRUCT_SAT / "model_config.json").read_text())
    assert config["model"]["diffusion"]["config"]["input_concat_dim"] == 64
