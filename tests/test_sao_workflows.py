"""The shipped Stable Audio Open workflows (instruction edit, attention Replace, ZETA edit) run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.runner.workflow import execute_workflow, load_api_workflow
from tests.conftest import TINY_SAO, TINY_SAO_INSTRUCT_SAT
from tests.helpers import tone, write_with_pyav

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows" / "api"

# workflow -> (model node, tiny model, node whose steps are cut, what ships there)
CASES = {
    "sao_instruct_edit": ("2", TINY_SAO_INSTRUCT_SAT, "4", {"steps": 100, "guidance": 5.0, "noise_level": 1.0}),
    "sao_attention_replace": ("2", TINY_SAO, "4", {"steps": 100, "method": "ddpm", "guidance": 3.0}),
    "sao_zeta_edit": ("2", TINY_SAO, "4", {"steps": 200, "method": "ddpm", "guidance": 3.0, "edit_start": 0.5}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stable_audio_workflow_runs_in_process(tiny_dirs, name):
    model_node, model, steps_node, shipped = CASES[name]
    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(1.5, 48000, 1), 48000, "wav", "pcm_s16le", "s16")
    graph = load_api_workflow(WORKFLOWS / f"{name}_api.json")
    assert {k: graph[steps_node]["inputs"][k] for k in shipped} == shipped
    graph[model_node]["inputs"]["model_name"] = model
    graph[steps_node]["inputs"]["steps"] = 4
    results = execute_workflow(graph, NODE_CLASS_MAPPINGS)
    save = next(k for k, v in graph.items() if v["class_type"] == "PAE_SaveAudio")
    (saved,) = results[save].ui["audio"]
    audio = read_audio(tiny_dirs["output"] / saved["subfolder"] / saved["filename"])
    # Back at the source's rate, length and channel count (mono in, mono out; the model works in stereo).
    assert audio["sample_rate"] == 48000 and tuple(audio["waveform"].shape) == (1, 1, 72000)


def test_cli_demo_stands_in_sao_instruct(tmp_path, monkeypatch, capsys):
    from prompt_audio_edit.runner.cli import main as pae

    monkeypatch.setenv("PAE_DEMO_DIR", str(tmp_path / "demo"))
    code = pae(["run", str(WORKFLOWS / "sao_instruct_edit_api.json"), "--demo", "--set", "1.duration=1.0",
                "--set", "4.steps=2", "--models", str(tmp_path / "models"), "--input-dir", str(tmp_path / "input"),
                "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "tiny untrained SAO-Instruct" in printed.err
    saved = Path(printed.out.strip().splitlines()[-1])
    assert read_audio(saved)["waveform"].shape[-1] > 0
