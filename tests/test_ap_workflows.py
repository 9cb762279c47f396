"""The shipped AP-Adapter workflows (timbre, genre, accompaniment) run in-process on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.engine.methods.ap_adapter import AP_TASKS
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
from tests.conftest import TINY_AP_ADAPTER, TINY_AUDIOMAE, TINY_MODEL
from tests.helpers import tone, write_with_pyav

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "api"


@pytest.mark.parametrize("name,task", [("timbre_transfer", "timbre transfer"),
                                       ("genre_transfer", "genre transfer (repository)"),
                                       ("accompaniment", "accompaniment")])
def test_ap_adapter_workflow_runs_in_process(tiny_dirs, name, task):
    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(2.0, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    graph = load_api_workflow(WORKFLOWS / f"ap_{name}_api.json")
    # What ships: the released file names, the task preset feeding α, ω, guidance and prompts, 50 steps, 10 s.
    assert graph["3"]["inputs"] == {"adapter_name": TINY_AP_ADAPTER, "audio_encoder": TINY_AUDIOMAE, "dtype": "auto"}
    assert graph["4"]["inputs"]["task"] == task
    assert graph["5"]["inputs"]["scale"] == ["4", 2] and graph["5"]["inputs"]["pooling"] == ["4", 3]
    assert graph["6"]["inputs"]["guidance"] == ["4", 4] and graph["6"]["inputs"]["steps"] == 50
    graph["2"]["inputs"]["model_name"] = TINY_MODEL
    graph["6"]["inputs"].update(steps=2, seconds=1.0)
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    positive, negative, scale, pooling, guidance = results["4"].outputs
    preset = AP_TASKS[task]
    assert (scale, pooling, guidance) == (preset.scale, preset.pooling, preset.guidance)
    assert results["5"].outputs[0].audio_prompt.tokens.shape == (1, 512 // pooling ** 2, 768)
    (saved,) = results["8"].ui["audio"]
    audio = read_audio(tiny_dirs["output"] / saved["subfolder"] / saved["filename"])
    assert audio["sample_rate"] == 16000 and tuple(audio["waveform"].shape) == (1, 1, 16000)


def test_cli_demo_stands_in_a_fitting_adapter_and_audiomae(tmp_path, monkeypatch, capsys):
    from prompt_audio_edit.runner.cli import main as pae

    monkeypatch.setenv("PAE_DEMO_DIR", str(tmp_path / "demo"))
    code = pae(["run", str(WORKFLOWS / "ap_timbre_transfer_api.json"), "--demo", "--set", "1.duration=1.0",
                "--set", "6.steps=2", "--set", "6.seconds=1.0", "--models", str(tmp_path / "models"),
                "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "ap_adapter 'pytorch_model.bin'" in printed.err and "audiomae 'pretrained.pth'" in printed.err
    saved = Path(printed.out.strip().splitlines()[-1])
    assert read_audio(saved)["waveform"].shape[-1] == 16000
