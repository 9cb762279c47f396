"""Stand-ins for what a workflow names but the machine lacks: tiny untrained models and a synthetic clip (pae run
--demo, the real-ComfyUI test). Nothing here is used when the named models and files exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.core import bridge
from ..engine.core.errors import PAEInputError
from ..engine.core.files import resolve_inside


def _stand_in_place(root: Path, kind: str, name: str, marker: str | None) -> tuple[Path, bool] | None:
    """Where a stand-in for models/<kind>/<name> goes, and whether it must be built: always inside root/models, only
    for a name that stays inside it, and never over anything already there, except a complete stand-in from an
    earlier run (its marker file present), which is reused. None: stand nothing in (the node reports the name)."""
    try:
        path = resolve_inside(root / "models" / kind, name, "model_name", what="stand-in folder")
    except PAEInputError:
        return None
    if not path.exists() and not path.is_symlink():
        return path, True
    if marker is None:  # a file stand-in: reuse one from an earlier run, never replace anything else
        return (path, False) if path.is_file() and not path.is_symlink() else None
    return (path, False) if (path / marker).is_file() else None


def _stand_in_model(node_id: str, class_type: str, model_name: str, root: Path) -> str | None:
    """Build a tiny untrained model where a loader names one that is missing; say what was stood in."""
    if class_type == "PAE_LoadCLAP":
        from ..engine.models.clap import find_clap_folder
        from ..standins.clap import build_tiny_clap

        return _stand_in_folder(node_id, model_name, root, "clap", find_clap_folder, build_tiny_clap, "CLAP")
    from ..engine.backbones.registry import BACKBONE_KINDS, find_model_folder

    try:
        find_model_folder(model_name)
        return None
    except PAEInputError:
        kind, _, name = model_name.partition("/")
        if kind not in BACKBONE_KINDS or not name:
            return None
        place = _stand_in_place(root, kind, name, "main_config.json" if kind == "tango" else "model_index.json")
        if place is None:
            return None
        folder, build = place
        if class_type == "PAE_LoadSAOInstruct" or "stable-audio" in name:
            from ..standins.stable_audio import build_tiny_stable_audio

            instruct = class_type == "PAE_LoadSAOInstruct"
            if build:
                build_tiny_stable_audio(folder, in_channels=128 if instruct else 64)
            what = "SAO-Instruct" if instruct else "Stable Audio Open"
            return f"model '{model_name}' (node {node_id}) -> tiny untrained {what} at {folder}"
        if kind == "tango":
            from ..standins.tango import build_tiny_tango

            if build:
                build_tiny_tango(folder)
            return f"model '{model_name}' (node {node_id}) -> tiny untrained Tango at {folder}"
        from .audioldm2 import build_tiny_audioldm2

        if build:
            build_tiny_audioldm2(folder)
        return f"model '{model_name}' (node {node_id}) -> tiny untrained AudioLDM2 at {folder}"


def _stand_in_ap_adapter(node_id: str, inputs: dict[str, Any], model_folder: Path | None, root: Path) -> list[str]:
    """Build a tiny adapter (fitting the workflow's model) and a tiny AudioMAE where the loader names missing files."""
    from ..engine.core.checkpoints import find_weight_file
    from ..engine.models.audiomae import AUDIOMAE_KINDS
    from ..standins.ap_adapter import build_tiny_ap_adapter, build_tiny_audiomae

    notes = []
    # The loaders' own search (AudioMAE: models/audiomae/, then the old audio_encoders/; safetensors twins included);
    # a stand-in goes to the first place.
    for kinds, key, build in ((("ap_adapter",), "adapter_name", None), (AUDIOMAE_KINDS, "audio_encoder",
                                                                         build_tiny_audiomae)):
        name = inputs.get(key)
        if not isinstance(name, str):
            continue
        kind = kinds[0]
        try:
            find_weight_file(kinds, name, key, "")
            continue
        except PAEInputError:
            place = _stand_in_place(root, kind, name, None)
        if place is None:
            continue  # outside the stand-in folder, or something else is there: the node reports the name
        path, missing = place
        if missing:
            if build is None:
                if model_folder is None:
                    continue  # no AudioLDM2 in the workflow to fit an adapter to: the node reports the missing file
                build_tiny_ap_adapter(path, model_folder)
            else:
                build(path)
        notes.append(f"{kind} '{name}' (node {node_id}) -> tiny untrained stand-in at {path}")
    return notes


def _stand_in_musicgen(node_id: str, model_name: str, root: Path) -> str | None:
    """Build a tiny untrained MusicGen where Load MusicGen names one that is missing."""
    from ..engine.models.musicgen import find_musicgen_folder
    from ..standins.musicgen import build_tiny_musicgen

    return _stand_in_folder(node_id, model_name, root, "musicgen", find_musicgen_folder, build_tiny_musicgen,
                            "MusicGen")


def _stand_in_folder(node_id: str, model_name: str, root: Path, kind: str, find: Any, build: Any,
                     what: str) -> str | None:
    """A transformers-style stand-in (config.json marks it complete) where `find` cannot find the named folder."""
    try:
        find(model_name)
        return None
    except PAEInputError:
        pass
    place = _stand_in_place(root, kind, model_name, "config.json")
    if place is None:
        return None
    folder, missing = place
    if missing:
        build(folder)
    return f"{what} '{model_name}' (node {node_id}) -> tiny untrained {what} at {folder}"


def build_stand_ins(workflow: dict[str, Any], root: Path) -> list[str]:
    """Build tiny untrained models (under root/models) and a test clip (under root/input) for whatever the workflow
    names that is missing; say what was stood in. Used by --demo and by the real-ComfyUI test."""
    from .common import write_demo_clip
    from ..engine.core.errors import PAEInputError

    stood_in = []
    model_folder = None
    for node_id, node in workflow.items():
        inputs = node.get("inputs", {})
        class_type = node.get("class_type")
        if class_type in ("PAE_LoadModel", "PAE_LoadCLAP", "PAE_LoadSAOInstruct") and \
                isinstance(inputs.get("model_name"), str):
            note = _stand_in_model(node_id, class_type, inputs["model_name"], root)
            if note:
                bridge.add_model_root(root / "models")
                stood_in.append(note)
            if class_type == "PAE_LoadModel" and model_folder is None:
                from ..engine.backbones.registry import find_model_folder

                try:
                    folder = find_model_folder(inputs["model_name"])
                    model_folder = folder if (folder / "unet").is_dir() else None  # AudioLDM2 (diffusers) only
                except PAEInputError:
                    pass
        if class_type == "PAE_LoadMusicGen" and isinstance(inputs.get("model_name"), str):
            note = _stand_in_musicgen(node_id, inputs["model_name"], root)
            if note:
                bridge.add_model_root(root / "models")
                stood_in.append(note)
        if class_type == "PAE_LoadAudio" and isinstance(inputs.get("audio"), str):
            try:
                exists = bridge.resolve_input_file(inputs["audio"]).is_file()
            except PAEInputError:
                exists = True  # a bad path is reported by the node, not papered over
            if not exists:
                clip = root / "input" / inputs["audio"]
                write_demo_clip(clip)
                bridge.set_directories(input=str(root / "input"))
                stood_in.append(f"input '{inputs['audio']}' (node {node_id}) -> synthetic test clip at {clip}")
    for node_id, node in workflow.items():
        if node.get("class_type") == "PAE_LoadAPAdapter":
            notes = _stand_in_ap_adapter(node_id, node.get("inputs", {}), model_folder, root)
            if notes:
                bridge.add_model_root(root / "models")
                stood_in.extend(notes)
    return stood_in
