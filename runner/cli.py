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
from . import models_command
from .server import DEFAULT_MAX_DOWNLOAD_MB
from .workflow import WorkflowError, apply_overrides, execute_workflow, load_api_workflow, ui_workflow_with_values

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
                     help="with --ray or --server: a batch of input files (a folder, a glob such as 'takes/*.wav', or "
                     "a file; repeatable), one job each, fed to the workflow's audio loader (NODE= picks one of "
                     "several)")
    run.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="NODE.INPUT=V1,V2,…",
                     help="with --ray or --server: one job per value (comma-separated, or @FILE with one value per "
                     "line; values with commas need the file); repeatable: jobs are every combination of inputs and "
                     "swept values, e.g. --sweep 5.target_prompt=@prompts.txt --sweep 4.seed=0,1,2")
    run.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="run the batch on a Ray cluster: 'auto' = the cluster in RAY_ADDRESS, HOST:PORT = that "
                     "cluster, nothing = a local one for this run (put --ray after the workflow); one worker per "
                     "GPU (per CPU without GPUs) keeps its models loaded; each job goes to --out/<job name>/ with "
                     "a job.json, and re-running the command skips finished jobs")
    run.add_argument("--ray-workers", type=int, default=None, metavar="N",
                     help="with --ray: at most N workers (a local cluster gets N CPUs)")
    run.add_argument("--reconnect-wait", type=float, default=10.0, metavar="SECONDS",
                     help="with --server: how long a server that stops answering may take to come back before its "
                     "job moves to another server (default 10)")
    run.add_argument("--max-download-mb", type=float, default=DEFAULT_MAX_DOWNLOAD_MB, metavar="MIB",
                     help="with --server: the largest output file taken from a server (default %(default)s); a "
                     "larger one is left on the server and the batch stops")
    run.add_argument("--demo", action="store_true",
                     help="stand in tiny UNTRAINED models for missing model folders and a synthetic clip for "
                     "missing input files (output is noise; for trying the pack without weights)")
    models_command.add_parser(commands)
    return parser


def _demo_root() -> Path:
    return Path(os.environ.get("PAE_DEMO_DIR") or Path.home() / ".cache" / "prompt-audio-edit" / "demo")


def quiet_library_progress() -> None:
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


def _batch_settings(args: argparse.Namespace) -> tuple[dict, dict | None, Path, Path]:
    """What --server and --ray batches share: the workflow with --set applied, the UI twin, --out and --input-dir."""
    from .. import NODE_CLASS_MAPPINGS

    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides, NODE_CLASS_MAPPINGS)
    ui_workflow = _read_ui_workflow(args.ui_workflow) if args.ui_workflow else None
    out_dir = Path(args.out or os.environ.get("PAE_OUTPUT_DIR") or "output").absolute()
    input_dir = Path(args.input_dir or os.environ.get("PAE_INPUT_DIR") or "input").absolute()
    return workflow, ui_workflow, out_dir, input_dir


def _run_on_servers(args: argparse.Namespace) -> int:
    from .server import run_workflow_on_servers

    if args.demo:
        raise WorkflowError(None, "--demo builds stand-in models here; it does not apply with --server.")
    from .. import NODE_CLASS_MAPPINGS

    workflow, ui_workflow, out_dir, input_dir = _batch_settings(args)
    return run_workflow_on_servers(workflow, Path(args.workflow).stem, args.server, args.inputs, input_dir, out_dir,
                                   ui_workflow, reconnect_seconds=args.reconnect_wait,
                                   max_download_mb=args.max_download_mb, sweeps=args.sweeps,
                                   node_classes=NODE_CLASS_MAPPINGS)


def _run_on_ray(args: argparse.Namespace) -> int:
    from .. import NODE_CLASS_MAPPINGS
    from .cluster import run_workflow_on_ray

    if args.demo:
        raise WorkflowError(None, "--demo builds stand-in models on this machine; it does not apply with --ray.")
    if args.server:
        raise WorkflowError(None, "--ray and --server are two ways to run a batch; give one of them.")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise WorkflowError(None, f"--ray-workers must be 1 or more, not {args.ray_workers}.")
    workflow, ui_workflow, out_dir, input_dir = _batch_settings(args)
    models_dir = Path(args.models or os.environ.get("PAE_MODELS_DIR") or "models").absolute()
    address = None if args.ray == "local" else args.ray
    return run_workflow_on_ray(workflow, Path(args.workflow).stem, address, args.inputs, args.sweeps, input_dir,
                               out_dir, models_dir, ui_workflow, workers=args.ray_workers,
                               node_classes=NODE_CLASS_MAPPINGS)


def _run(args: argparse.Namespace) -> int:
    from .. import NODE_CLASS_MAPPINGS

    if args.ray is not None:
        return _run_on_ray(args)
    if args.server:
        return _run_on_servers(args)
    if args.inputs or args.sweeps:
        raise WorkflowError(None, "--input and --sweep batches need --ray or --server; here, give one file with "
                            "--set NODE.audio=NAME and one value with --set.")
    quiet_library_progress()
    from .server import check_output_folder

    bridge.set_directories(models=args.models, input=args.input_dir, output=args.out)
    workflow = apply_overrides(load_api_workflow(args.workflow), args.overrides, NODE_CLASS_MAPPINGS)
    extra_pnginfo = {}
    if args.ui_workflow:
        extra_pnginfo["workflow"] = ui_workflow_with_values(_read_ui_workflow(args.ui_workflow), workflow,
                                                            NODE_CLASS_MAPPINGS)
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
    from ..engine.install.hub import GetError
    from .jobs import RunError

    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            return models_command.run(args)
        if args.command == "run":
            return _run(args)
    except GetError as exc:
        print(f"pae models: {exc}", file=sys.stderr)
        return 2
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
        print("pae: interrupted" + ("; run the same command again to resume the download" if args.command == "models"
                                    else ""), file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
