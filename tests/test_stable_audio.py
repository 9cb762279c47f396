"""Stable Audio Open on the backbone interface: audio and timing, the DiT's prediction as diffusers' pipeline makes
it, its solver, inversion and attention edits on the DiT."""

from __future__ import annotations

import math

import pytest
import torch

from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.attention.control import attention_control
from prompt_audio_edit.engine.attention.edit import make_attention_edit
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.methods.ppae import fuse_edit, run_branches
from prompt_audio_edit.engine.methods.zeta import prompt_edit, redenoise
from prompt_audio_edit.engine.diffusion.sampling import sample
from prompt_audio_edit.engine.diffusion.inversion import invert
from prompt_audio_edit.engine.diffusion.steps import (ddpm_sigma, noise_from_x0, schedule_from_sigmas, solver_step,
                                               split_prediction)
from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode

from tests.conftest import TINY_SAO, TINY_SAO_SECONDS
from tests.helpers import audio_clip

PROMPT = "a dog barking in the rain"


@pytest.fixture
def sao(tiny_dirs):
    return model_registry.load_backbone(TINY_SAO, "fp32")


def test_audio_geometry_stereo_mono_and_rates(sao):
    assert (sao.family, sao.sample_rate, sao.channels, sao.latent_channels) == ("stable_audio", 44100, 2, 64)
    assert sao.max_duration_s == pytest.approx(int(TINY_SAO_SECONDS * 44100 / 2048 + 1) * 2048 / 44100)
    stereo = audio_clip(1.0, 44100, 2, kind="noise")
    latent = vae_encode(sao, stereo)
    assert latent["samples"].shape == (1, 64, math.ceil(44100 / 2048))
    out = vae_decode(sao, latent)
    assert out["waveform"].shape == (1, 2, 44100) and out["sample_rate"] == 44100
    # Mono is duplicated to both channels, exactly as if the stereo file carried it twice.
    mono = audio_clip(1.0, 44100, 1, kind="noise")
    doubled = {"waveform": mono["waveform"].repeat(1, 2, 1), "sample_rate": 44100}
    assert torch.equal(vae_encode(sao, mono)["samples"], vae_encode(sao, doubled)["samples"])
    assert vae_decode(sao, vae_encode(sao, mono))["waveform"].shape == (1, 1, 44100)
    # Another rate is resampled in, and decoded back to it at the source length.
    other = audio_clip(0.5, 22050, 1, kind="noise")
    back = vae_decode(sao, vae_encode(sao, other))
    assert back["sample_rate"] == 22050 and back["waveform"].shape == (1, 1, 11025)
    assert vae_decode(sao, vae_encode(sao, other), "model")["waveform"].shape == (1, 2, 22050)


def test_durations_up_to_the_window_and_a_clear_refusal_beyond(sao):
    frames = round(sao.max_duration_s * 44100 / 2048)  # the DiT's window, in latent frames
    assert sample(sao, "rain", steps=1, seconds=sao.max_duration_s)["samples"].shape[-1] == frames
    # The VAE takes a longer clip (in tiles); the DiT refuses it and says how to split it.
    too_long = {"waveform": torch.zeros(1, 2, frames * 2048 + 4410), "sample_rate": 44100}
    latent = vae_encode(sao, too_long)
    assert latent["samples"].shape[-1] == frames + 3
    with pytest.raises(PAEInputError, match=r"DiT takes at most 6\.04 s; cut the recording with Split Windows"):
        invert(sao, latent, "rain", steps=2)
    with pytest.raises(PAEInputError, match=r"DiT takes at most"):
        sample(sao, "rain", steps=2, latent=latent, denoise=0.5)
    with pytest.raises(PAEInputError, match="seconds"):
        sample(sao, "rain", steps=2, seconds=sao.max_duration_s + 1)


def _pipeline(sao):
    from diffusers import CosineDPMSolverMultistepScheduler, StableAudioPipeline

    scheduler = CosineDPMSolverMultistepScheduler.from_config(sao.scheduler_config)
    return StableAudioPipeline(vae=sao.vae, text_encoder=sao.text_encoder, projection_model=sao.projection,
                               tokenizer=sao.tokenizer, transformer=sao.transformer, scheduler=scheduler)


def test_prediction_equals_diffusers_pipeline_including_timing_tokens_and_zero_uncond(sao):
    """One guided DiT call: the pack's keys, global condition, rotary and model time are the pipeline's own."""
    pipe = _pipeline(sao)
    seen = []
    forward = sao.transformer.forward

    def spy(hidden_states, timestep=None, **kwargs):
        seen.append((hidden_states.clone(), timestep.clone(), {k: v for k, v in kwargs.items()}))
        return forward(hidden_states, timestep, **kwargs)

    sao.transformer.forward = spy
    try:
        pipe(PROMPT, audio_end_in_s=sao.max_duration_s, num_inference_steps=2, guidance_scale=4.0,
             generator=torch.Generator().manual_seed(0), output_type="latent")
    finally:
        del sao.transformer.forward
    x, t, kwargs = seen[0]
    text = sao.encode_text(["", PROMPT])
    keys_seen = []
    handle = sao.transformer.cross_attention_proj.register_forward_hook(lambda m, a, o: keys_seen.append(a[0]))
    try:
        ours = sao.predict(x, t, text)
    finally:
        handle.remove()
    reference = forward(x, t, **kwargs)[0]
    torch.testing.assert_close(keys_seen[0], kwargs["encoder_hidden_states"], rtol=0, atol=1e-6)
    assert keys_seen[0].shape[1] == sao.tokenizer.model_max_length + 2
    assert torch.count_nonzero(keys_seen[0][0]) == 0  # the unconditional row: every key zero, timing included
    assert torch.count_nonzero(keys_seen[0][1, -2:]) > 0  # the conditional row ends with the timing tokens
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    # The pack's schedule has the scheduler's model times.
    pipe.scheduler.set_timesteps(7)
    ours_t = sao.step_schedule(7).timesteps
    torch.testing.assert_close(torch.tensor(ours_t, dtype=torch.float64), pipe.scheduler.timesteps.double(),
                               rtol=1e-6, atol=1e-6)


def test_dpm_solver_2m_sde_in_vp_form_equals_the_model_scheduler():
    """The pack's solver steps in ᾱ terms equal CosineDPMSolverMultistepScheduler (σ terms) given the same noise."""
    from diffusers import CosineDPMSolverMultistepScheduler

    from prompt_audio_edit.engine.backbones.stable_audio import STABLE_AUDIO_SCHEDULER

    scheduler = CosineDPMSolverMultistepScheduler(**STABLE_AUDIO_SCHEDULER)
    steps = 9
    scheduler.set_timesteps(steps)
    sigmas = scheduler.sigmas.double().tolist()
    schedule = schedule_from_sigmas(sigmas, "v_prediction", {}, multistep=True)
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.4
    noises = [torch.randn(1, 4, 5, generator=g, dtype=torch.float64) for _ in range(steps)]

    def model(x_in, t):
        return torch.tanh(torch.einsum("ij,bjk->bik", weight, x_in)) * (1.0 + t)

    start = torch.randn(1, 4, 5, generator=g, dtype=torch.float64) * sigmas[0]
    x = start.clone()
    for i, t in enumerate(scheduler.timesteps):
        scheduler.noise_sampler = lambda a, b, i=i: noises[i]  # the Brownian tree replaced by known noise
        x = scheduler.step(model(scheduler.scale_model_input(x, t), float(t)), t, x).prev_sample
    ours, previous = start / math.sqrt(1.0 + sigmas[0] ** 2), None
    for n in range(steps):
        a, a_next = schedule.alphas[n], schedule.alphas_prev[n]
        sigma = ddpm_sigma(a, a_next)
        ours, previous = solver_step(model(ours, schedule.timesteps[n]), ours, a, a_next, sigma, "v_prediction",
                                     previous)
        ours = ours + sigma * noises[n]
    torch.testing.assert_close(ours, x, rtol=1e-6, atol=1e-6)
    # First order at every step is the DDPM posterior (SDE-DPM-Solver++ 1): its x̂0 is the model's own.
    eps, x0 = split_prediction(model(ours, 0.3), ours, 0.4, "v_prediction")
    torch.testing.assert_close(noise_from_x0(ours, x0, 0.4), eps)


def test_ddpm_inversion_round_trip_and_zeta_edit_on_the_dit(sao):
    latent = vae_encode(sao, audio_clip(1.0, 44100, 2, kind="noise"))
    inversion = invert(sao, latent, PROMPT, method="ddpm", steps=12, guidance=3.0, edit_start=0.25, seed=1)
    assert inversion.schedule.multistep
    torch.testing.assert_close(redenoise(sao, inversion)["samples"], latent["samples"], rtol=0, atol=2e-5)
    edited = prompt_edit(sao, inversion, "a cat meowing in the rain", "6, 12")
    assert edited["samples"].shape == (2, 64, latent["samples"].shape[-1])
    assert (edited["samples"][0] - latent["samples"][0]).abs().max() > 1e-3
    with pytest.raises(PAEInputError, match="target_prompt"):
        prompt_edit(sao, inversion, "  ", "12")


def test_identity_attention_edit_reproduces_the_clip_and_a_swap_changes_it(sao):
    latent = vae_encode(sao, audio_clip(1.0, 44100, 2, kind="noise", seed=2))
    inversion = invert(sao, latent, PROMPT, method="ddpm", steps=10, guidance=3.0, edit_start=0.3, seed=0)
    same = make_attention_edit("replace", "", PROMPT, "", "", 1.0, 1.0, "all", 4)
    out, _ = fuse_edit(sao, inversion, same, guidance_scales="3")  # run as the plain re-denoise
    torch.testing.assert_close(out["samples"], latent["samples"], rtol=0, atol=2e-5)
    # the controller and the source row, with nothing to change, change nothing on the DiT either
    branches, _ = run_branches(sao, inversion, 0, PROMPT, [3.0], same.bind(PROMPT))
    torch.testing.assert_close(branches, latent["samples"], rtol=0, atol=2e-5)
    swap = make_attention_edit("replace", "", "a cat barking in the rain", "", "", 0.8, 0.5, "all", 4)
    before = {n: id(p) for n, p in sao.transformer.attn_processors.items()}
    edited, maps = fuse_edit(sao, inversion, swap, guidance_scales="3", local_blend=0.3)
    assert maps.shape[0] == len(swap.target_prompt.split())
    assert {n: id(p) for n, p in sao.transformer.attn_processors.items()} == before
    assert (edited["samples"] - latent["samples"]).abs().max() > 1e-4


def test_edit_processors_without_an_edit_equal_the_dit_own(sao):
    """The pack's processor (GQA repeat, rotary, timing keys) gives the DiT's own numbers when nothing is edited."""
    from prompt_audio_edit.engine.attention.alignment import TokenMapping
    from prompt_audio_edit.engine.attention.control import FusionController, BranchLayout
    from prompt_audio_edit.engine.attention.schedule import FusionSchedule

    x = torch.randn(2, 64, 9, generator=torch.Generator().manual_seed(0))
    text = sao.encode_text(["", PROMPT])
    plain = sao.predict(x, 0.7, text)
    edit = make_attention_edit("replace", PROMPT, PROMPT, "", "", 0.0, 0.0, "all", 1)
    length = text.streams["t5"].shape[1]
    eye = TokenMapping(torch.eye(length), torch.zeros(length), torch.ones(length))
    controller = FusionController(edit, FusionSchedule(), {"t5": eye}, BranchLayout(1, [1]),
                                     sao.attention_grid(tuple(x.shape)), "t5", query_prefix=1,
                                     single_resolution=True)
    controller.begin_step(0, 1)
    with attention_control(sao.denoiser, sao.cross_attention_sites(), controller):
        patched = sao.predict(x, 0.7, text)
    torch.testing.assert_close(patched, plain, rtol=1e-5, atol=1e-6)
    assert len(sao.cross_attention_sites()) == len(sao.transformer.transformer_blocks)


def test_timing_keys_are_left_alone_by_word_edits():
    from prompt_audio_edit.engine.attention.alignment import word_stream_mapping

    edit = make_attention_edit("replace", "a dog", "a cat", "cat", "2", 0.8, 0.0, "all", 4)
    mapping = word_stream_mapping(edit.bind("a dog"), ["▁a", "▁dog", "</s>"], ["▁a", "▁cat", "</s>"], 8)
    assert torch.equal(mapping.from_source[3:, 3:], torch.eye(5))   # padding and the two timing keys
    assert torch.all(mapping.weights[3:] == 1) and mapping.weights[1] == 2


def test_text_to_audio_sampling_on_stable_audio(sao):
    out = sample(sao, "rain on a tin roof", steps=3, seconds=1.0, seed=4, batch_size=2)
    assert out["samples"].shape == (2, 64, 22)
    again = sample(sao, "rain on a tin roof", steps=3, seconds=1.0, seed=4, batch_size=2)
    assert torch.equal(out["samples"], again["samples"])
    audio = vae_decode(sao, out)
    assert audio["waveform"].shape == (2, 2, 44100)


def test_sample_takes_core_empty_latent_audio_and_decode_restores_its_length(sao, tiny_backbone):
    from prompt_audio_edit.engine.core.errors import PAEInputError
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.diffusion.vae import vae_decode

    core = {"samples": torch.zeros((2, 64, 40)), "type": "audio"}  # ComfyUI core's Empty Latent Audio: no record
    out = sample(sao, "rain on a tin roof", steps=2, latent=core, denoise=1.0)
    assert out["samples"].shape == (2, 64, 40) and out["pae"]["family"] == "stable_audio"
    audio = vae_decode(sao, out, "source")
    assert audio["waveform"].shape == (2, 2, 40 * 2048) and audio["sample_rate"] == 44100
    with pytest.raises(PAEInputError, match="shape \\(2, 64, 40\\) but a audioldm2 latent has 8 channels"):
        sample(tiny_backbone, "rain", steps=2, latent=core, denoise=1.0)  # AudioLDM2 latents have 8 channels
