"""AP-Adapter on a tiny AudioLDM2 (-large stream layout) with a tiny AudioMAE, both files in the released layouts."""

from __future__ import annotations

import argparse
import functools
import math

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.methods import ap_adapter as ap
from prompt_audio_edit.engine.models import audiomae
from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.standins.ap_adapter import adapted_layer_shapes, tiny_adapter_state, tiny_audiomae_state
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.diffusion.sampling import sample
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.conftest import TINY_AP_ADAPTER, TINY_AUDIOMAE, TINY_TANGO
from tests.helpers import audio_clip, expect_input_error

PROMPT, NEGATIVE = "a recording of a violin solo", "a recording of a piano solo"
# The audio prompts fed to the adapter: the shared harmonics clip, 16 kHz mono unless given.
prompt_clip = functools.partial(audio_clip, rate=16000, kind="harmonics")


@pytest.fixture
def adapter(tiny_dirs):
    return ap.load_ap_adapter(TINY_AP_ADAPTER, TINY_AUDIOMAE, "fp32")


def generate(model, **kwargs) -> torch.Tensor:
    settings = dict(steps=3, guidance=7.5, seed=5, seconds=1.0)
    settings.update(kwargs)
    return sample(model, PROMPT, NEGATIVE, **settings)["samples"]


# ------------------------------------------------------------------------------------------ loading
def test_audiomae_checkpoint_loads_with_nothing_missing_and_only_the_decoder_ignored(tiny_dirs):
    encoder = audiomae.load_audio_encoder(TINY_AUDIOMAE, "fp32")
    data = torch.load(tiny_dirs["models"] / "audiomae" / TINY_AUDIOMAE, weights_only=False)
    assert isinstance(data["args"], argparse.Namespace)  # the training script's state rides along and is accepted
    saved = data["model"]
    loaded = encoder.model.state_dict()
    ignored = set(saved) - set(loaded)
    assert ignored and all(k.startswith(("decoder_", "mask_token")) for k in ignored)
    assert set(loaded) <= set(saved)
    for key, tensor in loaded.items():
        assert torch.equal(tensor, saved[key]), key
    assert audiomae.load_audio_encoder(TINY_AUDIOMAE, "fp32") is encoder  # built and loaded once


def test_adapter_file_binds_to_exactly_the_768_key_cross_attention_layers(adapter, tiny_dirs):
    backbone = model_registry.load_backbone("diffusers/tiny-audioldm2", "fp32")
    expected = adapted_layer_shapes(backbone.denoiser)  # found module by module, independently of the sites
    assert len(expected) == 8
    state = torch.load(tiny_dirs["models"] / "ap_adapter" / TINY_AP_ADAPTER, weights_only=True)
    assert set(state) == {f"{n}.{w}.weight" for n in expected for w in ("to_k_ip", "to_v_ip")}
    sites = ap.bind_adapter(adapter.weights, backbone)
    assert {s.name for s in sites} == set(expected) == set(adapter.weights.layers)
    assert all(s.stream == "gpt2" for s in sites)
    t5_sites = [s for s in backbone.cross_attention_sites() if s.key_dim == 1024]
    assert t5_sites and not {s.name for s in t5_sites} & set(expected)
    for name, (k, v) in adapter.weights.layers.items():
        assert torch.equal(k, state[f"{name}.to_k_ip.weight"]) and torch.equal(v, state[f"{name}.to_v_ip.weight"])


# ------------------------------------------------------------------------------------------ features
def kaldi_reference(x: np.ndarray) -> np.ndarray:
    """Kaldi's fbank written out from its definition (not via transformers), with AP-Adapter's options."""
    count = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160:i * 160 + 400] for i in range(count)]).astype(np.float64)
    frames -= frames.mean(axis=1, keepdims=True)
    emphasised = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)
    power = np.abs(np.fft.rfft(emphasised * window, 512)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    low, high = mel(20.0), mel(8000.0)
    points = low + (high - low) * np.arange(130) / 129
    bins = mel(np.arange(256) * 16000 / 512)
    banks = np.zeros((128, 257))
    for m in range(128):
        up = (bins - points[m]) / (points[m + 1] - points[m])
        down = (points[m + 2] - bins) / (points[m + 2] - points[m + 1])
        banks[m, :256] = np.maximum(0.0, np.minimum(up, down))
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def test_fbank_matches_kaldi_and_short_clips_are_padded_the_references_way():
    audio = prompt_clip(2.0)
    audio["waveform"] = audio["waveform"] + 0.1  # DC: removed before framing
    features = audiomae.audio_features(audio)
    assert features.shape == (1, 1024, 128)
    x = audio["waveform"][0, 0].double().numpy()
    expected = kaldi_reference(x - x.mean())
    frames = expected.shape[0]
    assert frames == 1 + (32000 - 400) // 160 == 198
    normalised = (expected - audiomae.AUDIOSET_MEAN) / (2 * audiomae.AUDIOSET_STD)
    np.testing.assert_allclose(features[0, :frames].numpy(), normalised, atol=2e-4)
    # Zero fbank rows are appended first and normalised with the rest, as extract_kaldi_fbank_feature does.
    padding = -audiomae.AUDIOSET_MEAN / (2 * audiomae.AUDIOSET_STD)
    assert torch.allclose(features[0, frames:], torch.full((1024 - frames, 128), padding))


def test_long_clips_are_cut_to_1024_frames_and_other_rates_are_resampled():
    long = audiomae.audio_features(prompt_clip(12.0))
    short = audiomae.audio_features(prompt_clip(10.255))  # exactly 1024 frames: 400 + 1023 x 160 samples
    assert long.shape == short.shape == (1, 1024, 128)
    assert torch.allclose(long, short, atol=1e-4)
    stereo_44k = audiomae.audio_features(prompt_clip(2.0, rate=44100, channels=2))
    assert stereo_44k.shape == (1, 1024, 128) and torch.isfinite(stereo_44k).all()


def test_a_stereo_prompt_is_read_from_its_first_channel_as_the_reference_or_downmixed_by_choice():
    t = torch.arange(32000) / 16000
    left, right = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.05, 0.2 * torch.sin(2 * torch.pi * 1250 * t) - 0.02
    stereo = {"waveform": torch.stack([left, right])[None], "sample_rate": 16000}
    first = audiomae.audio_features(stereo)
    # The reference: the mean over both channels and all samples removed, then channel 0 alone.
    shifted = left - torch.stack([left, right]).double().mean().float()
    expected = torch.from_numpy(audiomae.kaldi_fbank(shifted.double().numpy()))
    expected = (expected - audiomae.AUDIOSET_MEAN) / (2 * audiomae.AUDIOSET_STD)
    torch.testing.assert_close(first[0, :expected.shape[0]].double(), expected.double(), atol=5e-4, rtol=1e-4)
    mean = audiomae.audio_features(stereo, stereo="mean of channels")
    downmix = audiomae.audio_features({"waveform": ((left + right) / 2)[None, None], "sample_rate": 16000})
    torch.testing.assert_close(mean, downmix, atol=5e-4, rtol=1e-4)
    assert (first - mean).abs().max() > 0.1
    mono = {"waveform": left[None, None], "sample_rate": 16000}
    assert torch.equal(audiomae.audio_features(mono), audiomae.audio_features(mono, stereo="mean of channels"))
    with pytest.raises(PAEInputError, match="stereo"):
        audiomae.audio_features(stereo, stereo="right")


@pytest.mark.parametrize("rate,tokens", [(1, 512), (2, 128), (4, 32), (8, 8)])
def test_token_counts_per_pooling_rate_for_a_10_24_s_input(adapter, rate, tokens):
    out = adapter.encoder.audio_tokens(prompt_clip(10.24), rate)
    assert out.shape == (1, tokens, 768) == (1, audiomae.token_count(rate), 768)


def test_pooling_is_mean_of_average_and_max_over_time_major_patches():
    hidden = torch.randn(2, 513, 6)
    pooled = audiomae.pool_audio_tokens(hidden, 2)
    grid = hidden[:, 1:].reshape(2, 64, 8, 6)  # patch index = t * 8 + f
    window = grid[:, 2:4, 4:6].reshape(2, 4, 6)  # tokens run time-major too: (t=1, f=2) -> 1 * 4 + 2
    assert torch.allclose(pooled[:, 6], (window.mean(1) + window.amax(1)) / 2)
    assert torch.equal(audiomae.pool_audio_tokens(hidden, 1), hidden[:, 1:])


def test_encoder_is_the_released_vit_computed_from_its_weights(adapter):
    """One ViT block written out from the weights' names (timm's layout), against the module."""
    state = adapter.encoder.model.state_dict()
    fbank = torch.randn(1, 1024, 128)
    x = torch.nn.functional.conv2d(fbank[:, None], state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                                   stride=16).flatten(2).transpose(1, 2) + state["pos_embed"][:, 1:]
    x = torch.cat([state["cls_token"] + state["pos_embed"][:, :1], x], dim=1)
    ln = lambda t, p: torch.nn.functional.layer_norm(t, (768,), state[p + ".weight"], state[p + ".bias"], 1e-6)  # noqa
    h = ln(x, "blocks.0.norm1") @ state["blocks.0.attn.qkv.weight"].T + state["blocks.0.attn.qkv.bias"]
    q, k, v = h.view(1, 513, 3, 12, 64).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1) @ v
    x = x + (attn.transpose(1, 2).reshape(1, 513, 768) @ state["blocks.0.attn.proj.weight"].T
             + state["blocks.0.attn.proj.bias"])
    h = ln(x, "blocks.0.norm2") @ state["blocks.0.mlp.fc1.weight"].T + state["blocks.0.mlp.fc1.bias"]
    x = x + torch.nn.functional.gelu(h) @ state["blocks.0.mlp.fc2.weight"].T + state["blocks.0.mlp.fc2.bias"]
    expected = ln(x, "norm")
    with torch.no_grad():
        assert torch.allclose(adapter.encoder.model(fbank), expected, atol=1e-4)


def test_silent_prompt_is_audiomae_of_the_all_zero_fbank_and_is_computed_once(adapter):
    first = adapter.encoder.silence_tokens(4)
    with torch.no_grad():
        direct = audiomae.pool_audio_tokens(adapter.encoder.model(torch.zeros(1, 1024, 128)), 4)
    assert torch.allclose(first, direct) and adapter.encoder.silence_tokens(4) is first


# ------------------------------------------------------------------------------------- the adapter
def test_scale_zero_gives_exactly_the_plain_model(adapter, tiny_backbone):
    plain = generate(tiny_backbone)
    adapted = ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0), scale=0.0, pooling=2)
    assert torch.equal(generate(adapted), plain)
    # Steps sit at fractions 0, 1/3, 2/3 of the run: a window holding none of them is the plain model too,
    # and windows holding the same steps give the same result.
    assert torch.equal(generate(ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0), 0.7, 8, start=0.7)),
                       plain)
    assert torch.equal(
        generate(ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0), 0.7, 8, start=0.0, end=0.01)),
        generate(ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0), 0.7, 8, start=0.0, end=0.3)))


def test_audio_prompt_changes_the_output_and_leaves_the_loaded_model_as_it_was(adapter, tiny_backbone):
    originals = dict(tiny_backbone.denoiser.attn_processors)
    plain = generate(tiny_backbone)
    adapted = ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0), scale=0.5, pooling=2)
    assert tiny_backbone.audio_prompt is None and adapted.audio_prompt is not None
    with_prompt = generate(adapted)
    other_clip = generate(ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(2.0, freq=800.0), scale=0.5,
                                              pooling=2))
    assert not torch.allclose(with_prompt, plain) and not torch.allclose(with_prompt, other_clip)
    assert torch.equal(generate(adapted), with_prompt)  # deterministic under the seed
    after = tiny_backbone.denoiser.attn_processors
    assert all(after[name] is processor for name, processor in originals.items())
    assert torch.equal(generate(tiny_backbone), plain)


def test_processors_are_restored_after_an_error_mid_run(adapter, tiny_backbone, monkeypatch):
    originals = dict(tiny_backbone.denoiser.attn_processors)
    adapted = ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(1.0), scale=0.5, pooling=4)
    seen = []

    def fail(*args, **kwargs):
        seen.append(type(tiny_backbone.denoiser.attn_processors[next(iter(adapter.weights.layers))]).__name__)
        raise KeyboardInterrupt

    monkeypatch.setattr("prompt_audio_edit.engine.diffusion.sampling.chunked_prediction", fail)
    with pytest.raises(KeyboardInterrupt):
        generate(adapted)
    assert seen == ["AudioPromptProcessor"]
    assert all(tiny_backbone.denoiser.attn_processors[n] is p for n, p in originals.items())


def test_sampling_stops_within_one_step_when_interrupted(adapter, tiny_backbone, monkeypatch):
    from prompt_audio_edit.engine.core import bridge

    adapted = ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(1.0), scale=0.5, pooling=4)
    calls = []
    original = type(tiny_backbone).predict

    def counting(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            bridge.request_interrupt()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_backbone), "predict", counting)
    with pytest.raises(bridge.Interrupted):
        generate(adapted, steps=5)
    assert len(calls) == 2  # the step that saw the request finished (one batched call per step), no further step ran
    assert not any(type(p).__name__ == "AudioPromptProcessor" for p in tiny_backbone.denoiser.attn_processors.values())


def test_decoupled_attention_is_text_plus_scale_times_audio(adapter, tiny_backbone):
    """One adapted layer, checked against the formula with the layer's and the adapter's weights."""
    sites = ap.bind_adapter(adapter.weights, tiny_backbone)
    attn = tiny_backbone.denoiser.get_submodule(sites[0].name.rsplit(".processor", 1)[0])
    k_ip, v_ip = adapter.weights.layers[sites[0].name]
    hidden = torch.randn(2, 10, attn.to_q.in_features)
    context = torch.randn(2, 8 + 32, 768)
    prompt = ap.AudioPrompt(adapter.weights, sites, torch.zeros(1, 32, 768), torch.zeros(1, 32, 768), 0.6, 4)
    processor = ap.AudioPromptProcessor(k_ip, v_ip, 32, ap.AudioPromptController(prompt, 0.6))

    def attend(q, k, v):
        heads = lambda t: t.view(2, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)  # noqa: E731
        out = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(q.shape[-1] / attn.heads), -1) @ heads(v)
        return out.transpose(1, 2).reshape(2, -1, q.shape[-1])

    q = attn.to_q(hidden)
    text = attend(q, attn.to_k(context[:, :8]), attn.to_v(context[:, :8]))
    audio = attend(q, context[:, 8:] @ k_ip.T, context[:, 8:] @ v_ip.T)
    with torch.no_grad():
        expected = attn.to_out[0](text + 0.6 * audio)
        assert torch.allclose(processor(attn, hidden, context), expected, atol=1e-5)


def test_batches_pair_prompt_clips_with_their_rows(adapter, tiny_backbone):
    a, b = prompt_clip(1.0)["waveform"], prompt_clip(1.0, freq=900.0)["waveform"]
    pair = ap.apply_ap_adapter(tiny_backbone, adapter, {"waveform": torch.cat([a, b]), "sample_rate": 16000}, 0.5, 8)
    same = ap.apply_ap_adapter(tiny_backbone, adapter, {"waveform": torch.cat([a, a]), "sample_rate": 16000}, 0.5, 8)
    rows_pair, rows_same = generate(pair, batch_size=2), generate(same, batch_size=2)
    assert rows_pair.shape[0] == 4  # clip-major: clip a's two samples, then clip b's
    # Same noise (same seed and batch shape): rows of clip a agree, rows of clip b follow their own prompt.
    assert torch.allclose(rows_pair[:2], rows_same[:2], atol=1e-5)
    assert not torch.allclose(rows_pair[2:], rows_same[2:], atol=1e-3)
    # One row per denoiser call (a long batch in chunks): each row still hears its own clip (a wrong pairing would
    # move rows by ~2.5; chunks change only float rounding, amplified by guidance 7.5 to ~1e-4).
    chunked = generate(pair, batch_size=2, clips_per_call=1)
    torch.testing.assert_close(chunked, rows_pair, atol=5e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ sampler
def test_sampler_from_a_latent_keeps_its_bookkeeping_and_runs_the_last_steps(tiny_backbone):
    from prompt_audio_edit.engine.diffusion.vae import vae_encode

    latent = vae_encode(tiny_backbone, prompt_clip(1.5, rate=44100, channels=2))
    out = sample(tiny_backbone, PROMPT, NEGATIVE, steps=2, guidance=3.0, seed=1, latent=latent, denoise=0.5,
                 batch_size=2)
    assert out["samples"].shape == (2, *latent["samples"].shape[1:])
    info = out["pae"]
    assert info["source_sample_rate"] == 44100 and info["source_channels"] == 2 and info["gain"].shape == (2,)
    low = sample(tiny_backbone, PROMPT, NEGATIVE, steps=2, guidance=3.0, seed=1, latent=latent, denoise=0.05)
    # Barely any noise added: the result stays near the clip's latent; denoise 1 ignores it.
    assert (low["samples"] - latent["samples"]).abs().mean() < (out["samples"][:1] - latent["samples"]).abs().mean()


def test_ppae_nodes_refuse_a_model_with_an_audio_prompt(adapter, tiny_backbone):
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.vae import vae_encode

    adapted = ap.apply_ap_adapter(tiny_backbone, adapter, prompt_clip(1.0), scale=0.5, pooling=2)
    with pytest.raises(PAEInputError, match="audio prompt"):
        invert(adapted, vae_encode(tiny_backbone, prompt_clip(1.0)), "a piano", steps=4)


# ------------------------------------------------------------------------------------------ presets
def test_task_presets_fill_paper_and_repository_values_and_overrides_win():
    timbre = ap.ap_task_settings("timbre transfer", "violin", "piano")
    assert (timbre.positive, timbre.negative) == ("a recording of a violin solo", "a recording of a piano solo")
    assert (timbre.scale, timbre.pooling, timbre.guidance) == (0.5, 2, 7.5)
    paper = ap.ap_task_settings("genre transfer (paper)", "Jazz")
    assert (paper.positive, paper.scale, paper.pooling) == ("Jazz style music", 0.4, 1)
    repo = ap.ap_task_settings("genre transfer (repository)", "Rock")
    assert (repo.scale, repo.pooling, repo.guidance, repo.negative) == (0.55, 4, 9.5, "Low quality")
    duet = ap.ap_task_settings("accompaniment", "cello")
    assert (duet.positive, duet.negative) == ("Duet, played with cello accompaniment", "solo")
    custom = ap.ap_task_settings("timbre transfer", "violin", "", scale=0.3, pooling=8, guidance=4.0,
                                 negative="a recording of a harp solo")
    assert (custom.scale, custom.pooling, custom.guidance, custom.negative) == \
        (0.3, 8, 4.0, "a recording of a harp solo")
    node = NODE_CLASS_MAPPINGS["PAE_APAdapterTask"]()
    assert node.run(task="accompaniment", target="flute") == \
        ("Duet, played with flute accompaniment", "solo", 0.5, 2, 7.5)


# ---------------------------------------------------------------------------------------- bad input
def write_adapter(tiny_dirs, name: str, state) -> str:
    torch.save(state, tiny_dirs["models"] / "ap_adapter" / name)
    return name


def test_adapter_for_another_model_size_names_the_layer(adapter, tiny_backbone, tiny_dirs):
    state = tiny_adapter_state(tiny_backbone.denoiser)
    layer = sorted(adapter.weights.layers)[3]
    state[f"{layer}.to_k_ip.weight"] = torch.zeros(64, 768)
    state[f"{layer}.to_v_ip.weight"] = torch.zeros(64, 768)
    name = write_adapter(tiny_dirs, "wider.bin", state)
    loaded = ap.load_ap_adapter(name, TINY_AUDIOMAE, "fp32")
    message = str(expect_input_error("PAE_APAdapterApply", model=tiny_backbone, ap_adapter=loaded,
                                     audio=prompt_clip(1.0)))
    assert message.startswith("PAE_APAdapterApply: input 'ap_adapter'") and layer in message
    assert "64" in message and "another model size" in message


def test_adapter_with_missing_and_unexpected_layers_lists_them(tiny_backbone, tiny_dirs):
    state = tiny_adapter_state(tiny_backbone.denoiser)
    dropped = sorted(state)[0].rsplit(".to_", 1)[0]
    state = {k: v for k, v in state.items() if not k.startswith(dropped + ".")}
    state["up_blocks.9.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.weight"] = torch.zeros(16, 768)
    state["up_blocks.9.attentions.0.transformer_blocks.0.attn2.processor.to_v_ip.weight"] = torch.zeros(16, 768)
    loaded = ap.load_ap_adapter(write_adapter(tiny_dirs, "partial.bin", state), TINY_AUDIOMAE, "fp32")
    message = str(expect_input_error("PAE_APAdapterApply", model=tiny_backbone, ap_adapter=loaded,
                                     audio=prompt_clip(1.0)))
    assert "2 missing" in message and dropped in message and "2 unexpected" in message and "up_blocks.9" in message


class NotATensor:
    pass


@pytest.mark.parametrize("content,expected", [
    (b"this is not a checkpoint\n", "not a torch checkpoint"),
    ({"layer.to_k_ip.weight": NotATensor()}, "objects besides tensors"),
    ({"down_blocks.1.attentions.1.transformer_blocks.0.attn2.processor.to_q_ip.weight": torch.zeros(2, 768)},
     "not an AP-Adapter checkpoint"),
])
def test_unreadable_adapter_files_are_refused_clearly(tiny_dirs, content, expected):
    path = tiny_dirs["models"] / "ap_adapter" / "bad.bin"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    message = str(expect_input_error("PAE_LoadAPAdapter", adapter_name="bad.bin", audio_encoder=TINY_AUDIOMAE,
                                     dtype="fp32"))
    assert message.startswith("PAE_LoadAPAdapter: input 'adapter_name'") and expected in message


def test_audiomae_files_that_are_not_the_release_are_refused(tiny_dirs):
    folder = tiny_dirs["models"] / "audiomae"
    torch.save(tiny_audiomae_state(), folder / "flat.pth")
    message = str(expect_input_error("PAE_LoadAPAdapter", adapter_name=TINY_AP_ADAPTER, audio_encoder="flat.pth",
                                     dtype="fp32"))
    assert "input 'audio_encoder'" in message and "'model' entry" in message
    state = tiny_audiomae_state()
    state["blocks.0.attn.qkv_renamed.weight"] = state.pop("blocks.0.attn.qkv.weight")
    torch.save({"model": state}, folder / "renamed.pth")
    message = str(expect_input_error("PAE_LoadAPAdapter", adapter_name=TINY_AP_ADAPTER, audio_encoder="renamed.pth",
                                     dtype="fp32"))
    assert "1 missing: blocks.0.attn.qkv.weight" in message
    assert "1 unexpected: blocks.0.attn.qkv_renamed.weight" in message


@pytest.mark.parametrize("pooling", [0, 3, 16])
def test_pooling_outside_the_allowed_set_is_refused(adapter, tiny_backbone, pooling):
    message = str(expect_input_error("PAE_APAdapterApply", model=tiny_backbone, ap_adapter=adapter,
                                     audio=prompt_clip(1.0), pooling=pooling))
    assert "input 'pooling'" in message and "1, 2, 4, 8" in message


@pytest.mark.parametrize("audio,expected", [
    ({"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}, "silent"),
    ({"waveform": torch.full((1, 2, 16000), 0.3), "sample_rate": 16000}, "silent"),  # DC only
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "empty"),
    ({"waveform": 0.3 * torch.randn(1, 1, 200), "sample_rate": 16000}, "25 ms"),
])
def test_silent_or_empty_audio_prompts_are_refused(adapter, tiny_backbone, audio, expected):
    message = str(expect_input_error("PAE_APAdapterApply", model=tiny_backbone, ap_adapter=adapter, audio=audio))
    assert "input 'audio'" in message and expected in message


def test_a_model_without_a_768_stream_is_refused(adapter, tiny_dirs):
    tango = model_registry.load_backbone(TINY_TANGO, "fp32")
    message = str(expect_input_error("PAE_APAdapterApply", model=tango, ap_adapter=adapter, audio=prompt_clip(1.0)))
    assert "input 'model'" in message and "AudioLDM2" in message


def test_timbre_preset_without_the_source_instrument_says_what_to_give():
    message = str(expect_input_error("PAE_APAdapterTask", task="timbre transfer", target="violin", source=""))
    assert "input 'source'" in message and "negative" in message
