"""The `pae` command: run API-format workflows of the pack's nodes headless, in-process or on ComfyUI servers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..engine.core import bridge
from .workflow import WorkflowError, apply_overrides, execute_workflow, load_api_workflow

_BANNER = "!" * 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pae", description="Prompt Audio Edit from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an API-format workflow (ComfyUI's 'Export (API)')",
                              description="Run an API-format workflow of Prompt Audio Edit nodes in this process, "
                              "or queue it to ComfyUI servers with --server.")
    run.add_argument("workflow", help="the workflow JSON in API format")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="change an input before running (VALUE is parsed as JSON when it can be); repeatable")
    run.add_argument("--out", default=None, help="output folder (default: $PAE_OUTPUT_DIR or ./output)")
    run.add_argument("--input-dir", default=None, help="folder Load Audio reads from (default: $PAE_INPUT_DIR or ./input)")
    run.add_argument("--models", default=None, help="models folder (default: $PAE_MODELS_DIR or ./models)")
    run.add_argument("--ui-workflow", default=None,
                     help="the UI-format twin of the workflow, embedded in saved files so they open in ComfyUI")
    run.add_argument("--server", action="append", default=[], metavar="URL",
                     help="queue to this ComfyUI server instead of running here (e.g. http://127.0.0.1:8188); "
                     "repeat or comma-separate for several: jobs are spread over them, one at a time on each")
    run.add_argument("--input", dest="inputs", action="append", default=[], metavar="[NODE=]PATH",
                     help="with --server: a batch of input files (a folder, a glob such as 'takes/*.wav', or a file; "
                     "repeatable), one job each, fed to the workflow's audio loader (NODE= picks one of several)")
    run.add_argument("--reconnect-wait", type=float, default=10.0, metavar="SECONDS",
                     help="with --server: how long a server that stops answering may take to come back before its "
                     "job moves to another server (default 10)")
    run.add_argument("--demo", action="store_true",
                     help="stand in tiny UNTRAINED models for missing model folders and a synthetic clip for "
                     "missing input files (output is noise; for trying the pack without weights)")
    return parser


def _demo_root() -> Path:
    return Path(os.environ.get("PAE_DEMO_DIR") or Path.home() / ".cache" / "prompt-audio-edit" / "demo")


def _stand_in_model(node_id: str, class_type: str, model_name: str, root: Path) -> str | None:
    """Build a tiny untrained model where a loader names one that is missing; say what was stood in."""
    from ..engine.core.errors import PAEInputError

    if class_type == "PAE_LoadCLAP":
        from ..engine.models.clap import find_clap_folder
        from ..standins.clap import build_tiny_clap

        try:
            find_clap_folder(model_name)
            return None
        except PAEInputError:
            folder = root / "models" / "clap" / model_name
            if not (folder / "config.json").is_file():
                build_tiny_clap(folder)
            return f"CLAP '{model_name}' (node {node_id}) -> tiny untrained CLAP at {folder}"
    from ..engine.backbones.registry import find_model_folder

    try:
        find_model_folder(model_name)
        return None
    except PAEInputError:
        kind, _, name = model_name.partition("/")
        folder = root / "models" / (kind or "diffusers") / (name or "demo")
        if class_type == "PAE_LoadSAOInstruct" or "stable-audio" in name:
            from ..standins.stable_audio import build_tiny_stable_audio

            instruct = class_type == "PAE_LoadSAOInstruct"
            if not (folder / "model_index.json").is_file():
                build_tiny_stable_audio(folder, in_channels=128 if instruct else 64)
            what = "SAO-Instruct" if instruct else "Stable Audio Open"
            return f"model '{model_name}' (node {node_id}) -> tiny untrained {what} at {folder}"
        if kind == "tango":
            from ..standins.tango import build_tiny_tango

            if not (folder / "main_config.json").is_file():
                build_tiny_tango(folder)
            return f"model '{model_name}' (node {node_id}) -> tiny untrained Tango at {folder}"
        from ..standins.audioldm2 import build_tiny_audioldm2

        if not (folder / "model_index.json").is_file():
            build_tiny_audioldm2(folder)
        return f"model '{model_name}' (node {node_id}) -> tiny untrained AudioLDM2 at {folder}"


def _stand_in_ap_adapter(node_id: str, inputs: dict[str, Any], model_folder: Path | None, root: Path) -> list[str]:
    """Build a tiny adapter (fitting the workflow's model) and a tiny AudioMAE where the loader names missing files."""
    from ..engine.models.audiomae import find_weight_file
    from ..standins.ap_adapter import build_tiny_ap_adapter, build_tiny_audiomae
    from ..engine.core.errors import PAEInputError

    notes = []
    for kind, key, build in (("ap_adapter", "adapter_name", None), ("audio_encoders", "audio_encoder",
                                                                      build_tiny_audiomae)):
        name = inputs.get(key)
        if not isinstance(name, str):
            continue
        try:
            find_weight_file(kind, name, key, "")
            continue
        except PAEInputError:
            path = root / "models" / kind / name
        if not path.is_file():
            if build is None:
                if model_folder is None:
                    continue  # no AudioLDM2 in the workflow to fit an adapter to: the node reports the missing file
                build_tiny_ap_adapter(path, model_folder)
            else:
                build(path)
        notes.append(f"{kind} '{name}' (node {node_id}) -> tiny untrained stand-in at {path}")
    return notes


def _stand_in_musicgen(node_id: str, model_name: str, root: Path) -> str | None:
    """Build a tiny untrained MusicGen where Load MusicGen names one that is missing."""
    from ..engine.core.errors import PAEInputError
    from ..engine.models.musicgen import find_musicgen_folder

    try:
        find_musicgen_folder(model_name)
        return None
    except PAEInputError:
        from ..standins.musicgen import build_tiny_musicgen

        folder = root / "models" / "musicgen" / model_name
        if not (folder / "config.json").is_file():
            build_tiny_musicgen(folder)
        return f"MusicGen '{model_name}' (node {node_id}) -> tiny untrained MusicGen at {folder}"


def build_stand_ins(workflow: dict[str, Any], root: Path) -> list[str]:
    """Build tiny untrained models (under root/models) and a test clip (under root/input) for whatever the workflow
    names that is missing; say what was stood in. Used by --demo and by the real-ComfyUI test."""
    from ..standins.audioldm2 import write_demo_clip
    from ..engine.core.errors import PAEInputError

    stood_in = []
    model_folder = None
    for node_id, node in workflow.items():
        inputs = node.get("inputs", {})
        class_type = node.get("class_type")
        if class_type in ("PAE_LoadModel", "PAE_LoadCLAP", "PAE_LoadSAOInstruct") and \
                isinstance(inputs.get("model_name"), str):
            note = _stand_in_model(node_id, class_type, inputs["model_name"], root)
            if note:
                bridge.add_model_root(root / "models")
                stood_in.append(note)
            if class_type == "PAE_LoadModel" and model_folder is None:
                from ..engine.backbones.registry import find_model_folder

                try:
                    folder = find_model_folder(inputs["model_name"])
                    model_folder = folder if (folder / "unet").is_dir() else None  # AudioLDM2 (diffusers) only
                except PAEInputError:
                    pass
        if class_type == "PAE_LoadMusicGen" and isinstance(inputs.get("model_name"), str):
            note = _stand_in_musicgen(node_id, inputs["model_name"], root)
            if note:
                bridge.add_model_root(root / "models")
                stood_in.append(note)
        if class_type == "PAE_LoadAudio" and isinstance(inputs.get("audio"), str):
            try:
                exists = bridge.resolve_input_file(inputs["audio"]).is_file()
            except PAEInputError:
                exists = True  # a bad path is reported by the node, not papered over
            if not exists:
                clip = root / "input" / inputs["audio"]
                write_demo_clip(clip)
                bridge.set_directories(input=str(root / "input"))
                stood_in.append(f"input '{inputs['audio']}' (node {node_id}) -> synthetic test clip at {clip}")
    for node_id, node in workflow.items():
        if node.get("class_type") == "PAE_LoadAPAdapter":
            notes = _stand_in_ap_adapter(node_id, node.get("inputs", {}), model_folder, root)
            if notes:
                bridge.add_model_root(root / "models")
                stood_in.extend(notes)
    return stood_in


def _quiet_library_progress() -> None:
    """Hide diffusers/transformers loading bars: the runner reports progress per node itself."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _run_on_servers(args: argparse.Namespace) -> int:
    from .server import run_workflow_on_servers

    if args.demo:
        raise WorkflowError(None, "--demo builds stand-in models here; it does not apply with --server.")
    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides)
    ui_workflow = json.loads(Path(args.ui_workflow).read_text(encoding="utf-8")) if args.ui_workflow else None
    out_dir = Path(args.out or os.environ.get("PAE_OUTPUT_DIR") or "output").absolute()
    input_dir = Path(args.input_dir or os.environ.get("PAE_INPUT_DIR") or "input").absolute()
    return run_workflow_on_servers(workflow, Path(args.workflow).stem, args.server, args.inputs, input_dir, out_dir,
                                   ui_workflow, reconnect_seconds=args.reconnect_wait)


def _run(args: argparse.Namespace) -> int:
    from .. import NODE_CLASS_MAPPINGS

    if args.server:
        return _run_on_servers(args)
    if args.inputs:
        raise WorkflowError(None, "--input batches need --server; here, give one file with --set NODE.audio=NAME.")
    _quiet_library_progress()
    bridge.set_directories(models=args.models, input=args.input_dir, output=args.out)
    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides)
    extra_pnginfo = {}
    if args.ui_workflow:
        extra_pnginfo["workflow"] = json.loads(Path(args.ui_workflow).read_text(encoding="utf-8"))
    if args.demo:
        stood_in = build_stand_ins(workflow, _demo_root())
        if stood_in:
            print(f"{_BANNER}\nDEMO MODE: these are stand-ins, NOT real weights or your audio. The output is noise "
                  f"from an untrained model.\n" + "\n".join(f"  - {s}" for s in stood_in) + f"\n{_BANNER}",
                  file=sys.stderr)
    started = time.perf_counter()

    def on_node(position: int, total: int, node_id: str, class_type: str) -> None:
        print(f"[{position}/{total}] node {node_id}: {class_type}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="pae-previews-") as previews:  # browser previews: nobody sees them here
        bridge.set_directories(temp=previews)
        results = execute_workflow(workflow, NODE_CLASS_MAPPINGS, extra_pnginfo=extra_pnginfo, on_node=on_node)
    out_dir = bridge.output_directory()
    for run in results.values():
        for item in run.ui.get("audio", []):
            print(out_dir / item["subfolder"] / item["filename"])
    print(f"done in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pae` console command."""
    from .server import RunError

    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
    except RunError as exc:
        print(f"pae: {exc}", file=sys.stderr)
        return 2
    except WorkflowError as exc:
        if exc.__cause__ is not None and os.environ.get("PAE_DEBUG"):
            import traceback

            traceback.print_exception(exc.__cause__)
        hint = " (set PAE_DEBUG=1 for the traceback)" if exc.__cause__ is not None else ""
        print(f"pae: {exc}{hint}", file=sys.stderr)
        return 2
    except (bridge.Interrupted, KeyboardInterrupt):
        print("pae: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
