"""A stand-in ComfyUI server for the runner's tests: the HTTP and websocket protocol of ComfyUI's server.py
(/system_stats, /upload/image, /prompt, /ws, /history, /queue, /view), with faults on request."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from pathlib import Path

from aiohttp import web


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeComfy:
    """Runs each queued prompt node by node (executing / progress / executed / execution_success messages) and
    'saves' one output per job whose bytes are b'OUT:' + the uploaded input, so a test can tell which input an
    output came from.

    fault: None; "error" (the job fails in node 3); "crash" (the server dies in the middle of its first job);
    "drop_socket" (the websocket is closed mid-run, the job goes on); "refuse" (every prompt gets a 400);
    "freeze" (once the first job is queued the process stops answering: connections are accepted, nothing comes
    back); "stall_view" (a download sends a few bytes and then nothing); "endless_view" (a download never ends);
    "names" (the outputs are named by the `names` list, hostile names included).
    """

    def __init__(self, root: Path, fault: str | None = None, steps: int = 3, step_seconds: float = 0.01,
                 names: list[str] | None = None):
        self.root, self.fault, self.steps, self.step_seconds = root, fault, steps, step_seconds
        self.names = list(names or [])
        self.frozen = False
        (root / "input").mkdir(parents=True, exist_ok=True)
        (root / "output").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.queued: list[str] = []      # prompt ids in the order they were accepted
        self.graphs: list[dict] = []     # the graphs accepted, in that order
        self.completed: list[tuple[str, str]] = []  # (prompt id, input name) of jobs that ran to the end
        self.history: dict[str, dict] = {}
        self.running: list[str] = []
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.counter = 0
        self.crashed = False
        self.loop = asyncio.new_event_loop()
        self.lock: asyncio.Lock | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeComfy":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.lock = asyncio.Lock()
        app = web.Application()
        app.add_routes([web.get("/system_stats", self.system_stats), web.post("/upload/image", self.upload),
                        web.post("/prompt", self.prompt), web.get("/ws", self.websocket),
                        web.get("/history/{prompt_id}", self.history_entry), web.get("/queue", self.queue),
                        web.post("/queue", self.queue_edit), web.post("/interrupt", self.interrupt),
                        web.get("/view", self.view)])
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)  # frozen handlers must not hold the stop up
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._crash(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    async def _crash(self) -> None:
        if self.crashed:
            return
        self.crashed = True
        for ws in list(self.sockets.values()):
            await ws.close()
        await self.runner.cleanup()

    # ------------------------------------------------------------------ routes
    async def freeze_point(self) -> None:
        """A frozen process: the request was accepted and never answered."""
        while self.frozen:
            await asyncio.sleep(3600)

    async def system_stats(self, request: web.Request) -> web.Response:
        await self.freeze_point()
        return web.json_response({"system": {"comfyui_version": "fake"}, "devices": []})

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        field = form["image"]
        data = field.file.read()
        subfolder = form.get("subfolder", "")
        folder = self.root / "input" / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        name, number = field.filename, 1
        stem, suffix = Path(name).stem, Path(name).suffix
        while (folder / name).exists() and (folder / name).read_bytes() != data:
            name, number = f"{stem} ({number}){suffix}", number + 1
        (folder / name).write_bytes(data)
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        graph, client_id = body["prompt"], body.get("client_id")
        errors = {}
        for node_id, node in graph.items():
            if node["class_type"] == "PAE_SaveAudio" and node["inputs"].get("format") not in ("wav", "flac", "mp3"):
                errors[node_id] = {"errors": [{"type": "value_not_in_list", "message": "Value not in list",
                                               "details": f"format: '{node['inputs'].get('format')}' not in "
                                               "['wav', 'flac', 'mp3']", "extra_info": {}}],
                                   "dependent_outputs": [node_id], "class_type": node["class_type"]}
            if node["class_type"] == "PAE_LoadAudio" and not (self.root / "input" / node["inputs"]["audio"]).is_file():
                errors[node_id] = {"errors": [{"type": "custom_validation_failed", "message": "Failed to validate",
                                               "details": f"file not found: '{node['inputs']['audio']}'",
                                               "extra_info": {}}], "dependent_outputs": [],
                                   "class_type": "PAE_LoadAudio"}
        if self.fault == "refuse" or errors:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation", "message":
                                                "Prompt outputs failed validation", "details": "", "extra_info": {}},
                                      "node_errors": errors}, status=400)
        prompt_id = str(uuid.uuid4())
        if self.fault == "freeze":
            self.frozen = True  # queued, then silence: no answer to this or any later request
            await self.freeze_point()
        self.queued.append(prompt_id)
        self.graphs.append(graph)
        self.running.append(prompt_id)
        asyncio.ensure_future(self.execute(prompt_id, graph, client_id))
        return web.json_response({"prompt_id": prompt_id, "number": len(self.queued), "node_errors": {}})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client_id = request.query.get("clientId", "")
        self.sockets[client_id] = ws
        await ws.send_str(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                                 "sid": client_id}}))
        async for _ in ws:
            pass
        return ws

    async def history_entry(self, request: web.Request) -> web.Response:
        await self.freeze_point()
        prompt_id = request.match_info["prompt_id"]
        return web.json_response({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})

    async def queue(self, request: web.Request) -> web.Response:
        await self.freeze_point()
        return web.json_response({"queue_running": [[0, p, {}, {}, []] for p in self.running[:1]],
                                  "queue_pending": [[i, p, {}, {}, []] for i, p in enumerate(self.running[1:], 1)]})

    async def queue_edit(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def interrupt(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        path = self.root / query.get("type", "output") / query.get("subfolder", "") / query["filename"]
        if self.fault in ("stall_view", "endless_view"):
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"OUT:")
            while True:  # stalled: nothing more; endless: 64 KiB after 64 KiB
                await asyncio.sleep(3600 if self.fault == "stall_view" else 0)
                await response.write(b"x" * (1 << 16))
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes())

    # ------------------------------------------------------------------ execution
    async def send(self, client_id: str, kind: str, data: dict) -> None:
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    async def execute(self, prompt_id: str, graph: dict, client_id: str) -> None:
        async with self.lock:
            await self.send(client_id, "execution_start", {"prompt_id": prompt_id})
            loader = next((n for n in graph.values() if n["class_type"] == "PAE_LoadAudio"), None)
            source = loader["inputs"]["audio"] if loader else ""
            outputs, messages = {}, []
            for node_id in sorted(graph, key=int):
                node = graph[node_id]
                await self.send(client_id, "executing", {"node": node_id, "display_node": node_id,
                                                         "prompt_id": prompt_id})
                for value in range(1, self.steps + 1):
                    await asyncio.sleep(self.step_seconds)
                    await self.send(client_id, "progress", {"value": value, "max": self.steps, "prompt_id": prompt_id,
                                                            "node": node_id})
                    if self.fault == "crash":
                        await self._crash()  # mid-job, never completes: the runner must move the job elsewhere
                        return
                    if self.fault == "drop_socket" and value == 1 and client_id in self.sockets:
                        await self.sockets.pop(client_id).close()
                if self.fault == "error" and node_id == "3":
                    data = {"prompt_id": prompt_id, "node_id": node_id, "node_type": node["class_type"],
                            "executed": [], "exception_message": "boom in the fake node",
                            "exception_type": "RuntimeError", "traceback": ["..."]}
                    messages.append(["execution_error", data])
                    await self.send(client_id, "execution_error", data)
                    self.running.remove(prompt_id)
                    self.history[prompt_id] = {"prompt": [0, prompt_id, graph, {}, []], "outputs": {},
                                               "status": {"status_str": "error", "completed": False,
                                                          "messages": messages}}
                    return
                if node["class_type"] == "PAE_SaveAudio":
                    self.counter += 1
                    name = f"PAE_{self.counter:05d}_.flac"
                    target = self.root / "output" / "audio" / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(b"OUT:" + (self.root / "input" / source).read_bytes())
                    files = [{"filename": name, "subfolder": "audio", "type": "output"}]
                    if self.fault == "names":
                        files = [{"filename": n, "subfolder": "audio", "type": "output"} for n in self.names]
                    outputs[node_id] = {"audio": files,
                                        "images": [{"filename": "spec.png", "subfolder": "", "type": "temp"}]}
                    await self.send(client_id, "executed", {"node": node_id, "display_node": node_id,
                                                            "output": outputs[node_id], "prompt_id": prompt_id})
            self.running.remove(prompt_id)
            await self.send(client_id, "execution_success", {"prompt_id": prompt_id})
            await asyncio.sleep(0.05)  # ComfyUI writes the history after the success message
            self.history[prompt_id] = {"prompt": [0, prompt_id, graph, {}, []], "outputs": outputs,
                                       "status": {"status_str": "success", "completed": True, "messages": []}}
            self.completed.append((prompt_id, source))
