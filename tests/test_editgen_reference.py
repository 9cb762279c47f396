"""EditGen against the official code's formulas, written out here on their own from the code's description
(billsioros/EditGen): a controller that counts the attention calls itself, as the code does, and edits the
conditional half of every map. The pack's EditGen must give the same maps (to float error) and the same tokens.

The stand-in MusicGen's logits are far from uniform (initializer_factor 0.3), so these edits change tokens: equal
tokens below are a real agreement, and the test at the end shows a wrong counter would change them.
"""

from __future__ import annotations

import pytest
import torch

from prompt_audio_edit.engine.attention.edit import make_attention_edit
from prompt_audio_edit.engine.methods.editgen import EditGenSettings, edit_music
from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen
from prompt_audio_edit.engine.models.musicgen_attention import decoder_attention_control
from tests.conftest import TINY_MUSICGEN

SAMPLING = SamplingSettings(guidance=3.0, top_k=50)
SECONDS, SEED = 0.4, 11


@pytest.fixture
def musicgen(tiny_dirs):
    return load_musicgen(TINY_MUSICGEN, "fp32")


def decoded_tokens(musicgen, prompts):
    """The code's get_tokens: both prompts tokenised together (padded), each id decoded on its own."""
    ids = musicgen.tokenizer(prompts, padding=True)["input_ids"]
    return [[musicgen.tokenizer.decode([i]) for i in row] for row in ids]


def word_indices(tokens, word):
    """The code's word lookup: every token that extends a prefix of the word, scanning all tokens."""
    found, built = [], ""
    for i, token in enumerate(tokens):
        if word.startswith(built + token):
            built += token
            found.append(i)
    return found


class OfficialController:
    """EditGen's BaseController with one edit controller and one modifier, counting calls before use."""

    def __init__(self, calls, passes, mode, modifier, *, blend=1.0, weight=2.0, offset=0.0, source_columns=(),
                 target_columns=(), pairs=(), word_columns=()):
        self.calls, self.passes = calls, passes
        self.mode, self.modifier, self.blend, self.weight, self.offset = mode, modifier, blend, weight, offset
        self.source_columns, self.target_columns = list(source_columns), list(target_columns)
        self.pairs, self.word_columns = list(pairs), list(word_columns)
        self.counter, self.step = 0, 0
        self.outputs = []

    def begin_step(self, index, total):  # the code counts calls only
        pass

    def edit(self, site, probs):
        self.counter += 1
        if self.counter == self.calls:
            self.counter, self.step = 0, self.step + 1
        if self.step < round(self.offset * self.passes):
            return probs
        probs = probs.clone()
        half = probs.shape[0] // 2
        maps = probs[:half]  # [prompts, heads, 1, keys]: source, target
        alpha = self.counter / self.calls
        cross = site.kind == "cross"
        if self.modifier == "self lerp":
            if cross:
                maps = self.cross_edit(maps)
            else:
                maps[1:] = (1 - alpha) * maps[1:] + alpha * maps[0]
        elif self.modifier == "lerp":
            edited = self.cross_edit(maps.clone()) if cross else self.copy_source(maps.clone())
            maps = alpha * maps + (1 - alpha) * edited
        else:
            maps = self.cross_edit(maps) if cross else self.copy_source(maps)
        probs[:half] = maps
        self.outputs.append((site, probs[1].clone()))
        return probs

    @staticmethod
    def copy_source(maps):
        maps[1:] = maps[0]
        return maps

    def cross_edit(self, maps):
        b = self.blend
        if self.mode == "replace":
            mean = maps[0][..., self.source_columns].mean(-1)
            for t in self.target_columns:
                maps[1:, ..., t] = (1 - b) * maps[1:, ..., t] + b * mean
        elif self.mode == "refine":
            before = maps.clone()
            for i, j in self.pairs:  # written in order: a repeated target token keeps the last pair's value
                maps[1:, ..., j] = (1 - b) * before[1:, ..., j] + b * before[0, ..., i]
        elif self.mode == "reweight":
            maps[1:] = maps[0]
            others = [c for c in range(maps.shape[-1]) if c not in self.word_columns]
            maps[1:, ..., others] = maps[1:, ..., others] / self.weight
        return maps


CASES = {
    "replace, fewer tokens": ("replace", "jazz violoncello solo with drums", "jazz piano solo with drums",
                              {"self_window": 1.0, "cross_window": 1.0}),
    "replace, more tokens": ("replace", "jazz piano solo with drums", "jazz violoncello solo with drums", {}),
    "refine, repeated tokens": ("refine", "violoncello solo with drums", "violoncello solo with loud drums", {}),
    "reweight": ("reweight", "jazz piano solo with drums", "jazz piano solo with drums",
                 {"reweight_words": "piano", "reweight_weights": "2"}),
}
MODIFIERS = {"self lerp": EditGenSettings(), "lerp": EditGenSettings(modifier="attention lerp"),
             "bare": EditGenSettings(depth_blend=False)}


def official_for(musicgen, mode, source, target, modifier, offset=0.0, blend=1.0):
    tokens = decoded_tokens(musicgen, [source, target])
    layers = musicgen.model.decoder.config.num_hidden_layers
    passes = round(SECONDS * 50) + musicgen.model.decoder.config.num_codebooks - 1
    kwargs = {}
    if mode == "replace":
        (old,), (new,) = [[w for w in a.split() if w not in b.split()] for a, b in ((source, target), (target, source))]
        kwargs = {"source_columns": word_indices(tokens[0], old), "target_columns": word_indices(tokens[1], new)}
    elif mode == "refine":
        kwargs = {"pairs": [(i, j) for i, a in enumerate(tokens[0]) for j, b in enumerate(tokens[1])
                            if not a.startswith("<") and not b.startswith("<") and a == b]}
    else:
        kwargs = {"word_columns": word_indices(tokens[0], "piano")}
    return OfficialController(2 * layers, passes, mode, modifier, offset=offset, blend=blend, **kwargs)


@pytest.mark.parametrize("modifier", list(MODIFIERS))
@pytest.mark.parametrize("case", list(CASES))
def test_maps_and_tokens_equal_the_official_formulas(musicgen, case, modifier):
    mode, source, target, extra = CASES[case]
    settings = MODIFIERS[modifier]
    edit = make_attention_edit(mode, source, target, **extra)
    codes, controller = edit_music(musicgen, edit, settings, seconds=SECONDS, sampling=SAMPLING, seed=SEED,
                                   record_changes=True)
    official = official_for(musicgen, mode, source, target, modifier)
    with decoder_attention_control(musicgen.model, official):
        expected = musicgen.generate_codes([source, target], SECONDS, SAMPLING, SEED, noise_groups=[0, 0],
                                           on_step=official.begin_step)
    ours = [(site, after) for site, _, after in controller.recording.changes]
    assert len(ours) == len(official.outputs) > 0
    for (site, after), (official_site, official_after) in zip(ours, official.outputs):
        assert site == official_site
        torch.testing.assert_close(after, official_after, rtol=1e-5, atol=1e-6)
    assert torch.equal(codes, expected)


def test_the_offset_counts_frames_as_the_code_does(musicgen):
    source, target = "jazz piano solo with drums", "rock piano solo with drums"
    edit = make_attention_edit("replace", source, target)
    codes, controller = edit_music(musicgen, edit, EditGenSettings(offset=0.3), seconds=SECONDS, sampling=SAMPLING,
                                   seed=SEED, record_changes=True)
    official = official_for(musicgen, "replace", source, target, "self lerp", offset=0.3)
    with decoder_attention_control(musicgen.model, official):
        expected = musicgen.generate_codes([source, target], SECONDS, SAMPLING, SEED, noise_groups=[0, 0],
                                           on_step=official.begin_step)
    assert len(controller.recording.changes) == len(official.outputs)
    assert torch.equal(codes, expected)


def test_a_counter_read_after_use_would_give_other_tokens(musicgen):
    # The check above can fail: the pack's former α = i / N (counter read before it advances) changes tokens.
    source, target = "jazz piano solo with drums", "rock piano solo with drums"
    official = official_for(musicgen, "replace", source, target, "self lerp")
    shifted = official_for(musicgen, "replace", source, target, "self lerp")
    calls = shifted.calls

    def edit_before_advancing(site, probs, inner=OfficialController.edit):
        out = inner(shifted, site, probs)
        return out

    shifted.counter = calls - 1  # the first call then reads 0: α runs 0, 1/N, ... one call behind
    shifted.edit = edit_before_advancing
    results = []
    for controller in (official, shifted):
        with decoder_attention_control(musicgen.model, controller):
            results.append(musicgen.generate_codes([source, target], SECONDS, SAMPLING, SEED, noise_groups=[0, 0]))
    assert torch.equal(results[0][0], results[1][0]) and not torch.equal(results[0][1], results[1][1])
