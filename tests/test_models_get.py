"""`pae models list/get/check` against a stand-in of the hub's HTTP API on 127.0.0.1 (HF_ENDPOINT): every catalogue
entry lays out folders the loaders load, at the pinned commits, with only the files the pack reads; interrupted,
corrupt, gated and unreachable downloads; list and check on complete, partial, damaged and absent models."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from prompt_audio_edit.engine.backbones import registry
from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.install import catalogue, hub
from prompt_audio_edit.runner import cli
from prompt_audio_edit.runner.models_command import workflow_entries
from prompt_audio_edit.standins.hub import serve_catalogue

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture(scope="module")
def hub_standin(tmp_path_factory):
    """The stand-in hub serving tiny models under every catalogue repository, for this module."""
    server = serve_catalogue(tmp_path_factory.mktemp("hub"))
    yield server
    server.stop()


@pytest.fixture
def models(tmp_path, hub_standin, monkeypatch):
    """An empty models folder, HF_ENDPOINT at the stand-in, no token, the stand-in's faults and log cleared."""
    monkeypatch.setenv("HF_ENDPOINT", hub_standin.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    hub_standin.requests.clear()
    hub_standin.corrupt.clear()
    hub_standin.cut_after.clear()
    folder = tmp_path / "models"
    folder.mkdir()
    bridge.reset_directories()
    yield folder
    bridge.reset_directories()
    registry.clear_cache()


def pae(*args: str) -> int:
    return cli.main(list(args))


def listed(folder: Path) -> set[str]:
    """Every name the pack's loaders would list."""
    from prompt_audio_edit.engine.core.loading import list_model_files
    from prompt_audio_edit.engine.models.clap import list_clap_models
    from prompt_audio_edit.engine.models.musicgen import list_musicgen_models

    bridge.set_directories(models=str(folder))
    return set(registry.list_models()) | set(list_clap_models()) | set(list_musicgen_models()) \
        | set(list_model_files("checkpoints")) | set(list_model_files("text_encoders"))


HUB_ENTRIES = [e.name for e in catalogue.CATALOGUE if all(p.hub for p in e.parts)]


def test_get_every_hub_entry_then_the_loaders_load_it(models, hub_standin, capsys):
    assert pae("models", "get", "--models", str(models), *[n for n in HUB_ENTRIES if n != "stable-audio-open-1.0"]) \
        == 0
    from prompt_audio_edit.engine.models.clap import load_clap
    from prompt_audio_edit.engine.models.musicgen import load_musicgen

    bridge.set_directories(models=str(models))
    for name in ("diffusers/audioldm2-large", "diffusers/audioldm2", "diffusers/audioldm2-music", "tango/tango2",
                 "tango/tango"):
        backbone = registry.load_backbone(name, "fp32")
        assert backbone.encode_text(["a dog barks"]) is not None
    assert load_clap("clap-htsat-unfused", "fp32") is not None
    assert load_musicgen("musicgen-small", "fp32") is not None
    # the pinned commits were asked for, and nothing but the files the pack reads came down
    for entry in catalogue.CATALOGUE:
        for part in entry.parts:
            for source in part.hub:
                if source.revision and entry.name != "stable-audio-open-1.0":
                    assert ("info", f"{source.repo}@{source.revision}", "") in hub_standin.requests
    fetched = [r[1] for r in hub_standin.requests if r[0] == "get"]
    assert not [p for p in fetched if p.endswith((".msgpack", "README.md", "diffusion_pytorch_model.bin"))]
    assert not (models / "diffusers" / "audioldm2-large" / "unet" / "diffusion_pytorch_model.bin").exists()
    manifest = json.loads((models / "diffusers" / "audioldm2-large" / hub.MANIFEST).read_text())
    assert manifest["sources"] == [{"repo": "cvssp/audioldm2-large",
                                    "commit": "4b0b875a9e0c5305dfc917da808584e50e1c7ed4"}]
    assert (models / "tango" / "tango2" / "tokenizer.json").is_file()  # assembled from FLAN-T5's repository
    assert (models / "text_encoders" / "t5-base.safetensors").is_file()
    assert (models / "checkpoints" / "stable-audio-open-1.0.safetensors").is_file()
    assert not hub.stale_downloads()
    capsys.readouterr()
    assert pae("models", "check", "--models", str(models)) == 0  # sizes, hashes and configs of everything fetched
    out = capsys.readouterr().out
    assert "audioldm2-large: installed" in out and "damaged" not in out
    # a second get finds everything in place and downloads nothing
    hub_standin.requests.clear()
    assert pae("models", "get", "--models", str(models), "audioldm2-large", "tango2") == 0
    assert not [r for r in hub_standin.requests if r[0] == "get"]


def test_a_download_cut_midway_is_not_listed_and_resumes(models, hub_standin, capsys):
    weights = "unet/diffusion_pytorch_model.safetensors"
    size = (hub_standin.repos["cvssp/audioldm2"].folder / weights).stat().st_size
    hub_standin.cut_after[("cvssp/audioldm2", weights)] = (size // 3, 100)  # every attempt of this run drops
    assert pae("models", "get", "--models", str(models), "audioldm2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("pae models:")] == err[-1:]  # one line, no traceback
    assert "transfer stopped after" in err[-1] and "run the same command again to resume" in err[-1]
    assert "diffusers/audioldm2" not in listed(models)
    assert not (models / "diffusers" / "audioldm2").exists()
    assert [p.name for p in hub.stale_downloads()] == [".pae-download-audioldm2"]
    hub_standin.cut_after.clear()
    hub_standin.requests.clear()
    assert pae("models", "get", "--models", str(models), "audioldm2") == 0
    resumed = [r for r in hub_standin.requests if r[0] == "get" and r[1].endswith(weights)]
    assert resumed and all(r[2].startswith("bytes=") and int(r[2][6:-1]) > 0 for r in resumed), resumed
    assert "diffusers/audioldm2" in listed(models)
    assert not hub.stale_downloads()
    assert hub.entry_state(catalogue.entry("audioldm2"), verify=True).label == "installed"


def test_a_file_with_the_wrong_hash_is_refused_and_removed(models, hub_standin, capsys):
    hub_standin.corrupt.add(("laion/clap-htsat-unfused", "model.safetensors"))
    assert pae("models", "get", "--models", str(models), "clap-htsat-unfused") == 2
    err = capsys.readouterr().err
    assert "model.safetensors: SHA-256 differs from the hub's; the file was removed" in err
    assert not list((models / "clap").rglob("model.safetensors"))
    assert "clap-htsat-unfused" not in listed(models)


def test_a_gated_repository_says_how_to_get_access_and_names_the_ungated_copy(models, hub_standin, capsys,
                                                                             monkeypatch):
    assert pae("models", "get", "--models", str(models), "stable-audio-open-1.0") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is gated" in err and "hf auth login" in err and "HF_TOKEN" in err
    assert "pae models get stable-audio-open-1.0-comfy" in err
    assert not (models / "diffusers" / "stable-audio-open-1.0").exists()
    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    assert pae("models", "get", "--models", str(models), "stable-audio-open-1.0") == 0
    assert "diffusers/stable-audio-open-1.0" in listed(models)


def test_an_unreachable_endpoint_gives_one_line(models, monkeypatch, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert pae("models", "get", "--models", str(models), "musicgen-small") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[-1].startswith("pae models: cannot reach http://127.0.0.1:")
    assert not any(models.iterdir()) or not (models / "musicgen" / "musicgen-small").exists()


def test_list_and_check_on_complete_partial_damaged_and_absent_models(models, hub_standin, capsys):
    assert pae("models", "get", "--models", str(models), "clap-htsat-unfused", "musicgen-small", "tango2") == 0
    (models / "musicgen" / "musicgen-small" / "generation_config.json").unlink()   # partly installed
    vae = models / "tango" / "tango2" / "pytorch_model_vae.bin"                     # damaged, same size
    data = bytearray(vae.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vae.write_bytes(bytes(data))
    capsys.readouterr()
    assert pae("models", "list", "--models", str(models)) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith((" ", "models"))}
    assert "installed" in lines["clap-htsat-unfused"]
    assert "partly installed" in lines["musicgen-small"]
    assert "musicgen/musicgen-small/generation_config.json is missing" in out
    assert "missing" in lines["audioldm2-large"] and "[by hand]" in lines["ap-adapter"]
    assert "[gated]" in lines["stable-audio-open-1.0"]
    assert pae("models", "check", "--models", str(models)) == 1
    out = capsys.readouterr().out
    assert "clap-htsat-unfused: installed" in out
    assert "tango2: damaged" in out and "pytorch_model_vae.bin: SHA-256 differs" in out
    assert "musicgen-small: partly installed" in out
    assert "audioldm2-large" not in out  # absent models are listed by `list`, not checked


def test_by_hand_models_print_source_destination_and_are_checked_once_placed(models, tiny_models_root, capsys):
    import shutil

    assert pae("models", "get", "--models", str(models), "audiomae") == 0
    out = capsys.readouterr().out
    assert "get by hand: AudioMAE's ViT-B/16" in out and str(models / "audiomae" / "pretrained.pth") in out
    (models / "audiomae").mkdir()
    (models / "audiomae" / "pretrained.pth").write_bytes(b"not a checkpoint")
    assert pae("models", "check", "--models", str(models), "audiomae") == 1
    assert "audiomae/pretrained.pth" in capsys.readouterr().out
    source = next(tiny_models_root.rglob("pretrained.pth"))
    (models / "audiomae" / "pretrained.pth").unlink()
    shutil.copy(source, models / "audiomae" / "pretrained.pth")
    assert pae("models", "check", "--models", str(models), "audiomae") == 0


def test_an_existing_folder_is_never_replaced(models, hub_standin):
    mine = models / "clap" / "clap-htsat-unfused"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text("{}")
    assert pae("models", "get", "--models", str(models), "clap-htsat-unfused") == 0
    assert sorted(p.name for p in mine.iterdir()) == ["config.json"]
    assert not [r for r in hub_standin.requests if r[0] == "get"]


def test_what_a_method_or_a_workflow_needs():
    names = lambda entries: {e.name for e in entries}  # noqa: E731
    assert names(catalogue.for_method("ppae")) >= {"audioldm2-large", "clap-htsat-unfused"}
    assert names(catalogue.for_method("ap-adapter")) >= {"audioldm2-large", "ap-adapter", "audiomae"}
    assert names(catalogue.for_method("editgen")) == {"musicgen-small"}
    assert names(catalogue.for_method("sao")) >= {"stable-audio-open-1.0", "sao-instruct"}
    for stem, expected in (("ppae_replace", {"audioldm2-large", "clap-htsat-unfused"}),
                           ("ap_accompaniment", {"audioldm2-large", "ap-adapter", "audiomae"}),
                           ("editgen_replace", {"musicgen-small"}), ("sao_instruct_edit", {"sao-instruct"})):
        for path in (WORKFLOWS / f"{stem}.json", WORKFLOWS / "api" / f"{stem}_api.json"):
            found, unknown = workflow_entries(str(path))
            assert names(found) >= expected, (path, names(found))
            assert not unknown


def test_bad_names_and_workflows_give_one_line(models, tmp_path, capsys):
    assert pae("models", "get", "--models", str(models), "audioldm3") == 2
    assert "unknown model audioldm3; the catalogue has: audioldm2-large" in capsys.readouterr().err
    (tmp_path / "w.json").write_text("[1, 2")
    assert pae("models", "get", "--models", str(models), "--workflow", str(tmp_path / "w.json")) == 2
    assert "is not readable JSON" in capsys.readouterr().err
    assert pae("models", "get", "--models", str(models)) == 2
    assert "name models to get" in capsys.readouterr().err


def test_the_comfyui_route_lists_downloads_and_reports_progress(models, hub_standin, monkeypatch):
    import asyncio
    import time

    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from prompt_audio_edit.nodes import model_routes

    events = []
    monkeypatch.setattr(bridge, "send_event", lambda name, data: events.append((name, data)))
    monkeypatch.setattr(model_routes, "_jobs", {})
    bridge.set_directories(models=str(models))

    async def scenario() -> None:
        app = web.Application()
        app.add_routes(model_routes.route_table())
        async with TestClient(TestServer(app)) as client:
            listing = await (await client.get("/pae/models")).json()
            clap = next(m for m in listing["models"] if m["name"] == "clap-htsat-unfused")
            assert clap["state"] == "missing" and "PAE_LoadCLAP" in clap["nodes"] and clap["size_mb"] > 0
            answer = await client.post("/pae/models/get", json={"name": "clap-htsat-unfused"})
            assert answer.status == 202 and (await answer.json())["started"] == ["clap-htsat-unfused"]
            deadline = time.monotonic() + 120
            while not any(d.get("state") in ("done", "error") for _, d in events) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            listing = await (await client.get("/pae/models")).json()
            clap = next(m for m in listing["models"] if m["name"] == "clap-htsat-unfused")
            assert clap["state"] == "installed" and clap["job"]["state"] == "done"
            bad = await client.post("/pae/models/get", json={"name": "../../etc"})
            assert bad.status == 400 and "unknown model" in (await bad.json())["error"]
            garbled = await client.post("/pae/models/get", data=b"{not json")
            assert garbled.status == 400

    asyncio.run(scenario())
    assert {name for name, _ in events} == {model_routes.EVENT}
    progress = [d for _, d in events if d.get("file")]
    assert progress and progress[-1]["done"] == progress[-1]["total"] > 0
    assert events[-1][1]["state"] == "done"
    assert "clap-htsat-unfused" in listed(models)


def test_empty_dropdowns_show_a_placeholder_and_validation_says_what_to_get(models, tmp_path):
    from prompt_audio_edit.engine.install.catalogue import NO_MODEL
    from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS
    from prompt_audio_edit.standins.common import write_demo_clip

    write_demo_clip(tmp_path / "example.wav", seconds=1.0)
    bridge.set_directories(models=str(models), input=str(tmp_path))
    for node_id, suggestion in (("PAE_LoadModel", "audioldm2-large"), ("PAE_LoadCLAP", "clap-htsat-unfused"),
                                ("PAE_LoadMusicGen", "musicgen-small"), ("PAE_LoadSAOInstruct", "sao-instruct")):
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert cls.INPUT_TYPES()["required"]["model_name"][0] == [NO_MODEL]
        for value in (None, NO_MODEL):  # ComfyUI leaves an empty input out; the placeholder is a choice
            verdict = cls.VALIDATE_INPUTS(model_name=value) if value else cls.VALIDATE_INPUTS()
            assert verdict.startswith(f"{node_id}: input 'model_name': no ") and "Get models…" in verdict
            assert f"pae models get {suggestion}" in verdict
    verdict = NODE_CLASS_MAPPINGS["PAE_LoadModel"].VALIDATE_INPUTS(model_name="diffusers/audioldm2-large")
    assert "'diffusers/audioldm2-large' is not installed" in verdict and "pae models get audioldm2-large" in verdict
    verdict = NODE_CLASS_MAPPINGS["PAE_LoadModel"].VALIDATE_INPUTS(model_name="diffusers/my-own")
    assert "'diffusers/my-own' is not in models/diffusers/" in verdict
    # a shipped workflow on an empty models folder stops before running, naming the model and the command
    from prompt_audio_edit.runner.workflow import WorkflowError, execute_workflow, load_api_workflow

    with pytest.raises(WorkflowError, match="pae models get audioldm2-large"):
        execute_workflow(load_api_workflow(str(WORKFLOWS / "api" / "ppae_replace_api.json")), NODE_CLASS_MAPPINGS)
