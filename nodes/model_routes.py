"""The "Get models…" button's server side: the catalogue with what is installed, downloads in a background thread,
progress pushed to the page. Routes are aiohttp handlers registered on ComfyUI's server through the bridge."""

from __future__ import annotations

import threading
from typing import Any

from aiohttp import web

from ..engine.core import bridge
from ..engine.install import catalogue, hub

EVENT = "pae.models"   # websocket event: {name, state: running|done|error, file, done, total, message, steps}
# Which loader node lists which model kinds (the dialog shows a node's own models first).
NODE_KINDS = {"PAE_LoadModel": ("diffusers", "tango", "checkpoints", "text_encoders"),
              "PAE_LoadSAOInstruct": ("diffusers", "text_encoders"), "PAE_LoadCLAP": ("clap",),
              "PAE_LoadMusicGen": ("musicgen",), "PAE_LoadAPAdapter": ("ap_adapter", "audiomae")}

_jobs: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def describe(entry: catalogue.ModelEntry) -> dict[str, Any]:
    """One catalogue entry as the dialog shows it."""
    state = hub.entry_state(entry)
    kinds = sorted({p.path.split("/")[0] for p in entry.parts})
    return {"name": entry.name, "purpose": entry.purpose, "methods": list(entry.methods),
            "workflows": list(entry.workflows), "size_mb": entry.size_mb, "licence": entry.licence,
            "gated": entry.gated, "by_hand": any(p.by_hand for p in entry.parts), "state": state.label,
            "details": state.details, "kinds": kinds, "note": entry.note,
            "nodes": [node for node, node_kinds in NODE_KINDS.items() if set(kinds) & set(node_kinds)],
            "job": _jobs.get(entry.name)}


async def list_models(request: web.Request) -> web.Response:
    """GET /pae/models: every catalogue entry with its state and any download in progress."""
    return web.json_response({"models": [describe(e) for e in catalogue.CATALOGUE]})


def _update(name: str, **changes: Any) -> None:
    with _lock:
        job = _jobs.setdefault(name, {"name": name})
        job.update(changes)
        snapshot = dict(job)
    bridge.send_event(EVENT, snapshot)


def _download(entry: catalogue.ModelEntry) -> None:
    """The background download of one entry, reporting to the page as it goes."""
    def progress(file: str, done: int, total: int) -> None:
        job = _jobs.get(entry.name, {})
        if done == total or done - job.get("done", 0) >= 1 << 20 or file != job.get("file"):
            _update(entry.name, file=file, done=done, total=total)

    try:
        steps = hub.get_entry(entry, progress=progress, report=lambda line: _update(entry.name, message=line))
    except hub.GetError as exc:
        _update(entry.name, state="error", message=str(exc))
    except Exception as exc:  # noqa: BLE001 - a thread's failure must reach the page, not vanish
        _update(entry.name, state="error", message=f"{exc.__class__.__name__}: {str(exc)[:300]}")
    else:
        label = hub.entry_state(entry).label
        _update(entry.name, state="done" if label == "installed" else "needs files", steps=steps,
                message=f"{entry.name}: {label}" + ("; place the files listed below by hand, then refresh"
                                                     if steps else ""))


async def get_model(request: web.Request) -> web.Response:
    """POST /pae/models/get {"name": …}: start downloading an entry (and what it needs); 202 with the job."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    name = body.get("name") if isinstance(body, dict) else None
    entry = catalogue.entry(name) if isinstance(name, str) else None
    if entry is None:
        return web.json_response({"error": f"unknown model {str(name)[:80]!r}; known: "
                                           f"{', '.join(catalogue.names())}"}, status=400)
    started = []
    for wanted in catalogue.with_needs([entry]):
        with _lock:
            if _jobs.get(wanted.name, {}).get("state") == "running":
                continue
            _jobs[wanted.name] = {"name": wanted.name, "state": "running", "done": 0, "total": 0, "file": "",
                                  "message": "", "steps": []}
        threading.Thread(target=_download, args=(wanted,), name=f"pae-get-{wanted.name}", daemon=True).start()
        started.append(wanted.name)
    return web.json_response({"started": started, "job": _jobs.get(entry.name)}, status=202)


ROUTES = (("GET", "/pae/models", list_models), ("POST", "/pae/models/get", get_model))


def route_table() -> list[web.RouteDef]:
    """The routes as aiohttp definitions (a test application adds them the same way)."""
    return [web.route(method, path, handler) for method, path, handler in ROUTES]


def register_routes() -> bool:
    """Add the routes to ComfyUI's server when it runs; False outside it."""
    routes = bridge.server_routes()
    if routes is None:
        return False
    for method, path, handler in ROUTES:
        routes.route(method, path)(handler)
    return True
