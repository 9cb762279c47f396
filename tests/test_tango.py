"""The Tango backbone on a tiny model saved in the released file layout and loaded by the pack's loader."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.backbones import tango as tango_module
from prompt_audio_edit.engine.backbones import tango_checkpoint
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode
from tests.conftest import TINY_TANGO
from tests.helpers import core_style_audio, expect_input_error

TINY = TINY_TANGO.split("/", 1)[1]  # its folder under models/tango/


@pytest.fixture(scope="module")
def tango_root(tiny_models_root):
    """The session's models folder (conftest's tiny_models_root), which holds the tiny Tango."""
    return tiny_models_root


@pytest.fixture(autouse=True)
def tango_dirs(tango_root):
    """Every test sees the tiny Tango's models folder (and leaves the defaults behind)."""
    bridge.reset_directories()
    bridge.set_directories(models=str(tango_root))
    yield tango_root
    bridge.reset_directories()


@pytest.fixture(scope="module")
def tango(tango_root):
    """The tiny Tango loaded through the pack's loader, shared by the module's tests."""
    bridge.reset_directories()
    bridge.set_directories(models=str(tango_root))
    try:
        yield model_registry.load_backbone(TINY_TANGO, "fp32")
    finally:
        bridge.reset_directories()


def weights(root, name):
    return torch.load(root / "tango" / TINY / name, map_location="cpu", weights_only=True)


def copy_model(tango_root, tmp_path, name, **ignore):
    """A copy of the tiny Tango in a fresh models folder, which becomes the one the loader searches."""
    target = tmp_path / "models" / "tango" / name
    shutil.copytree(tango_root / "tango" / TINY, target, ignore=shutil.ignore_patterns(*ignore.get("skip", ())))
    bridge.set_directories(models=str(tmp_path / "models"))
    return target


# ---------------------------------------------------------------------------------------------- loading
def test_folder_is_recognised_and_listed(tango_root):
    assert model_registry.detect_family(tango_root / "tango" / TINY) == "tango"
    assert TINY_TANGO in model_registry.list_models()


def test_released_key_layout_loads_strictly_and_every_weight_arrives(tango, tango_root):
    main = weights(tango_root, "pytorch_model_main.bin")
    assert {k.split(".")[0] for k in main} == {"unet", "text_encoder"}
    unet_state, t5_state = tango.unet.state_dict(), tango.text_encoder.state_dict()
    assert set(unet_state) == {k[5:] for k in main if k.startswith("unet.")}
    assert set(t5_state) == {k[13:] for k in main if k.startswith("text_encoder.")}
    assert all(torch.equal(unet_state[k[5:]], v) for k, v in main.items() if k.startswith("unet."))
    assert all(torch.equal(t5_state[k[13:]], v) for k, v in main.items() if k.startswith("text_encoder."))

    vae_file = weights(tango_root, "pytorch_model_vae.bin")
    # The original AudioLDM names, with the vocoder inside (weight norm already removed, as released).
    assert "encoder.down.0.block.0.conv1.weight" in vae_file and "decoder.up.2.upsample.conv.weight" in vae_file
    assert vae_file["encoder.mid.attn_1.q.weight"].dim() == 4 and "vocoder.ups.0.weight" in vae_file
    assert not any(k.endswith(("weight_g", "weight_v")) for k in vae_file)
    vae_state = tango.vae.state_dict()
    assert torch.equal(vae_state["encoder.mid_block.attentions.0.to_q.weight"],
                       vae_file["encoder.mid.attn_1.q.weight"][:, :, 0, 0])
    assert torch.equal(vae_state["decoder.mid_block.attentions.0.to_out.0.weight"],
                       vae_file["decoder.mid.attn_1.proj_out.weight"][:, :, 0, 0])
    # The original counts decoder levels from full resolution; diffusers from the latent.
    assert torch.equal(vae_state["decoder.up_blocks.0.resnets.1.conv2.weight"],
                       vae_file["decoder.up.2.block.1.conv2.weight"])
    assert torch.equal(vae_state["decoder.up_blocks.2.resnets.0.norm1.bias"],
                       vae_file["decoder.up.0.block.0.norm1.bias"])
    assert torch.equal(vae_state["encoder.conv_norm_out.weight"], vae_file["encoder.norm_out.weight"])
    vocoder_state = tango.vocoder.state_dict()
    assert torch.equal(vocoder_state["upsampler.3.weight"], vae_file["vocoder.ups.3.weight"])
    assert torch.equal(vocoder_state["resblocks.7.convs2.1.bias"], vae_file["vocoder.resblocks.7.convs2.1.bias"])
    assert torch.equal(vocoder_state["mean"], torch.zeros(64)) and torch.equal(vocoder_state["scale"], torch.ones(64))
    assert len(vae_state) + len(vocoder_state) == len(vae_file) + 2  # every original key used; mean/scale added
    assert tango.scaling_factor == pytest.approx(0.9227914214134216)
    assert set(tango.modules) == {"unet", "vae", "vocoder", "text_encoder"}
    assert tango.device.type == "cpu" and tango.dtype == torch.float32


@pytest.mark.parametrize("file,old,new,named", [
    ("pytorch_model_main.bin", "unet.conv_in.weight", "unet.conv_input.weight",
     ("unet.conv_in.weight", "unet.conv_input.weight")),
    ("pytorch_model_main.bin", "text_encoder.encoder.final_layer_norm.weight", "text_encoder.final_norm.weight",
     ("1 missing", "text_encoder.encoder.final_layer_norm.weight")),
    ("pytorch_model_vae.bin", "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.query.weight",
     ("encoder.mid_block.attentions.0.to_q.weight", "encoder.mid.attn_1.query.weight")),
    ("pytorch_model_vae.bin", "vocoder.conv_post.bias", "vocoder.conv_last.bias",
     ("vocoder.conv_post.bias", "vocoder.conv_last.bias")),
])
def test_a_renamed_key_is_refused_naming_it(tango_root, tmp_path, file, old, new, named):
    folder = copy_model(tango_root, tmp_path, "renamed")
    state = torch.load(folder / file, map_location="cpu", weights_only=True)
    state[new] = state.pop(old)
    torch.save(state, folder / file)
    err = expect_input_error(model_registry.load_backbone, "tango/renamed", "fp32")
    assert err.input_name == "model_name"
    message = err.message
    assert file in message and "download it again" in message
    for text in named:
        assert text in message


def test_tiny_weights_without_their_configs_are_refused_clearly(tango_root, tmp_path):
    # Without unet_config.json the loader builds the real Tango UNet, which the tiny weights do not fit.
    copy_model(tango_root, tmp_path, "no-configs", skip=("unet_config.json", "t5_config.json"))
    err = expect_input_error(model_registry.load_backbone, "tango/no-configs", "fp32")
    assert err.input_name == "model_name"
    message = err.message
    assert "pytorch_model_main.bin" in message and "missing" in message and "UNet" in message


def test_missing_tokenizer_says_which_files_and_where(tango_root, tmp_path):
    copy_model(tango_root, tmp_path, "no-tokenizer", skip=("tokenizer.json", "tokenizer_config.json"))
    err = expect_input_error(model_registry.load_backbone, "tango/no-tokenizer", "fp32")
    assert err.input_name == "model_name"
    message = err.message
    assert "tokenizer.json" in message and "google/flan-t5-large" in message


def test_mustango_is_refused_with_the_reason(tango_root, tmp_path):
    folder = copy_model(tango_root, tmp_path, "mustango")
    main = json.loads((folder / "main_config.json").read_text())
    main["unet_model_config_path"] = "configs/music_diffusion_model_config.json"  # as Mustango's release has it
    (folder / "main_config.json").write_text(json.dumps(main))
    err = expect_input_error(model_registry.load_backbone, "tango/mustango", "fp32")
    assert err.input_name == "model_name"
    assert "Mustango" in err.message


def test_weight_normed_vocoder_weights_are_folded(tango_root):
    plain = {k[len("vocoder."):]: v for k, v in weights(tango_root, "pytorch_model_vae.bin").items()
             if k.startswith("vocoder.")}
    normed = dict(plain)
    generator = torch.Generator().manual_seed(3)
    for name, style in (("conv_pre", "old"), ("ups.0", "old"), ("resblocks.4.convs1.2", "parametrizations")):
        w = normed.pop(f"{name}.weight")
        axes = tuple(range(1, w.dim()))
        v = w * (torch.rand((w.shape[0],) + (1,) * len(axes), generator=generator) + 0.5)  # any positive rescale
        g = w.norm(dim=axes, keepdim=True)
        if style == "old":
            normed[f"{name}.weight_g"], normed[f"{name}.weight_v"] = g, v
        else:
            normed[f"{name}.parametrizations.weight.original0"] = g
            normed[f"{name}.parametrizations.weight.original1"] = v
    folded = tango_checkpoint.vocoder_state_from_original(normed)
    expected = tango_checkpoint.vocoder_state_from_original(plain)
    assert set(folded) == set(expected)
    assert all(torch.allclose(folded[k], expected[k], atol=1e-6) for k in expected)


# ------------------------------------------------------------------------------------------ audio <-> latent
@pytest.mark.parametrize("seconds,rate,channels", [(1.0, 16000, 1), (1.2345, 44100, 2)])
def test_round_trip_keeps_length_and_is_deterministic(tango, seconds, rate, channels):
    audio = core_style_audio(seconds, rate, channels)
    latent = vae_encode(tango, audio)
    decoded = vae_decode(tango, latent)
    assert decoded["sample_rate"] == rate and decoded["waveform"].shape == audio["waveform"].shape
    assert torch.isfinite(decoded["waveform"]).all()
    model_samples = round(seconds * 16000)
    assert tuple(latent["samples"].shape) == (1, 8, -(-model_samples // 640), 16)
    assert latent["pae"]["family"] == "tango" and latent["pae"]["num_samples"] == model_samples
    again = vae_encode(tango, audio)
    assert torch.equal(again["samples"], latent["samples"])
    assert torch.equal(vae_decode(tango, again)["waveform"], decoded["waveform"])


def test_latent_shape_for_ten_point_two_four_seconds(tango):
    wave = torch.from_numpy(core_style_audio(10.24, 16000, 1)["waveform"].numpy())
    latent = tango.encode_audio(wave, 16000)
    assert tuple(latent["samples"].shape) == (1, 8, 256, 16)  # Tango's (8, 256, 16) for 10.24 s


def test_a_latent_of_another_family_is_refused(tango):
    latent = tango.encode_audio(core_style_audio(0.5, 16000, 1)["waveform"], 16000)
    latent["pae"] = dict(latent["pae"], family="audioldm2")
    with pytest.raises(PAEInputError, match="audioldm2"):
        tango.decode_latent(latent)


def test_mel_front_end_matches_the_stored_stft_buffers(tango, tango_root):
    from prompt_audio_edit.engine.backbones.mel import _mel_basis

    stft = weights(tango_root, "pytorch_model_stft.bin")
    assert set(stft) == {"mel_basis", "stft_fn.forward_basis", "stft_fn.inverse_basis"}
    # Two independent Slaney filter banks (the demo's own, the pack's via transformers) agree with the stored one.
    assert torch.allclose(stft["mel_basis"], _mel_basis(16000, 1024, 64, 0.0, 8000.0), atol=1e-6)
    assert torch.equal(tango.mel.mel_basis, stft["mel_basis"])
    # The reference's TacotronSTFT: reflect-pad n_fft / 2, convolve with the windowed DFT basis, |.|, mel, log.
    rng = np.random.default_rng(1)
    wave = torch.from_numpy(rng.standard_normal((2, 3200)).astype(np.float32) * 0.2)
    padded = torch.nn.functional.pad(wave[:, None], (512, 512), mode="reflect")
    both = torch.nn.functional.conv1d(padded, stft["stft_fn.forward_basis"], stride=160)
    magnitude = torch.sqrt(both[:, :513] ** 2 + both[:, 513:] ** 2)
    expected = torch.log(torch.clamp(stft["mel_basis"] @ magnitude, min=1e-5)).transpose(1, 2)
    assert expected.shape == (2, 21, 64)  # the reference makes T // hop + 1 frames and Tango keeps the first T // hop
    got = tango.mel(wave)
    assert got.shape == (2, 20, 64)
    assert torch.allclose(got, expected[:, :20], atol=1e-4)


# ----------------------------------------------------------------------------------------------------- text
def test_text_is_one_t5_stream_with_eos_and_no_bos(tango):
    assert tango.text_streams == ("t5",) and tango.word_stream == "t5"
    cond = tango.encode_text(["a dog barking in the rain", "a cat", ""])
    t5, mask = cond.streams["t5"], cond.masks["t5"]
    assert set(cond.streams) == {"t5"} and t5.shape[0] == 3 and t5.shape[-1] == 1024
    assert mask.shape == t5.shape[:2] and torch.isfinite(t5).all()
    dog, cat, empty = cond.tokens["t5"]
    assert [len(dog), len(cat), len(empty)] == mask.sum(dim=1).tolist()
    assert dog[-1] == cat[-1] == "</s>" and dog[0] != "<s>" and any("dog" in piece for piece in dog)
    assert "<pad>" not in cat and empty == ["</s>"]  # the reference's unconditional prompt: '' = EOS alone
    again = tango.encode_text(["a dog barking in the rain", "a cat", ""])
    assert torch.equal(again.streams["t5"], t5)


def test_too_long_prompt_is_refused(tango):
    with pytest.raises(PAEInputError) as caught:
        tango.encode_text(["a dog " * 300])
    assert caught.value.input_name == "prompt" and "512" in caught.value.message


# ------------------------------------------------------------------------------------------------ denoising
def test_prediction_at_a_step(tango):
    latent = tango.encode_audio(core_style_audio(1.0, 16000, 1)["waveform"], 16000)["samples"]
    cond = tango.encode_text(["", "a dog barking"])
    scheduler = tango.make_scheduler()
    scheduler.set_timesteps(10)
    tango.activate()
    pair = latent.repeat(2, 1, 1, 1)
    with torch.no_grad():
        out = tango.predict(pair, scheduler.timesteps[0], cond)
        again = tango.predict(pair, scheduler.timesteps[0], cond)
        other = tango.predict(pair, scheduler.timesteps[-1], cond)
    assert out.shape == pair.shape and torch.isfinite(out).all()
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert not torch.equal(out[0], out[1])  # the prompt reaches the UNet through cross-attention
    assert tango.prediction_type == "v_prediction"


def test_scheduler_is_stable_diffusion_2_1s_v_prediction_schedule(tango):
    from diffusers import DDIMScheduler

    scheduler = tango.make_scheduler()
    assert isinstance(scheduler, DDIMScheduler) and scheduler is not tango.make_scheduler()
    config = scheduler.config
    assert config.prediction_type == "v_prediction" and config.num_train_timesteps == 1000
    assert config.beta_schedule == "scaled_linear" and config.set_alpha_to_one is False
    assert config.steps_offset == 1 and config.clip_sample is False
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    assert torch.allclose(scheduler.betas.double(), betas, atol=1e-9)


def test_cross_attention_sites_of_the_real_tango_unet():
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(tango_checkpoint.TANGO_UNET_CONFIG)
    sites = tango_module.cross_attention_sites_of(unet)
    assert len(sites) == 16
    true_cross = {f"{name}.processor" for name, module in unet.named_modules()
                  if isinstance(module, Attention) and module.is_cross_attention}
    assert {s.name for s in sites} == true_cross and set(unet.attn_processors) >= true_cross
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor" in true_cross
    assert all(s.stream == "t5" and s.key_dim == 1024 for s in sites)
    assert [sum(s.place == p for s in sites) for p in ("down", "mid", "up")] == [6, 1, 9]
    assert {(s.place, s.downsampling, s.heads) for s in sites} == {
        ("down", 1, 5), ("down", 2, 10), ("down", 4, 20), ("mid", 8, 20), ("up", 4, 20), ("up", 2, 10), ("up", 1, 5)}


def test_cross_attention_sites_of_the_tiny_model(tango):
    from diffusers.models.attention_processor import Attention

    sites = tango.cross_attention_sites()
    true_cross = {f"{name}.processor" for name, module in tango.denoiser.named_modules()
                  if isinstance(module, Attention) and module.is_cross_attention}
    assert {s.name for s in sites} == true_cross and len(sites) == 4
    assert {s.place for s in sites} == {"down", "mid", "up"}
