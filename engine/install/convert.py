"""`pae models convert`: a safetensors copy of every pickle the pack reads (AP-Adapter, AudioMAE, Tango's three
files), so that the loaders, which prefer the copy, never unpickle anything again.

Each copy holds the flat tensor dict its loader reads (AudioMAE: the encoder's weights, its `model` entry without the
decoder and the training script's `args`), read from the pickle by that loader's own reader (weights-only). A copy
goes beside its pickle, except an AudioMAE found in the old models/audio_encoders/: its copy goes to models/audiomae/,
where the loader looks first (ComfyUI's own Audio Encoder Loader lists audio_encoders/ and would show the copy too).
Nothing is replaced: an existing copy is reported and kept, and a copy appears complete under its final name or not
at all (written under a hidden temporary name, then claimed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..backbones.tango_checkpoint import RELEASE_WEIGHTS, read_weights
from ..core import bridge
from ..core.checkpoints import PICKLE_SUFFIXES, safetensors_twin, storable_tensors
from ..core.errors import PAEInputError
from ..core.files import atomic_write_with
from ..methods.ap_adapter import parse_adapter_state, read_adapter_state
from ..models.audiomae import AUDIOMAE_KINDS, read_encoder_state

# What convert_pickles reports for each pickle.
CONVERTED, EXISTS, SKIPPED, FAILED = "converted", "exists", "skipped", "failed"


@dataclass(frozen=True)
class ConvertResult:
    """One pickle and what became of it: converted (written is the copy), exists (a file already has the copy's name;
    kept, nothing read), skipped (not AudioMAE, in the audio_encoders/ folder ComfyUI's own encoders share) or
    failed (detail says why)."""

    source: Path
    written: Path | None
    status: str
    detail: str = ""


@dataclass(frozen=True)
class _Pickle:
    source: Path
    target: Path
    what: str
    read: Callable[[Path], dict[str, torch.Tensor]]
    shared_folder: bool = False  # in audio_encoders/: a file that is not AudioMAE is skipped, not failed


def _read_adapter(path: Path) -> dict[str, torch.Tensor]:
    label = f"the adapter file '{path.name}'"
    state = read_adapter_state(path, label)
    parse_adapter_state(state, label)  # refuse what the loader would refuse
    return state


def _read_audiomae(path: Path) -> dict[str, torch.Tensor]:
    return read_encoder_state(path, f"the AudioMAE file '{path.name}'")


def _pickle_files(root: Path) -> Iterator[Path]:
    """Pickles under a models root (subfolders included, hidden names left out), in a stable order."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            path = Path(folder) / file
            if file.endswith(PICKLE_SUFFIXES) and not file.startswith(".") and path.is_file():
                yield path


def _pickles() -> Iterator[_Pickle]:
    """Every pickle of the kinds the pack reads, each once, with where its copy goes and the loader's reader."""
    for root in bridge.model_folders("ap_adapter"):
        for path in _pickle_files(root):
            yield _Pickle(path, safetensors_twin(path), "AP-Adapter", _read_adapter)
    own, legacy = AUDIOMAE_KINDS
    for root in bridge.model_folders(own):
        for path in _pickle_files(root):
            yield _Pickle(path, safetensors_twin(path), "AudioMAE", _read_audiomae)
    new_root = bridge.model_folders(own)[0]
    for root in bridge.model_folders(legacy):
        for path in _pickle_files(root):
            target = safetensors_twin(new_root / path.relative_to(root))
            yield _Pickle(path, target, "AudioMAE", _read_audiomae, shared_folder=True)
    for root in bridge.model_folders("tango"):
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if root.is_dir() else []
        for folder in folders:
            for name in RELEASE_WEIGHTS:
                if (folder / name).is_file():
                    yield _Pickle(folder / name, safetensors_twin(folder / name), "Tango",
                                  lambda path, folder=folder: read_weights(path, folder))


def _convert(item: _Pickle) -> ConvertResult:
    """Write one copy (see the module docstring); never raises for a file it cannot read or write."""
    if os.path.lexists(item.target):
        return ConvertResult(item.source, None, EXISTS, f"{item.target} is already there; kept as it is")
    try:
        state = storable_tensors(item.read(item.source))
    except PAEInputError as exc:
        if item.shared_folder:
            return ConvertResult(item.source, None, SKIPPED, f"not AudioMAE ({exc.message})")
        return ConvertResult(item.source, None, FAILED, exc.message)
    from safetensors.torch import save_file

    metadata = {"format": "pt", "converted_from": item.source.name}
    try:
        atomic_write_with(item.target, lambda temporary: save_file(state, str(temporary), metadata=metadata))
    except FileExistsError:
        return ConvertResult(item.source, None, EXISTS, f"{item.target} appeared meanwhile; kept as it is")
    except (OSError, ValueError, RuntimeError) as exc:  # disk full, read-only folder, a tensor safetensors refuses
        return ConvertResult(item.source, None, FAILED, f"could not write {item.target} ({exc.__class__.__name__}: "
                             f"{str(exc)[:200]}); nothing was left there")
    size = item.target.stat().st_size
    return ConvertResult(item.source, item.target, CONVERTED, f"{len(state)} tensors, {size / 2**20:.1f} MiB")


def convert_pickles(report: Callable[[str], None] = print) -> list[ConvertResult]:
    """Write a safetensors copy of every AP-Adapter, AudioMAE and Tango pickle in the models folders (see the module
    docstring), reporting one line per pickle; the loaders read the copies from then on."""
    results = []
    seen: set[str] = set()
    for item in _pickles():
        real = os.path.realpath(item.source)
        if real in seen:  # a folder registered twice (extra_model_paths.yaml)
            continue
        seen.add(real)
        result = _convert(item)
        results.append(result)
        if result.status == CONVERTED:
            report(f"converted {item.what} {result.source} -> {result.written} ({result.detail})")
        else:
            report(f"{result.status}: {item.what} {result.source}: {result.detail}")
    if not results:
        kinds = ("ap_adapter", *AUDIOMAE_KINDS, "tango")
        report("no AP-Adapter, AudioMAE or Tango pickles found in "
               + ", ".join(str(f) for kind in kinds for f in bridge.model_folders(kind)))
    elif any(r.status == CONVERTED for r in results):
        report("the loaders now read the .safetensors copies; the pickles may be deleted (workflows keep naming "
               "them: a pickle's name loads its copy)")
    return results
