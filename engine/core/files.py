"""Paths the user names: kept inside their folder, written atomically, numbered like ComfyUI's outputs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import PAEInputError

log = logging.getLogger(__name__)


def resolve_inside(base: str | os.PathLike, name: str, input_name: str, *, what: str = "input folder",
                   follow_links: bool = False) -> Path:
    """Join a user-given relative name to base and refuse anything that would land outside base.

    follow_links: a symbolic link inside base may point anywhere (the user put it there, e.g. a models folder on
    another disk); only the name itself may not climb out. Otherwise the resolved target must be inside base.
    """
    if not isinstance(name, str) or not name.strip():
        raise PAEInputError(input_name, f"no file name given; pick a file from the {what}.")
    check_name(name, input_name)
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) or name.startswith(("\\", "~")):
        raise PAEInputError(input_name, f"'{name}' is an absolute path; give a name relative to the {what} "
                            f"({base}), or copy the file there.")
    root = Path(os.path.realpath(base))
    if follow_links:
        relative = os.path.normpath(name.replace("\\", "/"))
        if relative == ".." or relative.startswith("../"):
            raise PAEInputError(input_name, f"'{name}' points outside the {what} ({root}); paths may not climb out "
                                "with '..'.")
        return root if relative == "." else root / relative
    target = Path(os.path.realpath(root / name))
    if target != root and root not in target.parents:
        raise PAEInputError(input_name, f"'{name}' points outside the {what} ({root}); paths may not climb out "
                            "with '..'.")
    return target


# Longest file name (one path component) the common file systems take, in bytes.
MAX_NAME_BYTES = 255
# How many numbered names a save tries before giving up (another process keeps taking them).
_MAX_CLAIM_TRIES = 10000


def check_name(name: str, input_name: str, what: str = "name") -> str:
    """Refuse a file name or prefix the file system cannot hold: a NUL byte, a component over 255 bytes."""
    if "\x00" in name:
        raise PAEInputError(input_name, f"the {what} contains a NUL character; type it again without it.")
    for part in name.replace("\\", "/").split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES - 20:  # room for the '_00001_.flac' suffix
            raise PAEInputError(input_name, f"the {what} part '{part[:40]}...' is {len(part)} characters long; file "
                                f"names take at most about {MAX_NAME_BYTES - 20} bytes: shorten it.")
    return name


def write_temporary(folder: Path, name: str, data: bytes) -> Path:
    """Write data to a hidden temporary file in folder (the final name is claimed afterwards)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def claim(temporary: Path, candidates: Iterable[Path]) -> Path:
    """Give a complete temporary file the first candidate name that is free, atomically: a hard link fails when the
    name exists, so no file is ever replaced, even by another process saving at the same moment. Where the file
    system has no hard links, an exclusive create claims the name and the file is renamed onto that claim."""
    for path in candidates:
        try:
            os.link(temporary, path)
        except FileExistsError:
            continue
        except OSError:
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            try:
                os.replace(temporary, path)  # onto our own empty claim
            except BaseException:
                os.unlink(path)
                raise
            return path
        os.unlink(temporary)
        return path
    raise FileExistsError(f"no free name for {temporary.name}")


def claim_folder(temporary: Path, final: Path) -> Path:
    """Give a complete temporary folder its final name in one rename, so the folder appears whole or not at all;
    refuses (FileExistsError) where the name is taken, never merging into or replacing what is there."""
    if os.path.lexists(final):
        raise FileExistsError(f"{final} already exists")
    os.rename(temporary, final)  # a non-empty folder of that name, made meanwhile, makes this fail (ENOTEMPTY)
    return final


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write bytes to path, complete or not at all (a temporary name, then claimed); an existing file is refused."""
    return atomic_write_with(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_with(path: Path, write: Callable[[Path], None]) -> Path:
    """Have write(temporary) fill a hidden temporary file beside path (for writers that take a file name), then claim
    path atomically: complete or not at all, an existing file refused (FileExistsError), no temporary left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        try:
            return claim(temporary, [path])
        except FileExistsError:
            raise FileExistsError(f"{path} exists; it is never replaced") from None
    finally:
        if temporary.exists():
            temporary.unlink()


def output_target(output_dir: str | os.PathLike, filename_prefix: str,
                  input_name: str = "filename_prefix") -> tuple[Path, str, str]:
    """(folder, file stem, subfolder relative to output_dir) of a save prefix such as 'audio/edit', inside it."""
    prefix = str(filename_prefix).strip().replace("\\", "/")  # resolve_inside checks the name itself
    if not prefix or prefix.endswith("/"):
        raise PAEInputError(input_name, "the filename prefix needs a file name part, e.g. 'audio/edit'.")
    root = Path(os.path.realpath(output_dir))
    target = resolve_inside(output_dir, prefix, input_name, what="output folder")
    if target == root or target.name in ("", ".", ".."):
        raise PAEInputError(input_name, f"'{filename_prefix}' names the output folder itself, not a file in it; end "
                            "it with a file name part, e.g. 'audio/edit'.")
    subfolder = os.path.relpath(target.parent, root)
    return target.parent, target.name, "" if subfolder == "." else subfolder.replace(os.sep, "/")


def _next_number(folder: Path, stem: str) -> int:
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_\.")
    if not folder.is_dir():
        return 1
    return max((int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(entry))), default=0) + 1


def save_numbered(output_dir: str | os.PathLike, filename_prefix: str, extension: str, contents: Sequence[bytes],
                  input_name: str = "filename_prefix") -> tuple[list[Path], str]:
    """Save each content as the next free `<prefix>_NNNNN_.<ext>` (ComfyUI's numbering) inside output_dir: all of
    them or none (every file is written under a temporary name first), and never over an existing file."""
    folder, stem, subfolder = output_target(output_dir, filename_prefix, input_name)
    temporaries: list[Path] = []
    saved: list[Path] = []
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for data in contents:
                temporaries.append(write_temporary(folder, stem, data))
        except OSError as exc:
            raise PAEInputError(input_name, f"could not write into {folder} ({exc.strerror or exc}; is the disk full "
                                "or the folder read-only?); nothing was saved.") from None
        number = _next_number(folder, stem)
        for temporary in temporaries:
            path = claim(temporary, (folder / f"{stem}_{n:05d}_.{extension}"
                                     for n in range(number, number + _MAX_CLAIM_TRIES)))
            number = int(path.name[len(stem) + 1:].split("_", 1)[0]) + 1
            saved.append(path)
    except BaseException:
        for path in saved:
            path.unlink(missing_ok=True)
        raise
    finally:
        for temporary in temporaries:
            if temporary.exists():
                temporary.unlink()
    return saved, subfolder


def read_json_dict(path: Path) -> dict | None:
    """A JSON file's top-level object, or None when it is missing, not a regular file (a FIFO would block the read),
    unreadable, nested too deeply to parse, or not an object."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, RecursionError):
        log.warning("Prompt Audio Edit: skipping %s: it is not a readable JSON object", path)
        return None


def content_hash(path: Path) -> str:
    """SHA-256 of a regular file's bytes, read in 1 MiB blocks (bounded memory); '' for anything else."""
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
