"""Model folders: listing, recognising a backbone from a folder's contents, loading once and caching."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..core import loading
from ..core.checkpoints import LIBRARY_WEIGHT_SUFFIXES
from ..core.errors import PAEInputError
from ..core.files import read_json_dict
from .base import Backbone

# Model kinds whose subfolders a loader lists, and the weight files that make a component complete.
BACKBONE_KINDS = ("diffusers", "tango", "musicgen")
DIFFUSION_KINDS = ("diffusers", "tango")  # what Load Audio Model lists (MusicGen has its own loader)
# Components of a diffusers folder that carry weights (the rest are tokenizers, schedulers, feature extractors).
_NON_WEIGHT_LIBS = ("Tokenizer", "Scheduler", "FeatureExtractor", "Processor")


def detect_family(folder: Path) -> str:
    """Name the backbone a folder holds ('audioldm2', ...) from its files, or explain what is wrong."""
    index = read_json_dict(folder / "model_index.json")
    if index is not None:
        pipeline = index.get("_class_name", "")
        if pipeline == "AudioLDM2Pipeline":
            encoder_2 = index.get("text_encoder_2", [None, None])
            if isinstance(encoder_2, list) and encoder_2[-1] == "VitsModel":
                raise PAEInputError("model_name", f"'{folder.name}' is AudioLDM2-speech (a VITS text encoder, "
                                    "phonemes instead of words); prompt edits need a text model: use audioldm2, "
                                    "audioldm2-large or audioldm2-music.")
            return "audioldm2"
        if pipeline == "AudioLDMPipeline":
            raise PAEInputError("model_name", f"'{folder.name}' is AudioLDM v1, which has no text cross-attention "
                                "(text enters as a class embedding), so word-level edits cannot work; use AudioLDM2.")
        if pipeline in ("StableAudioPipeline",):
            return "stable_audio"
        raise PAEInputError("model_name", f"'{folder.name}' is a diffusers '{pipeline or 'unknown'}' folder, not an "
                            "audio model this pack knows (AudioLDM2 base/large/music, Stable Audio Open).")
    if (folder / "main_config.json").is_file():
        return "tango"
    sat = read_json_dict(folder / "model_config.json")
    if sat is not None and sat.get("model_type") == "diffusion_cond":
        return "stable_audio"  # a stable-audio-tools checkpoint (Stable Audio Open, SAO-Instruct)
    config = read_json_dict(folder / "config.json")
    if config is not None and str(config.get("model_type", "")).startswith("musicgen"):
        return "musicgen"
    found = sorted(os.listdir(folder))[:12] if folder.is_dir() else []
    raise PAEInputError("model_name", f"'{folder.name}' is not a model folder this pack recognises: it needs "
                        "model_index.json (a diffusers folder such as AudioLDM2), main_config.json (Tango) or a "
                        f"MusicGen config.json. Found: {', '.join(found) or 'nothing'}.")


def missing_components(folder: Path) -> list[str]:
    """Parts a diffusers folder's model_index.json lists that are absent or have no weights."""
    index = read_json_dict(folder / "model_index.json") or {}
    missing = []
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / component
        if not sub.is_dir() or not any(sub.iterdir()):
            missing.append(f"{component}/ (folder missing)")
            continue
        if any(tag in str(spec[1]) for tag in _NON_WEIGHT_LIBS):
            continue
        if not (sub / "config.json").is_file():
            missing.append(f"{component}/config.json")
        if not any(f.name.endswith(LIBRARY_WEIGHT_SUFFIXES) for f in sub.iterdir()):
            missing.append(f"{component}/ weights (*.safetensors or *.bin)")
    return missing


def _recognised(folder: Path) -> bool:
    try:
        detect_family(folder)
    except PAEInputError:
        return False
    return True


def list_models(kinds: tuple[str, ...] = BACKBONE_KINDS) -> list[str]:
    """Recognised model folders as 'kind/name', for a loader's dropdown (cheap: reads small JSON files only)."""
    return sorted(f"{kind}/{name}" for kind in kinds for name in loading.list_model_folders(kind, _recognised))


def find_model_folder(model_name: str) -> Path:
    """Resolve 'kind/name' to a folder inside the registered model folders."""
    kind, _, name = model_name.partition("/")
    if kind not in BACKBONE_KINDS or not name:
        raise PAEInputError("model_name", f"'{model_name}' should read 'kind/name' with kind one of "
                            f"{', '.join(BACKBONE_KINDS)}, e.g. 'diffusers/audioldm2-large'.")
    return loading.find_model(kind, name, "model_name", "download it there (the README lists where each model goes)",
                               folder=True, label="model folder")


def _load_audioldm2(folder: Path, dtype, device) -> Backbone:
    from diffusers import AudioLDM2Pipeline

    from .audioldm2 import AudioLDM2Backbone

    pipeline = AudioLDM2Pipeline.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return AudioLDM2Backbone(pipeline, folder.name, folder)


def _load_tango(folder: Path, dtype, device) -> Backbone:
    from .tango import load_tango_backbone

    return load_tango_backbone(folder, dtype, device)


def _load_stable_audio(folder: Path, dtype, device) -> Backbone:
    from .stable_audio import load_stable_audio_backbone

    return load_stable_audio_backbone(folder, dtype, device)


_LOADERS: dict[str, Callable] = {"audioldm2": _load_audioldm2, "tango": _load_tango,
                                 "stable_audio": _load_stable_audio}


def load_backbone(model_name: str, dtype_name: str = "auto") -> Backbone:
    """Load a backbone once per (folder, dtype, device) and share it while in use; inside ComfyUI it is
    memory-managed.
    """
    folder = find_model_folder(model_name)
    family = detect_family(folder)
    if family == "musicgen":
        raise PAEInputError("model_name", f"'{model_name}' is MusicGen, which generates token by token rather than by "
                            "diffusion; load it with Load MusicGen (PAE) and edit with MusicGen Edit.")
    if family not in _LOADERS:
        raise PAEInputError("model_name", f"'{model_name}' is a {family} model; this version of the pack edits with "
                            f"{', '.join(sorted(_LOADERS))} only.")
    missing = missing_components(folder)
    if missing:
        raise PAEInputError("model_name", f"'{model_name}' is incomplete, missing: {', '.join(missing)}. "
                            "Download the whole folder again.")
    return loading.load_model(folder, dtype_name, lambda device, dtype: _LOADERS[family](folder, dtype, device),
                               label=f"{family}:{folder.name}", input_name="model_name", what=f"'{model_name}'",
                               fix="the folder may be damaged or from another version.")


def clear_cache() -> None:
    """Forget every loaded model (tests; ComfyUI frees memory through its own model management)."""
    loading.clear_cache()
