"""Model folders and files of every kind, and the one way a model is loaded: once per (path, dtype, device),
errors explained, and inside ComfyUI handed to its memory management. Every loader goes through here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Hashable, TypeVar

import torch

from . import bridge
from .cache import LoadCache
from .checkpoints import CHECKPOINT_SUFFIXES
from .errors import PAEInputError
from .files import resolve_inside

T = TypeVar("T")

_cache: LoadCache[Any] = LoadCache()


class LoadedModel:
    """What every loaded model shares: its weight-bearing parts and the memory manager load_model gives it."""

    managed: Any = None  # bridge.ManagedModel, set by load_model
    # Parts ComfyUI manages on their own (part -> names in `modules`): e.g. the text encoders are offloaded once the
    # prompts are encoded, so the denoiser has the GPU for the steps. Modules named in no part form one more part.
    parts: dict[str, tuple[str, ...]] = {}

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part by name, for device placement and memory accounting."""
        raise NotImplementedError

    def activate(self, part: str | None = None) -> None:
        """Bring a part's weights (or all of them) to the compute device (ComfyUI may have offloaded them); call it
        before the part computes."""
        if self.managed is not None:
            self.managed.activate(part)


def list_model_folders(kind: str, accept: Callable[[Path], bool]) -> list[str]:
    """Names of the subfolders of every models/<kind>/ root that `accept` recognises (it should read small files
    only).
    """
    names = set()
    for root in bridge.model_folders(kind):
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and accept(entry):
                names.add(entry.name)
    return sorted(names)


def list_model_files(kind: str, suffixes: tuple[str, ...] = CHECKPOINT_SUFFIXES) -> list[str]:
    """Weight files under every models/<kind>/ root, as relative names (subfolders included)."""
    names = set()
    for root in bridge.model_folders(kind):
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if file.endswith(suffixes) and not file.startswith("."):
                    names.add(os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/"))
    return sorted(names)


def find_model(kind: str, name: str, input_name: str, hint: str, *, folder: bool, label: str = "") -> Path:
    """Resolve a listed model name (a folder, or a file when folder=False) inside every models/<kind>/ root."""
    roots = bridge.model_folders(kind)
    for root in roots:
        path = resolve_inside(root, name, input_name, what=f"models/{kind} folder", follow_links=True)
        if (path.is_dir() if folder else path.is_file()):
            return path
    what = label or ("folder" if folder else "file")
    raise PAEInputError(input_name, f"no {what} '{name}' in {', '.join(str(r) for r in roots)}; {hint}, then refresh "
                        "the page.")


def cached(key: Hashable, load: Callable[[], T]) -> T:
    """The one load cache: load() runs once per key while the result is in use."""
    return _cache.get_or_load(key, load)


def load_model(path: Path, dtype_name: str, build: Callable[[torch.device, torch.dtype], T], *, label: str,
               input_name: str, what: str, fix: str) -> T:
    """Build a model from path once per (path, dtype, device) and share it; its `modules` are memory-managed.

    build(device, dtype) returns an object with a `modules` dict (weight-bearing parts); a failure other than a
    PAEInputError becomes one line: 'could not load {what} (Error: detail); {fix}'.
    """
    device = bridge.torch_device()
    dtype = bridge.choose_dtype(dtype_name, device)

    def load() -> T:
        try:
            model = build(device, dtype)
        except (PAEInputError, bridge.Interrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - below: the environment, not the folder, when an import failed
            if isinstance(exc, ImportError) or str(exc).startswith("Failed to import"):
                raise PAEInputError(input_name, environment_message(exc)) from None
            raise _folder_error(exc, what, fix, input_name) from None
        model.managed = bridge.ManagedModel(model.modules, device, label, getattr(model, "parts", None))
        return model

    return cached((os.path.realpath(path), str(dtype), str(device)), load)


def _folder_error(exc: Exception, what: str, fix: str, input_name: str) -> PAEInputError:
    return PAEInputError(input_name, f"could not load {what} ({exc.__class__.__name__}: {str(exc)[:300]}); {fix}")


def environment_message(exc: BaseException) -> str:
    """A failed import while loading (diffusers and transformers import lazily, e.g. a broken torchaudio wheel):
    name the import and how to repair the Python environment; the model folder is not the cause."""
    import re

    text = str(exc)
    found = (re.findall(r"No module named '([\w.]+)'", text) or re.findall(r"from '([\w.]+)'", text)
             or re.findall(r"import ([\w.]+)", text))
    module = getattr(exc, "name", None) or (found[-1] if found else "a module")
    cause = text.splitlines()[-1].strip() if text else exc.__class__.__name__
    return (f"a Python import failed while loading ({module}: {cause[:200]}); the model folder is not the cause. "
            f"Repair the Python environment ComfyUI runs in, e.g. `python -m pip install --force-reinstall "
            f"{module.split('.')[0]}` (or uninstall it if nothing needs it), then restart.")


def keep_models_loaded(keep: bool = True) -> None:
    """Keep every model loaded from now on (a batch worker between jobs), or go back to weak sharing."""
    _cache.keep_loaded(keep)


def load_count() -> int:
    """How many models this process has loaded (a batch worker reports it: each model should load once)."""
    return _cache.loads


def clear_cache() -> None:
    """Forget every loaded model of every kind (tests; ComfyUI frees memory through its own model management)."""
    _cache.clear()
    bridge.free_memory()
