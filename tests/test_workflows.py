"""Shipped workflows run in-process through the runner, on tiny models, and bad graphs name the fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.runner.cli import main as pae
from prompt_audio_edit.engine.io.audio import read_audio, read_metadata
from prompt_audio_edit.runner.workflow import CORE_PREVIEW_NODES, WorkflowError, execute_workflow, load_api_workflow
from tests.conftest import TINY_MODEL
from tests.helpers import tone, write_with_pyav

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
ROUNDTRIP = WORKFLOWS / "api" / "audio_roundtrip_api.json"


def roundtrip_graph(**changes) -> dict:
    graph = load_api_workflow(ROUNDTRIP)
    graph["2"]["inputs"]["model_name"] = TINY_MODEL
    for key, value in changes.items():
        node_id, name = key.split("__")
        graph[node_id]["inputs"][name] = value
    return graph


@pytest.fixture
def example_dirs(tiny_dirs):
    """Tiny models plus the example.wav the shipped workflow loads (12 s, 44.1 kHz stereo)."""
    write_with_pyav(tiny_dirs["input"] / "example.wav", tone(12.0, 44100, 2), 44100, "wav", "pcm_s16le", "s16")
    return tiny_dirs


def test_roundtrip_workflow_runs_in_process(example_dirs):
    tiny_dirs = example_dirs
    results = execute_workflow(roundtrip_graph(), NODE_CLASS_MAPPINGS, extra_pnginfo={"workflow": {"nodes": []}})
    (saved,) = results["5"].ui["audio"]
    path = tiny_dirs["output"] / saved["subfolder"] / saved["filename"]
    audio = read_audio(path)
    # Load trimmed the 12 s file to 10 s; decode restored 44.1 kHz stereo at exactly that length.
    assert audio["sample_rate"] == 44100 and tuple(audio["waveform"].shape) == (1, 2, 441000)
    tags = read_metadata(path)
    assert json.loads(tags["prompt"])["3"]["class_type"] == "PAE_VAEEncode"
    assert json.loads(tags["workflow"]) == {"nodes": []}
    assert results["5"].outputs[0].shape[0] == 1  # the spectrogram image


def test_cli_runs_the_shipped_workflow_with_overrides(tiny_dirs, capsys):
    write_with_pyav(tiny_dirs["input"] / "take.flac", tone(1.5, 16000), 16000, "flac", "flac")
    code = pae(["run", str(ROUNDTRIP), "--set", f"2.model_name={TINY_MODEL}", "--set", "1.audio=take.flac",
                "--set", "5.format=mp3", "--set", "5.filename_prefix=cli/out",
                "--models", str(tiny_dirs["models"]), "--input-dir", str(tiny_dirs["input"]),
                "--out", str(tiny_dirs["output"])])
    assert code == 0
    printed = capsys.readouterr()
    path = Path(printed.out.strip().splitlines()[-1])
    assert path == tiny_dirs["output"] / "cli" / "out_00001_.mp3" and path.is_file()
    assert "/6] node 5: PAE_SaveAudio" in printed.err and "[6/6]" in printed.err


def test_cli_demo_mode_builds_stand_ins_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PAE_DEMO_DIR", str(tmp_path / "demo"))
    code = pae(["run", str(ROUNDTRIP), "--demo", "--set", "1.duration=1.0", "--models", str(tmp_path / "models"),
                "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr()
    assert "DEMO MODE" in printed.err and "untrained" in printed.err
    saved = Path(printed.out.strip().splitlines()[-1])
    assert read_audio(saved)["waveform"].shape[-1] > 0


@pytest.mark.parametrize("change,fault", [
    ({"3__audio": ["9", 0]}, "node 3 (PAE_VAEEncode) input 'audio': links to node 9"),
    ({"3__audio": ["2", 0]}, "node 3 (PAE_VAEEncode) input 'audio': expects AUDIO but is linked to a PAE_MODEL"),
    ({"4__latent": ["3", 5]}, "node 4 (PAE_VAEDecode) input 'latent': links to output 5"),
    ({"5__format": "ogg"}, "node 5 (PAE_SaveAudio) input 'format': 'ogg' is not one of the choices"),
    ({"1__start": -1.0}, "node 1 (PAE_LoadAudio) input 'start': -1.0 is below the minimum"),
    ({"1__mono": "yes"}, "node 1 (PAE_LoadAudio) input 'mono': expected true or false"),
    ({"1__audio": "../../etc/passwd"}, "node 1 (PAE_LoadAudio): PAE_LoadAudio: input 'audio'"),
])
def test_bad_graphs_name_the_node_and_input(example_dirs, change, fault):
    with pytest.raises(WorkflowError) as info:
        execute_workflow(roundtrip_graph(**change), NODE_CLASS_MAPPINGS)
    assert fault in str(info.value)


def test_missing_input_unknown_node_and_cycle(example_dirs):
    graph = roundtrip_graph()
    del graph["4"]["inputs"]["latent"]
    with pytest.raises(WorkflowError, match=r"node 4 \(PAE_VAEDecode\) input 'latent': required input is missing"):
        execute_workflow(graph, NODE_CLASS_MAPPINGS)
    graph = roundtrip_graph()
    graph["6"] = {"class_type": "KSampler", "inputs": {}}
    with pytest.raises(WorkflowError, match=r"node 6: unknown node type 'KSampler'"):
        execute_workflow(graph, NODE_CLASS_MAPPINGS)
    graph = roundtrip_graph()
    graph["2"] = {"class_type": "PAE_VAEDecode", "inputs": {"model": ["2", 0], "latent": ["3", 0],
                                                            "sample_rate": "source"}}
    with pytest.raises(WorkflowError):
        execute_workflow(graph, NODE_CLASS_MAPPINGS)


def test_runtime_errors_name_the_node(example_dirs):
    graph = roundtrip_graph(**{"1__start": 15.0})
    with pytest.raises(WorkflowError, match=r"node 1 \(PAE_LoadAudio\) input 'start': .*past the end"):
        execute_workflow(graph, NODE_CLASS_MAPPINGS)


def test_unexpected_failures_name_the_node(example_dirs, monkeypatch, capsys):
    import prompt_audio_edit.nodes.model_nodes as model_nodes

    def broken(model, audio, clips_per_call=0):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(model_nodes, "vae_encode", broken)
    with pytest.raises(WorkflowError, match=r"node 3 \(PAE_VAEEncode\): failed with RuntimeError: CUDA error"):
        execute_workflow(roundtrip_graph(), NODE_CLASS_MAPPINGS)
    code = pae(["run", str(ROUNDTRIP), "--set", f"2.model_name={TINY_MODEL}", "--models", str(example_dirs["models"]),
                "--input-dir", str(example_dirs["input"]), "--out", str(example_dirs["output"])])
    assert code == 2 and "PAE_DEBUG=1" in capsys.readouterr().err


def test_cli_reports_ui_format_and_bad_set(tmp_path, capsys):
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    assert pae(["run", str(ui)]) == 2
    assert "UI-format" in capsys.readouterr().err
    assert pae(["run", str(ROUNDTRIP), "--set", "nonsense"]) == 2
    assert "NODE.INPUT=VALUE" in capsys.readouterr().err


def ui_to_api(ui: dict) -> dict:
    """The API graph a UI-format workflow stands for: widget values in declared order, links by id."""
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        if node["type"] == "Note":  # the page's own note: never sent to the server
            continue
        if node["type"] in CORE_PREVIEW_NODES:  # core nodes without widgets: links only
            linked = {slot["name"]: links[slot["link"]] for slot in node.get("inputs", []) if slot.get("link")}
            graph[str(node["id"])] = {"class_type": node["type"],
                                      "inputs": {name: [str(link[1]), link[2]] for name, link in linked.items()}}
            continue
        cls = NODE_CLASS_MAPPINGS[node["type"]]
        declared = cls.INPUT_TYPES()
        specs = {**declared.get("required", {}), **declared.get("optional", {})}
        linked = {slot["name"]: links[slot["link"]] for slot in node.get("inputs", []) if slot.get("link")}
        # Every widget keeps a value in widgets_values, linked or not; a seed widget is followed by the frontend's
        # "control after generate" value unless the node turns that off.
        values = iter(node.get("widgets_values") or [])
        optional = declared.get("optional", {})
        inputs = {}
        for name, spec in specs.items():
            if spec[0] == "AUDIO_UI" or not (isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING",
                                                                                      "BOOLEAN")):
                continue
            value = next(values, StopIteration)
            if value is StopIteration and name in optional:
                break  # an optional widget appended after the file was saved: the node's default applies
            inputs[name] = value
            options = spec[1] if len(spec) > 1 else {}
            if spec[0] == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
                next(values)
        inputs.update({name: [str(link[1]), link[2]] for name, link in linked.items()})
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


@pytest.mark.parametrize("api_path", sorted((WORKFLOWS / "api").glob("*_api.json")), ids=lambda p: p.stem)
def test_ui_and_api_twins_describe_the_same_graph(api_path):
    ui_path = WORKFLOWS / api_path.name.replace("_api.json", ".json")
    ui = json.loads(ui_path.read_text())
    assert ui["version"] == 0.4 and all(value is not None for value in ui.values())
    api = load_api_workflow(api_path)
    assert ui_to_api(ui) == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
