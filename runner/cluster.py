"""`pae run --ray`: a batch of jobs on a Ray cluster, one long-lived worker (actor) per GPU or CPU slot.

Ray does the scheduling, retries and restarts: an actor pool (`ray.util.ActorPool`) hands each job to an idle
worker; a worker whose process dies is restarted by Ray (`max_restarts`) and its job sent again
(`max_task_retries`). Each worker runs the in-process runner and keeps its models loaded between jobs. A worker
returns its job's output files; only the driver writes, into a hidden folder claimed by the job's name in one
rename with job.json inside, so each job's outputs are saved exactly once and a re-run skips finished jobs.
Ray is imported only here, and only when --ray is asked for.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..engine.core import bridge, loading
from ..engine.core.errors import PAEInputError
from ..engine.core.files import claim_folder, resolve_inside
from .jobs import JOB_RECORD, Job, RunError, check_output_folder, finished_record, job_record, plan_jobs, \
    workflow_sha256
from .workflow import WorkflowError, execute_workflow, ui_workflow_with_values

INSTALL_HINT = 'pip install "prompt-audio-edit[ray]" (or pip install ray) on every machine of the cluster'
# A worker process that dies is restarted this many times (each time its job is sent again) before the job fails.
MAX_RESTARTS = 3
PARTIAL_PREFIX = ".pae-job-"
WORKER_START_SECONDS = 600.0  # importing torch and the pack on a cold worker
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 30.0     # after Ctrl-C: how long running jobs get to reach their next step


class JobWorker:
    """One worker of the pool (a Ray actor): runs jobs one at a time in this process and keeps their models."""

    def __init__(self, models_dir: str, threads: int = 0):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        from .cli import quiet_library_progress

        quiet_library_progress()
        bridge.set_directories(models=models_dir)
        loading.keep_models_loaded(True)
        bridge.set_progress_listener(self._on_step)
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}

    def identity(self) -> dict[str, Any]:
        """Where this worker runs (the driver prints it; a test kills it by pid)."""
        return {"pid": os.getpid(), "host": socket.gethostname()}

    def progress(self) -> dict[str, Any]:
        """The running job's name, node and step (polled by the driver's progress line)."""
        return dict(self._state)

    def interrupt(self) -> None:
        """Stop the running job at its next step (Ctrl-C on the driver)."""
        bridge.request_interrupt()

    def _on_step(self, value: int, total: int) -> None:
        self._state.update(value=value, max=total)

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one job; never raises for the job's own faults: they come back as its error, not to be retried."""
        with self._lock:
            self._state = {"job": spec["name"], "label": spec["label"]}
            started = time.perf_counter()
            result: dict[str, Any] = {"name": spec["name"], **self.identity()}
            try:
                result["files"] = self._execute(spec)
                result["error"] = None
            except WorkflowError as exc:
                result["error"] = str(exc)
            except bridge.Interrupted:
                result["error"] = "interrupted"
            except Exception as exc:  # noqa: BLE001 - the worker's own environment (e.g. a full disk): name it
                result["error"] = f"failed on the worker with {exc.__class__.__name__}: {exc}"
            result["loads"] = loading.load_count()
            result["seconds"] = round(time.perf_counter() - started, 3)
            self._state = {}
            return result

    def _execute(self, spec: dict[str, Any]) -> list[tuple[str, bytes]]:
        from .. import NODE_CLASS_MAPPINGS

        with tempfile.TemporaryDirectory(prefix="pae-ray-job-") as scratch:
            folders = {name: Path(scratch) / name for name in ("input", "output", "temp")}
            for folder in folders.values():
                folder.mkdir()
            graph = spec["workflow"]
            for (node_id, input_name), (file_name, data) in spec["inputs"].items():
                target = resolve_inside(folders["input"], file_name, input_name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                graph[node_id]["inputs"][input_name] = file_name
            bridge.set_directories(input=str(folders["input"]), output=str(folders["output"]),
                                   temp=str(folders["temp"]))

            def on_node(position: int, total: int, node_id: str, class_type: str) -> None:
                self._state.update(node=node_id, class_type=class_type, value=0, max=0)

            execute_workflow(graph, NODE_CLASS_MAPPINGS, extra_pnginfo=spec["extra_pnginfo"], on_node=on_node)
            files = []
            for path in sorted(folders["output"].rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    files.append((path.relative_to(folders["output"]).as_posix(), path.read_bytes()))
            return files


def _ray():
    try:
        import ray
    except ImportError:
        raise RunError(f"--ray needs Ray, which is not installed here: {INSTALL_HINT}.") from None
    return ray


def _connect(ray: Any, address: str | None, workers: int | None) -> None:
    """ray.init: a local cluster for this run (no address), the cluster in RAY_ADDRESS ('auto'), or ADDRESS."""
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "logging_level": logging.WARNING}
    if address is None:  # "local": a new cluster even where one already runs (plain ray.init() would join it)
        options.update(address="local", num_cpus=workers or os.cpu_count() or 1)
    else:
        _check_reachable(address if address != "auto" else os.environ.get("RAY_ADDRESS", ""))
        options["address"] = address
    try:
        ray.init(**options)
    except ConnectionError as exc:
        where = "the cluster in RAY_ADDRESS" if address == "auto" else f"a Ray cluster at {address}"
        raise RunError(f"cannot reach {where} ({exc}); {_auth_hint(address)}start one with 'ray start --head' "
                       "(and 'ray start --address HEAD:6379' on the other machines), or leave out the address for a "
                       "local one.") from None


def _auth_hint(address: str | None) -> str:
    """What to set when the refusal may be Ray's token authentication: `ray start` turns it on, and Ray sends no
    token to an address named explicitly unless RAY_AUTH_MODE=token is set."""
    if address in (None, "auto") or os.environ.get("RAY_AUTH_MODE"):
        return ""
    return ("if the cluster uses token authentication (what 'ray start' does by default in recent Ray), set "
            "RAY_AUTH_MODE=token here, with the head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN; otherwise ")


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """A HOST:PORT address must accept a connection within seconds (Ray itself waits minutes on a dead one)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # 'auto' without RAY_ADDRESS, or a form Ray parses itself: it says what is wrong
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as exc:
        raise RunError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with 'ray start "
                       "--head' (and 'ray start --address HEAD:6379' on the other machines), or leave out the address "
                       "for a local one.") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out_dir: Path) -> None:
    """Hidden job folders left by a driver of this machine that died while saving (its pid is in the name)."""
    for entry in out_dir.glob(f"{PARTIAL_PREFIX}*.partial"):
        pid = entry.name.rsplit(".", 3)[-3] if entry.name.count(".") >= 3 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def save_job(job: Job, files: list[tuple[str, bytes]], record: dict[str, Any]) -> list[Path]:
    """Write a job's outputs and its job.json into a hidden folder, then claim the job's folder in one rename."""
    partial = job.out_dir.parent / f"{PARTIAL_PREFIX}{job.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir()
    try:
        relative = []
        for name, data in files:
            try:
                target = resolve_inside(partial, name, "filename", what="job folder")
            except PAEInputError:
                raise RunError(f"{job.label}: the worker named an output {name!r} outside its folder; not saved.") \
                    from None
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            relative.append(name)
        (partial / JOB_RECORD).write_text(json.dumps(dict(record, outputs=relative), indent=2), encoding="utf-8")
        claim_folder(partial, job.out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [job.out_dir / name for name in relative]


def _pending_jobs(jobs: list[Job], workflow_hash: str, board: Any) -> list[Job]:
    """The jobs still to run: a job folder with its job.json made from the same graph and values is skipped."""
    todo = []
    for job in jobs:
        record = finished_record(job)
        expected = job_record(job, workflow_hash)
        if record is None and not os.path.lexists(job.out_dir):
            todo.append(job)
        elif record is None:
            job.error = (f"{job.out_dir} exists but is not a finished job (no {JOB_RECORD}); move it away or choose "
                         "another --out")
        elif {key: record.get(key) for key in expected} == expected:
            job.saved = [job.out_dir / name for name in record.get("outputs", [])]
            job.done_on = "an earlier run"
        else:
            job.error = (f"{job.out_dir} holds a finished job made from another workflow or other values; choose "
                         "another --out, or move it away to run it again")
    skipped = sum(job.done_on is not None for job in jobs)
    if skipped:
        board.note(f"pae: {skipped} of {len(jobs)} job(s) finished in an earlier run; skipped")
    return todo


def _job_spec(job: Job, ui_workflow: dict | None) -> dict[str, Any]:
    """What a worker gets: the job's graph and the bytes of each audio file it loads (the worker may be on another
    machine), each under its own file name."""
    from .. import NODE_CLASS_MAPPINGS

    inputs, names = {}, set()
    for (node_id, input_name), path in job.files.items():
        name = path.name if path.name not in names else f"{node_id}/{path.name}"
        names.add(name)
        inputs[(node_id, input_name)] = (name, path.read_bytes())
    return {"name": job.name, "label": job.label, "workflow": job.workflow, "inputs": inputs,
            "extra_pnginfo": {"workflow": ui_workflow_with_values(ui_workflow, job.workflow, NODE_CLASS_MAPPINGS)}
            if ui_workflow else {}}


def run_workflow_on_ray(workflow: dict, name: str, address: str | None, inputs: list[str], sweeps: list[str],
                        input_dir: Path, out_dir: Path, models_dir: Path, ui_workflow: dict | None = None, *,
                        workers: int | None = None, node_classes: dict[str, type] | None = None,
                        stream: Any = None) -> int:
    """`pae run --ray`: plan, skip finished jobs, run the rest on the pool, save each once; the exit code (0 all
    done, 1 a job failed)."""
    from .server import Board

    stream = stream or sys.stderr
    jobs = plan_jobs(workflow, name, inputs, input_dir, out_dir, sweeps, node_classes, folder_per_job=True)
    check_output_folder(out_dir)
    remove_stale_partials(out_dir)
    workflow_hash = workflow_sha256(workflow)
    board = Board(len(jobs), stream)
    todo = _pending_jobs(jobs, workflow_hash, board)
    board.finished = len(jobs) - len(todo)
    if todo:
        ray = _ray()
        _connect(ray, address, workers)
        try:
            _run_pool(ray, todo, workflow_hash, models_dir, ui_workflow, workers, board)
        finally:
            board.clear()
            ray.shutdown()
    failed = [job for job in jobs if job.error]
    if failed:
        print(f"pae: {len(failed)} of {len(jobs)} job(s) did not finish: "
              + "; ".join(f"{job.name}: {job.error.splitlines()[0]}" for job in failed), file=stream)
        return 1
    return 0


def _run_pool(ray: Any, jobs: list[Job], workflow_hash: str, models_dir: Path, ui_workflow: dict | None,
              workers: int | None, board: Any) -> None:
    from ray.util import ActorPool

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    count = min(gpus or cpus, workers or len(jobs), len(jobs))
    slot = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_gpus": 0, "num_cpus": max(1, cpus // count)}
    actor_class = ray.remote(JobWorker).options(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                                                max_concurrency=2, **slot)
    actors = [actor_class.remote(str(models_dir), 0 if gpus else slot["num_cpus"]) for _ in range(count)]
    names = {actor: SimpleNamespace(name=f"w{index + 1}") for index, actor in enumerate(actors)}
    try:
        identities = ray.get([actor.identity.remote() for actor in actors], timeout=WORKER_START_SECONDS)
    except ray.exceptions.GetTimeoutError:
        raise RunError(f"the Ray workers did not start within {WORKER_START_SECONDS:g} s; is the pack installed on "
                       f"every machine ({INSTALL_HINT})?") from None
    for actor, who in zip(actors, identities):
        where = f"{slot['num_gpus']} GPU" if gpus else f"{slot['num_cpus']} CPU"
        board.note(f"pae: worker {names[actor].name}: pid {who['pid']} on {who['host']} ({where})")
    by_name = {job.name: job for job in jobs}
    in_flight: dict[Any, tuple[Job, Any]] = {}

    def submit(actor: Any, job: Job) -> Any:
        ref = actor.run.remote(_job_spec(job, ui_workflow))
        in_flight[ref] = (job, actor)
        return ref

    pool = ActorPool(actors)
    for job in jobs:
        pool.submit(submit, job)
    shown: dict[str, tuple] = {}
    try:
        while pool.has_next():
            try:
                result = pool.get_next_unordered(timeout=POLL_SECONDS)
            except TimeoutError:
                _show_progress(ray, in_flight, names, board, shown)
                continue
            except ray.exceptions.RayError as exc:
                _lost_jobs(ray, in_flight, names, board, exc)
                continue
            job = by_name[result["name"]]
            _, actor = in_flight.pop(next(ref for ref, (j, _) in in_flight.items() if j is job))
            shown.pop(names[actor].name, None)
            _finish(job, result, workflow_hash, names[actor], board)
    except KeyboardInterrupt:
        board.note(f"pae: stopping: {len(in_flight)} running job(s) stop at their next step; "
                   f"{sum(j.error is None and j.done_on is None for j in jobs) - len(in_flight)} not started")
        for _, actor in in_flight.values():
            actor.interrupt.remote()
        ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_GRACE_SECONDS)
        raise
    for job in jobs:
        if job.error is None and job.done_on is None:
            job.error = "not run: every worker was lost"


def _finish(job: Job, result: dict[str, Any], workflow_hash: str, worker: Any, board: Any) -> None:
    """Save a finished job's files (once: only the driver writes), or record its error."""
    if result.get("error"):
        job.error = result["error"]
        board.job_done(worker, job, f"{job.name}: {job.error}")
        return
    record = dict(job_record(job, workflow_hash), worker={key: result[key] for key in ("pid", "host")},
                  seconds=result["seconds"], models_loaded_by_worker=result["loads"])
    try:
        job.saved = save_job(job, result["files"], record)
    except FileExistsError:
        job.error = f"{job.out_dir} appeared while the job ran; its outputs were not saved over it"
    except OSError as exc:
        job.error = f"cannot write {job.out_dir}: {exc.strerror or exc}"
    if job.error:
        board.job_done(worker, job, f"{job.name}: {job.error}")
        return
    job.done_on = worker.name
    board.job_done(worker, job, f"{job.name}: done on {worker.name} in {result['seconds']:.1f} s")
    for path in job.saved:
        print(path, flush=True)


def _lost_jobs(ray: Any, in_flight: dict, names: dict, board: Any, error: Exception) -> None:
    """Jobs whose worker died more often than Ray restarts it: failed, named, the others go on."""
    done, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
    for ref in done:
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.RayError:
            job, actor = in_flight.pop(ref)
            job.error = (f"its worker died {MAX_RESTARTS + 1} times ({error.__class__.__name__}); the job was not "
                         "saved")
            board.job_done(names[actor], job, f"{job.name}: {job.error}")


def _show_progress(ray: Any, in_flight: dict, names: dict, board: Any, shown: dict) -> None:
    """Ask each busy worker where its job is and draw it (a worker being restarted just does not answer)."""
    busy = [(job, actor) for job, actor in in_flight.values()]
    refs = [actor.progress.remote() for _, actor in busy]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)
    for (job, actor), ref in zip(busy, refs):
        if ref not in ready:
            continue
        try:
            state = ray.get(ref, timeout=0)
        except ray.exceptions.RayError:
            continue
        if state.get("job") != job.name or "node" not in state:
            continue
        worker = names[actor]
        node = (state["node"], state["class_type"])
        if shown.get(worker.name) != node:
            shown[worker.name] = node
            board.node(worker, job, *node)
        if state.get("max"):
            board.step(worker, job, *node, int(state["value"]), int(state["max"]))
