"""MusicGen backbone on a tiny transformers MusicGen: loading, the pack's generation loop, shared randomness."""

from __future__ import annotations

import pytest
import torch

from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.models.musicgen import (SamplingSettings, filter_logits, list_musicgen_models,
                                                      load_musicgen)
from tests.conftest import TINY_MUSICGEN

PROMPTS = ["pop song with drums and bass", "pop song with drums and bass", "jazz piano solo"]


@pytest.fixture
def musicgen(tiny_dirs):
    return load_musicgen(TINY_MUSICGEN, "fp32")


def test_loads_with_codebooks_rate_limit_and_tokens(musicgen):
    assert TINY_MUSICGEN in list_musicgen_models()
    assert (musicgen.num_codebooks, musicgen.frame_rate, musicgen.sample_rate) == (4, 50.0, 32000)
    assert musicgen.max_duration_s == 30.0 and musicgen.has_cross_attention
    states, mask, tokens = musicgen.encode_text(PROMPTS[:1] + PROMPTS[2:], guidance=3.0)
    assert states.shape[0] == mask.shape[0] == 4  # conditional rows first, then the all-zero unconditional rows
    assert mask[2:].sum() == 0 and states[2:].abs().sum() == 0
    assert tokens[1] == ["▁jazz", "▁piano", "▁solo", "</s>"]
    assert load_musicgen(TINY_MUSICGEN, "fp32") is musicgen


def test_greedy_generation_equals_transformers_generate(musicgen):
    """With top_k = 1 the loop must reproduce transformers' own guided generate: CFG rows, delay pattern, decoding."""
    ours = musicgen.generate_codes(PROMPTS, 0.4, SamplingSettings(guidance=3.0, top_k=1), seed=0)
    assert ours.shape == (3, 4, 20)
    inputs = musicgen.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    codec = musicgen.model.audio_encoder
    decoded = []
    original_decode = codec.decode

    def recording_decode(codes, *args, **kwargs):
        decoded.append(codes.clone())
        return original_decode(codes, *args, **kwargs)

    codec.decode = recording_decode
    try:
        reference = musicgen.model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=20 + 4 - 1)
    finally:
        del codec.decode
    assert torch.equal(ours, decoded[0][0])  # the tokens, codebook by codebook, frame by frame
    assert torch.equal(musicgen.decode(ours), reference)
    # The stand-in EnCodec's codebooks are random: other tokens decode to other audio (the check above can fail).
    assert not torch.allclose(musicgen.decode(ours[:, :, torch.randperm(20)]), reference)


def test_rows_in_one_noise_group_share_every_draw(musicgen):
    settings = SamplingSettings(guidance=3.0, top_k=50, temperature=1.2)
    codes = musicgen.generate_codes(PROMPTS, 0.5, settings, seed=7, noise_groups=[0, 0, 0])
    assert torch.equal(codes[0], codes[1])  # same prompt, same noise: token for token
    assert not torch.equal(codes[0], codes[2])
    again = musicgen.generate_codes(PROMPTS, 0.5, settings, seed=7, noise_groups=[0, 0, 0])
    assert torch.equal(codes, again)
    apart = musicgen.generate_codes(PROMPTS, 0.5, settings, seed=7, noise_groups=[0, 1, 2])
    assert not torch.equal(apart[0], apart[1])  # separate groups: independent samples of the same prompt
    assert not torch.equal(musicgen.generate_codes(PROMPTS, 0.5, settings, seed=8, noise_groups=[0, 0, 0]), codes)


def test_filtering_keeps_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, 0.0)).tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[True, True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.3)).tolist() == [[True, False, False, False, False]]


def test_decoded_audio_has_the_frames_length(musicgen):
    codes = musicgen.generate_codes(PROMPTS[:1], 0.2, SamplingSettings(), seed=0)
    audio = musicgen.decode(codes)
    assert audio.shape == (1, 1, 10 * 640) and torch.isfinite(audio).all()


@pytest.mark.parametrize("seconds", [0.0, 31.0])
def test_duration_beyond_the_model_is_refused(musicgen, seconds):
    with pytest.raises(PAEInputError) as info:
        musicgen.generate_codes(PROMPTS[:1], seconds, SamplingSettings())
    assert info.value.input_name == "duration" and "30 s" in str(info.value)


class Recorder:
    """A controller that edits nothing and records what each attention call saw."""

    def __init__(self):
        self.calls = []

    def edit(self, site, probs):
        self.calls.append((site, probs.detach().clone()))
        return probs


def test_attention_control_installs_and_removes_cleanly(musicgen):
    from prompt_audio_edit.engine.models.musicgen_attention import decoder_attention_control

    settings = SamplingSettings(guidance=3.0, top_k=50)
    before = musicgen.generate_codes(PROMPTS, 0.3, settings, seed=3, noise_groups=[0, 0, 0])
    implementation = musicgen.model.decoder.config._attn_implementation
    recorder = Recorder()
    with decoder_attention_control(musicgen.model, recorder) as sites:
        inside = musicgen.generate_codes(PROMPTS, 0.3, settings, seed=3, noise_groups=[0, 0, 0])
        assert musicgen.model.decoder.config._attn_implementation == "pae_controlled"
    assert musicgen.model.decoder.config._attn_implementation == implementation
    assert not any(hasattr(m, "_pae_controller") for m in musicgen.model.decoder.modules())
    assert torch.equal(musicgen.generate_codes(PROMPTS, 0.3, settings, seed=3, noise_groups=[0, 0, 0]), before)
    assert torch.equal(inside[0], inside[1])  # an identity controller keeps the shared-noise rows identical
    assert {(s.kind, s.layer) for s in sites} == {(k, i) for k in ("self", "cross") for i in range(2)}


def test_attention_function_sees_the_guidance_halves_and_every_layer(musicgen):
    from prompt_audio_edit.engine.models.musicgen_attention import decoder_attention_control

    prompts = ["jazz piano solo", "pop song with drums and bass"]
    recorder = Recorder()
    with decoder_attention_control(musicgen.model, recorder):
        musicgen.generate_codes(prompts, 0.1, SamplingSettings(guidance=3.0), seed=0)
    steps = 5 + 4 - 1
    assert len(recorder.calls) == steps * 4  # 2 layers x (self, cross) per frame step
    order = [(s.layer, s.kind) for s, _ in recorder.calls[:4]]
    assert order == [(0, "self"), (0, "cross"), (1, "self"), (1, "cross")]
    for index, (site, probs) in enumerate(recorder.calls):
        step = index // 4
        # The K codebooks of a row share one sequence; rows are the conditional prompts, then the unconditional.
        assert probs.shape[:3] == (2 * len(prompts), site.heads, 1)
        if site.kind == "self":
            assert probs.shape[-1] == step + 1  # keys grow with the cache
        else:
            keys = probs.shape[-1]
            assert keys == 7  # the longer prompt's tokens: ▁pop ▁song ▁with ▁drums ▁and ▁bass </s>
    cross = [p for s, p in recorder.calls if s.kind == "cross"][0]
    # Conditional rows first: the short prompt's padded keys get no attention; unconditional rows are fully masked
    # (uniform over all keys).
    assert torch.all(cross[0, :, :, 4:] == 0) and cross[0, :, :, :4].sum(-1).allclose(torch.ones(1))
    assert torch.allclose(cross[2:], torch.full_like(cross[2:], 1 / 7))


def test_load_audio_model_points_musicgen_to_its_own_loader(musicgen):
    from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["PAE_LoadModel"]
    assert not any(name.startswith("musicgen/") for name in node.INPUT_TYPES()["required"]["model_name"][0])
    with pytest.raises(PAEInputError, match="Load MusicGen"):
        node().run(model_name=f"musicgen/{TINY_MUSICGEN}", dtype="fp32")
