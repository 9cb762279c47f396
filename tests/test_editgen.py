"""EditGen on a tiny MusicGen: identity edits, the soft-blend limit, layer and head selection, bad input."""

from __future__ import annotations

import pytest
import torch

from prompt_audio_edit.engine.attention.edit import make_attention_edit
from prompt_audio_edit.engine.methods.editgen import EditGenSettings, edit_music, parse_indices
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen
from tests.conftest import TINY_MUSICGEN

SOURCE = "jazz piano solo with drums"
SAMPLING = SamplingSettings(guidance=3.0, top_k=50)


@pytest.fixture
def musicgen(tiny_dirs):
    return load_musicgen(TINY_MUSICGEN, "fp32")


def run(musicgen, mode, target, settings=EditGenSettings(), **edit_kwargs):
    edit = make_attention_edit(mode, SOURCE, target, **{"self_window": 1.0, "cross_window": 1.0, **edit_kwargs})
    return edit_music(musicgen, edit, settings, seconds=0.4, sampling=SAMPLING, seed=11, record_changes=True)


@pytest.mark.parametrize("mode,kwargs", [("replace", {}), ("refine", {}),
                                         ("reweight", {"reweight_words": "piano", "reweight_weights": "1"})])
def test_identity_edits_reproduce_the_source_token_for_token(musicgen, mode, kwargs):
    codes, controller = run(musicgen, mode, SOURCE, EditGenSettings(depth_blend=False, blend=0.7), **kwargs)
    assert torch.equal(codes[0], codes[1])
    assert controller.recording.changes  # the target's maps were edited (self-attention follows the source)


def test_attention_lerp_at_alpha_one_is_a_plain_generation_of_the_target(musicgen):
    target = "rock guitar solo with drums"
    codes, _ = run(musicgen, "replace", target, EditGenSettings(modifier="attention lerp", fixed_alpha=1.0))
    plain = musicgen.generate_codes([target], 0.4, SAMPLING, seed=11, noise_groups=[0])
    assert torch.equal(codes[1], plain[0])
    source_alone = musicgen.generate_codes([SOURCE], 0.4, SAMPLING, seed=11, noise_groups=[0])
    assert torch.equal(codes[0], source_alone[0])  # the source row is never edited
    # The default (self-attention lerp, α = 1 everywhere) copies the source's self-attention: other tokens.
    lerped, _ = run(musicgen, "replace", target, EditGenSettings(fixed_alpha=1.0))
    assert not torch.equal(lerped[1], plain[0])


def test_a_real_edit_moves_the_swapped_words_columns_toward_the_source(musicgen):
    codes, controller = run(musicgen, "replace", "rock piano solo with drums", EditGenSettings(depth_blend=False),
                            self_window=0.0)
    cross = [(site, before, after) for site, before, after in controller.recording.changes if site.kind == "cross"]
    assert cross
    swapped = controller.blended.nonzero().flatten().tolist()
    assert swapped == [0]  # '▁rock' in the target takes '▁jazz''s column
    for _, before, after in cross:
        kept = [c for c in range(before.shape[-1]) if c not in swapped]
        assert torch.equal(after[..., kept], before[..., kept])


def test_an_edit_limited_to_layers_and_heads_changes_only_those(musicgen):
    settings = EditGenSettings(depth_blend=False, layers=frozenset({1}), heads=frozenset({0, 2}))
    _, controller = run(musicgen, "replace", "rock piano solo with drums", settings)
    changes = controller.recording.changes
    assert changes and {site.layer for site, _, _ in changes} == {1}
    for site, before, after in changes:
        if site.kind == "cross":
            assert torch.equal(after[[1, 3]], before[[1, 3]])
            assert not torch.equal(after[[0, 2]], before[[0, 2]])


def test_reweight_forms_scale_the_word_or_divide_the_others(musicgen):
    _, scaled = run(musicgen, "reweight", SOURCE, EditGenSettings(depth_blend=False, reweight_form="scale"),
                    reweight_words="piano",
                    reweight_weights="2")
    _, divided = run(musicgen, "reweight", SOURCE, EditGenSettings(depth_blend=False, reweight_form="divide others"),
                     reweight_words="piano", reweight_weights="4")
    assert scaled.weights[:6].tolist() == [1, 2, 1, 1, 1, 1]
    assert divided.weights[:6].tolist() == [0.25, 1, 0.25, 0.25, 0.25, 0.25]


def test_offset_leaves_the_first_frames_alone(musicgen):
    target = "rock guitar solo with drums"
    codes, _ = run(musicgen, "replace", target, EditGenSettings(depth_blend=False, offset=0.5))
    plain = musicgen.generate_codes([SOURCE, target], 0.4, SAMPLING, seed=11, noise_groups=[0, 0])
    steps = 20 + 4 - 1
    # Frame f of codebook k is drawn at step f + k; before the offset nothing was edited.
    first = steps // 2 - 4
    assert torch.equal(codes[1, :, :first], plain[1, :, :first])


def test_bad_editgen_input_is_refused(musicgen):
    edit = make_attention_edit("replace", SOURCE, "rock guitar solo with drums")
    with pytest.raises(PAEInputError, match="layers 0..1"):
        edit_music(musicgen, edit, EditGenSettings(layers=frozenset({5})), seconds=0.2, sampling=SAMPLING)
    with pytest.raises(PAEInputError) as info:
        parse_indices("0, x", "heads")
    assert info.value.input_name == "heads"
    assert parse_indices("0, 2-3", "heads") == {0, 2, 3} and parse_indices("all", "heads") is None


def test_the_melody_model_is_refused_for_a_cross_edit(tiny_dirs, tmp_path):
    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen
    from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

    build_tiny_musicgen(tmp_path / "musicgen" / "tiny-melody", melody=True)
    from prompt_audio_edit.engine.core import bridge

    bridge.add_model_root(tmp_path)
    melody = NODE_CLASS_MAPPINGS["PAE_LoadMusicGen"]().run(model_name="tiny-melody", dtype="fp32")[0]
    assert not melody.has_cross_attention
    edit = make_attention_edit("replace", SOURCE, "rock guitar solo with drums")
    with pytest.raises(PAEInputError) as info:
        NODE_CLASS_MAPPINGS["PAE_MusicGenEdit"]().run(musicgen=melody, attention_edit=edit, duration=0.2)
    assert str(info.value).startswith("PAE_MusicGenEdit: input 'musicgen'") and "no cross-attention" in str(info.value)


def test_a_recording_is_teacher_forced_as_the_source_branch(musicgen, caplog):
    import logging

    from prompt_audio_edit.engine.methods.editgen import musicgen_edit

    t = torch.arange(int(44100 * 0.5)) / 44100
    stereo = torch.stack([0.3 * torch.sin(2 * torch.pi * 220 * t), 0.2 * torch.sin(2 * torch.pi * 330 * t)])
    edit = make_attention_edit("replace", SOURCE, "rock guitar solo with drums", self_window=1.0, cross_window=1.0)
    with caplog.at_level(logging.INFO):
        audio, maps = musicgen_edit(musicgen, edit, seed=2, top_k=50,
                                    source_audio={"waveform": stereo[None], "sample_rate": 44100})
    assert "resampled from 44100 Hz to 32000 Hz" in caplog.text
    recording = musicgen.encode_audio(stereo, 44100)
    frames = recording.shape[-1]
    assert frames == 25 and audio["waveform"].shape == (2, 1, frames * 640)
    # The source row is the recording itself: its decoded tokens are the recording's EnCodec rendition.
    assert torch.allclose(audio["waveform"][0], musicgen.decode(recording)[0])
    codes, controller = edit_music(musicgen, edit, EditGenSettings(), seconds=0.0, sampling=SAMPLING, seed=2,
                                   recording=recording)
    assert torch.equal(codes[0], recording[0]) and not torch.equal(codes[1], recording[0])
    assert maps.shape[0] == 5


def test_a_recording_longer_than_the_model_makes_is_refused(musicgen):
    from prompt_audio_edit.engine.methods.editgen import musicgen_edit

    edit = make_attention_edit("replace", SOURCE, "rock guitar solo with drums")
    with pytest.raises(PAEInputError) as info:
        musicgen_edit(musicgen, edit, source_audio={"waveform": 0.1 * torch.randn(1, 1, 8000 * 31),
                                                    "sample_rate": 8000})
    assert info.value.input_name == "source_audio" and "30 s" in str(info.value)
