"""Against a real ComfyUI (COMFYUI_DIR=path/to/ComfyUI; COMFYUI_PYTHON = its interpreter if not this one):
start it on a free loopback port with the pack linked in and tiny models in a temporary base directory, check the
pack's nodes, web extension and templates are served, queue every API workflow through `pae run --server`, check the
outputs decode, stop the server. Skipped without COMFYUI_DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from prompt_audio_edit.runner.cli import main as pae
from prompt_audio_edit.standins.workflow import build_stand_ins
from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.io.audio import read_audio
from prompt_audio_edit.standins.common import write_demo_clip
from tests.fake_comfy import free_port

REPO = Path(__file__).resolve().parent.parent
API_WORKFLOWS = sorted((REPO / "workflows" / "api").glob("*_api.json"))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PACK_FOLDER = "prompt-audio-edit"

pytestmark = pytest.mark.skipif(
    not COMFYUI_DIR, reason="needs a ComfyUI checkout: set COMFYUI_DIR (and COMFYUI_PYTHON to its interpreter) "
    "to run the pack's workflows on a real ComfyUI server")


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    """A ComfyUI server on a free port; base directory with the pack linked and tiny models under shipped names."""
    checkout = Path(COMFYUI_DIR)
    if "--base-directory" not in (checkout / "comfy" / "cli_args.py").read_text():
        pytest.skip("this ComfyUI has no --base-directory option (needs ComfyUI 0.3.30 or later)")
    base = tmp_path_factory.mktemp("comfy_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    write_demo_clip(base / "input" / "example.wav", seconds=12.0)
    bridge.reset_directories()
    bridge.set_directories(models=str(base / "models"), input=str(base / "input"))
    for path in API_WORKFLOWS:
        build_stand_ins(json.loads(path.read_text()), base)
    # Stable Audio Open as ComfyUI keeps it: one checkpoint file and t5-base.safetensors (config and tokenizer beside).
    from prompt_audio_edit.standins.stable_audio import save_single_file_checkpoint, save_t5_text_encoder

    sao = base / "models" / "diffusers" / "stable-audio-open-1.0"
    save_single_file_checkpoint(sao, base / "models" / "checkpoints" / "stable-audio-open-1.0.safetensors")
    save_t5_text_encoder(sao, base / "models" / "text_encoders" / "t5-base.safetensors",
                         base / "models" / "text_encoders" / "t5-base")
    bridge.reset_directories()
    # A stand-in hub for the Get models… route: one catalogue model the workflows do not use, so a download is new.
    from prompt_audio_edit.standins.clap import build_tiny_clap
    from prompt_audio_edit.standins.hub import HubStandIn

    hub = HubStandIn().start()
    hub.add("laion/larger_clap_music", build_tiny_clap(tmp_path_factory.mktemp("hub") / "larger_clap_music"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(base / "comfyui.log", "w")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ written into the linked pack
               HF_ENDPOINT=hub.url, HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
    process = subprocess.Popen([os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu",
                                "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
                                "--disable-auto-launch", "--preview-method", "auto"], cwd=checkout, stdout=log,
                               stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                get(url + "/system_stats", 2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("ComfyUI did not start:\n" + (base / "comfyui.log").read_text()[-3000:])
                time.sleep(1)
        yield {"url": url, "base": base, "log": base / "comfyui.log"}
    finally:
        hub.stop()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_the_pack_its_extension_and_its_templates_are_served(comfyui):
    url = comfyui["url"]
    nodes = json.loads(get(url + "/object_info", 60))
    recorded = json.loads((REPO / "tests" / "node_contract.json").read_text())
    assert set(recorded) <= set(nodes), "ComfyUI did not load every node of the pack:\n" + comfyui["log"].read_text()
    assert nodes["PAE_CompareAudio"]["output_node"] is True
    assert f"/extensions/{PACK_FOLDER}/prompt_audio_edit.js" in json.loads(get(url + "/extensions"))
    assert b"PromptAudioEdit.Players" in get(f"{url}/extensions/{PACK_FOLDER}/prompt_audio_edit.js")
    templates = json.loads(get(url + "/workflow_templates"))
    ui_names = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert sorted(templates[PACK_FOLDER]) == ui_names
    first = json.loads(get(f"{url}/api/workflow_templates/{PACK_FOLDER}/{ui_names[0]}.json"))
    assert first["version"] == 0.4


def test_get_models_route_downloads_into_comfyuis_models_folder_and_the_dropdown_lists_it(comfyui):
    url = comfyui["url"]
    listing = json.loads(get(url + "/pae/models"))["models"]
    entry = next(m for m in listing if m["name"] == "larger-clap-music")
    assert entry["state"] == "missing" and "PAE_LoadCLAP" in entry["nodes"]
    request = urllib.request.Request(url + "/pae/models/get", data=json.dumps({"name": "larger-clap-music"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        entry = next(m for m in json.loads(get(url + "/pae/models"))["models"] if m["name"] == "larger-clap-music")
        if entry["job"] and entry["job"]["state"] != "running":
            break
        time.sleep(0.5)
    assert entry["state"] == "installed", entry
    assert (comfyui["base"] / "models" / "clap" / "larger_clap_music" / "config.json").is_file()
    choices = json.loads(get(url + "/object_info/PAE_LoadCLAP"))["PAE_LoadCLAP"]["input"]["required"]["model_name"]
    assert "larger_clap_music" in choices[0]
    titles = json.loads(get(url + "/i18n"))["en"]["templateWorkflows"]["template"][PACK_FOLDER]
    assert titles["ppae_replace"].startswith("PPAE")


@pytest.mark.parametrize("stem", ["sao_attention_replace", "sao_zeta_edit"])
def test_the_stable_audio_workflows_run_with_comfyuis_single_checkpoint(comfyui, stem, tmp_path, capsys):
    choices = json.loads(get(comfyui["url"] + "/object_info/PAE_LoadModel"))["PAE_LoadModel"]["input"]
    assert "checkpoints/stable-audio-open-1.0.safetensors" in choices["required"]["model_name"][0]
    assert "t5-base.safetensors" in choices["optional"]["text_encoder"][0]
    code = pae(["run", str(REPO / "workflows" / "api" / f"{stem}_api.json"), "--server", comfyui["url"],
                "--set", "2.model_name=checkpoints/stable-audio-open-1.0.safetensors", "--set", "1.duration=3",
                "--input-dir", str(comfyui["base"] / "input"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert code == 0, printed.err + "\n" + comfyui["log"].read_text()[-3000:]
    assert [line for line in printed.out.splitlines() if line.endswith(".flac")]


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=lambda p: p.stem)
def test_every_workflow_runs_through_server_mode(comfyui, api_path, tmp_path, capsys):
    graph = json.loads(api_path.read_text())
    for node in graph.values():  # short clips keep the tiny models quick; the graph is otherwise as shipped
        if node["class_type"] == "PAE_LoadAudio":
            node["inputs"]["duration"] = 3.0
        if node["class_type"] == "PAE_MusicGenEdit":
            node["inputs"]["duration"] = 2.0
        if node["class_type"] == "PAE_CutRegion":  # a region inside the shortened clip
            node["inputs"].update(start=1.0, end=2.0)
    workflow = tmp_path / api_path.name
    workflow.write_text(json.dumps(graph))
    code = pae(["run", str(workflow), "--server", comfyui["url"], "--input-dir", str(comfyui["base"] / "input"),
                "--out", str(tmp_path / "out"), "--ui-workflow", str(REPO / "workflows" / api_path.name.replace(
                    "_api.json", ".json"))])
    printed = capsys.readouterr()
    assert code == 0, printed.err + "\n" + comfyui["log"].read_text()[-3000:]
    saved = [Path(line) for line in printed.out.splitlines()]
    assert saved and all(path.is_relative_to(tmp_path / "out") for path in saved)
    for path in saved:
        audio = read_audio(path)
        assert audio["waveform"].shape[-1] > 0 and audio["waveform"].isfinite().all()


def test_the_long_loops_send_live_previews_over_the_websocket(comfyui):
    """With --preview-method auto, Invert (PAE_DDIMInvert) and the Fuser send JPEG previews (ComfyUI's binary
    PREVIEW_IMAGE frames) while their progress runs, as KSampler does."""
    import asyncio
    import uuid

    import aiohttp

    graph = json.loads((REPO / "workflows" / "api" / "ppae_replace_api.json").read_text())
    for node in graph.values():
        if node["class_type"] == "PAE_LoadAudio":
            node["inputs"]["duration"] = 2.0
        if node["class_type"] == "PAE_DDIMInvert":
            node["inputs"]["steps"] = 60
    client = uuid.uuid4().hex
    ws_url = comfyui["url"].replace("http://", "ws://") + f"/ws?clientId={client}"

    async def follow() -> tuple[list[bytes], list[dict]]:
        frames, progress = [], []
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
            async with session.post(comfyui["url"] + "/prompt", json={"prompt": graph, "client_id": client}) as r:
                assert r.status == 200, await r.text()
                prompt_id = (await r.json())["prompt_id"]
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    frames.append(message.data)
                elif message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    data = event.get("data", {})
                    if event["type"] == "progress":
                        progress.append(data)
                    if event["type"] == "execution_error":
                        pytest.fail(str(data)[:2000])
                    if event["type"] == "executing" and data.get("node") is None \
                            and data.get("prompt_id") == prompt_id:
                        break
        return frames, progress

    frames, progress = asyncio.run(asyncio.wait_for(follow(), 600))
    classes = {graph[p["node"]]["class_type"] for p in progress if p.get("node") in graph}
    assert {"PAE_DDIMInvert", "PAE_Fuser"} <= classes
    previews = [f for f in frames if f[:4] == (1).to_bytes(4, "big")]  # PREVIEW_IMAGE, then the image type
    assert len(previews) >= 4, f"{len(frames)} binary frames, {len(previews)} previews"
    assert all(f[4:8] == (1).to_bytes(4, "big") and f[8:10] == b"\xff\xd8" for f in previews)  # JPEG
