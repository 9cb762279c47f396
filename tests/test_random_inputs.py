"""Random bytes, random WAV headers and random widget values fed to Load Audio, Save Audio and VAE Encode: the
process never crashes (decodes run in one child process per test), and every call ends in the pack's input error or a
correct result."""

from __future__ import annotations

import json
import queue
import struct
import subprocess
import sys
import threading

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

LoadAudio, SaveAudio = NODE_CLASS_MAPPINGS["PAE_LoadAudio"], NODE_CLASS_MAPPINGS["PAE_SaveAudio"]
# Derandomised (the same examples every run, so CI is repeatable) and without shrinking (a failure prints its
# example as found; shrinking a subprocess-backed case can take many minutes).
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                    phases=[Phase.explicit, Phase.generate])

# Loads every file named on stdin and prints one verdict per file: "ok C T", or "error <input name>".
CHILD = """
import json, sys
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.engine.io.audio import read_audio
for line in sys.stdin:
    spec = json.loads(line)
    try:
        audio = read_audio(spec["path"], start_s=spec["start"], duration_s=spec["duration"])
        w = audio["waveform"]
        assert w.dim() == 3 and w.shape[0] == 1 and audio["sample_rate"] > 0 and bool(w.isfinite().all())
        print("ok", w.shape[1], w.shape[2], flush=True)
    except PAEInputError as exc:
        print("error", exc.input_name, flush=True)
"""


def wav_header(channels: int, rate: int, bits: int, fmt_tag: int, data: bytes, lie: int) -> bytes:
    """A RIFF/WAVE file whose header fields are whatever hypothesis picked (sizes may lie)."""
    block = max(1, channels * bits // 8)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", (len(data) + lie)
                                                                                        & 0xFFFFFFFF) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


class LoaderChild:
    """One child process that loads files for a whole test: a crash ends it, and the test fails on that example."""

    def __init__(self, log) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, bufsize=1)
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # the child has ended

    def load(self, tmp_path, files: list[tuple[bytes, float, float | None]]) -> list[str]:
        specs = []
        for index, (content, start, duration) in enumerate(files):
            path = tmp_path / f"f{index}.wav"
            path.write_bytes(content)
            specs.append(json.dumps({"path": str(path), "start": start, "duration": duration}))
        self.process.stdin.write("\n".join(specs) + "\n")
        self.process.stdin.flush()
        verdicts = []
        for _ in files:
            try:
                line = self.lines.get(timeout=120)
            except queue.Empty:
                line = None
            if line is None:  # a crash, a hang, or an error that is not the pack's
                self.log.seek(0)
                pytest.fail("the loader process died or hung:\n" + self.log.read()[-3000:])
            verdicts.append(line)
        return verdicts

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    with open(tmp_path_factory.mktemp("child") / "stderr.txt", "w+") as log:
        child = LoaderChild(log)
        yield child
        child.close()


times = st.one_of(st.just(0.0), st.floats(0, 5), st.sampled_from([float("nan"), float("inf"), -1.0]))


@SETTINGS
@given(st.lists(st.tuples(st.binary(max_size=4096), times, st.one_of(st.none(), times)), min_size=8, max_size=8))
def test_random_bytes_never_crash_the_loader(tmp_path_factory, loader, files):
    for verdict in loader.load(tmp_path_factory.mktemp("bytes"), files):
        assert verdict.split()[0] in ("ok", "error")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 70), st.sampled_from([0, 1, 8000, 44100, 2 ** 31, 2 ** 32 - 1]),
                          st.sampled_from([0, 1, 8, 16, 24, 32, 64]), st.sampled_from([1, 3, 0xFFFE, 0, 7]),
                          st.binary(max_size=2048), st.integers(-64, 10 ** 6)), min_size=8, max_size=8))
def test_random_wav_headers_never_crash_the_loader(tmp_path_factory, loader, headers):
    files = [(wav_header(*header), 0.0, None) for header in headers]
    for header, verdict in zip(headers, loader.load(tmp_path_factory.mktemp("wav"), files)):
        word, *rest = verdict.split()
        assert word in ("ok", "error")
        if word == "ok":
            assert 1 <= int(rest[0]) <= max(header[0], 1) * 2 and int(rest[1]) > 0


@pytest.fixture
def output_dirs(tmp_path):
    from prompt_audio_edit.engine.core import bridge

    bridge.set_directories(output=str(tmp_path / "out"), input=str(tmp_path / "in"), models=str(tmp_path / "m"))
    (tmp_path / "out").mkdir()
    yield tmp_path
    bridge.reset_directories()


prefixes = st.one_of(st.text(max_size=40), st.sampled_from([".", "..", "a/..", "/abs", "a\\b", "x/./y", "~/z"]))


@SETTINGS
@given(prefix=prefixes, fmt=st.sampled_from(["wav", "flac", "mp3", "ogg", ""]),
       rate=st.sampled_from([1, 7000, 8000, 44100, 96000, 10 ** 9]), channels=st.integers(1, 12),
       quality=st.sampled_from(["V0", "128k", "320k", "bad"]))
def test_random_save_widgets_end_in_an_input_error_or_files_inside_the_folder(output_dirs, prefix, fmt, rate,
                                                                               channels, quality):
    out = output_dirs / "out"
    before = {p for p in output_dirs.rglob("*")}
    audio = {"waveform": torch.zeros(1, channels, 64), "sample_rate": rate}
    try:
        result = SaveAudio().run(audio=audio, filename_prefix=prefix, format=fmt, mp3_quality=quality)
    except PAEInputError:
        result = None
    added = {p for p in output_dirs.rglob("*")} - before
    assert all(p.resolve().is_relative_to(out.resolve()) for p in added)
    if result is not None:
        files = result["ui"]["audio"]
        assert len(files) == 1 and (out / files[0]["subfolder"] / files[0]["filename"]).is_file()


@SETTINGS
@given(seconds=st.sampled_from([0.0, 0.01, 0.3, 40.0]), rate=st.sampled_from([1, 8000, 16000, 48000, 10 ** 7]),
       channels=st.integers(1, 9), value=st.sampled_from([0.0, 1.0, float("nan"), 1e30]))
def test_random_audio_into_vae_encode(tiny_backbone, seconds, rate, channels, value):
    samples = int(seconds * min(rate, 48000))
    audio = {"waveform": torch.full((1, channels, samples), value), "sample_rate": rate}
    try:
        (latent,) = NODE_CLASS_MAPPINGS["PAE_VAEEncode"]().run(model=tiny_backbone, audio=audio)
    except PAEInputError:
        return
    assert torch.isfinite(latent["samples"]).all() and latent["pae"]["source_channels"] == channels
