"""Give every shipped UI workflow its own id and a "Models" Note listing what it loads, where it goes and the command
that gets it (from the catalogue); run it after changing a workflow's loaders. A test keeps the notes current."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT.parent))

from prompt_audio_edit.runner.models_command import workflow_entries  # noqa: E402

WORKFLOWS = ROOT / "workflows"
NOTE_TITLE = "Models"
NOTE_WIDTH, NOTE_HEIGHT, GAP = 520, 170, 40


def note_text(path: Path) -> str:
    """What the workflow's Note says: each model, its folder and size, and the one command for all of them."""
    entries, _ = workflow_entries(str(path))
    lines = ["Models this workflow needs (Get models… on a loader node, or in a terminal):",
             f"  pae models get {' '.join(e.name for e in entries)}", ""]
    for entry in entries:
        where = ", ".join(f"models/{p.path}" + ("" if p.is_file else "/") for p in entry.parts)
        hand = " (by hand: the command prints where from)" if any(p.by_hand for p in entry.parts) else ""
        size = f"{entry.size_mb / 1024:.1f} GiB" if entry.size_mb >= 1024 else f"{entry.size_mb:.0f} MiB"
        lines.append(f"- {entry.name}: {where}, ≈{size}{hand}")
    return "\n".join(lines)


def workflow_id(path: Path) -> str:
    """A stable id of its own per shipped workflow (the frontend tells open workflows apart by it)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"prompt-audio-edit/workflows/{path.stem}"))


def with_note(ui: dict, text: str) -> dict:
    """The workflow with its Models note (replacing an older one) above the graph's top-left corner."""
    nodes = [n for n in ui["nodes"] if not (n.get("type") == "Note" and n.get("title") == NOTE_TITLE)]
    left = min(n["pos"][0] for n in nodes)
    top = min(n["pos"][1] for n in nodes)
    note_id = max(n["id"] for n in nodes) + 1
    nodes.append({"id": note_id, "type": "Note", "title": NOTE_TITLE, "pos": [left, top - NOTE_HEIGHT - GAP],
                  "size": [NOTE_WIDTH, NOTE_HEIGHT], "flags": {}, "order": len(nodes), "mode": 0, "inputs": [],
                  "outputs": [], "properties": {}, "widgets_values": [text], "color": "#432", "bgcolor": "#653"})
    return {**ui, "nodes": nodes, "last_node_id": max(ui.get("last_node_id", 0), note_id)}


def main() -> None:
    """Rewrite every UI workflow in place."""
    for path in sorted(WORKFLOWS.glob("*.json")):
        ui = json.loads(path.read_text())
        ui = with_note(ui, note_text(path))
        ui["id"] = workflow_id(path)
        path.write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")
        print(path.name)


if __name__ == "__main__":
    main()
