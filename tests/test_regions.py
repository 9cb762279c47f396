"""Long recordings: Cut / Paste Region (the rest of the file bit for bit, equal-power crossfades without a step) and
Split / Join Windows (unedited windows join back to the input; a 3-minute song through a whole PPAE graph)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prompt_audio_edit.engine.models.clap import CandidateScores, share_one_scale
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
from tests.helpers import audio_clip, expect_input_error

CUT, PASTE = NODE_CLASS_MAPPINGS["PAE_CutRegion"](), NODE_CLASS_MAPPINGS["PAE_PasteRegion"]()
SPLIT, JOIN = NODE_CLASS_MAPPINGS["PAE_SplitWindows"](), NODE_CLASS_MAPPINGS["PAE_JoinWindows"]()


def recording(seconds: float, rate: int, channels: int, seed: int = 0) -> dict:
    return audio_clip(seconds, rate, channels, kind="noise", seed=seed)


# ------------------------------------------------------------------------------------------------ regions
@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2), (48000, 2), (44100, 1)])
@pytest.mark.parametrize("edit_rate, edit_channels", [(None, None), (16000, 1)])
def test_outside_the_crossfade_the_recording_is_untouched_bit_for_bit(rate, channels, edit_rate, edit_channels):
    original = recording(6.0, rate, channels)
    cut, region = CUT.run(audio=original, start=2.0, end=3.5, context=0.5)
    assert cut["waveform"].shape[-1] == region.cut_end - region.cut_start == round(2.5 * rate)
    edited = recording(2.5, edit_rate or rate, edit_channels or channels, seed=7)  # "the model's output"
    (out,) = PASTE.run(original=original, edited=edited, region=region, crossfade=40.0, match_loudness=False)
    fade = round(0.040 * rate)
    before, after = region.start - fade, region.end + fade
    assert out["sample_rate"] == rate and out["waveform"].shape == original["waveform"].shape
    assert torch.equal(out["waveform"][..., :before], original["waveform"][..., :before])
    assert torch.equal(out["waveform"][..., after:], original["waveform"][..., after:])
    inner = out["waveform"][..., region.start + fade:region.end - fade]
    assert not torch.equal(inner, original["waveform"][..., region.start + fade:region.end - fade])


def test_the_equal_power_crossfade_has_no_step():
    rate = 16000
    t = torch.arange(rate * 4) / rate
    original = {"waveform": (0.5 * torch.sin(2 * torch.pi * 220 * t))[None, None], "sample_rate": rate}
    _, region = CUT.run(audio=original, start=1.0, end=3.0, context=0.5)
    edit_t = torch.arange(region.cut_end - region.cut_start) / rate
    edited = {"waveform": (0.5 * torch.sin(2 * torch.pi * 330 * edit_t + 1.0))[None, None], "sample_rate": rate}
    (out,) = PASTE.run(original=original, edited=edited, region=region, crossfade=50.0, match_loudness=False)
    jumps = out["waveform"].diff(dim=-1).abs().max()
    largest_own = max(original["waveform"].diff(dim=-1).abs().max(), edited["waveform"].diff(dim=-1).abs().max())
    assert jumps <= 1.5 * largest_own  # a hard cut between the two would jump by up to 1.0


def test_pasting_the_cut_itself_changes_only_the_crossfades():
    """Equal power keeps the power of uncorrelated signals; the same signal on both sides rises by up to √2 there,
    and everywhere else the recording comes back exactly."""
    original = recording(3.0, 22050, 2)
    cut, region = CUT.run(audio=original, start=1.0, end=2.0, context=0.25)
    (out,) = PASTE.run(original=original, edited=cut, region=region, crossfade=30.0, match_loudness=True)
    half = round(0.015 * 22050)
    changed = (out["waveform"] != original["waveform"]).any(dim=(0, 1)).nonzero().flatten()
    fades = [(region.start - half, region.start + half), (region.end - half, region.end + half)]
    assert all(any(lo <= int(i) < hi for lo, hi in fades) for i in changed)
    ratio = out["waveform"][..., changed] / original["waveform"][..., changed]
    assert float(ratio.min()) >= 1.0 - 1e-5 and float(ratio.max()) <= 2 ** 0.5 + 1e-5


@pytest.mark.parametrize("start, end", [(0.0, 1.0), (2.0, 3.0)])
def test_regions_at_the_very_start_and_end_of_the_file(start, end):
    original = recording(3.0, 16000, 1)
    cut, region = CUT.run(audio=original, start=start, end=end, context=1.0)
    edited = recording(cut["waveform"].shape[-1] / 16000, 16000, 1, seed=3)
    (out,) = PASTE.run(original=original, edited=edited, region=region, crossfade=20.0, match_loudness=False)
    keep = slice(1.0 * 16000 + 160, None) if start == 0.0 else slice(None, 2.0 * 16000 - 160)
    keep = slice(int(keep.start) if keep.start else None, int(keep.stop) if keep.stop else None)
    assert torch.equal(out["waveform"][..., keep], original["waveform"][..., keep])
    assert out["waveform"].shape == original["waveform"].shape


@pytest.mark.parametrize("start, end, name", [(2.0, 2.0, "end"), (2.5, 1.0, "end"), (5.0, 6.0, "start"),
                                              (1.0, 9.0, "end"), (float("nan"), 1.0, "start")])
def test_impossible_regions_are_refused(start, end, name):
    err = expect_input_error(CUT.run, audio=recording(3.0, 16000, 1), start=start, end=end, context=0.0)
    assert str(err).startswith(f"PAE_CutRegion: input '{name}':")


def test_a_linked_model_clamps_the_context_to_its_window(tiny_backbone):
    cut, region = CUT.run(audio=recording(60.0, 16000, 1), start=20.0, end=28.0, context=20.0, model=tiny_backbone)
    assert cut["waveform"].shape[-1] / 16000 <= tiny_backbone.max_duration_s
    assert region.start - region.cut_start == region.cut_end - region.end == int(
        (tiny_backbone.max_duration_s * 16000 - 8 * 16000) // 2)


def test_candidates_give_one_recording_each_and_foreign_audio_is_refused():
    original = recording(3.0, 16000, 1)
    cut, region = CUT.run(audio=original, start=1.0, end=2.0, context=0.0)
    candidates = recording(1.0, 16000, 1)
    candidates["waveform"] = candidates["waveform"].repeat(3, 1, 1) * torch.tensor([1.0, 0.5, 0.25])[:, None, None]
    (out,) = PASTE.run(original=original, edited=candidates, region=region, crossfade=0.0, match_loudness=False)
    assert out["waveform"].shape == (3, 1, 48000)
    assert torch.equal(out["waveform"][1, :, 16000:32000], candidates["waveform"][1])
    err = expect_input_error(PASTE.run, original=recording(2.0, 16000, 1), edited=cut, region=region, crossfade=0.0,
                             match_loudness=False)
    assert str(err).startswith("PAE_PasteRegion: input 'original':")


# ------------------------------------------------------------------------------------------------ windows
@pytest.mark.parametrize("seconds", [9.0, 10.0, 10.3, 31.7])  # hop = 3 s: multiples and not
def test_unedited_windows_join_back_to_the_input(seconds):
    original = recording(seconds, 16000, 2)
    windows, layout = SPLIT.run(audio=original, window=4.0, overlap=1.0)
    assert windows["waveform"].shape[1:] == (2, 64000) and layout.count == windows["waveform"].shape[0]
    (joined,) = JOIN.run(windows=windows, layout=layout)
    assert joined["waveform"].shape == original["waveform"].shape
    torch.testing.assert_close(joined["waveform"], original["waveform"], atol=1e-6, rtol=0)
    solo = [slice(0, 48000)] + [slice(i * 48000 + 16000, (i + 1) * 48000) for i in range(1, layout.count)]
    for part in solo:  # outside the overlaps a single window is copied: exact
        assert torch.equal(joined["waveform"][..., part], original["waveform"][..., part])


def test_split_needs_a_window_or_a_model(tiny_backbone):
    err = expect_input_error(SPLIT.run, audio=recording(3.0, 16000, 1), window=0.0, overlap=1.0)
    assert str(err).startswith("PAE_SplitWindows: input 'window':")
    windows, layout = SPLIT.run(audio=recording(12.0, 16000, 1), window=0.0, overlap=1.0, model=tiny_backbone)
    assert layout.window == round(tiny_backbone.native_duration_s * 16000)
    err = expect_input_error(SPLIT.run, audio=recording(3.0, 16000, 1), window=2.0, overlap=2.0)
    assert str(err).startswith("PAE_SplitWindows: input 'overlap':")
    err = expect_input_error(SPLIT.run, audio=recording(3.0, 16000, 1), window=1e9, overlap=1.0)
    assert str(err).startswith("PAE_SplitWindows: input 'window':")  # refused, not a 10^9 s zero-padded window


def test_one_scale_for_all_picks_the_best_mean_and_per_window_picks_each_best():
    # Two windows x three scales; window 0 likes 12, window 1 likes 3, but 6 has the best mean.
    totals = [0.1, 0.6, 0.7, 0.9, 0.6, 0.1]
    scales = [3.0, 6.0, 12.0, 3.0, 6.0, 12.0]
    ranked = {0: [2, 1, 0], 1: [3, 4, 5]}
    scores = CandidateScores(text=totals, fidelity=None, total=totals, clip_of_row=[0, 0, 0, 1, 1, 1],
                             prompts=["p"] * 6, guidance=scales, ranked=ranked, fidelity_weight=0.0,
                             prompt_from_metadata=False)
    assert scores.best_rows == [2, 3]
    shared = share_one_scale(scores)
    assert shared.shared_guidance == 6.0 and shared.best_rows == [1, 4]
    assert sorted(shared.ranked_rows) == list(range(6))


def test_a_three_minute_song_through_a_windowed_ppae_graph(tiny_backbone):
    """Split -> VAE Encode -> Invert -> Fuser (2 scales) -> VAE Decode -> Join: three minutes in, three out."""
    song = recording(180.0, 16000, 1)
    windows, layout = SPLIT.run(audio=song, window=0.0, overlap=1.0, model=tiny_backbone)
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=windows)
    (inversion,) = NODE_CLASS_MAPPINGS["PAE_DDIMInvert"]().run(model=tiny_backbone, latent=latent,
                                                               source_prompt="a dog barking in the rain", steps=2)
    (edit,) = NODE_CLASS_MAPPINGS["PAE_AttentionController"]().run(source_prompt="a dog barking in the rain",
                                                                    target_prompt="a cat meowing in the rain")
    edited, _ = NODE_CLASS_MAPPINGS["PAE_Fuser"]().run(model=tiny_backbone, inversion=inversion, attention_edit=edit,
                                                       guidance_scales="3, 6", attention_maps=False)
    (decoded,) = NODE_CLASS_MAPPINGS["PAE_VAEDecode"]().run(model=tiny_backbone, latent=edited, sample_rate="source")
    assert decoded["waveform"].shape[0] == 2 * layout.count
    (songs,) = JOIN.run(windows=decoded, layout=layout)
    assert songs["sample_rate"] == 16000 and songs["waveform"].shape == (2, 1, 180 * 16000)
    assert torch.isfinite(songs["waveform"]).all() and not torch.equal(songs["waveform"][0], songs["waveform"][1])


# ------------------------------------------------------------------------------------------- the workflows
SONGS = Path(__file__).resolve().parent.parent / "workflows" / "api"


def test_the_song_region_workflow_edits_only_its_region(clap_dirs):
    from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
    from tests.conftest import TINY_CLAP, TINY_MODEL
    from tests.helpers import tone, write_with_pyav

    tiny_dirs = clap_dirs
    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(12.0, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    graph = load_api_workflow(SONGS / "ppae_song_region_api.json")
    assert graph["13"]["inputs"]["end"] - graph["13"]["inputs"]["start"] == 10.0  # 10 s inside the recording
    graph["2"]["inputs"]["model_name"], graph["8"]["inputs"]["model_name"] = TINY_MODEL, TINY_CLAP
    graph["4"]["inputs"]["steps"], graph["6"]["inputs"]["guidance_scales"] = 4, "3, 6"
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    (pasted,) = results["14"].outputs
    source = results["1"].outputs[0]["waveform"]
    fade = round(0.010 * 44100)
    assert pasted["waveform"].shape == source.shape
    assert torch.equal(pasted["waveform"][..., :44100 - fade], source[..., :44100 - fade])
    assert torch.equal(pasted["waveform"][..., 11 * 44100 + fade:], source[..., 11 * 44100 + fade:])


@pytest.mark.parametrize("name", ["sao_instruct_song", "ap_timbre_song"])
def test_the_windowed_song_workflows_return_the_whole_recording(tiny_dirs, name):
    from prompt_audio_edit.engine.io.audio import read_audio
    from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
    from tests.conftest import TINY_MODEL, TINY_SAO_INSTRUCT_SAT
    from tests.helpers import tone, write_with_pyav

    seconds = 8 if name == "sao_instruct_song" else 14  # each at least two of its model's windows (6 s, 10 s)
    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(seconds, 48000, 1), 48000, "wav", "pcm_s16le", "s16")
    graph = load_api_workflow(SONGS / f"{name}_api.json")
    if name == "sao_instruct_song":
        graph["2"]["inputs"]["model_name"], graph["4"]["inputs"]["steps"] = TINY_SAO_INSTRUCT_SAT, 3
    else:
        graph["2"]["inputs"]["model_name"], graph["6"]["inputs"]["steps"] = TINY_MODEL, 2
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    save = next(k for k, v in graph.items() if v["class_type"] == "PAE_SaveAudio")
    (saved,) = results[save].ui["audio"]
    audio = read_audio(tiny_dirs["output"] / saved["subfolder"] / saved["filename"])
    assert audio["sample_rate"] == 48000 and tuple(audio["waveform"].shape) == (1, 1, seconds * 48000)
    split = next(k for k, v in graph.items() if v["class_type"] == "PAE_SplitWindows")
    assert results[split].outputs[1].count >= 2


def test_inverting_windows_a_few_at_a_time_gives_the_same_inversion(tiny_backbone):
    windows, _ = SPLIT.run(audio=recording(7.0, 16000, 1), window=3.0, overlap=1.0)
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=windows)
    invert = NODE_CLASS_MAPPINGS["PAE_DDIMInvert"]()
    (whole,) = invert.run(model=tiny_backbone, latent=latent, source_prompt="a dog barking", steps=4)
    (chunked,) = invert.run(model=tiny_backbone, latent=latent, source_prompt="a dog barking", steps=4,
                            clips_per_call=1)
    assert latent["samples"].shape[0] == 3
    torch.testing.assert_close(chunked.noise, whole.noise, atol=1e-4, rtol=1e-4)
    # The drawn start does not depend on the chunking; later points are stored as mean + residual (ZETA's fix).
    assert torch.equal(chunked.trajectory[0], whole.trajectory[0])
    torch.testing.assert_close(chunked.trajectory, whole.trajectory, atol=1e-4, rtol=1e-4)
    err = expect_input_error(invert.run, model=tiny_backbone, latent=latent, source_prompt="a dog", steps=4,
                             clips_per_call=-1)
    assert str(err).startswith("PAE_DDIMInvert: input 'clips_per_call':")


def test_an_edit_of_many_windows_reports_one_progress_of_windows_times_steps(tiny_backbone, monkeypatch):
    from prompt_audio_edit.engine.core import bridge

    bars = []

    class Recorder:
        def __init__(self, total, description=""):
            self.total, self.done = total, 0
            bars.append(self)

        def step(self, n=1, preview=None):
            self.done += n

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    windows, _ = SPLIT.run(audio=recording(7.0, 16000, 1), window=3.0, overlap=1.0)
    (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=windows)
    (inversion,) = NODE_CLASS_MAPPINGS["PAE_DDIMInvert"]().run(model=tiny_backbone, latent=latent,
                                                               source_prompt="a dog barking", steps=4)
    (edit,) = NODE_CLASS_MAPPINGS["PAE_AttentionController"]().run(source_prompt="a dog barking",
                                                                    target_prompt="a cat barking")
    monkeypatch.setattr(bridge, "Progress", Recorder)
    NODE_CLASS_MAPPINGS["PAE_Fuser"]().run(model=tiny_backbone, inversion=inversion, attention_edit=edit,
                                           guidance_scales="3", attention_maps=False)
    NODE_CLASS_MAPPINGS["PAE_PromptEdit"]().run(model=tiny_backbone, inversion=inversion, target_prompt="a cat",
                                                guidance_scales="3")
    assert [(bar.total, bar.done) for bar in bars] == [(3 * 2, 3 * 2), (3 * 2, 3 * 2)]
