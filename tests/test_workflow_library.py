"""The workflow library and the public node contract: every UI workflow fits the node definitions as ComfyUI's
frontend stores them, every workflow exists in both formats, and node ids and input order only ever grow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prompt_audio_edit.engine.install.catalogue import NO_MODEL

from prompt_audio_edit import NODE_CLASS_MAPPINGS
from prompt_audio_edit.runner.workflow import WorkflowError, check_widget_value, input_specs, load_api_workflow
from prompt_audio_edit.nodes.base import AUDIO_PLAYER
from scripts.node_contract import CONTRACT_FILE, current_contract

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
UI_WORKFLOWS = sorted(WORKFLOWS.glob("*.json"))
API_WORKFLOWS = sorted((WORKFLOWS / "api").glob("*_api.json"))
VALUE_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
# Core nodes the workflows use, with their input types (they are not the pack's to describe).
CORE_NODES = {"PreviewImage": {"images": "IMAGE"}, "PreviewAudio": {"audio": "AUDIO"}, "Note": {}}
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")


@pytest.fixture(autouse=True)
def empty_folders(dirs):
    """Empty models and input folders: a choice list that comes from disk is then empty, a fixed one is not."""
    return dirs


def declared(cls: type) -> list[tuple[str, Any, dict]]:
    """(name, type or choices, options) of every input in the order ComfyUI lays out widgets and sockets."""
    return [(name, kind, options) for name, (kind, options, _) in input_specs(cls).items()]


def check_widgets(node: dict[str, Any]) -> None:
    """Walk widgets_values in declared order: each value fits its input's type, range and choices."""
    class_type, node_id = node["type"], str(node["id"])
    values = list(node.get("widgets_values") or [])
    position = 0

    def take(name: str) -> Any:
        nonlocal position
        assert position < len(values), f"node {node_id} ({class_type}): no stored value for widget '{name}'"
        position += 1
        return values[position - 1]

    specs = input_specs(NODE_CLASS_MAPPINGS[class_type])
    for name, (kind, options, required) in specs.items():
        if position >= len(values) and not required and (isinstance(kind, list) or kind in VALUE_TYPES):
            # An optional widget appended after this workflow was saved: the frontend fills in its default.
            check_widget_value(node_id, class_type, name, kind, options, options.get("default"))
            continue
        if kind == AUDIO_PLAYER:
            if position < len(values):  # the frontend stores the player's (empty) state on some nodes
                assert take(name) in (None, ""), f"node {node_id}: player widget '{name}' holds a value"
            continue
        if not (isinstance(kind, list) or kind in VALUE_TYPES):
            continue  # a socket, not a widget
        value = take(name)
        if isinstance(kind, list) and (not kind or kind == [NO_MODEL]):
            # Filled from disk (models, input files): a relative name that a loader could list.
            assert isinstance(value, str) and value and not value.startswith(("/", "..")), \
                f"node {node_id} ({class_type}) '{name}': {value!r} is not a file or folder name"
        else:
            check_widget_value(node_id, class_type, name, kind, options, value)
        if kind == "INT" and options.get("control_after_generate", name in ("seed", "noise_seed")):
            assert take(f"{name} control") in SEED_CONTROLS
    leftover = values[position:]
    uploads = [o for _, _, o in declared(NODE_CLASS_MAPPINGS[class_type]) if o.get("audio_upload")]
    assert len(leftover) <= len(uploads) and all(v in (None, "") for v in leftover), \
        f"node {node_id} ({class_type}): {len(leftover)} values more than its widgets: {leftover}"


def input_type(node: dict[str, Any], slot: int) -> str:
    """The declared type of a node's input socket, as the frontend numbers its inputs."""
    name = node["inputs"][slot]["name"]
    if node["type"] in CORE_NODES:
        return CORE_NODES[node["type"]][name]
    kinds = {n: k for n, k, _ in declared(NODE_CLASS_MAPPINGS[node["type"]])}
    kind = kinds[name]
    return "COMBO" if isinstance(kind, list) else kind


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.stem)
def test_ui_workflow_fits_the_node_definitions(path):
    ui = json.loads(path.read_text())
    assert ui.get("version") == 0.4 and isinstance(ui.get("nodes"), list) and isinstance(ui.get("links"), list)
    nodes = {node["id"]: node for node in ui["nodes"]}
    for node in ui["nodes"]:
        assert node["type"] in NODE_CLASS_MAPPINGS or node["type"] in CORE_NODES, f"unknown node {node['type']}"
        if node["type"] in NODE_CLASS_MAPPINGS:
            try:
                check_widgets(node)
            except WorkflowError as exc:
                pytest.fail(f"{path.name}: {exc}")
            outputs = NODE_CLASS_MAPPINGS[node["type"]].RETURN_TYPES
            assert [o["type"] for o in node.get("outputs", [])] == list(outputs), f"node {node['id']} outputs"
    link_ids = set()
    for link_id, source, source_slot, target, target_slot, kind in ui["links"]:
        link_ids.add(link_id)
        assert source in nodes and target in nodes, f"link {link_id} joins a missing node"
        produced = NODE_CLASS_MAPPINGS[nodes[source]["type"]].RETURN_TYPES[source_slot]
        expected = input_type(nodes[target], target_slot)
        assert produced == kind == expected, f"{path.name}: link {link_id} carries {produced} into a {expected} input"
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[source]["outputs"][source_slot]["links"]
    for node in ui["nodes"]:
        for slot in node.get("inputs", []):
            assert slot.get("link") is None or slot["link"] in link_ids, f"node {node['id']} names a missing link"


def test_every_workflow_comes_in_both_formats_and_the_library_lists_only_ui_files():
    ui_names = {p.stem for p in UI_WORKFLOWS}
    api_names = {p.name.removesuffix("_api.json") for p in API_WORKFLOWS}
    assert ui_names == api_names and len(ui_names) >= 14
    # ComfyUI's template browser lists every *.json directly in workflows/: nothing there may be an API graph.
    for path in UI_WORKFLOWS:
        with pytest.raises(WorkflowError, match="UI-format"):
            load_api_workflow(path)


def test_node_contract_only_grows():
    recorded = json.loads(CONTRACT_FILE.read_text())
    current = current_contract()
    for node_id, entry in recorded.items():
        assert node_id in current, f"{node_id} was removed or renamed: saved workflows name it"
        for part in ("inputs", "outputs"):
            now = current[node_id][part]
            assert now[:len(entry[part])] == entry[part], (
                f"{node_id} {part} changed from {entry[part]} to {now}: saved workflows store them by position; "
                "append new ones at the end instead")
    new = sorted(set(current) - set(recorded))
    assert not new, f"record the new nodes with `python -m scripts.node_contract --append`: {new}"


def test_node_contract_catches_a_reorder(monkeypatch):
    cls = NODE_CLASS_MAPPINGS["PAE_SaveAudio"]
    original = cls.INPUT_TYPES

    def reordered():
        spec = original()
        required = spec["required"]
        spec["required"] = {k: required[k] for k in ("audio", "format", "filename_prefix", "mp3_quality")}
        return spec

    monkeypatch.setattr(cls, "INPUT_TYPES", staticmethod(reordered))
    with pytest.raises(AssertionError, match="PAE_SaveAudio inputs changed"):
        test_node_contract_only_grows()


@pytest.mark.parametrize("stem, overrides", [
    ("ppae_replace", {"4": {"seed": 7}, "6": {"guidance_scales": "3, 6"}, "1": {"audio": "take.wav"},
                      "10": {"format": "mp3"}}),
    ("editgen_replace", None),
])
def test_the_embedded_ui_workflow_carries_the_values_that_ran(stem, overrides):
    from prompt_audio_edit.runner.workflow import apply_overrides, ui_workflow_with_values

    ui = json.loads((WORKFLOWS / f"{stem}.json").read_text())
    api = load_api_workflow(WORKFLOWS / "api" / f"{stem}_api.json")
    if overrides is None:  # every seed (each followed by its control value in the UI file) and every prompt
        overrides = {node_id: {name: (1234 if name == "seed" else f"changed {name}")
                               for name, value in node["inputs"].items()
                               if name == "seed" or (name.endswith("prompt") and isinstance(value, str))}
                     for node_id, node in api.items()}
    sets = [f"{node}.{name}={json.dumps(value)}" for node, inputs in overrides.items()
            for name, value in inputs.items()]
    assert sets
    updated = ui_workflow_with_values(ui, apply_overrides(api, sets, NODE_CLASS_MAPPINGS), NODE_CLASS_MAPPINGS)
    changed = 0
    for before, after in zip(ui["nodes"], updated["nodes"]):
        if after["type"] in NODE_CLASS_MAPPINGS:
            check_widgets(after)  # still fits the node definitions (controls stay controls)
        old, new = before.get("widgets_values") or [], after.get("widgets_values") or []
        diffs = [(o, n) for o, n in zip(old, new) if o != n]
        expected = overrides.get(str(before["id"]), {})
        assert sorted(map(str, (n for _, n in diffs))) == sorted(
            str(v) for k, v in expected.items() if api[str(before["id"])]["inputs"].get(k) != v), before["type"]
        changed += len(diffs)
    assert changed > 0
    assert ui_workflow_with_values(ui, api, NODE_CLASS_MAPPINGS) == ui  # the shipped values are the shipped file's


def test_each_ui_workflow_has_its_own_id_a_current_models_note_and_a_template_title():
    from scripts.workflow_notes import NOTE_TITLE, note_text, workflow_id

    titles = json.loads((WORKFLOWS.parent / "locales" / "en" / "main.json").read_text())["templateWorkflows"]
    ids = set()
    for path in UI_WORKFLOWS:
        ui = json.loads(path.read_text())
        assert ui["id"] == workflow_id(path) and ui["id"] not in ids
        ids.add(ui["id"])
        (note,) = [n for n in ui["nodes"] if n["type"] == "Note" and n.get("title") == NOTE_TITLE]
        assert note["widgets_values"] == [note_text(path)], f"{path.name}: run scripts/workflow_notes.py"
        for module in ("prompt_audio_edit", "prompt-audio-edit"):  # the folder ComfyUI names the pack by
            assert titles["template"][module][path.stem] and titles["templateDescription"][module][path.stem]
