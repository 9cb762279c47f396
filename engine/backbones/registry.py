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
CHECKPOINT_KIND = "checkpoints"  # single files, as ComfyUI keeps Stable Audio Open (listed as checkpoints/<file>)
DIFFUSION_KINDS = ("diffusers", "tango", CHECKPOINT_KIND)  # what Load Audio Model lists (MusicGen has its own loader)
DEFAULT_TEXT_ENCODER = "t5-base.safetensors"  # T5-base for a checkpoints/ model, from models/text_encoders/
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
    """Recognised models as 'kind/name' (a checkpoints/ file by its safetensors header), for a loader's dropdown."""
    # Cheap: small JSON files and safetensors headers only, never a whole weights file.
    names = [f"{kind}/{name}" for kind in kinds if kind != CHECKPOINT_KIND
             for name in loading.list_model_folders(kind, _recognised)]
    if CHECKPOINT_KIND in kinds:
        names += [f"{CHECKPOINT_KIND}/{name}" for name in _listed_files(CHECKPOINT_KIND, _is_stable_audio_file)]
    return sorted(names)


def list_text_encoders() -> list[str]:
    """T5-base weights files in every text_encoders folder (headers read only), the default name always among them."""
    # Always the default: a saved workflow's value stays valid where the file is missing (loading says where it goes).
    return sorted(set(_listed_files("text_encoders", _is_t5_base_file)) | {DEFAULT_TEXT_ENCODER})


def _listed_files(kind: str, accept: Callable[[Path], bool]) -> list[str]:
    found = []
    for name in loading.list_model_files(kind, (".safetensors",)):
        try:
            path = loading.find_model(kind, name, "model_name", "", folder=False)
        except PAEInputError:
            continue
        if accept(path):
            found.append(name)
    return found


def _is_stable_audio_file(path: Path) -> bool:
    from .stable_audio_checkpoint import is_stable_audio_file

    return is_stable_audio_file(path)


def _is_t5_base_file(path: Path) -> bool:
    from .stable_audio import is_t5_base_file

    return is_t5_base_file(path)


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


def load_backbone(model_name: str, dtype_name: str = "auto", text_encoder: str = DEFAULT_TEXT_ENCODER) -> Backbone:
    """Load a backbone once per (folder, dtype, device) and share it while in use; inside ComfyUI it is
    memory-managed. text_encoder (a file in text_encoders/) is read for checkpoints/ models only.
    """
    if model_name.partition("/")[0] == CHECKPOINT_KIND:
        return _load_checkpoint_file(model_name, dtype_name, text_encoder)
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


def _load_checkpoint_file(model_name: str, dtype_name: str, text_encoder: str) -> Backbone:
    """A single-file Stable Audio checkpoint with T5-base from text_encoders/, every file checked before loading."""
    from .stable_audio import load_stable_audio_file, t5_support_files
    from .stable_audio_checkpoint import check_stable_audio_file

    name = model_name.partition("/")[2]
    if not name:
        raise PAEInputError("model_name", f"'{model_name}' names no file; pick e.g. "
                            "checkpoints/stable-audio-open-1.0.safetensors.")
    path = loading.find_model(CHECKPOINT_KIND, name, "model_name", "put stable-audio-open-1.0.safetensors (or an "
                              "SAO-Instruct single file) there", folder=False, label="checkpoint")
    check_stable_audio_file(path, f"'{model_name}'")
    t5 = loading.find_model("text_encoders", text_encoder, "text_encoder", "put google-t5/t5-base's "
                            f"model.safetensors there as {DEFAULT_TEXT_ENCODER} (the file ComfyUI's CLIPLoader reads "
                            "for Stable Audio)", folder=False, label="T5-base weights file")
    t5_support_files()  # config and tokenizer present, or one line saying where they go
    # load_model caches per path: this key path (never opened) names both files, so another T5 is another model.
    key = Path(f"{os.path.realpath(path)}::{os.path.realpath(t5)}")
    return loading.load_model(key, dtype_name, lambda device, dtype: load_stable_audio_file(path, t5, dtype,
                                                                                             model_name),
                              label=f"stable_audio:{path.name}", input_name="model_name", what=f"'{model_name}'",
                              fix="the file may be damaged or from another model.")


def clear_cache() -> None:
    """Forget every loaded model (tests; ComfyUI frees memory through its own model management)."""
    loading.clear_cache()
