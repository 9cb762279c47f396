"""A stand-in of the Hugging Face hub's HTTP API on 127.0.0.1, serving tiny models under the catalogue's repository
ids and commits, for trying and testing `pae models get` without network (point HF_ENDPOINT at it).

Run it: python -m prompt_audio_edit.standins.hub [--port 8765] [--root DIR]
It answers what huggingface_hub asks: /api/models/<repo>/revision/<rev> (file list with sizes and hashes) and
/<repo>/resolve/<rev>/<path> (HEAD and GET with byte ranges). Faults for tests: gated repositories answer 401 without
a token, `corrupt` files are served with other bytes, `cut_after` drops a connection mid-file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import re
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_MIN_BYTES = 1024  # files at least this big are served as LFS files (listed with a SHA-256)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class Repository:
    """One repository: a folder of files at one commit."""

    def __init__(self, repo: str, folder: pathlib.Path, commit: str, gated: bool = False):
        self.repo, self.folder, self.commit, self.gated = repo, folder, commit, gated

    def files(self) -> list[str]:
        """Every file's repository path."""
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())

    def listing(self) -> dict[str, Any]:
        """What /api/models/<repo>/revision/<rev>?blobs=true answers."""
        siblings = []
        for path in self.files():
            data = (self.folder / path).read_bytes()
            sibling: dict[str, Any] = {"rfilename": path, "size": len(data), "blobId": _git_oid(data)}
            if len(data) >= LFS_MIN_BYTES:
                sibling["lfs"] = {"sha256": _sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        return {"id": self.repo, "modelId": self.repo, "sha": self.commit, "private": False,
                "gated": "manual" if self.gated else False, "siblings": siblings}


class HubStandIn:
    """The server: add repositories, start, read `requests` (method, path, revision) afterwards, stop."""

    def __init__(self, port: int = 0):
        self.repos: dict[str, Repository] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, repo@rev[:path], Range header)
        self.corrupt: set[tuple[str, str]] = set()   # (repo, path) served with other bytes of the same length
        self.cut_after: dict[tuple[str, str], tuple[int, int]] = {}  # (repo, path) -> (bytes sent, how many times)
        self.tokens: set[str] = {"hf_standin_token"}
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to put in HF_ENDPOINT."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo: str, folder: str | pathlib.Path, commit: str = "", gated: bool = False) -> Repository:
        """Serve folder as repo at commit (a stand-in commit id derived from the name where none is given)."""
        commit = commit or hashlib.sha1(f"stand-in {repo}".encode()).hexdigest()
        self.repos[repo] = Repository(repo, pathlib.Path(folder), commit, gated)
        return self.repos[repo]

    def start(self) -> "HubStandIn":
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "HubStandIn":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                self._send(status, json.dumps({"error": message}).encode(),
                           {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"})

            def _repo(self, name: str, revision: str) -> Repository | None:
                repo = hub.repos.get(name)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository {name} not found")
                    return None
                if revision not in ("main", repo.commit):
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                    return None
                return repo

            def _authorised(self, repo: Repository) -> bool:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                if repo.gated and token not in hub.tokens:
                    self._error(401, "GatedRepo", f"Access to model {repo.repo} is restricted. You must have "
                                "access to it and be authenticated to access it.")
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = unquote(urlsplit(self.path).path)
                api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if api:
                    hub.requests.append(("info", f"{api.group(1)}@{api.group(2) or 'main'}", ""))
                    repo = self._repo(api.group(1), api.group(2) or "main")
                    if repo is not None:
                        self._send(200, json.dumps(repo.listing()).encode(), {"Content-Type": "application/json"})
                    return
                if not resolve:
                    self._error(404, "EntryNotFound", f"no route {path}")
                    return
                name, revision, file = resolve.groups()
                hub.requests.append((self.command.lower(), f"{name}@{revision}:{file}", self.headers.get("Range", "")))
                repo = self._repo(name, revision)
                if repo is None or not self._authorised(repo):
                    return
                target = repo.folder / file
                if ".." in file.split("/") or not target.is_file():
                    self._error(404, "EntryNotFound", f"{file} does not exist at {revision}")
                    return
                data = target.read_bytes()
                etag = _sha256(data) if len(data) >= LFS_MIN_BYTES else _git_oid(data)
                if (name, file) in hub.corrupt:
                    data = bytes(b ^ 0x5A for b in data)
                headers = {"ETag": f'"{etag}"', "X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
                if len(data) >= LFS_MIN_BYTES:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and self.command == "GET":
                    start = min(int(ranged.group(1)), len(data))
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                cut, times = hub.cut_after.get((name, file), (None, 0)) if self.command == "GET" else (None, 0)
                if cut is not None and times <= 1:
                    hub.cut_after.pop((name, file), None)
                elif cut is not None:
                    hub.cut_after[(name, file)] = (cut, times - 1)
                if cut is None:
                    self._send(206 if start else 200, body, headers)
                    return
                self.send_response(206 if start else 200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)

            do_HEAD = do_GET

        return Handler


def build_catalogue_repos(root: str | pathlib.Path) -> dict[str, tuple[pathlib.Path, bool]]:
    """Tiny models laid out as each catalogue repository holds them: repo id -> (folder, gated)."""
    import torch

    from .audioldm2 import build_tiny_audioldm2
    from .clap import build_tiny_clap
    from .common import t5_tokenizer
    from .musicgen import build_tiny_musicgen
    from .stable_audio import build_tiny_stable_audio, save_stable_audio_tools_checkpoint
    from .tango import build_tiny_tango

    root = pathlib.Path(root)
    repos: dict[str, tuple[pathlib.Path, bool]] = {}

    def folder(repo: str) -> pathlib.Path:
        return root / repo.replace("/", "--")

    for name, layout in (("audioldm2-large", "large"), ("audioldm2", "base"), ("audioldm2-music", "base")):
        out = build_tiny_audioldm2(folder(f"cvssp/{name}"), layout=layout)
        torch.save({}, out / "unet" / "diffusion_pytorch_model.bin")  # a duplicate format the getter must skip
        (out / "README.md").write_text("stand-in\n")
        repos[f"cvssp/{name}"] = (out, False)
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "special_tokens_map.json")
    for repo in ("declare-lab/tango2", "declare-lab/tango"):
        out = build_tiny_tango(folder(repo))
        flan = folder("google/flan-t5-large")
        flan.mkdir(parents=True, exist_ok=True)
        for file in tokenizer_files:  # the release has no tokenizer; FLAN-T5's repository has it
            if (out / file).is_file():
                shutil.copy2(out / file, flan / file)
                (out / file).unlink()
        repos[repo] = (out, False)
    repos["google/flan-t5-large"] = (folder("google/flan-t5-large"), False)
    for repo in ("laion/clap-htsat-unfused", "laion/larger_clap_music"):
        repos[repo] = (build_tiny_clap(folder(repo)), False)
    for size in ("small", "medium", "large"):
        out = build_tiny_musicgen(folder(f"facebook/musicgen-{size}"))
        (out / "flax_model.msgpack").write_bytes(b"\0" * 2048)  # another format the getter must skip
        repos[f"facebook/musicgen-{size}"] = (out, False)
    sao = build_tiny_stable_audio(folder("stabilityai/stable-audio-open-1.0"))
    repos["stabilityai/stable-audio-open-1.0"] = (sao, True)
    packed = folder("Comfy-Org/stable-audio-open-1.0_repackaged")
    tools = save_stable_audio_tools_checkpoint(sao, root / "sat-tmp")
    packed.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tools / "model.safetensors"), packed / "stable-audio-open-1.0.safetensors")
    shutil.rmtree(root / "sat-tmp")
    repos["Comfy-Org/stable-audio-open-1.0_repackaged"] = (packed, False)
    t5 = folder("google-t5/t5-base")
    t5.mkdir(parents=True, exist_ok=True)
    for file in ("config.json", "model.safetensors"):
        shutil.copy2(sao / "text_encoder" / file, t5 / file)
    t5_tokenizer().save_pretrained(t5)
    repos["google-t5/t5-base"] = (t5, False)
    return repos


def serve_catalogue(root: str | pathlib.Path, port: int = 0) -> HubStandIn:
    """A started stand-in serving every catalogue repository at the catalogue's commit."""
    from ..engine.install.catalogue import CATALOGUE

    commits = {h.repo: h.revision for e in CATALOGUE for p in e.parts for h in p.hub}
    hub = HubStandIn(port)
    for repo, (path, gated) in build_catalogue_repos(root).items():
        hub.add(repo, path, commits.get(repo, ""), gated)
    return hub.start()


def main() -> None:
    """Serve the stand-in hub until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--root", default=None, help="an empty folder for the tiny models (default: a new temporary "
                        "folder)")
    args = parser.parse_args()
    hub = serve_catalogue(args.root or tempfile.mkdtemp(prefix="pae-hub-"), args.port)
    print(f"stand-in hub at {hub.url}: export HF_ENDPOINT={hub.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
