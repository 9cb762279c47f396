"""Getting catalogue models from a Hugging Face hub: one commit per repository, only the files the pack reads, each
file's size and hash checked against the hub's listing for that commit, and every part claimed whole."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core import bridge
from ..core.files import atomic_write_bytes, claim, claim_folder, read_json_dict
from . import catalogue
from .catalogue import HubFiles, ModelEntry, Part

MANIFEST = ".pae-manifest.json"      # inside a folder part; beside a file part as .<name>.pae-manifest.json
DOWNLOAD_PREFIX = ".pae-download-"   # hidden, so no loader lists a download in progress
_PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
# Formats of the same weights the pack never reads.
_SKIPPED = ("*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*flax_model*", "*tf_model*", "*.fp16.*", "*fp16*",
            "*.md", ".gitattributes")
# A hub listing far above the catalogue's size is refused (a wrong repository or a hostile endpoint).
SIZE_SLACK = 1.5
SIZE_SLACK_MB = 64
READ_TIMEOUT_S = 30.0  # connect and every read of a download
ProgressFn = Callable[[str, int, int], None]  # (file, bytes done, bytes total)


class GetError(Exception):
    """A download or check that cannot go on, in one line that says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository at a commit, as the hub lists it."""

    path: str
    size: int
    sha256: str = ""   # LFS files
    git_oid: str = ""  # small files stored in git: the blob's SHA-1


def endpoint() -> str:
    """The hub to download from: $HF_ENDPOINT (a mirror, or a local stand-in) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_error(exc: BaseException, repo: str, revision: str) -> GetError:
    """One line for a failed hub call: gated, absent, unreachable or refused."""
    from huggingface_hub import errors

    name = exc.__class__.__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, errors.GatedRepoError) or status in (401, 403):
        return GetError(f"{repo} is gated: accept its licence at https://huggingface.co/{repo} while logged in, then "
                        "run `hf auth login` or set HF_TOKEN, and run this again.")
    if isinstance(exc, errors.RevisionNotFoundError):
        return GetError(f"{repo} has no revision {revision} on {endpoint()}; the catalogue's pinned commit may have "
                        "been removed: report it, or download the folder by hand.")
    if isinstance(exc, errors.RepositoryNotFoundError) or status == 404:
        return GetError(f"{repo} (or a file of it) was not found on {endpoint()}.")
    if any(word in name for word in ("Protocol", "ReadError", "Incomplete", "Stream")):
        return GetError(f"{repo}: the transfer was cut ({name}); run the same command again to resume.")
    if isinstance(exc, (errors.LocalEntryNotFoundError, OSError, TimeoutError)) or "Connect" in name \
            or "Timeout" in name:
        return GetError(f"cannot reach {endpoint()} ({name}); check the network, or set HF_ENDPOINT to a mirror.")
    first_line = (str(exc).splitlines() or [""])[0][:160]
    return GetError(f"{repo}: the hub refused the request ({name}: {first_line}).")


def list_repository(hub: HubFiles, token: str | None = None) -> tuple[str, list[RemoteFile]]:
    """The commit the entry's revision names and every file of the repository at it."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint(), token=token).model_info(hub.repo, revision=hub.revision or None,
                                                                  files_metadata=True, timeout=READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one line
        raise _hub_error(exc, hub.repo, hub.revision) from None
    commit = str(info.sha or "")
    if hub.revision and commit != hub.revision:
        raise GetError(f"{hub.repo}: {endpoint()} answered commit {commit[:12]} for the pinned {hub.revision[:12]}; "
                       "refusing files of another revision.")
    files = []
    for sibling in info.siblings or []:
        lfs = getattr(sibling, "lfs", None)
        size = getattr(lfs, "size", None) if lfs else getattr(sibling, "size", None)
        if size is None:
            raise GetError(f"{hub.repo}: the hub lists no size for {sibling.rfilename}; cannot verify it.")
        files.append(RemoteFile(sibling.rfilename, int(size), str(getattr(lfs, "sha256", "") or "") if lfs else "",
                                str(getattr(sibling, "blob_id", "") or "")))
    return commit, files


def select_files(files: list[RemoteFile], patterns: tuple[str, ...]) -> list[RemoteFile]:
    """The files the pack reads: matched by the patterns, one weight format per folder (safetensors over pickles)."""
    chosen = [f for f in files if any(fnmatch.fnmatch(f.path, p) for p in patterns)
              and not any(fnmatch.fnmatch(posixpath.basename(f.path), s) for s in _SKIPPED)]
    with_safetensors = {posixpath.dirname(f.path) for f in chosen if f.path.endswith(".safetensors")}
    return [f for f in chosen if not (posixpath.dirname(f.path) in with_safetensors
                                      and (f.path.endswith(_PICKLE_SUFFIXES) or f.path.endswith(".bin.index.json")))]


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def git_blob_oid(path: Path) -> str:
    """The git object id of a file stored in git rather than LFS: SHA-1 of 'blob <size>\\0' + bytes."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, size: int, sha256: str = "", git_oid: str = "") -> str:
    """'' when the file has the listed size and hash, else what differs."""
    if not path.is_file():
        return "missing"
    actual = path.stat().st_size
    if actual != size:
        return f"{actual} bytes, expected {size}"
    if sha256 and sha256_of(path) != sha256:
        return "SHA-256 differs from the hub's"
    if not sha256 and git_oid and git_blob_oid(path) != git_oid:
        return "git hash differs from the hub's"
    return ""


# ------------------------------------------------------------------------------------------------ where parts live
def part_kind(part: Part) -> tuple[str, str]:
    """(model kind, path inside that kind's folder) of a part."""
    kind, _, rest = part.path.partition("/")
    return kind, rest


def installed_path(part: Part) -> Path | None:
    """Where the part is, in any folder of its kind (ComfyUI's extra model paths included), or None."""
    kind, rest = part_kind(part)
    for root in bridge.model_folders(kind):
        path = root / rest if rest else root
        if path.is_file() if part.is_file else path.is_dir():
            return path
    return None


def download_path(part: Part) -> Path:
    """Where a download of the part goes: the first folder of its kind."""
    kind, rest = part_kind(part)
    root = bridge.model_folders(kind)[0]
    return root / rest if rest else root


def manifest_path(path: Path, is_file: bool) -> Path:
    """The manifest a download writes with a part: the commit and every file's size and hash."""
    return path.parent / f".{path.name}{MANIFEST}" if is_file else path / MANIFEST


def _satisfied(folder: Path, name: str) -> bool:
    """A required file, or its safetensors copy (`pae models convert`) where it is a pickle."""
    if (folder / name).is_file():
        return True
    stem, suffix = os.path.splitext(name)
    return suffix in _PICKLE_SUFFIXES and (folder / f"{stem}.safetensors").is_file()


@dataclass
class PartState:
    """What is there of one part."""

    part: Part
    path: Path | None
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when the part is there with every required file and nothing found wrong."""
        return self.path is not None and not self.missing and not self.problems


def part_state(part: Part, *, verify: bool = False) -> PartState:
    """Presence (and with verify: sizes and hashes from the manifest, parsable configs) of one part."""
    path = installed_path(part)
    state = PartState(part, path)
    if path is None:
        state.missing.append(part.path)
        return state
    folder = path.parent if part.is_file else path
    state.missing += [name for name in part.required if not _satisfied(folder, name)]
    state.missing += [h.file for h in part.by_hand if h.file not in part.required and not _satisfied(folder, h.file)]
    if not verify:
        return state
    manifest = read_json_dict(manifest_path(path, part.is_file))
    files = manifest.get("files", {}) if manifest else {}
    for name, info in (files.items() if isinstance(files, dict) else ()):
        target = path if part.is_file else folder / name
        problem = verify_file(target, int(info.get("size", -1)), str(info.get("sha256", "")),
                              str(info.get("git_oid", ""))) if isinstance(info, dict) else "manifest entry garbled"
        if problem == "missing":
            if not _satisfied(target.parent, target.name) and name not in state.missing:
                state.missing.append(name)
        elif problem:
            state.problems.append(f"{name}: {problem}")
    for hand in part.by_hand:
        if hand.sha256 and (folder / hand.file).is_file() and sha256_of(folder / hand.file) != hand.sha256:
            state.problems.append(f"{hand.file}: SHA-256 differs from the release's {hand.sha256[:12]}…")
    if not part.is_file:
        for config in sorted(folder.rglob("*.json")):
            if not config.name.startswith(".") and read_json_dict(config) is None:
                state.problems.append(f"{config.relative_to(folder)}: not readable JSON")
    return state


@dataclass
class EntryState:
    """Installed, partly installed or missing, with what is missing or wrong."""

    entry: ModelEntry
    parts: list[PartState]

    @property
    def label(self) -> str:
        """installed / partly installed / missing / damaged."""
        if all(p.complete for p in self.parts):
            return "installed"
        if any(p.problems for p in self.parts):
            return "damaged"
        return "missing" if all(p.path is None for p in self.parts) else "partly installed"

    @property
    def details(self) -> list[str]:
        """What is missing or wrong, one item per file."""
        lines = []
        for state in self.parts:
            if state.path is None:
                lines.append(f"{state.part.path} is not there")
                continue
            lines += [f"{state.part.path}/{m} is missing" for m in state.missing]
            lines += [f"{state.part.path}/{x}" for x in state.problems]
        return lines


def entry_state(entry: ModelEntry, *, verify: bool = False) -> EntryState:
    """The state of every part of an entry."""
    return EntryState(entry, [part_state(p, verify=verify) for p in entry.parts])


# ----------------------------------------------------------------------------------------------------- downloads
def _fetch_file(hub: HubFiles, commit: str, remote: RemoteFile, target: Path, token: str | None,
                progress: ProgressFn | None) -> None:
    """Stream one file to target through a hidden .partial beside it, resuming a partial one with a byte range;
    never more bytes than the hub lists, each read timed out, the result verified (a wrong file is removed)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    partial = target.with_name(f".{target.name}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = partial.stat().st_size if partial.is_file() else 0
    if done > remote.size:
        partial.unlink()
        done = 0
    headers = build_hf_headers(token=token, library_name="prompt-audio-edit")
    if done:
        headers["Range"] = f"bytes={done}-"
    url = hf_hub_url(hub.repo, remote.path, revision=commit, endpoint=endpoint())
    try:
        with get_session().stream("GET", url, headers=headers, timeout=READ_TIMEOUT_S,
                                  follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
                hf_raise_for_status(response)
            if done and response.status_code != 206:  # the server ignored the range: start over
                done = 0
            with open(partial, "ab" if done else "wb") as out:
                for chunk in response.iter_bytes(1 << 16):
                    done += len(chunk)
                    if done > remote.size:
                        raise GetError(f"{hub.repo}/{remote.path}: the server sends more than the {remote.size} "
                                       "bytes it lists; stopped.")
                    out.write(chunk)
                    if progress is not None:
                        progress(remote.path, done, remote.size)
    except GetError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as exc:  # noqa: BLE001 - every transfer failure becomes one line
        error = _hub_error(exc, hub.repo, commit)
        if partial.is_file() and partial.stat().st_size:
            raise GetError(f"{hub.repo}/{remote.path}: the transfer stopped after {partial.stat().st_size} of "
                           f"{remote.size} bytes ({exc.__class__.__name__}); run the same command again to resume."
                           ) from None
        raise error from None
    if done < remote.size:
        raise GetError(f"{hub.repo}/{remote.path}: the transfer stopped after {done} of {remote.size} bytes; run the "
                       "same command again to resume.")
    problem = verify_file(partial, remote.size, remote.sha256, remote.git_oid)
    if problem:
        partial.unlink(missing_ok=True)
        raise GetError(f"{hub.repo}/{remote.path}: {problem}; the file was removed. Run the command again; if it "
                       "repeats, the hub or a proxy is serving other bytes.")
    os.replace(partial, target)


def plan_part(part: Part, token: str | None = None) -> list[tuple[HubFiles, str, list[RemoteFile]]]:
    """Per hub source of a part: the commit and the files to take."""
    plan = []
    for hub in part.hub:
        commit, files = list_repository(hub, token)
        plan.append((hub, commit, select_files(files, hub.patterns)))
    return plan


def get_part(entry: ModelEntry, part: Part, *, token: str | None = None, progress: ProgressFn | None = None,
             report: Callable[[str], None] = print) -> Path | None:
    """Download one part into a hidden staging folder beside its place and claim it whole; None for a part that
    is already there or has to be placed by hand."""
    if installed_path(part) is not None or not part.hub:
        return None
    final = download_path(part)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f"{DOWNLOAD_PREFIX}{final.name}"
    plan = plan_part(part, token)
    total = sum(f.size for _, _, files in plan for f in files)
    limit = (entry.size_mb * SIZE_SLACK + SIZE_SLACK_MB) * 2 ** 20
    if total > limit:
        raise GetError(f"{entry.name}: the hub lists {total / 2 ** 20:.0f} MiB for {part.path}, far above the "
                       f"catalogue's {entry.size_mb:.0f} MiB; refusing (wrong repository or endpoint?).")
    if any(not files for _, _, files in plan):
        raise GetError(f"{entry.name}: no files of {part.path} found in the repository at the pinned commit.")
    report(f"{entry.name}: {part.path} ({total / 2 ** 20:.1f} MiB from "
           + ", ".join(f"{hub.repo}@{commit[:12]}" for hub, commit, _ in plan) + ")")
    manifest: dict[str, Any] = {"entry": entry.name, "endpoint": endpoint(), "files": {},
                                "sources": [{"repo": h.repo, "commit": c} for h, c, _ in plan]}
    content = staging / "content"
    for hub, commit, files in plan:
        for remote in files:
            local = hub.local_path(remote.path)
            target = staging / local if part.is_file else content / local
            if not target.is_file() or verify_file(target, remote.size):
                _fetch_file(hub, commit, remote, target, token, progress)
            manifest["files"][local] = {"size": remote.size, "sha256": remote.sha256, "git_oid": remote.git_oid,
                                        "repo": hub.repo, "path": remote.path, "commit": commit}
    data = json.dumps(manifest, indent=1).encode()
    if part.is_file:
        (name,) = manifest["files"]
        sidecar = manifest_path(final, True)
        if not sidecar.exists():
            atomic_write_bytes(sidecar, data)
        claim(staging / name, [final])
    else:
        atomic_write_bytes(content / MANIFEST, data)
        claim_folder(content, final)
    shutil.rmtree(staging, ignore_errors=True)
    return final


def by_hand_instructions(part: Part) -> list[str]:
    """For files no reachable hub has: the exact source, destination and hash to check."""
    lines = []
    destination = installed_path(part) or download_path(part)
    for hand in part.by_hand:
        if _satisfied(destination, hand.file):
            continue
        lines.append(f"  get by hand: {hand.source}\n    put it at: {destination / hand.file}\n    expected "
                     + (f"SHA-256: {hand.sha256}" if hand.sha256 else "hash: none published (`pae models check` "
                        "checks that it loads)")
                     + (f", about {hand.size_mb:.0f} MiB" if hand.size_mb else ""))
    return lines


def get_entry(entry: ModelEntry, *, token: str | None = None, progress: ProgressFn | None = None,
              report: Callable[[str], None] = print) -> list[str]:
    """Download every hub part of an entry; returns the by-hand steps still open (empty when complete)."""
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    open_steps: list[str] = []
    for part in entry.parts:
        try:
            get_part(entry, part, token=token, progress=progress, report=report)
        except GetError as exc:
            if entry.ungated and "gated" in str(exc):
                copy = catalogue.entry(entry.ungated)
                raise GetError(f"{exc} Or take the ungated copy: `pae models get {entry.ungated}` ({copy.purpose}), "
                               f"then pick {copy.loader_values[0]} in the loader.") from None
            raise
        open_steps += by_hand_instructions(part)
    return open_steps


def check_by_hand(entry: ModelEntry) -> list[str]:
    """Problems of by-hand files that are in place: unreadable checkpoints (read safely, tensors only)."""
    from ..core.checkpoints import read_checkpoint
    from ..core.errors import PAEInputError

    problems = []
    for part in entry.parts:
        folder = installed_path(part)
        for hand in part.by_hand if folder is not None else ():
            path = folder / hand.file
            if not path.is_file() or not path.name.endswith(_PICKLE_SUFFIXES + (".safetensors",)):
                continue
            try:
                read_checkpoint(path, "model", f"'{path.name}'", "download it again", allowed_classes=_ARGS_CLASSES)
            except PAEInputError as exc:
                problems.append(f"{part.path}/{hand.file}: {str(exc).split(': ', 1)[-1]}")
    return problems


# AudioMAE's training script saves its argparse options beside the weights.
_ARGS_CLASSES = (argparse.Namespace,)


def stale_downloads() -> list[Path]:
    """Staging folders of interrupted downloads (a rerun of the same get resumes them)."""
    found = []
    for kind in bridge.MODEL_KINDS:
        for root in bridge.model_folders(kind):
            if root.is_dir():
                found += sorted(p for p in root.iterdir() if p.name.startswith(DOWNLOAD_PREFIX))
    return found
