"""Reading released weight files safely: torch pickles weights-only, safetensors; clear errors for anything else."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from .errors import PAEInputError

# Single weight files the pack reads itself (adapters, AudioMAE, converted checkpoints) ...
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# ... and the weight files diffusers' and transformers' from_pretrained read in a model folder.
LIBRARY_WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Torch pickles among them: `pae models convert` writes a `<stem>.safetensors` twin beside each, which is read instead.
PICKLE_SUFFIXES = tuple(s for s in CHECKPOINT_SUFFIXES if s != ".safetensors")


def safetensors_twin(path: Path) -> Path:
    """Where `pae models convert` writes a pickle's safetensors copy: the same name with .safetensors, beside it."""
    return path.with_suffix(".safetensors")


def prefer_safetensors(path: Path) -> Path:
    """A pickle's safetensors twin when one exists beside it (so no pickle is read at all), else the path itself."""
    if path.suffix in PICKLE_SUFFIXES and safetensors_twin(path).is_file():
        return safetensors_twin(path)
    return path


def hide_twins(names: Iterable[str]) -> list[str]:
    """Sorted listed names without a `.safetensors` whose pickle twin is listed too: the pickle's name is the one
    workflows store, and choosing it loads the twin."""
    names = set(names)
    pickles = {name.rsplit(".", 1)[0] for name in names if name.endswith(PICKLE_SUFFIXES)}
    return sorted(n for n in names if not (n.endswith(".safetensors") and n[: -len(".safetensors")] in pickles))


def list_weight_files(kinds: Iterable[str]) -> list[str]:
    """Weight files of every models/<kind>/ root of the kinds, one name each (twins shown once, see hide_twins)."""
    from .loading import list_model_files  # loading imports this module

    return hide_twins(name for kind in kinds for name in list_model_files(kind))


def find_weight_file(kinds: Sequence[str], name: str, input_name: str, hint: str, label: str = "") -> tuple[Path, str]:
    """(path, kind) of a listed weight file in the first kind whose folders hold it, or its safetensors twin: beside
    the named file, or alone where the pickle was deleted after converting. Not found: the first kind's error."""
    from .loading import find_model  # loading imports this module

    first: PAEInputError | None = None
    for kind in kinds:
        candidates = [name]
        if name.endswith(PICKLE_SUFFIXES):
            candidates.append(name.rsplit(".", 1)[0] + ".safetensors")
        for candidate in candidates:
            try:
                path = find_model(kind, candidate, input_name, hint, folder=False, label=label)
            except PAEInputError as exc:
                first = first or exc
                continue
            return prefer_safetensors(path), kind
    if first is None:
        raise ValueError("no model kinds given")
    raise first


def storable_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict safetensors can write: a tensor that shares memory with an earlier one (tied weights) or is not
    contiguous becomes its own copy; the values are unchanged."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone(memory_format=torch.contiguous_format) if pointer in seen or \
            not tensor.is_contiguous() else tensor
        if tensor.numel():
            seen.add(pointer)
    return out


def read_checkpoint(path: Path, input_name: str, label: str, fix: str, *, allowed_classes: Iterable[type] = ()) -> Any:
    """A weights file's contents: safetensors, or a torch pickle unpickled weights-only (memory-mapped if possible).

    `allowed_classes` are plain data classes a released pickle is known to carry besides tensors (e.g. a training
    script's argparse.Namespace); nothing else that could run code on unpickling is accepted.
    """
    if not path.is_file():
        raise PAEInputError(input_name, f"{label} '{path.name}' does not exist; {fix}.")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in the Rust reader with its own types
            raise PAEInputError(input_name, f"{label} '{path.name}' is not a readable safetensors file "
                                f"({exc.__class__.__name__}: {str(exc)[:200]}); {fix}.") from None
    try:
        with torch.serialization.safe_globals(list(allowed_classes)):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy format: no mmap
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported" in text:
            found = next((line.strip() for line in text.splitlines() if "Unsupported" in line), text[:160])
            raise PAEInputError(input_name, f"{label} '{path.name}' holds Python objects besides tensors "
                                f"({found[:200]}); the pack only reads weights (torch.load weights_only) so that a "
                                f"file cannot run code when loaded; {fix}.") from None
        raise PAEInputError(input_name, f"{label} '{path.name}' is not a torch checkpoint ({text[:200]}); "
                                f"{fix}.") from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files fail in many ways; all mean the same here
        raise PAEInputError(input_name, f"{label} '{path.name}' is not a torch checkpoint ({exc.__class__.__name__}: "
                            f"{str(exc)[:200]}); {fix}.") from None


def tensor_dict(data: Any, input_name: str, label: str, fix: str) -> dict[str, torch.Tensor]:
    """Check a checkpoint's contents are a flat {name: tensor} state dict."""
    if not isinstance(data, dict) or not data:
        raise PAEInputError(input_name, f"{label} holds {type(data).__name__}, not a state dict of tensors; {fix}.")
    wrong = [str(k) for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if wrong:
        raise PAEInputError(input_name, f"{label} is not a flat state dict of tensors (entries such as "
                            f"{', '.join(wrong[:3])} are not tensors); {fix}.")
    return data


def key_report(missing: list[str], unexpected: list[str], limit: int = 6) -> str:
    """'missing: a, b (+3 more); unexpected: c' for an error message."""
    parts = []
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {title}: {', '.join(sorted(keys)[:limit])}{more}")
    return "; ".join(parts)


def build_and_load(factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], *, what: str, source: str,
                   fix: str, input_name: str, prefix: str = "") -> torch.nn.Module:
    """Build a module without allocating weights, then take every weight from state: no key missing or left over."""
    try:
        with torch.device("meta"):
            module = factory()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise PAEInputError(input_name, f"{what} could not be built for {source} ({exc.__class__.__name__}: "
                            f"{str(exc)[:200]}); {fix}.") from None
    expected = set(module.state_dict())
    missing = [prefix + k for k in expected - set(state)]
    unexpected = [prefix + k for k in set(state) - expected]
    if missing or unexpected:
        raise PAEInputError(input_name, f"{source} does not fit {what}: {key_report(missing, unexpected)}; {fix}.")
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise PAEInputError(input_name, f"{source} has weights of the wrong shape for {what} ({detail}); "
                            f"{fix}.") from None
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{what}: {', '.join(left[:4])} were not loaded")
    return module.eval()
