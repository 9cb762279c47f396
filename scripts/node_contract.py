"""The pack's public node contract: node ids with their inputs and outputs in order (saved workflows rely on it).

`python -m scripts.node_contract --append` records new nodes and inputs appended at the end; it never rewrites what
is recorded, so a reorder or removal still fails tests/test_workflow_library.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONTRACT_FILE = Path(__file__).resolve().parent.parent / "tests" / "node_contract.json"


def current_contract() -> dict[str, dict[str, list[str]]]:
    """node id -> {"inputs": ["name:TYPE", ...] in layout order, "outputs": [TYPE, ...]} for every node now."""
    from prompt_audio_edit import NODE_CLASS_MAPPINGS
    from prompt_audio_edit.runner.workflow import input_specs

    contract = {}
    for node_id, cls in sorted(NODE_CLASS_MAPPINGS.items()):
        inputs = [f"{name}:{'COMBO' if isinstance(kind, (list, tuple)) else kind}"
                  for name, (kind, _, _) in input_specs(cls).items()]
        contract[node_id] = {"inputs": inputs, "outputs": list(cls.RETURN_TYPES)}
    return contract


def appended(recorded: dict, current: dict) -> dict:
    """The recorded contract plus new nodes and inputs/outputs added at the end; refuses any other change."""
    merged = json.loads(json.dumps(recorded))
    for node_id, entry in current.items():
        if node_id not in merged:
            merged[node_id] = entry
            continue
        for part in ("inputs", "outputs"):
            old = merged[node_id][part]
            if entry[part][:len(old)] != old:
                raise SystemExit(f"{node_id} {part}: {old} -> {entry[part]} is not an append; saved workflows "
                                 "would break. Put the new input at the end instead.")
            merged[node_id][part] = entry[part]
    missing = sorted(set(merged) - set(current))
    if missing:
        raise SystemExit(f"nodes removed or renamed: {missing}; saved workflows name them.")
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--append", action="store_true", help="record new nodes and appended inputs")
    args = parser.parse_args(argv)
    recorded = json.loads(CONTRACT_FILE.read_text()) if CONTRACT_FILE.is_file() else {}
    merged = appended(recorded, current_contract())
    if merged == recorded:
        print("the contract file is up to date")
        return 0
    if not args.append:
        print("nodes or inputs were added; record them with --append")
        return 1
    lines = [f"  {json.dumps(node_id)}: {json.dumps(entry)}" for node_id, entry in merged.items()]
    CONTRACT_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one node per line: reviewable diffs
    print(f"recorded in {CONTRACT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
