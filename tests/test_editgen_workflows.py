"""The shipped EditGen workflows (Replace, Refine, Reweight on MusicGen) run in-process on a tiny MusicGen."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
from tests.conftest import TINY_MUSICGEN

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "api"


@pytest.mark.parametrize("mode", ["replace", "refine", "reweight"])
def test_editgen_workflow_runs_in_process(tiny_dirs, mode):
    graph = load_api_workflow(WORKFLOWS / f"editgen_{mode}_api.json")
    edit, run = graph["2"]["inputs"], graph["3"]["inputs"]
    # What ships: EditGen's settings (every frame edited, guidance 3, MusicGen's top-k 250, 10 s).
    assert edit["mode"] == mode and edit["cross_window"] == edit["self_window"] == 1.0
    assert (run["guidance"], run["top_k"], run["duration"]) == (3.0, 250, 10.0)
    graph["1"]["inputs"]["model_name"] = TINY_MUSICGEN
    run["duration"] = 0.3
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    audio, maps = results["3"].outputs
    assert audio["waveform"].shape == (2, 1, 15 * 640) and audio["sample_rate"] == 32000
    assert maps.shape[0] == len(edit["target_prompt"].split()) and maps.shape[-1] == 3
    saved = results["4"].ui["audio"]
    assert len(saved) == 2
    clip = read_audio(tiny_dirs["output"] / saved[1]["subfolder"] / saved[1]["filename"])
    assert clip["sample_rate"] == 32000 and clip["waveform"].shape[-1] == 15 * 640


def test_editgen_workflow_on_a_recording_runs_in_process(tiny_dirs):
    from tests.helpers import tone, write_with_pyav

    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(0.5, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    graph = load_api_workflow(WORKFLOWS / "editgen_recording_api.json")
    assert graph["3"]["inputs"]["source_audio"] == ["6", 0]
    graph["1"]["inputs"]["model_name"] = TINY_MUSICGEN
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    audio, _ = results["3"].outputs
    assert audio["waveform"].shape == (2, 1, 25 * 640)  # the recording's 0.5 s sets the length
