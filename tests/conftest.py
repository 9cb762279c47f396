"""Shared fixtures and the tiny models' names: per-test input/output/models folders and one session-wide models folder
of tiny stand-ins. Plain helpers (test clips, the PyAV writer, expect_input_error) are in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.backbones import registry as model_registry

TINY_MODEL = "diffusers/tiny-audioldm2"
TINY_V_MODEL = "diffusers/tiny-audioldm2-v"  # the same weights with a v-prediction scheduler
TINY_TANGO = "tango/tiny-tango"  # released Tango file layout, v-prediction
TINY_AP_ADAPTER = "pytorch_model.bin"  # released AP-Adapter name and layout, fitting TINY_MODEL
TINY_AUDIOMAE = "pretrained.pth"       # released AudioMAE checkpoint layout (encoder + decoder + training state)
TINY_MUSICGEN = "tiny-musicgen"        # transformers MusicGen folder: T5, 2-layer decoder, EnCodec with 4 codebooks
TINY_SAO = "diffusers/tiny-stable-audio"            # Stable Audio Open diffusers folder, a 6 s window
TINY_SAO_INSTRUCT = "diffusers/tiny-sao-instruct"   # the same with SAO-Instruct's 128-channel DiT input
TINY_SAO_INSTRUCT_SAT = "diffusers/tiny-sao-instruct-sat"  # its weights as a stable-audio-tools checkpoint
TINY_SAO_SECONDS = 6.0
TINY_CLAP = "tiny-clap"  # transformers CLAP folder (HTSAT audio branch, RoBERTa text branch), built on first use


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker computes with its share of the cores (two workers on 2 cores: one thread each),
    so the workers scripts/test.sh starts do not oversubscribe the CPU."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    """A models folder with a tiny AudioLDM2 (-large layout; ε and v copies), a tiny Tango, and an AP-Adapter and
    AudioMAE fitting the AudioLDM2, a tiny MusicGen, and tiny Stable Audio Open / SAO-Instruct (diffusers and
    stable-audio-tools layouts), built once per session."""
    from prompt_audio_edit.standins.audioldm2 import build_tiny_audioldm2

    import json
    import shutil

    root = tmp_path_factory.mktemp("models")
    folder = build_tiny_audioldm2(root / "diffusers" / "tiny-audioldm2", layout="large", seed=0)
    v_folder = shutil.copytree(folder, root / "diffusers" / "tiny-audioldm2-v")
    config_path = v_folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["prediction_type"] = "v_prediction"
    config_path.write_text(json.dumps(config))
    from prompt_audio_edit.standins.tango import build_tiny_tango

    build_tiny_tango(root / "tango" / "tiny-tango", seed=0)
    from prompt_audio_edit.standins.ap_adapter import build_tiny_ap_adapter, build_tiny_audiomae

    build_tiny_ap_adapter(root / "ap_adapter" / TINY_AP_ADAPTER, folder, seed=0)
    build_tiny_audiomae(root / "audiomae" / TINY_AUDIOMAE, seed=0)
    from prompt_audio_edit.standins.musicgen import build_tiny_musicgen

    build_tiny_musicgen(root / "musicgen" / TINY_MUSICGEN, seed=0)
    from prompt_audio_edit.standins.stable_audio import build_tiny_stable_audio, save_stable_audio_tools_checkpoint

    build_tiny_stable_audio(root / TINY_SAO, seed=0, max_seconds=TINY_SAO_SECONDS)
    instruct = build_tiny_stable_audio(root / TINY_SAO_INSTRUCT, seed=1, in_channels=128, max_seconds=TINY_SAO_SECONDS)
    save_stable_audio_tools_checkpoint(instruct, root / TINY_SAO_INSTRUCT_SAT)
    return root


@pytest.fixture
def dirs(tmp_path):
    """Fresh, empty input, output and models folders as the bridge's standalone defaults."""
    folders = {name: tmp_path / name for name in ("input", "output", "models")}
    for folder in folders.values():
        folder.mkdir()
    bridge.reset_directories()
    bridge.set_directories(models=str(folders["models"]), input=str(folders["input"]), output=str(folders["output"]))
    yield folders
    bridge.reset_directories()


@pytest.fixture
def tiny_dirs(dirs, tiny_models_root):
    """Like dirs, with the models folder holding the tiny AudioLDM2."""
    dirs["models"] = tiny_models_root
    bridge.set_directories(models=str(tiny_models_root))
    return dirs


@pytest.fixture
def clap_dirs(tiny_dirs):
    """Like tiny_dirs, with a tiny CLAP under models/clap/ as well."""
    from prompt_audio_edit.standins.clap import build_tiny_clap

    folder = tiny_dirs["models"] / "clap" / TINY_CLAP
    if not (folder / "config.json").is_file():
        build_tiny_clap(folder)
    return tiny_dirs


@pytest.fixture
def tiny_backbone(tiny_dirs):
    """The tiny AudioLDM2 loaded through the pack's loader (cached across tests, as inside ComfyUI)."""
    return model_registry.load_backbone(TINY_MODEL, "fp32")

