"""`pae models list | get | check | convert`: the catalogue from a terminal (the same as the "Get models…" button)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..engine.core import bridge
from ..engine.install import catalogue, hub
from ..engine.install.catalogue import METHODS, ModelEntry

MAX_WORKFLOW_BYTES = 4 << 20


def add_parser(commands: Any) -> None:
    """The `models` subcommand and its four actions."""
    models = commands.add_parser("models", help="list, download, check and convert the models the pack reads",
                                 description="The models the pack knows: what each is for, its size, where it goes "
                                 "and whether it is installed; downloads at pinned revisions from the Hugging Face "
                                 "hub ($HF_ENDPOINT, token from `hf auth login` or $HF_TOKEN).")
    actions = models.add_subparsers(dest="action", required=True)
    for name, text in (("list", "every model: purpose, size, folder, installed / partly installed / missing"),
                       ("get", "download models into the models folder"),
                       ("check", "verify installed models: files, sizes, hashes, configs"),
                       ("convert", "write safetensors copies of the pickle checkpoints (AP-Adapter, AudioMAE, "
                                   "Tango), which the loaders then prefer")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--models", default=None, help="models folder (default: ComfyUI's when run inside a "
                            "ComfyUI checkout, else $PAE_MODELS_DIR or ./models)")
        if name in ("get", "check"):
            action.add_argument("names", nargs="*", metavar="NAME",
                                help=f"catalogue names: {', '.join(catalogue.names())}")
        if name == "get":
            action.add_argument("--for", dest="method", choices=METHODS, default=None,
                                help="everything a method's shipped workflows load")
            action.add_argument("--workflow", default=None, metavar="FILE",
                                help="the models a workflow (UI or API format) names in its loaders")


def comfyui_models_dir(start: Path | None = None) -> Path | None:
    """The models folder of the ComfyUI checkout this pack sits in (custom_nodes/<pack>) or the working folder is."""
    pack = Path(__file__).resolve().parents[1]
    candidates = [pack.parent.parent] if pack.parent.name == "custom_nodes" else []
    candidates.append(start or Path.cwd())
    for root in candidates:
        if (root / "comfy").is_dir() and (root / "main.py").is_file():
            return root / "models"
    return None


def _models_dir(args: argparse.Namespace) -> Path:
    chosen = args.models or os.environ.get("PAE_MODELS_DIR")
    found = Path(chosen).absolute() if chosen else comfyui_models_dir() or Path("models").absolute()
    bridge.set_directories(models=str(found))
    return found


def workflow_entries(path: str) -> tuple[list[ModelEntry], list[str]]:
    """The catalogue entries a workflow's loaders name, and loader values the catalogue does not know."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_WORKFLOW_BYTES:
            raise hub.GetError(f"--workflow: {path} is over {MAX_WORKFLOW_BYTES >> 20} MiB; not a workflow.")
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise hub.GetError(f"--workflow: file not found: {path}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise hub.GetError(f"--workflow: {path} is not readable JSON ({exc.__class__.__name__}).") from None
    values: list[str] = []
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):  # UI format: widget values per node
        for node in data["nodes"]:
            widgets = node.get("widgets_values") if isinstance(node, dict) else None
            values += [v for v in (widgets if isinstance(widgets, list) else []) if isinstance(v, str)]
    elif isinstance(data, dict):  # API format: inputs per node id
        for node in data.values():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            values += [v for v in (inputs.values() if isinstance(inputs, dict) else []) if isinstance(v, str)]
    else:
        raise hub.GetError(f"--workflow: {path} is not a ComfyUI workflow (UI or API format).")
    found = [e for e in (catalogue.for_loader_value(v) for v in values) if e is not None]
    unknown = sorted({v for v in values if "/" in v and v.split("/")[0] in ("diffusers", "tango", "checkpoints")
                      and catalogue.for_loader_value(v) is None})
    return catalogue.with_needs(found), unknown


def _chosen(args: argparse.Namespace) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    unknown = [n for n in args.names if catalogue.entry(n) is None]
    if unknown:
        raise hub.GetError(f"unknown model {', '.join(unknown)}; the catalogue has: {', '.join(catalogue.names())} "
                           "(`pae models list`).")
    entries += [catalogue.entry(n) for n in args.names]
    if getattr(args, "method", None):
        entries += catalogue.for_method(args.method)
    if getattr(args, "workflow", None):
        found, others = workflow_entries(args.workflow)
        for value in others:
            print(f"  {value}: not in the catalogue; put it in place by hand", file=sys.stderr)
        entries += found
    if getattr(args, "method", None) or getattr(args, "workflow", None):
        entries = catalogue.with_needs(entries)
    return list(dict.fromkeys(entries))


def _where(entry: ModelEntry) -> str:
    return ", ".join(f"models/{p.path}" + ("" if p.is_file else "/") for p in entry.parts)


def _list(models: Path) -> int:
    print(f"models folder: {models}")
    for entry in catalogue.CATALOGUE:
        state = hub.entry_state(entry)
        used = ", ".join(entry.methods) or "optional"
        flags = " [gated]" if entry.gated else ""
        flags += " [by hand]" if any(p.by_hand for p in entry.parts) else ""
        print(f"{entry.name:28} {state.label:17} ≈{_size(entry.size_mb):>9}  for {used}{flags}")
        print(f"    {entry.purpose}; goes in {_where(entry)}")
        if entry.workflows:
            print(f"    workflows: {', '.join(entry.workflows)}")
        if state.label == "partly installed":
            print("\n".join(f"    - {line}" for line in state.details))
    stale = hub.stale_downloads()
    if stale:
        print(f"interrupted downloads (rerun `pae models get` to resume): {', '.join(str(p) for p in stale)}")
    return 0


class _Bars:
    """One progress bar per file on stderr (hidden when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.file, self.bar = "", None

    def __call__(self, file: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if file != self.file:
            self.close()
            self.file = file
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=file[-40:], file=sys.stderr, leave=False,
                            disable=not sys.stderr.isatty())
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _size(mb: float) -> str:
    return f"{mb / 1024:.1f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def _get(args: argparse.Namespace) -> int:
    entries = _chosen(args)
    if not entries:
        raise hub.GetError("name models to get (`pae models list`), or give --for METHOD or --workflow FILE.")
    open_steps = []
    for entry in entries:
        print(f"{entry.name}: {entry.licence}", file=sys.stderr)
        bars = _Bars()
        try:
            steps = hub.get_entry(entry, progress=bars, report=lambda line: print(line, file=sys.stderr))
        finally:
            bars.close()
        if steps:
            open_steps.append((entry, steps))
        print(f"{entry.name}: {hub.entry_state(entry).label}")
    for entry, steps in open_steps:
        print(f"{entry.name} needs files placed by hand ({entry.note or 'not on a hub'}):")
        print("\n".join(steps))
    if open_steps:
        print("then run `pae models check`.")
    return 0


def _check(args: argparse.Namespace) -> int:
    entries = _chosen(args) or [e for e in catalogue.CATALOGUE if hub.entry_state(e).label != "missing"]
    if not entries:
        print("no catalogue model is installed (`pae models list`).")
        return 0
    failed = 0
    for entry in entries:
        state = hub.entry_state(entry, verify=True)
        problems = state.details + (hub.check_by_hand(entry) if state.label != "missing" else [])
        problems += _config_problems(entry)
        label = state.label if not problems or state.label != "installed" else "damaged"
        print(f"{entry.name}: {label}")
        for line in problems:
            print(f"    - {line}")
        if problems:
            failed += 1
            print(f"    fix: `pae models get {entry.name}` for hub files (a damaged file: delete it first), or "
                  "place the by-hand files as `pae models get` prints them")
    return 1 if failed else 0


def _config_problems(entry: ModelEntry) -> list[str]:
    """Whether each installed folder is recognised by its loader (reads configs only)."""
    from ..engine.backbones.registry import detect_family, missing_components
    from ..engine.core.errors import PAEInputError

    problems = []
    for part in entry.parts:
        path = hub.installed_path(part)
        if path is None or part.is_file or part.path.split("/")[0] not in ("diffusers", "tango", "musicgen"):
            continue
        if part.path.count("/") > 1:  # a subfolder part (SAO-Instruct's text_encoder/)
            continue
        try:
            detect_family(path)
        except PAEInputError as exc:
            problems.append(str(exc).split(": ", 1)[-1])
            continue
        problems += [f"{part.path}: missing {m}" for m in missing_components(path)]
    return problems


def _convert() -> int:
    from ..engine.install.convert import convert_pickles

    convert_pickles(print)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run one `pae models` action."""
    models = _models_dir(args)
    if args.action == "list":
        return _list(models)
    if args.action == "get":
        return _get(args)
    if args.action == "check":
        return _check(args)
    return _convert()
