"""Paths the user names: kept inside their folder, written atomically, numbered like ComfyUI's outputs."""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import PAEInputError


def resolve_inside(base: str | os.PathLike, name: str, input_name: str, *, what: str = "input folder") -> Path:
    """Join a user-given relative name to base and refuse anything that would land outside base."""
    if not isinstance(name, str) or not name.strip():
        raise PAEInputError(input_name, f"no file name given; pick a file from the {what}.")
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) or name.startswith(("\\", "~")):
        raise PAEInputError(input_name, f"'{name}' is an absolute path; give a name relative to the {what} "
                            f"({base}), or copy the file there.")
    root = Path(os.path.realpath(base))
    target = Path(os.path.realpath(root / name))
    if target != root and root not in target.parents:
        raise PAEInputError(input_name, f"'{name}' points outside the {what} ({root}); paths may not climb out with '..'.")
    return target


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write bytes to a temporary file beside path and rename it into place, so no half-written file remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB image [H, W, 3] as PNG bytes (zlib from the standard library; no imaging package needed)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter type 0 on every scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")


def numbered_output_paths(output_dir: str | os.PathLike, filename_prefix: str, extension: str, count: int,
                          input_name: str = "filename_prefix") -> tuple[list[Path], str]:
    """Next free `<prefix>_NNNNN_.<ext>` paths (ComfyUI's numbering) and their subfolder, inside output_dir."""
    prefix = filename_prefix.strip().replace("\\", "/")
    if not prefix or prefix.endswith("/"):
        raise PAEInputError(input_name, "the filename prefix needs a file name part, e.g. 'audio/edit'.")
    target = resolve_inside(output_dir, prefix, input_name, what="output folder")
    folder, stem = target.parent, target.name
    root = Path(os.path.realpath(output_dir))
    subfolder = os.path.relpath(folder, root)
    subfolder = "" if subfolder == "." else subfolder.replace(os.sep, "/")
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_\.")
    counter = 1
    if folder.is_dir():
        used = [int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(entry))]
        counter = max(used, default=0) + 1
    paths = [folder / f"{stem}_{counter + i:05d}_.{extension}" for i in range(count)]
    return paths, subfolder


def read_json_dict(path: Path) -> dict | None:
    """A JSON file's top-level object, or None when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
