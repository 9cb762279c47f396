"""`pae run --server`: upload, queue, follow, download against a stand-in ComfyUI; batches over several servers;
every fault gives one clear line and a non-zero exit, and no job is lost or run twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompt_audio_edit.runner.cli import main as pae
from tests.fake_comfy import FakeComfy, free_port

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "api" / "audio_roundtrip_api.json"


@pytest.fixture
def servers(tmp_path):
    started = []

    def start(fault=None, **kwargs):
        server = FakeComfy(tmp_path / f"server{len(started)}", fault, **kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def takes(tmp_path):
    """A folder of four 'recordings' (distinct bytes: the stand-in server does not decode them) and the
    workflow's own example.wav in an input folder."""
    folder = tmp_path / "takes"
    folder.mkdir()
    for index in range(4):
        (folder / f"take{index}.wav").write_bytes(f"RIFF take {index}".encode())
    (folder / "notes.txt").write_text("not audio")
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "example.wav").write_bytes(b"RIFF example")
    return folder


def run(*args: str, tmp_path: Path) -> int:
    return pae(["run", str(WORKFLOW), "--input-dir", str(tmp_path / "input"), "--out", str(tmp_path / "out"),
                "--reconnect-wait", "1", *args])


def test_single_job_uploads_queues_and_downloads(servers, takes, tmp_path, capsys):
    server = servers()
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    assert run("--server", server.url.removeprefix("http://"), "--ui-workflow", str(ui), tmp_path=tmp_path) == 0
    printed = capsys.readouterr()
    (saved,) = [Path(line) for line in printed.out.splitlines()]
    assert saved == tmp_path / "out" / "audio" / "PAE_00001_.flac"
    assert saved.read_bytes() == b"OUT:RIFF example"
    assert (server.root / "input" / "pae" / "example.wav").read_bytes() == b"RIFF example"  # uploaded, not assumed
    assert len(server.completed) == 1 and "[1/1]" in printed.err


def test_batch_is_spread_over_servers_and_each_output_belongs_to_its_input(servers, takes, tmp_path, capsys):
    first, second = servers(), servers()
    assert run("--server", f"{first.url},{second.url}", "--input", str(takes), tmp_path=tmp_path) == 0
    for index in range(4):
        (saved,) = (tmp_path / "out" / f"take{index}").rglob("*.flac")
        assert saved.read_bytes() == f"OUT:RIFF take {index}".encode()
    ran = [source for server in (first, second) for _, source in server.completed]
    assert sorted(ran) == [f"pae/take{i}.wav" for i in range(4)]  # each once
    assert first.completed and second.completed  # both servers worked
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_a_sweep_makes_one_job_per_input_and_value(servers, takes, tmp_path, capsys):
    server = servers()
    assert run("--server", server.url, "--input", str(takes), "--sweep", "Load Audio (PAE).duration=2,4.5",
               tmp_path=tmp_path) == 0
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert folders == sorted(f"take{i}_duration-{k}" for i in range(4) for k in (1, 2))
    queued = [graph["1"]["inputs"]["duration"] for graph in server.graphs]
    assert sorted(queued) == [2, 2, 2, 2, 4.5, 4.5, 4.5, 4.5]
    assert len(capsys.readouterr().out.splitlines()) == 8


def test_a_server_that_dies_mid_job_has_its_job_run_elsewhere_once(servers, takes, tmp_path, capsys):
    crashing, healthy = servers("crash", step_seconds=0.05), servers()
    code = run("--server", crashing.url, "--server", healthy.url, "--input", str(takes / "take*.wav"),
               tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert code == 0, err
    assert crashing.queued and not crashing.completed  # it took a job and never finished it
    assert sorted(source for _, source in healthy.completed) == [f"pae/take{i}.wav" for i in range(4)]
    assert "dropped out" in err and "goes back to the queue" in err
    assert len(list((tmp_path / "out").rglob("*.flac"))) == 4


def test_the_only_server_dying_mid_job_fails_clearly(servers, takes, tmp_path, capsys):
    server = servers("crash")
    assert run("--server", server.url, tmp_path=tmp_path) == 1
    err = capsys.readouterr().err
    assert "dropped out" in err and "did not finish: roundtrip_api: not run: no server left" in err.replace(
        "audio_roundtrip_api", "roundtrip_api")


def test_a_dropped_websocket_is_reopened_and_the_job_finishes_there(servers, takes, tmp_path, capsys):
    server = servers("drop_socket")
    assert run("--server", server.url, tmp_path=tmp_path) == 0
    assert len(server.queued) == len(server.completed) == 1
    assert (tmp_path / "out" / "audio" / "PAE_00001_.flac").is_file()


def test_a_refused_graph_shows_the_node_errors(servers, takes, tmp_path, capsys):
    server = servers()
    assert run("--server", server.url, "--set", "5.format=ogg", tmp_path=tmp_path) == 1
    err = capsys.readouterr().err
    assert "refused the workflow: Prompt outputs failed validation" in err
    assert "node 5 (PAE_SaveAudio): Value not in list: format: 'ogg' not in ['wav', 'flac', 'mp3']" in err
    assert not server.queued


def test_a_runtime_failure_names_the_node_and_is_not_retried(servers, takes, tmp_path, capsys):
    failing, healthy = servers("error"), servers()
    code = run("--server", failing.url, "--input", str(takes / "take0.wav"), tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert f"failed on {failing.url.removeprefix('http://')} at node 3 (PAE_VAEEncode): RuntimeError: boom" in err
    assert not healthy.queued


@pytest.mark.parametrize("fault", ["unreachable", "wrong_url", "bad_address"])
def test_server_address_faults(servers, takes, tmp_path, capsys, fault):
    if fault == "unreachable":
        url, expected = f"http://127.0.0.1:{free_port()}", "cannot reach ComfyUI at http://127.0.0.1:"
    elif fault == "wrong_url":
        url = servers().url + "/comfy"
        expected = "answers but is not a ComfyUI server (GET /system_stats gave HTTP 404)"
    else:
        url, expected = "http://:8188", "is not a server address"
    assert run("--server", url, tmp_path=tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pae: ") and expected in err[0]


def test_input_faults_stop_before_anything_is_queued(servers, takes, tmp_path, capsys):
    server = servers()
    assert run("--server", server.url, "--input", str(takes / "missing.wav"), tmp_path=tmp_path) == 2
    assert "input file not found" in capsys.readouterr().err
    assert run("--server", server.url, "--set", "1.audio=nowhere.wav", tmp_path=tmp_path) == 2
    assert "input file not found: 'nowhere.wav' (node 1, input 'audio')" in capsys.readouterr().err
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    assert pae(["run", str(ui), "--server", server.url]) == 2
    assert "Export (API)" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert pae(["run", str(WORKFLOW), "--server", server.url, "--input-dir", str(tmp_path / "input"),
                "--out", str(blocked / "out")]) == 2
    assert "cannot write into the output folder" in capsys.readouterr().err
    assert not server.queued


def test_an_output_that_cannot_be_written_stays_on_the_server_and_is_named(servers, takes, tmp_path, capsys):
    server = servers()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "take1").write_text("a file where the job's folder should go")
    code = run("--server", server.url, "--input", str(takes), tmp_path=tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot write" in err and f"the file stays on the server: {server.url}/view?filename=" in err
    assert (tmp_path / "out" / "take0" / "audio" / "PAE_00001_.flac").is_file()  # produced before: kept


def test_several_loaders_need_the_node_named(servers, takes, tmp_path, capsys):
    graph = json.loads(WORKFLOW.read_text())
    graph["9"] = json.loads(json.dumps(graph["1"]))
    path = tmp_path / "two_loaders_api.json"
    path.write_text(json.dumps(graph))
    server = servers()
    argv = ["run", str(path), "--server", server.url, "--input-dir", str(tmp_path / "input"),
            "--out", str(tmp_path / "out"), "--input"]
    assert pae(argv + [str(takes)]) == 2
    assert "loads audio in nodes 1, 9; say which one --input feeds" in capsys.readouterr().err
    assert pae(argv + [f"9={takes / 'take2.wav'}"]) == 0
    (entry,) = server.history.values()
    queued = entry["prompt"][2]
    assert queued["9"]["inputs"]["audio"] == "pae/take2.wav" and queued["1"]["inputs"]["audio"] == "pae/example.wav"
