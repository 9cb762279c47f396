"""The AudioLDM2 backbone on a tiny model saved as a diffusers folder and loaded by the pack's loader."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.backbones.mel import MelFrontEnd
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.conftest import TINY_MODEL
from tests.helpers import core_style_audio

LoadModel = NODE_CLASS_MAPPINGS["PAE_LoadModel"]
VAEEncode = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]
VAEDecode = NODE_CLASS_MAPPINGS["PAE_VAEDecode"]


def round_trip(backbone, audio, sample_rate="source"):
    (latent,) = VAEEncode().run(model=backbone, audio=audio)
    (decoded,) = VAEDecode().run(model=backbone, latent=latent, sample_rate=sample_rate)
    return latent, decoded


@pytest.mark.parametrize("seconds,rate,channels", [(1.0, 16000, 1), (10.0, 16000, 1), (1.2345, 16000, 1),
                                                   (1.0, 44100, 2), (2.71, 44100, 2), (0.05, 22050, 1)])
def test_round_trip_keeps_duration_rate_and_channels(tiny_backbone, seconds, rate, channels):
    audio = core_style_audio(seconds, rate, channels)
    latent, decoded = round_trip(tiny_backbone, audio)
    assert decoded["sample_rate"] == rate
    assert decoded["waveform"].shape == audio["waveform"].shape
    assert torch.isfinite(decoded["waveform"]).all()
    # The latent covers the clip in whole VAE cells: 16 kHz samples / hop / 4, rounded up; 64 mel bins / 4.
    model_samples = round(seconds * 16000)
    assert tuple(latent["samples"].shape) == (1, 8, -(-model_samples // 640), 16)
    assert latent["pae"]["num_samples"] == model_samples
    _, native = round_trip(tiny_backbone, audio, sample_rate="model")
    assert native["sample_rate"] == 16000 and native["waveform"].shape == (1, 1, model_samples)


def test_latent_shape_for_ten_seconds(tiny_backbone):
    latent, _ = round_trip(tiny_backbone, core_style_audio(10.0, 16000, 1))
    assert tuple(latent["samples"].shape) == (1, 8, 250, 16)  # AudioLDM2's (8, 250, 16) for 10 s


def test_encode_decode_is_deterministic(tiny_backbone):
    audio = core_style_audio(1.5, 44100, 2)
    first_latent, first = round_trip(tiny_backbone, audio)
    second_latent, second = round_trip(tiny_backbone, audio)
    assert torch.equal(first_latent["samples"], second_latent["samples"])
    assert torch.equal(first["waveform"], second["waveform"])


def test_level_is_restored(tiny_backbone):
    # Encoding peak-normalises as in training; decoding multiplies the level back, for any weights.
    audio = core_style_audio(1.0, 16000, 1)
    quiet = {"waveform": audio["waveform"] * 0.25, "sample_rate": 16000}
    loud_latent, loud = round_trip(tiny_backbone, audio)
    quiet_latent, quiet_out = round_trip(tiny_backbone, quiet)
    assert torch.allclose(loud_latent["samples"], quiet_latent["samples"], atol=1e-5)
    assert torch.allclose(quiet_out["waveform"], loud["waveform"] * 0.25, atol=1e-6)


def test_batch_of_clips(tiny_backbone):
    batch = {"waveform": torch.cat([core_style_audio(1.0, 16000, 1)["waveform"]] * 3) *
             torch.tensor([1.0, 0.5, 0.1])[:, None, None], "sample_rate": 16000}
    latent, decoded = round_trip(tiny_backbone, batch)
    assert latent["samples"].shape[0] == 3 and decoded["waveform"].shape == (3, 1, 16000)


def test_loader_caches_one_model_per_folder_and_dtype(tiny_dirs):
    (first,) = LoadModel().run(model_name=TINY_MODEL, dtype="fp32")
    (second,) = LoadModel().run(model_name=TINY_MODEL, dtype="auto")  # auto is fp32 on CPU
    assert first is second
    assert TINY_MODEL in LoadModel.INPUT_TYPES()["required"]["model_name"][0]
    (half,) = LoadModel().run(model_name=TINY_MODEL, dtype="bf16")
    assert half is not first and half.dtype == torch.bfloat16
    # Once nothing holds a model (ComfyUI's cache dropped it), it is freed rather than kept forever.
    gone = weakref.ref(half)
    del half
    gc.collect()
    assert gone() is None


def test_reduced_precision_round_trip(tiny_dirs):
    (half,) = LoadModel().run(model_name=TINY_MODEL, dtype="bf16")
    latent, decoded = round_trip(half, core_style_audio(1.0, 22050, 2))
    assert decoded["waveform"].dtype == torch.float32 and decoded["waveform"].shape == (1, 2, 22050)
    assert torch.isfinite(decoded["waveform"]).all()


def test_text_encoding_returns_both_streams_and_t5_tokens(tiny_backbone):
    cond = tiny_backbone.encode_text(["a dog barking in the rain", "a cat"])
    gpt2, t5 = cond.streams["gpt2"], cond.streams["t5"]
    assert gpt2.shape[:2] == (2, 8) and gpt2.shape[-1] == 768
    assert t5.shape[0] == 2 and t5.shape[-1] == 1024
    mask = cond.masks["t5"]
    assert mask.shape == t5.shape[:2] and mask[1].sum() < mask[0].sum()  # shared padding, shorter prompt masked
    dog, cat = cond.tokens["t5"]
    assert len(dog) == int(mask[0].sum()) and dog[-1] == "</s>" and cat[-1] == "</s>"
    assert dog[0] != "<s>" and any("dog" in piece for piece in dog)  # T5: no BOS token
    again = tiny_backbone.encode_text(["a dog barking in the rain", "a cat"])
    assert torch.equal(again.streams["gpt2"], gpt2) and torch.equal(again.streams["t5"], t5)
    sub = cond.rows([1])
    assert sub.prompts == ["a cat"] and torch.equal(sub.streams["t5"], t5[1:])


def test_noise_prediction_at_a_step(tiny_backbone):
    (latent,) = VAEEncode().run(model=tiny_backbone, audio=core_style_audio(1.0, 16000, 1))
    cond = tiny_backbone.encode_text(["a dog barking"])
    scheduler = tiny_backbone.make_scheduler()
    scheduler.set_timesteps(10)
    tiny_backbone.activate()
    with torch.no_grad():
        out = tiny_backbone.predict(latent["samples"], scheduler.timesteps[0], cond)
        again = tiny_backbone.predict(latent["samples"], scheduler.timesteps[0], cond)
        other = tiny_backbone.predict(latent["samples"], scheduler.timesteps[-1], cond)
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert tiny_backbone.prediction_type == "epsilon"


def test_cross_attention_sites_are_exactly_the_true_cross_attentions(tiny_backbone):
    from diffusers.models.attention_processor import Attention

    sites = tiny_backbone.cross_attention_sites()
    unet = tiny_backbone.denoiser
    true_cross = {f"{name}.processor" for name, module in unet.named_modules()
                  if isinstance(module, Attention) and module.is_cross_attention}
    second_self = [name for name, module in unet.named_modules()
                   if isinstance(module, Attention) and name.endswith("attn2") and not module.is_cross_attention]
    assert {s.name for s in sites} == true_cross
    assert second_self, "the tiny model should have AudioLDM2's second self-attentions, so the filter matters"
    assert set(unet.attn_processors) >= true_cross
    assert {s.stream for s in sites} == {"gpt2", "t5"}
    assert all(s.key_dim == {"gpt2": 768, "t5": 1024}[s.stream] for s in sites)
    assert {s.place for s in sites} == {"down", "mid", "up"}


def test_mel_front_end_matches_a_direct_computation():
    rate, hop, n_fft = 16000, 160, 1024
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(3200).astype(np.float32) * 0.1
    mel = MelFrontEnd()(torch.from_numpy(wave)[None])[0]
    assert mel.shape == (3200 // hop, 64)
    # Frame 3 by hand: reflect-pad (n_fft - hop) / 2, Hann window, |rfft|, Slaney mel filters, log(clamp 1e-5).
    from transformers.audio_utils import mel_filter_bank

    padded = np.pad(wave, (n_fft - hop) // 2, mode="reflect")
    frame = padded[3 * hop: 3 * hop + n_fft] * np.hanning(n_fft + 1)[:-1]
    filters = mel_filter_bank(num_frequency_bins=513, num_mel_filters=64, min_frequency=0.0, max_frequency=8000.0,
                              sampling_rate=rate, norm="slaney", mel_scale="slaney")
    expected = np.log(np.maximum(np.abs(np.fft.rfft(frame)) @ filters, 1e-5))
    assert np.allclose(mel[3].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("negative", ["", "low quality, noise and hum, muffled recording"])
def test_sample_equals_diffusers_audioldm2_pipeline_given_the_same_noise(tiny_backbone, negative):
    # diffusers pads the negative's T5 tokens to the positive's length (or cuts them), and GPT-2 reads those
    # positions: with the pack's padding the final latents agree to float error (1e-4 on latents of magnitude ~1;
    # encoding the negative alone differs by 9-62 %).
    from prompt_audio_edit.engine.core.checks import cpu_generator
    from prompt_audio_edit.engine.diffusion.sampling import sample

    positive, seconds, seed = "a dog barking in the rain", 1.28, 3
    ours = sample(tiny_backbone, positive, negative, steps=6, guidance=3.5, seed=seed, seconds=seconds)["samples"]
    noise = torch.randn(ours.shape, generator=cpu_generator(seed))
    theirs = tiny_backbone.pipeline(positive, negative_prompt=negative, num_inference_steps=6, guidance_scale=3.5,
                                    audio_length_in_s=seconds, latents=noise.clone(), output_type="latent").audios
    assert theirs.shape == ours.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    # Encoding the negative alone (as before) gives other GPT-2 vectors: the comparison above can fail.
    alone = tiny_backbone.encode_text([negative])
    padded = tiny_backbone.encode_negative(negative, tiny_backbone.encode_text([positive]))
    assert not torch.allclose(alone.streams["gpt2"], padded.streams["gpt2"], atol=1e-4)


def test_gpt2_hidden_states_equal_diffusers_generate_language_model(tiny_backbone):
    import warnings

    from prompt_audio_edit.engine.backbones.audioldm2 import generated_hidden_states

    pipeline = tiny_backbone.pipeline
    torch.manual_seed(0)
    width = pipeline.language_model.config.n_embd
    embeds = torch.randn(2, 7, width)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, as the projection gives for a shorter prompt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = pipeline.generate_language_model(embeds, attention_mask=mask, max_new_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the pack's own call uses current argument names
        actual = generated_hidden_states(pipeline.language_model, embeds, mask, 4)
    assert actual.shape == expected.shape == (2, 4, width)
    assert torch.equal(actual, expected), (actual - expected).abs().max()
