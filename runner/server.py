"""Queueing API workflows to ComfyUI servers: upload inputs, queue, follow progress, download outputs.

One job is one workflow run (one input file of a batch). Each server runs one job at a time; a server that
drops out has its job put back for another server, and a job is only put back once its server can no longer
run it, so no job is lost and none is downloaded twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..engine.core.errors import PAEInputError
from ..engine.core.files import claim, resolve_inside
from .jobs import Job, RunError, check_output_folder, plan_jobs

UPLOAD_SUBFOLDER = "pae"


class ServerLost(Exception):
    """The server stopped answering while it held a job; the job may run elsewhere."""


class JobFailed(Exception):
    """The server refused the job or failed while running it; running it elsewhere would fail the same way."""


DEFAULT_MAX_DOWNLOAD_MB = 4096


class OutputError(Exception):
    """A downloaded output could not be written; the file is still on the server."""


@dataclass
class Server:
    url: str  # http(s)://host:port[/prefix], no trailing slash
    name: str
    alive: bool = True
    uploads: dict[Path, str] = field(default_factory=dict)  # local file -> name in the server's input folder

    def endpoint(self, path: str) -> str:
        return self.url + path

    def websocket(self, client_id: str) -> str:
        scheme = "wss" if self.url.startswith("https") else "ws"
        return f"{scheme}{self.url[self.url.index(':'):]}/ws?clientId={client_id}"


def normalise_server_url(text: str) -> str:
    """'host:port' or a full URL -> 'http://host:port[/prefix]', or RunError saying what a server address looks like."""
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise RunError(f"--server '{text}' has a bad port; give it as http://HOST:PORT, e.g. http://127.0.0.1:8188") \
            from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RunError(f"--server '{text}' is not a server address; give it as http://HOST:PORT, "
                       "e.g. http://127.0.0.1:8188")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def format_refusal(server: Server, status: int, body: Any) -> str:
    """ComfyUI's 400 answer to /prompt as one headline plus a line per node error."""
    if not isinstance(body, dict):
        return f"{server.name} refused the workflow (HTTP {status}): {str(body)[:300]}"
    error = body.get("error") or {}
    headline = error.get("message") if isinstance(error, dict) else str(error)
    details = error.get("details") if isinstance(error, dict) else ""
    lines = [f"{server.name} refused the workflow: {headline or 'invalid prompt'}"
             + (f": {details}" if details else "")]
    for node_id, entry in sorted((body.get("node_errors") or {}).items(), key=lambda kv: str(kv[0])):
        for item in entry.get("errors", []):
            text = item.get("message", "")
            if item.get("details"):
                text += f": {item['details']}"
            lines.append(f"  node {node_id} ({entry.get('class_type', '?')}): {text}")
    return "\n".join(lines)


class Board:
    """Console progress: one redrawn line on a terminal, plain lines otherwise; notes always on their own line."""

    def __init__(self, total: int, stream: Any = None):
        self.total, self.finished = total, 0
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.states: dict[str, str] = {}

    def note(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._draw()

    def node(self, server: Server, job: Job, node: str, class_type: str) -> None:
        self.states[server.name] = f"{job.label}: node {node} {class_type}"
        if not self.live:
            self.stream.write(f"[{server.name}] {job.label}: node {node} ({class_type})\n")
            self.stream.flush()
        self._draw()

    def step(self, server: Server, job: Job, node: str, class_type: str, value: int, maximum: int) -> None:
        width = 20
        filled = int(width * value / maximum) if maximum else 0
        self.states[server.name] = (f"{job.label}: node {node} {class_type} "
                                    f"[{'#' * filled}{'.' * (width - filled)}] {value}/{maximum}")
        self._draw()

    def job_done(self, server: Server, job: Job, text: str) -> None:
        self.finished += 1
        self.states.pop(server.name, None)
        self.note(f"[{self.finished}/{self.total}] {text}")

    def clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.live or not self.states:
            return
        line = f"{self.finished}/{self.total} done | " + " | ".join(f"{k} {v}" for k, v in self.states.items())
        columns = 160
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            pass
        self.stream.write("\r\033[K" + line[:max(columns - 1, 20)])
        self.stream.flush()


@dataclass
class Options:
    out_dir: Path
    ui_workflow: dict | None = None
    reconnect_seconds: float = 10.0  # how long a silent server may take to answer again before its job moves on
    poll_seconds: float = 5.0        # how often /history is asked while the websocket is quiet
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_MB * 2 ** 20  # one output file at most (a server could send forever)


class ServerSession:
    """HTTP and websocket calls to one ComfyUI server, mapping network failures to ServerLost."""

    def __init__(self, http: Any, server: Server, options: Options):
        self.http, self.server, self.options = http, server, options

    async def get_json(self, path: str) -> Any:
        import aiohttp

        try:
            async with self.http.get(self.server.endpoint(path)) as response:
                if response.status != 200:
                    raise ServerLost(f"GET {path} answered HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise ServerLost(f"GET {path}: {exc.__class__.__name__}: {exc}") from None

    async def upload(self, path: Path) -> str:
        """Put a local file into the server's input folder (ComfyUI keeps one copy per content) and return its name."""
        import aiohttp

        if path in self.server.uploads:
            return self.server.uploads[path]
        form = aiohttp.FormData()
        form.add_field("type", "input")
        form.add_field("subfolder", UPLOAD_SUBFOLDER)
        try:
            with open(path, "rb") as handle:
                form.add_field("image", handle, filename=path.name, content_type="application/octet-stream")
                async with self.http.post(self.server.endpoint("/upload/image"), data=form) as response:
                    if response.status != 200:
                        raise JobFailed(f"{self.server.name} refused the upload of {path.name}: HTTP {response.status} "
                                        f"{(await response.text())[:200]}")
                    body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise ServerLost(f"upload of {path.name}: {exc.__class__.__name__}: {exc}") from None
        name = f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]
        self.server.uploads[path] = name
        return name

    async def queue(self, workflow: dict, client_id: str) -> str:
        import aiohttp

        body: dict[str, Any] = {"prompt": workflow, "client_id": client_id}
        if self.options.ui_workflow is not None:  # with this job's values, so a dropped file restores them
            from .. import NODE_CLASS_MAPPINGS
            from .workflow import ui_workflow_with_values

            ui = ui_workflow_with_values(self.options.ui_workflow, workflow, NODE_CLASS_MAPPINGS)
            body["extra_data"] = {"extra_pnginfo": {"workflow": ui}}
        try:
            async with self.http.post(self.server.endpoint("/prompt"), json=body) as response:
                text = await response.text()
                try:
                    answer = json.loads(text)
                except ValueError:
                    answer = text
                if response.status != 200 or not isinstance(answer, dict) or answer.get("node_errors"):
                    raise JobFailed(format_refusal(self.server, response.status, answer))
                return answer["prompt_id"]
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise ServerLost(f"POST /prompt: {exc.__class__.__name__}: {exc}") from None

    async def finished(self, prompt_id: str) -> dict | None:
        """The history entry once the job has finished (success or error), else None."""
        history = await self.get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry and (entry.get("status") or {}).get("completed") is not None:
            if entry["status"].get("completed") or entry["status"].get("status_str") == "error":
                return entry
        return None

    async def holds(self, prompt_id: str) -> bool:
        """Whether the job is running or waiting on the server."""
        queue = await self.get_json("/queue")
        items = (queue.get("queue_running") or []) + (queue.get("queue_pending") or [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    async def interrupt(self, prompt_id: str) -> None:
        """Best effort on Ctrl-C: drop the job from the server's queue and stop it if it runs."""
        try:
            async with self.http.post(self.server.endpoint("/queue"), json={"delete": [prompt_id]}):
                pass
            if await self.holds(prompt_id):
                async with self.http.post(self.server.endpoint("/interrupt"), json={"prompt_id": prompt_id}):
                    pass
        except Exception:  # noqa: BLE001 - we are leaving anyway
            pass


def _failure_text(server: Server, entry: dict | None, data: dict | None) -> str:
    """The node and message of a job that failed while running."""
    if data is None and entry:
        for kind, payload in (entry.get("status") or {}).get("messages", []):
            if kind in ("execution_error", "execution_interrupted"):
                data = dict(payload, _kind=kind)
    data = data or {}
    where = f"node {data.get('node_id', '?')} ({data.get('node_type', '?')})"
    if data.get("_kind") == "execution_interrupted":
        return f"interrupted on {server.name} at {where}"
    message = (data.get("exception_message") or "").strip() or "no message"
    kind = data.get("exception_type", "")
    prefix = "" if not kind or message.startswith(kind.rsplit(".", 1)[-1]) else f"{kind.rsplit('.', 1)[-1]}: "
    return f"failed on {server.name} at {where}: {prefix}{message}"


async def follow(session: ServerSession, sockets: list, client_id: str, job: Job, prompt_id: str,
                 board: Board) -> dict:
    """Follow the job over the websocket (sockets[0], replaced on a reconnect) until it finishes; return its history
    entry. Reconnects when the socket drops and the server still answers; raises ServerLost when it does not,
    JobFailed when the job failed."""
    import aiohttp

    ws = sockets[0]
    server, options = session.server, session.options
    class_types = {node_id: node.get("class_type", "?") for node_id, node in job.workflow.items()}
    while True:
        try:
            message = await ws.receive(timeout=options.poll_seconds)
        except asyncio.TimeoutError:
            message = None
        if message is None or message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                               aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            entry = await _settle(session, prompt_id)
            if entry is not None:
                return _checked(server, entry)
            if message is not None:  # the socket dropped but the server still runs the job: listen again
                await ws.close()
                ws = sockets[0] = await _reconnect(session, client_id)
            continue
        if message.type != aiohttp.WSMsgType.TEXT:
            continue  # binary frames are live image previews
        try:
            event = json.loads(message.data)
        except ValueError:
            continue
        data = event.get("data") or {}
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        kind = event.get("type")
        if kind == "executing" and data.get("prompt_id") == prompt_id:
            node = data.get("node")
            if node is None:  # older servers mark the end of a prompt this way
                return _checked(server, await _history_entry(session, prompt_id))
            board.node(server, job, str(node), class_types.get(str(node), "?"))
        elif kind == "progress" and data.get("prompt_id") == prompt_id:
            node = str(data.get("node"))
            board.step(server, job, node, class_types.get(node, "?"), int(data.get("value", 0)),
                       int(data.get("max", 0)))
        elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
            return _checked(server, await _history_entry(session, prompt_id))
        elif kind in ("execution_error", "execution_interrupted") and data.get("prompt_id") == prompt_id:
            raise JobFailed(_failure_text(server, None, dict(data, _kind=kind)))


async def _history_entry(session: ServerSession, prompt_id: str) -> dict:
    """The history entry of a job the server says has ended (it may take a moment to be written)."""
    for _ in range(50):
        entry = await session.finished(prompt_id)
        if entry is not None:
            return entry
        await asyncio.sleep(0.1)
    raise ServerLost(f"the server ended job {prompt_id} but keeps no history of it")


def _checked(server: Server, entry: dict) -> dict:
    status = entry.get("status") or {}
    if status.get("status_str") == "error" or not status.get("completed", True):
        raise JobFailed(_failure_text(server, entry, None))
    return entry


async def _settle(session: ServerSession, prompt_id: str) -> dict | None:
    """After silence or a dropped socket: the finished entry, or None while the server still holds the job.
    ServerLost when the server does not answer within the grace time, or no longer knows the job (a restart
    empties its queue)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + session.options.reconnect_seconds
    while True:
        try:
            # history, queue, history again: a job that ends between the first two asks is in the second history.
            for ask in (session.finished, session.holds, session.finished):
                answer = await ask(prompt_id)
                if answer is True:
                    return None
                if answer:
                    return answer
            raise ServerLost("the server no longer has the job (it restarted?)")
        except ServerLost:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.5)


async def _reconnect(session: ServerSession, client_id: str) -> Any:
    """Open the server's websocket for this client id."""
    try:
        return await session.http.ws_connect(session.server.websocket(client_id), heartbeat=30)
    except Exception as exc:  # noqa: BLE001 - any failure to reconnect means the server is gone
        raise ServerLost(f"its websocket does not open: {exc.__class__.__name__}: {exc}") from None


def _output_files(entry: dict) -> list[dict]:
    """Files the job saved to the server's output folder (previews in temp are left alone)."""
    files = []
    for node_id in sorted(entry.get("outputs", {}), key=lambda k: (len(k), k)):
        for items in entry["outputs"][node_id].values():
            if isinstance(items, list):
                files += [item for item in items if isinstance(item, dict) and item.get("type") == "output"
                          and isinstance(item.get("filename"), str)]
    return files


def _local_name(subfolder: str, filename: str, out_dir: Path) -> Path:
    """Where a server's output goes under out_dir: its subfolders (no '..', '.' or drive parts) and its plain file
    name; a name that is empty, a folder, or holds a NUL is the server's fault and is refused, not guessed at."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", "..") or "\x00" in name or "\x00" in subfolder:
        raise OutputError(f"the server named an output file {filename!r}, which is not a plain file name; it was not "
                          "downloaded")
    parts = [part for part in subfolder.replace("\\", "/").split("/")
             if part not in ("", ".", "..") and ":" not in part]
    relative = Path(*parts, name)
    try:
        resolve_inside(out_dir, str(relative), "filename", what="output folder")
    except PAEInputError:
        raise OutputError(f"the server's output {filename!r} in {subfolder!r} would land outside {out_dir}; it was "
                          "not downloaded") from None
    return relative


def free_names(path: Path) -> Iterator[Path]:
    """path, then path with ' (2)', ' (3)', ... before the suffix: the names a download may claim, in order."""
    yield path
    for number in range(2, 10000):
        yield path.with_name(f"{path.stem} ({number}){path.suffix}")


async def download(session: ServerSession, job: Job, files: list[dict]) -> list[Path]:
    """Fetch each output into the job's folder (written to a temporary name, then renamed into place). If the server
    drops out halfway, this attempt's files are removed again, so the retry elsewhere leaves one complete set."""
    saved: list[Path] = []
    try:
        await _download_each(session, job, files, saved)
    except ServerLost:
        for path in saved:
            path.unlink(missing_ok=True)
        raise
    return saved


async def _download_each(session: ServerSession, job: Job, files: list[dict], saved: list[Path]) -> None:
    import aiohttp

    for item in files:
        subfolder = item.get("subfolder") or ""
        relative = _local_name(str(subfolder), str(item["filename"]), job.out_dir)
        query = {"filename": item["filename"], "subfolder": subfolder, "type": "output"}
        where = f"{session.server.url}/view?filename={item['filename']}&subfolder={subfolder}&type=output"
        target = job.out_dir / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".partial",
                                                 delete=False)
        except OSError as exc:
            raise OutputError(f"cannot write {job.out_dir / relative}: {exc.strerror or exc}; the file stays on the "
                              f"server: {where}") from None
        try:
            with handle:
                async with session.http.get(session.server.endpoint("/view"), params=query) as response:
                    if response.status != 200:
                        raise ServerLost(f"GET /view of {item['filename']} answered HTTP {response.status}")
                    received = 0
                    async for chunk in response.content.iter_chunked(1 << 16):
                        received += len(chunk)
                        if received > session.options.max_download_bytes:
                            limit = session.options.max_download_bytes / 2 ** 20
                            raise OutputError(f"{item['filename']} is larger than {limit:g} MiB "
                                              f"(--max-download-mb); it was not kept: {where}")
                        handle.write(chunk)
            target = claim(Path(handle.name), free_names(target))  # never over an existing file
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}; the file stays on the server: "
                              f"{where}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ServerLost(f"download of {item['filename']}: {exc}") from None
        finally:
            if os.path.exists(handle.name):
                os.unlink(handle.name)
        saved.append(target)


async def run_job(session: ServerSession, job: Job, board: Board) -> None:
    """Upload, queue, follow and download one job on one server."""
    client_id = uuid.uuid4().hex
    sockets = [await _reconnect(session, client_id)]  # opened before queueing, so no message is missed
    prompt_id = None
    try:
        graph = json.loads(json.dumps(job.workflow))
        for (node_id, input_name), path in job.files.items():
            graph[node_id]["inputs"][input_name] = await session.upload(path)
        prompt_id = await session.queue(graph, client_id)
        board.note(f"[{session.server.name}] {job.label}: queued as {prompt_id}")
        entry = await follow(session, sockets, client_id, job, prompt_id, board)
        job.saved = await download(session, job, _output_files(entry))
        job.done_on = session.server.name
    except asyncio.CancelledError:
        if prompt_id is not None:
            await asyncio.shield(session.interrupt(prompt_id))
        raise
    finally:
        await sockets[0].close()


async def check_servers(http: Any, servers: list[Server], options: Options, board: Board) -> list[Server]:
    """Ask each server for /system_stats; keep those that answer as ComfyUI does."""
    import aiohttp

    problems = []
    for server in servers:
        try:
            async with http.get(server.endpoint("/system_stats")) as response:
                status, body = response.status, await response.text()
            try:
                stats = json.loads(body) if status == 200 else None
            except ValueError:
                stats = None
            if not isinstance(stats, dict) or "system" not in stats:
                answer = f"HTTP {status}" if status != 200 else "an answer that is not ComfyUI's"
                problems.append(f"{server.url} answers but is not a ComfyUI server (GET /system_stats gave {answer}); "
                                "give the address ComfyUI prints at start, e.g. http://127.0.0.1:8188")
                server.alive = False
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = getattr(exc, "os_error", None) or exc
            problems.append(f"cannot reach ComfyUI at {server.url} ({getattr(reason, 'strerror', None) or reason}); "
                            "is it running, and started with --listen if it is on another machine?")
            server.alive = False
    live = [s for s in servers if s.alive]
    if not live:
        raise RunError("; ".join(problems))
    for problem in problems:
        board.note(f"pae: warning: {problem}; going on with {len(live)} other server(s)")
    return live


async def run_on_servers(servers: list[Server], jobs: list[Job], options: Options, board: Board) -> list[Job]:
    """Spread the jobs over the servers, one at a time on each; a job whose server drops out goes back to the
    front of the queue. Returns the jobs, each done (saved files) or with an error."""
    import aiohttp

    # Every read waits at most --reconnect-wait: a server that accepts and then freezes loses its job to the others.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=options.reconnect_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        servers = await check_servers(http, servers, options, board)
        pending = deque(jobs)
        open_jobs = len(jobs)
        changed = asyncio.Condition()
        stop = False

        async def worker(server: Server) -> None:
            nonlocal open_jobs, stop
            session = ServerSession(http, server, options)
            while True:
                async with changed:
                    while not pending and open_jobs and not stop:
                        await changed.wait()
                    if not pending or stop:
                        return
                    job = pending.popleft()
                job.servers_tried.append(server.name)
                try:
                    await run_job(session, job, board)
                    board.job_done(server, job, f"{job.label}: done on {server.name}: "
                                   + (", ".join(str(p) for p in job.saved) or "no output files"))
                    for path in job.saved:  # as each job finishes: a batch stopped later keeps what it has
                        print(path, flush=True)
                except ServerLost as exc:
                    server.alive = False
                    board.note(f"pae: {server.name} dropped out ({exc}); {job.label} goes back to the queue")
                    async with changed:
                        pending.appendleft(job)
                        changed.notify_all()
                    return
                except JobFailed as exc:
                    job.error = str(exc)
                    board.job_done(server, job, f"{job.label}: {exc}")
                except OutputError as exc:
                    job.error = str(exc)
                    stop = True  # the next downloads would fail the same way
                    board.job_done(server, job, f"{job.label}: {exc}")
                async with changed:
                    open_jobs -= 1
                    changed.notify_all()

        await asyncio.gather(*(worker(server) for server in servers))
        for job in pending:
            if job.error is None and job.done_on is None:
                job.error = ("not run: " + ("stopped after an output could not be written" if stop else
                             f"no server left (tried {', '.join(job.servers_tried) or 'none'})"))
    return jobs


def server_names(urls: list[str]) -> list[Server]:
    """Servers from --server values (each may list several, comma-separated), each once, in order."""
    servers: list[Server] = []
    for text in urls:
        for part in text.split(","):
            if part.strip():
                url = normalise_server_url(part)
                if url not in [s.url for s in servers]:
                    servers.append(Server(url, urlsplit(url).netloc + urlsplit(url).path))
    if not servers:
        raise RunError("--server needs an address, e.g. --server http://127.0.0.1:8188")
    return servers


def run_workflow_on_servers(workflow: dict, name: str, urls: list[str], inputs: list[str], input_dir: Path,
                            out_dir: Path, ui_workflow: dict | None = None, *, reconnect_seconds: float = 10.0,
                            max_download_mb: float = DEFAULT_MAX_DOWNLOAD_MB, stream: Any = None,
                            sweeps: list[str] | None = None, node_classes: dict[str, type] | None = None) -> int:
    """`pae run --server`: plan, check, run; print what was saved; return the exit code (0 all done, 1 a job failed)."""
    servers = server_names(urls)
    jobs = plan_jobs(workflow, name, inputs, input_dir, out_dir, sweeps, node_classes)
    check_output_folder(out_dir)
    options = Options(out_dir, ui_workflow, reconnect_seconds=reconnect_seconds,
                      max_download_bytes=int(max_download_mb * 2 ** 20))
    board = Board(len(jobs), stream)
    try:
        asyncio.run(run_on_servers(servers, jobs, options, board))
    finally:
        board.clear()
    failed = [job for job in jobs if job.error]
    if failed:
        print(f"pae: {len(failed)} of {len(jobs)} job(s) did not finish: "
              + "; ".join(f"{job.label}: {job.error.splitlines()[0]}" for job in failed), file=stream or sys.stderr)
        return 1
    return 0
