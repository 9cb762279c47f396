"""The contract every diffusion backbone keeps (engine/backbones/base.py), checked on each one the pack has.

The pack's counterpart of diffusers' pipeline tester mixin: every backbone is loaded through the real loader from the
tiny models in conftest's models folder, and the same checks run on each, so a method written against the interface
works on all of them.
"""

from __future__ import annotations

import pytest
import torch

from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.backbones.base import Backbone, TextConditioning
from tests.conftest import TINY_MODEL, TINY_SAO, TINY_TANGO, TINY_V_MODEL
from tests.helpers import audio_clip, expect_input_error

BACKBONES = {"audioldm2-eps": TINY_MODEL, "audioldm2-v": TINY_V_MODEL, "tango": TINY_TANGO, "stable-audio": TINY_SAO}
PROMPTS = ["a dog barking", "a cat"]  # the first is the longer one
RATE = 22050  # a rate none of the backbones runs at, so encoding resamples


@pytest.fixture(scope="module")
def held():
    """The backbones this module loaded, kept alive so the loader's weak cache loads each one once here."""
    return {}


@pytest.fixture(params=list(BACKBONES.values()), ids=list(BACKBONES))
def backbone(request, tiny_dirs, held) -> Backbone:
    loaded = model_registry.load_backbone(request.param, "fp32")
    held[request.param] = loaded
    return loaded


def stereo_pair() -> dict:
    """Two different 0.5 s stereo clips at RATE, as an AUDIO dict (short: the vocoders decode at full rate)."""
    return audio_clip(0.5, RATE, 2, kind="noise", seed=4, clips=2)


# ------------------------------------------------------------------------------------------- audio <-> latent
def test_audio_encodes_to_a_latent_and_decodes_to_the_resampled_length(backbone):
    audio = stereo_pair()
    latent = backbone.encode_audio(audio["waveform"], RATE)
    samples = latent["samples"]
    assert samples.shape[:2] == (2, backbone.latent_channels) and torch.isfinite(samples).all()
    info = latent["pae"]
    assert info["family"] == backbone.family and info["sample_rate"] == backbone.sample_rate
    assert info["num_samples"] == round(audio["waveform"].shape[-1] * backbone.sample_rate / RATE)
    decoded = backbone.decode_latent(latent)
    assert tuple(decoded.shape) == (2, backbone.channels, info["num_samples"])
    assert torch.isfinite(decoded).all()
    try:
        expected = backbone.latent_shape(info["num_samples"])
    except NotImplementedError:
        return
    assert tuple(samples.shape[1:]) == tuple(expected)


# ------------------------------------------------------------------------------------------------------ text
def test_text_gives_every_stream_masks_tokens_and_a_rows_concat_round_trip(backbone):
    cond = backbone.encode_text(PROMPTS)
    assert isinstance(cond, TextConditioning) and cond.prompts == PROMPTS
    assert backbone.word_stream in backbone.text_streams
    for name in backbone.text_streams:
        stream = cond.streams[name]
        assert stream.dim() == 3 and stream.shape[0] == 2 and torch.isfinite(stream).all(), name
        mask = cond.masks.get(name)
        if mask is not None:
            assert tuple(mask.shape) == tuple(stream.shape[:2]), name
            assert set(mask.unique().tolist()) <= {0, 1} and bool((mask[:, 0] == 1).all()), name
    tokens = cond.tokens[backbone.word_stream]
    assert len(tokens) == 2 and len(tokens[0]) > len(tokens[1])
    word_mask = cond.masks.get(backbone.word_stream)
    if word_mask is not None:  # 1 exactly on the real keys: one per token
        assert word_mask.sum(dim=1).tolist() == [len(t) for t in tokens]

    again = TextConditioning.concat([cond.rows([0]), cond.rows([1])])
    assert again.prompts == cond.prompts and again.tokens == cond.tokens
    assert set(again.streams) == set(cond.streams)
    for name, stream in cond.streams.items():
        assert again.streams[name].shape == stream.shape, name  # rows keep the shared padding: the lengths agree
        assert torch.equal(again.streams[name], stream), name
        mask, round_trip = cond.masks.get(name), again.masks.get(name)
        if mask is None:
            assert round_trip is None or bool((round_trip == 1).all()), name
        else:
            assert torch.equal(round_trip, mask), name


# -------------------------------------------------------------------------------------------- the denoiser
def test_every_cross_attention_site_is_a_cross_attention_of_the_denoiser(backbone):
    from diffusers.models.attention_processor import Attention

    sites = backbone.cross_attention_sites()
    denoiser = backbone.denoiser
    processors = denoiser.attn_processors
    assert sites and len({s.name for s in sites}) == len(sites)
    for site in sites:
        module = denoiser.get_submodule(site.module_path)
        assert isinstance(module, Attention) and module.is_cross_attention, site.module_path
        assert module.to_k.in_features == site.key_dim, site.module_path
        assert site.name == site.module_path + ".processor" and site.name in processors
        assert site.stream in backbone.text_streams, site


def test_device_dtype_and_modules(backbone):
    device = backbone.device
    assert isinstance(device, torch.device)
    assert backbone.dtype == torch.float32  # loaded as "fp32"
    modules = backbone.modules
    assert isinstance(modules, dict) and modules
    assert all(isinstance(name, str) and isinstance(m, torch.nn.Module) for name, m in modules.items())
    assert any(m is backbone.denoiser for m in modules.values())
    assert all(p.device == device for p in backbone.denoiser.parameters())


def test_prediction_keeps_the_latent_shape_and_is_deterministic(backbone):
    clip = audio_clip(1.0, RATE, 2, kind="noise", seed=5)
    latents = backbone.encode_audio(clip["waveform"], RATE)["samples"]
    cond = backbone.encode_text(PROMPTS[:1])
    timestep = backbone.step_schedule(4).timesteps[0]
    backbone.activate()
    with torch.no_grad():
        out = backbone.predict(latents.to(backbone.device), timestep, cond)
        again = backbone.predict(latents.to(backbone.device), timestep, cond)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert torch.equal(out, again)


def test_a_clip_longer_than_the_backbone_takes_is_refused_naming_audio(backbone):
    rate = 16000
    backbone.check_duration(int(backbone.max_duration_s * rate), rate)  # the limit itself is taken
    err = expect_input_error(backbone.check_duration, int((backbone.max_duration_s + 1) * rate), rate)
    assert err.input_name == "audio" and backbone.duration_limit() in err.message
