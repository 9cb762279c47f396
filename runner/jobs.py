"""A batch as jobs: input files × sweeps of input values, each job a copy of the workflow with its own name.

Shared by `pae run --server` (ComfyUI servers) and `pae run --ray` (a Ray cluster): the plan, the job's name and
folder, and the job.json that records what a finished job was run with.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.io.audio import READ_EXTENSIONS
from .workflow import WorkflowError, apply_overrides, parse_override, resolve_node

# Loader nodes whose 'audio' input names a file in the input folder.
AUDIO_LOADERS = ("PAE_LoadAudio", "LoadAudio")
# Bounds checked before a batch is expanded: the jobs of one command, a values file, the values of one sweep.
MAX_JOBS = 100_000
MAX_VALUES_FILE_BYTES = 4 * 2 ** 20
JOB_RECORD = "job.json"


class RunError(Exception):
    """A problem found before anything is queued (bad arguments, missing input, no server): exit code 2."""


@dataclass
class Job:
    index: int
    label: str                          # what the user recognises: the input file and swept values, or the workflow
    workflow: dict[str, dict[str, Any]]
    files: dict[tuple[str, str], Path]  # (node id, input) -> local file the job loads
    out_dir: Path
    name: str = ""                      # the job's folder name in a batch: input stem and sweep positions
    input_file: Path | None = None      # the --input file of this job, if the batch has one
    swept: dict[str, Any] = field(default_factory=dict)  # "NODE.INPUT" -> the value this job runs with
    done_on: str | None = None
    saved: list[Path] = field(default_factory=list)
    error: str | None = None
    servers_tried: list[str] = field(default_factory=list)


@dataclass
class Sweep:
    target: str          # NODE.INPUT as the user wrote it
    texts: list[str]     # each value as NODE.INPUT=VALUE, parsed as --set parses it


def audio_loaders(workflow: dict[str, dict[str, Any]]) -> list[str]:
    """Ids of the nodes that load an audio file by name."""
    return [node_id for node_id, node in workflow.items()
            if node.get("class_type") in AUDIO_LOADERS and isinstance(node.get("inputs", {}).get("audio"), str)]


def expand_inputs(patterns: list[str]) -> list[Path]:
    """Files named by --input: a folder (its audio files), a glob, or a file; sorted, each once."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in READ_EXTENSIONS]
            if not matches:
                raise RunError(f"--input folder {path} holds no audio files ({', '.join(READ_EXTENSIONS)}).")
        elif glob.has_magic(pattern):
            matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
                       if Path(p).is_file()]
            if not matches:
                raise RunError(f"--input '{pattern}' matches no files.")
        elif path.is_file():
            matches = [path]
        else:
            raise RunError(f"input file not found: {path}")
        found += [m.resolve() for m in matches if m.resolve() not in found]
    return found


def parse_sweep(text: str) -> Sweep:
    """'NODE.INPUT=v1,v2,…' or 'NODE.INPUT=@values.txt' (one value per line, blank lines skipped)."""
    target, sep, raw = text.partition("=")
    if not sep or "." not in target or not target.split(".", 1)[0] or not target.split(".", 1)[1]:
        raise RunError(f"--sweep '{text}' should read NODE.INPUT=v1,v2,... or NODE.INPUT=@values.txt, "
                       "e.g. --sweep 5.target_prompt=@prompts.txt")
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        try:
            if path.stat().st_size > MAX_VALUES_FILE_BYTES:
                raise RunError(f"--sweep values file {path} is larger than {MAX_VALUES_FILE_BYTES >> 20} MiB; "
                               "split the batch.")
            values = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise RunError(f"--sweep values file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RunError(f"--sweep values file {path} is not readable text ({exc.__class__.__name__}).") from None
    else:
        values = [value.strip() for value in raw.split(",") if value.strip()]
    if not values:
        raise RunError(f"--sweep '{text}' gives no values; list them comma-separated, or one per line in a file "
                       "given as @FILE (values that contain commas need the file).")
    return Sweep(target.strip(), [f"{target.strip()}={value}" for value in values])


def _sweep_labels(sweeps: list[Sweep]) -> list[str]:
    """The name part of each sweep: its input name, or NODE.INPUT where two sweeps share an input name."""
    names = [sweep.target.split(".", 1)[1] for sweep in sweeps]
    return [name if names.count(name) == 1 else sweep.target for name, sweep in zip(names, sweeps)]


def plan_jobs(workflow: dict[str, dict[str, Any]], name: str, inputs: list[str], input_dir: Path,
              out_dir: Path, sweeps: list[str] | None = None, node_classes: dict[str, type] | None = None,
              folder_per_job: bool = False) -> list[Job]:
    """One job per input file × sweep value combination (or one job), with every audio file the graph loads
    resolved to a local file. A batch of more than one job (or folder_per_job) puts each job in out_dir/<name>."""
    loaders = audio_loaders(workflow)
    target, patterns = None, []
    for text in inputs:
        node_id, sep, rest = text.partition("=")
        if sep and node_id in workflow:
            if target not in (None, node_id):
                raise RunError("--input may batch one loader node only; give the other files by name in the workflow.")
            target, text = node_id, rest
        patterns.append(text)
    if patterns and target is None:
        if len(loaders) != 1:
            where = f"nodes {', '.join(loaders)}" if loaders else "no node"
            raise RunError(f"the workflow loads audio in {where}; say which one --input feeds, e.g. "
                           f"--input {loaders[0] if loaders else 'NODE'}=takes/*.wav")
        target = loaders[0]
    if target is not None and target not in loaders:
        raise RunError(f"--input names node {target}, which does not load an audio file "
                       f"(loaders: {', '.join(loaders)}).")
    parsed = [parse_sweep(text) for text in sweeps or []]
    targets = [sweep.target for sweep in parsed]
    if len(set(targets)) != len(targets):
        raise RunError("--sweep names the same input twice; give all its values in one --sweep.")
    batch: list[Path | None] = expand_inputs(patterns) if patterns else [None]
    total = len(batch)
    for sweep in parsed:
        total *= len(sweep.texts)
    if total > MAX_JOBS:
        raise RunError(f"the batch would be {total} jobs (inputs × sweep values), more than {MAX_JOBS}; split it.")
    try:  # every sweep value is checked against the node's inputs before anything runs
        for sweep in parsed:
            apply_overrides(workflow, sweep.texts, node_classes)
    except WorkflowError as exc:
        raise RunError(str(exc).replace("--set", "--sweep")) from None
    values = [[parse_override(text) for text in sweep.texts] for sweep in parsed]
    labels = _sweep_labels(parsed)
    stems = _unique_stems(batch)
    jobs = []
    many = folder_per_job or total > 1
    for index, (item, choice) in enumerate(itertools.product(batch, itertools.product(
            *[range(len(sweep.texts)) for sweep in parsed]))):
        graph = json.loads(json.dumps(workflow))
        swept = {}
        parts = [stems[item]] if item is not None else []
        for sweep, label, position, options in zip(parsed, labels, choice, values):
            node_id, input_name, value = options[position]
            graph[resolve_node(graph, node_id)]["inputs"][input_name] = value
            swept[sweep.target] = value
            width = len(str(len(sweep.texts)))
            parts.append(f"{label}-{position + 1:0{width}d}")
        files = {}
        for node_id in loaders:
            value = graph[node_id]["inputs"]["audio"]
            local = item if node_id == target and item is not None else _local_file(value, input_dir, node_id)
            files[(node_id, "audio")] = local
        job_name = "_".join(parts) or name
        label = (item.name if item is not None else "") + "".join(f" {k}={v!r}" for k, v in swept.items())
        jobs.append(Job(index, label.strip() or name, graph, files, out_dir / job_name if many else out_dir,
                        name=job_name, input_file=item, swept=swept))
    return jobs


def _unique_stems(batch: list[Path | None]) -> dict[Path | None, str]:
    """Each input file's stem, numbered where two files of a batch share one (a/take.wav, b/take.wav)."""
    stems: dict[Path | None, str] = {}
    taken: set[str] = set()
    for item in batch:
        if item is None:
            continue
        stem, number = item.stem, 2
        while stem in taken:
            stem, number = f"{item.stem}-{number}", number + 1
        taken.add(stem)
        stems[item] = stem
    return stems


def _local_file(value: str, input_dir: Path, node_id: str) -> Path:
    for candidate in (Path(value).expanduser(), input_dir / value):
        if candidate.is_file():
            return candidate.resolve()
    raise RunError(f"input file not found: '{value}' (node {node_id}, input 'audio'); looked in {input_dir} and the "
                   "current folder. Put it there, or give it with --input.")


def check_output_folder(out_dir: Path) -> None:
    """Create the output folder and prove a file can be written there, before any job is queued."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".pae-write-test-"):
            pass
    except OSError as exc:
        raise RunError(f"cannot write into the output folder {out_dir}: {exc.strerror or exc}; choose another "
                       "with --out.") from None


def workflow_sha256(workflow: dict) -> str:
    """The workflow's fingerprint (canonical JSON): a job folder records which graph made it."""
    return hashlib.sha256(json.dumps(workflow, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_record(job: Job, workflow_hash: str) -> dict[str, Any]:
    """What job.json says of a job: its input, swept values and workflow (compared again on a resumed run)."""
    return {"job": job.name, "input": str(job.input_file) if job.input_file else None, "swept": job.swept,
            "workflow_sha256": workflow_hash}


def finished_record(job: Job) -> dict[str, Any] | None:
    """The job.json of a job already finished in its folder (a resumed batch skips it), or None."""
    try:
        record = json.loads((job.out_dir / JOB_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}
