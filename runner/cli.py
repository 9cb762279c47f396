"""The `pae` command: run API-format workflows of the pack's nodes headless, in-process or on ComfyUI servers."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from ..engine.core import bridge
from .server import DEFAULT_MAX_DOWNLOAD_MB
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
    run.add_argument("--input-dir", default=None,
                     help="folder Load Audio reads from (default: $PAE_INPUT_DIR or ./input)")
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
    run.add_argument("--max-download-mb", type=float, default=DEFAULT_MAX_DOWNLOAD_MB, metavar="MIB",
                     help="with --server: the largest output file taken from a server (default %(default)s); a "
                     "larger one is left on the server and the batch stops")
    run.add_argument("--demo", action="store_true",
                     help="stand in tiny UNTRAINED models for missing model folders and a synthetic clip for "
                     "missing input files (output is noise; for trying the pack without weights)")
    return parser


def _demo_root() -> Path:
    return Path(os.environ.get("PAE_DEMO_DIR") or Path.home() / ".cache" / "prompt-audio-edit" / "demo")


def _quiet_library_progress() -> None:
    """Hide diffusers/transformers loading bars: the runner reports progress per node itself."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _read_ui_workflow(path: str) -> dict:
    """The --ui-workflow file (embedded in saved files so they reopen in ComfyUI), or a clear refusal."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowError(None, f"--ui-workflow: file not found: {path}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise WorkflowError(None, f"--ui-workflow: {path} is not readable JSON ({exc.__class__.__name__}).") from None
    if not isinstance(data, dict) or "nodes" not in data:
        raise WorkflowError(None, f"--ui-workflow: {path} is not a UI-format workflow (ComfyUI's Save); the API "
                            "format goes in WORKFLOW.")
    return data


def _run_on_servers(args: argparse.Namespace) -> int:
    from .server import run_workflow_on_servers

    if args.demo:
        raise WorkflowError(None, "--demo builds stand-in models here; it does not apply with --server.")
    from .. import NODE_CLASS_MAPPINGS

    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides, NODE_CLASS_MAPPINGS)
    ui_workflow = _read_ui_workflow(args.ui_workflow) if args.ui_workflow else None
    out_dir = Path(args.out or os.environ.get("PAE_OUTPUT_DIR") or "output").absolute()
    input_dir = Path(args.input_dir or os.environ.get("PAE_INPUT_DIR") or "input").absolute()
    return run_workflow_on_servers(workflow, Path(args.workflow).stem, args.server, args.inputs, input_dir, out_dir,
                                   ui_workflow, reconnect_seconds=args.reconnect_wait,
                                   max_download_mb=args.max_download_mb)


def _run(args: argparse.Namespace) -> int:
    from .. import NODE_CLASS_MAPPINGS

    if args.server:
        return _run_on_servers(args)
    if args.inputs:
        raise WorkflowError(None, "--input batches need --server; here, give one file with --set NODE.audio=NAME.")
    _quiet_library_progress()
    from .server import check_output_folder

    bridge.set_directories(models=args.models, input=args.input_dir, output=args.out)
    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides, NODE_CLASS_MAPPINGS)
    extra_pnginfo = {}
    if args.ui_workflow:
        extra_pnginfo["workflow"] = _read_ui_workflow(args.ui_workflow)
    check_output_folder(bridge.output_directory())  # a missing, read-only or not-a-folder --out, before any work
    if args.demo:
        from ..standins.workflow import build_stand_ins  # the runner's only use of stand-ins, on request

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
