"""`pae run --ray`: batches and sweeps on a local Ray cluster (started for each run, 2 CPUs) with tiny models;
each job saved exactly once, models loaded once per worker, killed workers and drivers, bad inputs and Ctrl-C.
Each run is a real `pae` process, as a user starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prompt_audio_edit.engine.io.audio import read_metadata
from prompt_audio_edit.runner.jobs import RunError, plan_jobs
from tests.conftest import TINY_MODEL
from tests.helpers import tone, write_with_pyav

ray = pytest.importorskip("ray")

PROMPTS = ["a violin melody", "a cat, meowing"]  # the second holds a comma: it comes from a values file
RUN_LIMIT = 240  # seconds one `pae run --ray` may take here before the test fails


def sample_workflow(steps: int = 4) -> dict:
    """Load → model → encode → Sample (its prompt swept) → decode → save: each output depends on input and prompt."""
    return {
        "1": {"class_type": "PAE_LoadAudio", "inputs": {"audio": "take0.wav", "start": 0.0, "duration": 1.0,
                                                        "sample_rate": 0, "mono": False}},
        "2": {"class_type": "PAE_LoadModel", "inputs": {"model_name": TINY_MODEL, "dtype": "auto"}},
        "3": {"class_type": "PAE_VAEEncode", "inputs": {"model": ["2", 0], "audio": ["1", 0]}},
        "4": {"class_type": "PAE_Sample", "inputs": {"model": ["2", 0], "positive": "a piano", "negative": "",
                                                     "seed": 0, "steps": steps, "guidance": 3.0, "batch_size": 1,
                                                     "seconds": 1.0, "denoise": 0.5, "latent": ["3", 0]},
              "_meta": {"title": "Sample"}},
        "5": {"class_type": "PAE_VAEDecode", "inputs": {"model": ["2", 0], "latent": ["4", 0],
                                                        "sample_rate": "source"}},
        "6": {"class_type": "PAE_SaveAudio", "inputs": {"audio": ["5", 0], "filename_prefix": "edit",
                                                        "format": "flac", "mp3_quality": "V0"}},
    }


@pytest.fixture
def batch(tmp_path, tiny_models_root):
    """Six takes (distinct tones), a prompts file and the workflow, in a scratch folder."""
    takes = tmp_path / "takes"
    takes.mkdir()
    for index in range(6):
        write_with_pyav(takes / f"take{index}.wav", tone(1.0, 16000, 1, freq=220.0 * (index + 1)), 16000, "wav",
                        "pcm_s16le", "s16")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    return {"root": tmp_path, "takes": takes, "models": tiny_models_root, "out": tmp_path / "out"}


def pae_command(batch: dict, workflow: dict, *extra: str) -> list[str]:
    path = batch["root"] / "workflow.json"
    path.write_text(json.dumps(workflow))
    return [sys.executable, "-m", "prompt_audio_edit", "run", str(path), "--input", str(batch["takes"]),
            "--sweep", f"4.positive=@{batch['root'] / 'prompts.txt'}", "--models", str(batch["models"]),
            "--input-dir", str(batch["takes"]), "--out", str(batch["out"]), "--ray", "--ray-workers", "2", *extra]


def start(command: list[str], root: Path, **environment: str) -> subprocess.Popen:
    env = dict(os.environ, RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", PYTHONUNBUFFERED="1", **environment)
    return subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"pae run --ray took over {RUN_LIMIT} s:\n{err[-3000:]}")
    return process.returncode, out, err


def wait_for(process: subprocess.Popen, pattern: str, lines: list[str], seconds: float = RUN_LIMIT) -> str:
    """Read the driver's stderr until a line holds pattern (every line read is kept in lines)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if pattern in line:
            return line
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail(f"never saw {pattern!r}:\n{''.join(lines)[-3000:]}")


def job_folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in out.iterdir() if p.is_dir()}


def check_every_job_saved_once(out: Path, expected: int) -> list[dict]:
    """12 folders, each with its job.json and exactly one output, made from its own input and prompt."""
    folders = job_folders(out)
    assert len(folders) == expected and not [p for p in out.iterdir() if p.name.startswith(".pae-job-")]
    records = []
    for name, folder in sorted(folders.items()):
        record = json.loads((folder / "job.json").read_text())
        outputs = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != "job.json")
        assert outputs == ["edit_00001_.flac"] == record["outputs"], (name, outputs)  # once: no second copy
        prompt = json.loads(read_metadata(folder / "edit_00001_.flac")["prompt"])
        assert prompt["1"]["inputs"]["audio"] == Path(record["input"]).name  # the file it was made from
        assert prompt["4"]["inputs"]["positive"] == record["swept"]["4.positive"]
        assert name == f"{Path(record['input']).stem}_positive-{PROMPTS.index(record['swept']['4.positive']) + 1}"
        records.append(record)
    assert {(Path(r["input"]).name, r["swept"]["4.positive"]) for r in records} == {
        (f"take{i}.wav", p) for i in range(6) for p in PROMPTS}
    return records


def test_plan_is_inputs_times_sweeps_with_stable_names(batch):
    from prompt_audio_edit import NODE_CLASS_MAPPINGS

    jobs = plan_jobs(sample_workflow(), "wf", [str(batch["takes"])], batch["takes"], batch["out"],
                     [f"4.positive=@{batch['root'] / 'prompts.txt'}", "Sample.seed=0,7"], NODE_CLASS_MAPPINGS)
    assert len(jobs) == 6 * 2 * 2
    assert jobs[3].name == "take0_positive-2_seed-2" and jobs[3].out_dir == batch["out"] / jobs[3].name
    assert jobs[3].workflow["4"]["inputs"]["positive"] == "a cat, meowing" and jobs[3].workflow["4"]["inputs"][
        "seed"] == 7
    assert jobs[3].files[("1", "audio")] == batch["takes"] / "take0.wav"
    assert len({job.name for job in jobs}) == len(jobs)
    with pytest.raises(RunError, match="does not have"):
        plan_jobs(sample_workflow(), "wf", [], batch["takes"], batch["out"], ["4.prompt=a,b"], NODE_CLASS_MAPPINGS)
    with pytest.raises(RunError, match="more than"):
        plan_jobs(sample_workflow(), "wf", [], batch["takes"], batch["out"],
                  [f"4.seed={','.join(map(str, range(400)))}", f"4.steps={','.join(map(str, range(1, 400)))}"],
                  NODE_CLASS_MAPPINGS)


def test_batch_of_6_inputs_by_2_prompts_on_2_workers(batch):
    from tests.fake_comfy import free_port

    # --ray without an address starts a cluster for the run even where RAY_ADDRESS (or /tmp/ray's last cluster)
    # names another: plain ray.init() would join that one, and refuse the CPU count.
    code, out, err = finish(start(pae_command(batch, sample_workflow()), batch["root"],
                                  RAY_ADDRESS=f"127.0.0.1:{free_port()}"))
    assert code == 0, err[-3000:]
    records = check_every_job_saved_once(batch["out"], 12)
    pids = {r["worker"]["pid"] for r in records}
    assert len(pids) == 2  # both workers took jobs
    for pid in pids:  # the model loaded once per worker, however many jobs it ran
        assert max(r["models_loaded_by_worker"] for r in records if r["worker"]["pid"] == pid) == 1
    assert len(out.split()) == 12  # each saved file printed once

    # The same command again: every job is finished, nothing runs, nothing is written.
    before = {p: p.stat().st_mtime_ns for p in batch["out"].rglob("*")}
    code, _, err = finish(start(pae_command(batch, sample_workflow()), batch["root"]))
    assert code == 0 and "12 of 12 job(s) finished in an earlier run" in err
    assert {p: p.stat().st_mtime_ns for p in batch["out"].rglob("*")} == before

    # Another graph into the same folder is refused per job rather than mistaken for finished work.
    code, _, err = finish(start(pae_command(batch, sample_workflow(steps=3)), batch["root"]))
    assert code == 1 and "made from another workflow" in err


def test_a_worker_killed_mid_job_is_restarted_and_every_job_saved_once(batch):
    process = start(pae_command(batch, sample_workflow(steps=30)), batch["root"])
    lines: list[str] = []
    started = {int(wait_for(process, f"worker w{n}: pid", lines).split("pid ")[1].split()[0]) for n in (1, 2)}
    wait_for(process, "done on", lines)  # the workers are busy with jobs now
    killed = min(started)
    os.kill(killed, signal.SIGKILL)
    code, out, err = finish(process)
    assert code == 0, "".join(lines) + err[-3000:]
    records = check_every_job_saved_once(batch["out"], 12)
    replacements = {r["worker"]["pid"] for r in records} - started
    assert len(replacements) == 1  # Ray restarted the killed worker, and the new process took jobs


def test_a_killed_driver_resumes_where_it_stopped(batch):
    process = start(pae_command(batch, sample_workflow(steps=10)), batch["root"])
    lines: list[str] = []
    wait_for(process, "[3/12]", lines)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and the local cluster it started
    process.communicate()
    finished = {name for name, folder in job_folders(batch["out"]).items() if (folder / "job.json").is_file()}
    assert 3 <= len(finished) < 12 and len(job_folders(batch["out"])) == len(finished)
    stamps = {name: (batch["out"] / name / "job.json").stat().st_mtime_ns for name in finished}
    code, _, err = finish(start(pae_command(batch, sample_workflow(steps=10)), batch["root"]))
    assert code == 0, err[-3000:]
    assert f"{len(finished)} of 12 job(s) finished in an earlier run; skipped" in err
    check_every_job_saved_once(batch["out"], 12)
    assert {name: (batch["out"] / name / "job.json").stat().st_mtime_ns for name in finished} == stamps


def test_a_bad_input_fails_its_jobs_only(batch):
    (batch["takes"] / "take5.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    code, out, err = finish(start(pae_command(batch, sample_workflow()), batch["root"]))
    assert code == 1
    folders = job_folders(batch["out"])
    assert len(folders) == 10 and not any(name.startswith("take5") for name in folders)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("pae: 2 of 12 job(s) did not finish: take5_positive-1: node 1 (PAE_LoadAudio)")
    assert "Traceback" not in err


def test_ctrl_c_stops_the_batch_without_partial_files(batch):
    process = start(pae_command(batch, sample_workflow(steps=200)), batch["root"])
    lines: list[str] = []
    wait_for(process, "worker w2: pid", lines)
    wait_for(process, "(PAE_Sample)", lines)  # a job is sampling now (a fixed sleep raced a loaded machine)
    os.kill(process.pid, signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, "".join(lines) + err[-3000:]
    assert "stopping" in err and "interrupted" in err
    leftovers = [p for p in batch["out"].rglob("*") if p.name.startswith(".") or p.suffix == ".partial"]
    assert leftovers == []
    for folder in job_folders(batch["out"]).values():  # whatever finished before Ctrl-C is whole
        assert (folder / "job.json").is_file()


def test_without_ray_installed_the_hint_names_the_extra(batch, monkeypatch, capsys):
    from prompt_audio_edit.runner.cli import main as pae

    monkeypatch.setitem(sys.modules, "ray", None)
    path = batch["root"] / "workflow.json"
    path.write_text(json.dumps(sample_workflow()))
    code = pae(["run", str(path), "--input", str(batch["takes"]), "--models", str(batch["models"]),
                "--out", str(batch["out"]), "--ray"])
    assert code == 2
    assert 'pip install "prompt-audio-edit[ray]"' in capsys.readouterr().err


def test_an_unreachable_cluster_gives_one_line_at_once(batch, capsys):
    from prompt_audio_edit.runner.cli import main as pae
    from tests.fake_comfy import free_port

    path = batch["root"] / "workflow.json"
    path.write_text(json.dumps(sample_workflow()))
    started = time.monotonic()
    code = pae(["run", str(path), "--input", str(batch["takes"]), "--models", str(batch["models"]),
                "--out", str(batch["out"]), "--ray", f"127.0.0.1:{free_port()}"])
    assert code == 2 and time.monotonic() - started < 30
    assert "cannot reach a Ray cluster at 127.0.0.1:" in capsys.readouterr().err


def test_a_named_cluster_that_refuses_is_told_how_to_send_its_token(monkeypatch):
    # Seen with Ray 2.60: `ray start --head` turns token authentication on, and a driver sends the token to an
    # address named explicitly only with RAY_AUTH_MODE=token; Ray's own error says only "failed to connect".
    from prompt_audio_edit.runner.cluster import _auth_hint

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "set RAY_AUTH_MODE=token here" in _auth_hint("10.0.0.5:6379")
    assert _auth_hint("auto") == _auth_hint(None) == ""  # Ray sends a token it finds to those itself
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert _auth_hint("10.0.0.5:6379") == ""
