"""The pack's public shape: packaging metadata, lazy imports, the node contract ComfyUI relies on."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import prompt_audio_edit
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

ROOT = Path(__file__).resolve().parent.parent


def test_requirements_match_pyproject_and_never_list_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    assert project["project"]["dependencies"] == requirements
    assert not any(r.split(">")[0].split("=")[0].strip().lower() in ("torch", "torchaudio") for r in requirements)
    assert project["project"]["name"] == "prompt-audio-edit"
    assert project["tool"]["comfy"]["PublisherId"] and project["tool"]["comfy"]["DisplayName"]
    assert project["project"]["scripts"]["pae"] == "prompt_audio_edit.runner.cli:main"
    assert project["project"]["license"] == "MIT" and (ROOT / "LICENSE").is_file()


def test_root_module_only_exports_mappings_and_web_directory():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    assigned = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned <= {"WEB_DIRECTORY", "__all__"}
    assert (ROOT / prompt_audio_edit.WEB_DIRECTORY).is_dir()
    assert set(prompt_audio_edit.NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)


def test_import_is_light():
    code = ("import sys, prompt_audio_edit; heavy = [m for m in ('diffusers', 'transformers', 'av', 'soxr', "
            "'comfy', 'folder_paths') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_engine_never_imports_comfyui_at_module_level():
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            assert not any(n.split(".")[0] in ("comfy", "folder_paths", "server", "nodes") for n in names), path


def test_engine_never_imports_the_stand_ins():
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any("standins" in n.split(".") for n in names), path


def test_every_package_folder_is_in_the_package_list():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {"prompt_audio_edit"} | {
        ".".join(("prompt_audio_edit",) + init.parent.relative_to(ROOT).parts)
        for init in ROOT.glob("**/__init__.py")
        if not {".venv", "tests", "build"} & set(init.relative_to(ROOT).parts)}
    assert found <= listed, sorted(found - listed)
    assert all((ROOT / Path(*name.split(".")[1:])).is_dir() for name in listed)


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_is_described_and_every_input_has_a_tooltip(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("PAE_") and cls.NODE_ID == node_id
    assert cls.CATEGORY == "audio/edit" and cls.DESCRIPTION.strip()
    assert "(PAE)" in NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", ())) == len(cls.RETURN_TYPES)
    declared = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert hasattr(cls, cls.FUNCTION)


def test_registry_metadata():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = config["tool"]["comfy"]
    assert comfy["requires-comfyui"].startswith(">=") and comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["Icon"].endswith("/web/icon.svg") and (ROOT / "web" / "icon.svg").is_file()
    assert {"Environment :: GPU :: NVIDIA CUDA", "Environment :: GPU :: Apple Metal"} <= \
        set(config["project"]["classifiers"])
