"""The shipped PPAE workflows (Replace, Refine, Reweight) run in-process on tiny AudioLDM2 and CLAP models."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
from tests.conftest import TINY_CLAP, TINY_MODEL
from tests.helpers import tone, write_with_pyav

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "api"


@pytest.fixture
def ppae_dirs(clap_dirs):
    """Tiny AudioLDM2 and CLAP, plus the example.wav the workflows load (3 s, 44.1 kHz stereo)."""
    write_with_pyav(clap_dirs["input"] / "example.wav", tone(3.0, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    return clap_dirs


def small(graph: dict) -> dict:
    """The shipped graph on tiny models, 1 s of audio, 4 steps and 2 guidance scales."""
    graph["2"]["inputs"]["model_name"] = TINY_MODEL
    graph["8"]["inputs"]["model_name"] = TINY_CLAP
    graph["1"]["inputs"]["duration"] = 1.0
    graph["4"]["inputs"]["steps"] = 4
    graph["6"]["inputs"]["guidance_scales"] = "3, 6"
    return graph


@pytest.mark.parametrize("name,mode", [("replace", "replace"), ("refine", "refine"), ("reweight", "reweight")])
def test_ppae_workflow_runs_in_process(ppae_dirs, name, mode):
    graph = load_api_workflow(WORKFLOWS / f"ppae_{name}_api.json")
    inputs = graph["6"]["inputs"]
    # The paper's defaults are what ships.
    assert graph["4"]["inputs"]["steps"] == 100 and graph["4"]["inputs"]["edit_start"] == 0.5
    assert graph["5"]["inputs"]["cross_window"] == 0.8 and graph["5"]["inputs"]["self_window"] == 0.0
    assert len(inputs["guidance_scales"].split(",")) == 5 and graph["5"]["inputs"]["mode"] == mode
    results = execute_workflow(small(graph), NODE_CLASS_MAPPINGS)
    assert "11" not in results  # the core PreviewImage is for the browser; headless it is left out
    (saved,) = results["10"].ui["audio"]
    audio = read_audio(ppae_dirs["output"] / saved["subfolder"] / saved["filename"])
    assert audio["sample_rate"] == 44100 and tuple(audio["waveform"].shape) == (1, 2, 44100)
    best, ranked, scores = results["9"].outputs
    assert ranked["waveform"].shape[0] == 2 and best["waveform"].shape[0] == 1
    assert sorted(c["guidance"] for c in ranked["pae_candidates"]) == [3.0, 6.0]
    assert "3" in scores and "6" in scores
    maps = results["6"].outputs[1]
    words = graph["5"]["inputs"]["target_prompt"] or graph["4"]["inputs"]["source_prompt"]
    assert maps.shape[0] == len(words.split()) and maps.shape[-1] == 3
