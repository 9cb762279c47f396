"""CLAP loading and candidate selection on a tiny random CLAP saved as a transformers folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.models import clap as clap_engine
from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.models.clap import CANDIDATES_KEY, ClapScorer, list_clap_models, score_candidates
from prompt_audio_edit.engine.core.errors import PAEInputError
from prompt_audio_edit.nodes.clap_nodes import CLAPSelect, LoadCLAP

TINY = "tiny-clap"
RATE = 48000
PROMPT = "a dog barking in the rain"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def clap_root(tmp_path_factory):
    """A models folder with one tiny CLAP, a folder of another model type and an empty folder."""
    from prompt_audio_edit.standins.clap import build_tiny_clap

    root = tmp_path_factory.mktemp("clap_models")
    build_tiny_clap(root / "clap" / TINY, seed=0)
    (root / "clap" / "not-clap").mkdir()
    (root / "clap" / "not-clap" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (root / "clap" / "empty").mkdir()
    return root


@pytest.fixture
def clap_dirs(clap_root):
    bridge.reset_directories()
    bridge.set_directories(models=str(clap_root))
    yield clap_root
    bridge.reset_directories()


@pytest.fixture(scope="module")
def clap(clap_root):
    """The tiny CLAP loaded through the node (fp32, so the reference comparison is exact up to float noise)."""
    bridge.reset_directories()
    bridge.set_directories(models=str(clap_root))
    try:
        (scorer,) = LoadCLAP().run(model_name=TINY, dtype="fp32")
    finally:
        bridge.reset_directories()
    return scorer


@pytest.fixture(scope="module")
def reference(clap_root, clap):
    """CLAP embeddings computed directly with transformers' ClapModel and ClapProcessor, not through the pack."""
    from transformers import ClapModel, ClapProcessor

    folder = clap_root / "clap" / TINY
    device = next(clap.model.parameters()).device
    model = ClapModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
    processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)

    class Reference:
        @staticmethod
        @torch.no_grad()
        def text(prompts):
            tokens = processor(text=list(prompts), return_tensors="pt", padding=True)
            out = model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                          attention_mask=tokens["attention_mask"].to(device))
            return out.pooler_output.cpu()

        @staticmethod
        @torch.no_grad()
        def audio(clips):
            """clips: mono 48 kHz float arrays, each at most 10 s."""
            inputs = processor(audio=[np.asarray(c, dtype=np.float32) for c in clips], sampling_rate=RATE,
                               return_tensors="pt")
            out = model.get_audio_features(input_features=inputs["input_features"].float().to(device),
                                           is_longer=inputs["is_longer"].to(device))
            return out.pooler_output.cpu()

    return Reference()


@pytest.fixture(scope="module")
def signals():
    """signals(rate=RATE, seconds=1.0, channels=1): five clearly different test clips [5, C, T] (low tone, high tone,
    noise, chirp, pulsed tone), built once per shape for this module; every call hands out a fresh copy."""
    made: dict[tuple, torch.Tensor] = {}

    def copy(rate: int = RATE, seconds: float = 1.0, channels: int = 1) -> torch.Tensor:
        if (rate, seconds, channels) not in made:
            made[rate, seconds, channels] = _signals(rate, seconds, channels)
        return made[rate, seconds, channels].clone()

    return copy


def _signals(rate: int, seconds: float, channels: int) -> torch.Tensor:
    t = torch.arange(int(round(seconds * rate)), dtype=torch.float64) / rate
    gen = torch.Generator().manual_seed(0)
    rows = [
        0.4 * torch.sin(2 * math.pi * 220 * t),
        0.4 * torch.sin(2 * math.pi * 3000 * t),
        0.1 * torch.randn(t.shape, generator=gen, dtype=torch.float64),
        0.4 * torch.sin(2 * math.pi * (200 + 4000 * t) * t),
        0.4 * torch.sin(2 * math.pi * 880 * t) * ((t * 8) % 1 < 0.3),
    ]
    mono = torch.stack(rows).to(torch.float32)[:, None]
    return mono.repeat(1, channels, 1) * torch.linspace(1.0, 0.6, channels)[None, :, None]


def audio_of(waveform: torch.Tensor, rate: int = RATE, meta: list[dict] | None = None) -> dict:
    audio = {"waveform": waveform, "sample_rate": rate}
    if meta is not None:
        audio[CANDIDATES_KEY] = meta
    return audio


def row_meta(batch: int, clip=lambda r: 0, prompt: str | None = PROMPT) -> list[dict]:
    """Candidate metadata; 'guidance' = row index, so every output row says where it came from."""
    meta = []
    for row in range(batch):
        entry = {"clip": clip(row), "guidance": float(row), "source_prompt": "a cat meowing in the rain"}
        if prompt is not None:
            entry["target_prompt"] = prompt
        meta.append(entry)
    return meta


def select(clap, audio, prompt=PROMPT, fidelity_weight=0.0, source_audio=None):
    inputs = {"clap": clap, "audio": audio, "prompt": prompt, "fidelity_weight": fidelity_weight}
    if source_audio is not None:
        inputs["source_audio"] = source_audio
    return CLAPSelect().run(**inputs)


def table_rows(table: str) -> list[tuple]:
    """(rank, row, guidance, text, fidelity, total) of each candidate line of the scores table."""
    found = []
    for line in table.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0].isdigit() and cells[1].isdigit():
            number = [None if c == "-" else float(c) for c in cells[2:6]]
            found.append((int(cells[0]), int(cells[1]), *number))
    return found


def rows_of(output: dict) -> list[int]:
    return [int(m["guidance"]) for m in output[CANDIDATES_KEY]]


# ------------------------------------------------------------------------------------------ loading
def test_listing_and_loading_through_the_node(clap_dirs, clap):
    assert list_clap_models() == [TINY]
    assert LoadCLAP.INPUT_TYPES()["required"]["model_name"][0] == [TINY]
    assert isinstance(clap, ClapScorer) and clap.sample_rate == RATE and clap.window == 10 * RATE
    assert clap.managed is not None and not clap.model.training
    (again,) = LoadCLAP().run(model_name=TINY, dtype="fp32")
    assert again is clap  # cached while in use


def test_node_contract():
    required = list(CLAPSelect.INPUT_TYPES()["required"])
    assert required == ["clap", "audio", "prompt", "fidelity_weight"]
    assert list(CLAPSelect.INPUT_TYPES()["optional"]) == ["source_audio", "one_scale_for_all"]
    assert CLAPSelect.RETURN_TYPES == ("AUDIO", "AUDIO", "STRING")
    assert CLAPSelect.RETURN_NAMES == ("best", "ranked", "scores")
    weight = CLAPSelect.INPUT_TYPES()["required"]["fidelity_weight"][1]
    assert (weight["default"], weight["min"], weight["max"], weight["step"]) == (0.0, 0.0, 10.0, 0.05)
    assert LoadCLAP.RETURN_TYPES == ("PAE_CLAP",)
    assert LoadCLAP.INPUT_TYPES()["required"]["dtype"][1]["default"] == "auto"


# ------------------------------------------------------------------------- scores against transformers
def test_scores_equal_a_direct_transformers_computation(clap, signals, reference):
    candidates = signals()[:4]
    source = signals()[4:5]
    scores = score_candidates(clap, audio_of(candidates), PROMPT, audio_of(source), 0.7)

    text = reference.text([PROMPT])
    audio = reference.audio([c[0].numpy() for c in candidates])
    src = reference.audio([source[0, 0].numpy()])
    expected_text = (text @ audio.T)[0]
    expected_fidelity = (src @ audio.T)[0]
    assert torch.allclose(torch.tensor(scores.text), expected_text, atol=1e-5)
    assert torch.allclose(torch.tensor(scores.fidelity), expected_fidelity, atol=1e-5)
    assert torch.allclose(torch.tensor(scores.total), expected_text + 0.7 * expected_fidelity, atol=1e-5)
    # Random weights still give clearly different embeddings for different sounds.
    assert (audio @ audio.T - torch.eye(4)).max() < 0.99

    best, ranked, table = select(clap, audio_of(candidates), PROMPT, 0.7, audio_of(source))
    order = torch.argsort(expected_text + 0.7 * expected_fidelity, descending=True, stable=True).tolist()
    assert torch.equal(best["waveform"], candidates[order[:1]])
    assert torch.equal(ranked["waveform"], candidates[order])
    assert best["sample_rate"] == ranked["sample_rate"] == RATE
    assert CANDIDATES_KEY not in best  # no metadata in, none made up
    lines = table_rows(table)
    assert [line[1] for line in lines] == order  # the table lists the rows best first
    for rank, row, guidance, text_score, fidelity, total in lines:
        assert guidance is None
        assert abs(text_score - expected_text[row]) < 2e-4 and abs(fidelity - expected_fidelity[row]) < 2e-4
        assert abs(total - (expected_text[row] + 0.7 * expected_fidelity[row])) < 2e-4
    assert PROMPT in table and "kept" in table


def test_any_rate_and_channel_count_is_downmixed_and_resampled_like_soxr(clap, signals, reference):
    import soxr

    stereo = signals(rate=16000, channels=2)[:2]
    ours = clap.embed_audio(stereo, 16000)
    mono = stereo.mean(dim=1).numpy().astype(np.float64)
    expected = reference.audio([soxr.resample(row, 16000, RATE, quality="VHQ") for row in mono])
    assert torch.allclose(ours, expected, atol=1e-5)
    # the outputs keep the candidates' own rate and channels; only scoring resamples
    best, ranked, _ = select(clap, {"waveform": stereo, "sample_rate": 16000})
    assert best["sample_rate"] == 16000 and best["waveform"].shape == (1, 2, 16000)
    assert ranked["waveform"].shape == stereo.shape


def test_clip_longer_than_the_window_averages_full_windows(clap, reference):
    t = torch.arange(12 * RATE) / RATE
    long = (0.3 * torch.sin(2 * math.pi * (300 + 60 * t) * t)).to(torch.float32)
    ours = clap.embed_audio(long[None, None], RATE)
    windows = reference.audio([long[: 10 * RATE].numpy(), long[2 * RATE:].numpy()])
    expected = torch.nn.functional.normalize(windows.mean(0, keepdim=True), dim=-1)
    assert torch.allclose(ours, expected, atol=1e-5)  # fixed windows, so never the extractor's random crop


# ---------------------------------------------------------------------------------------- selection
def test_best_is_picked_wherever_it_sits_and_shuffling_keeps_the_winner(clap, signals):
    clips = signals()
    totals = torch.tensor(score_candidates(clap, audio_of(clips), PROMPT).total)
    ascending = torch.argsort(totals).tolist()  # the best candidate goes last
    batch = clips[ascending]
    best, ranked, _ = select(clap, audio_of(batch, meta=row_meta(5)))
    assert rows_of(best) == [4]
    assert torch.equal(best["waveform"], clips[ascending[-1:]])
    assert rows_of(ranked) == [4, 3, 2, 1, 0]
    assert torch.equal(ranked["waveform"], batch.flip(0))

    perm = [2, 4, 0, 3, 1]
    best2, ranked2, _ = select(clap, audio_of(batch[perm], meta=[row_meta(5)[p] for p in perm]))
    assert torch.equal(best2["waveform"], best["waveform"])
    assert rows_of(best2) == [4] and rows_of(ranked2) == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("j", [0, 1, 2])
def test_large_fidelity_weight_keeps_the_candidate_equal_to_the_source(clap, signals, j):
    clips = signals()[[0, 2, 3]]
    # A stereo source whose two channels are candidate j: its mono downmix is exactly candidate j.
    stereo_source = torch.cat([clips[j:j + 1], clips[j:j + 1]], dim=1)
    source = {"waveform": stereo_source, "sample_rate": RATE}
    weight = 10.0
    embeddings = clap.embed_audio(clips, RATE)
    # text_j - text_i >= -|a_j - a_i| and 1 - cos = |a_j - a_i|^2 / 2, so candidate j wins for ANY weights
    # as soon as every other candidate is further than 2 / weight from it.
    distances = (embeddings - embeddings[j]).norm(dim=-1)
    assert all(distances[i] > 2 / weight for i in range(3) if i != j)
    best, ranked, table = select(clap, audio_of(clips, meta=row_meta(3)), PROMPT, weight, source)
    assert rows_of(best) == [j] and torch.equal(best["waveform"], clips[j:j + 1])
    assert ranked["waveform"].shape == clips.shape
    assert "text + 10 x fidelity" in table and "1.0000" in table


def test_ties_go_to_the_lowest_row(clap, signals):
    clips = signals()
    x, y = clips[0:1], clips[1:2]
    scores = score_candidates(clap, audio_of(torch.cat([x, y])), PROMPT)
    x_wins = scores.total[0] >= scores.total[1]
    best, ranked, _ = select(clap, audio_of(torch.cat([y, x, x, y]), meta=row_meta(4)))
    assert rows_of(ranked) == ([1, 2, 0, 3] if x_wins else [0, 3, 1, 2])
    assert rows_of(best) == [1 if x_wins else 0]

    best, ranked, _ = select(clap, audio_of(x.repeat(3, 1, 1), meta=row_meta(3)))
    assert rows_of(best) == [0] and rows_of(ranked) == [0, 1, 2]


def test_candidates_are_grouped_by_clip(clap, signals):
    clips = signals()
    # guidance-major order, as a batched edit makes it: clip 0 rows 0/2/4, clip 1 rows 1/3/5
    batch = clips[[0, 1, 2, 3, 4, 0]]
    meta = row_meta(6, clip=lambda r: r % 2)
    sources = torch.cat([clips[2:3], clips[3:4]])  # one source per clip
    scores = score_candidates(clap, audio_of(batch, meta=meta), "", audio_of(sources), 0.5)
    assert scores.clips == [0, 1]
    for clip, rows in scores.ranked.items():
        assert sorted(rows) == [r for r in range(6) if r % 2 == clip]
        assert [scores.total[r] for r in rows] == sorted((scores.total[r] for r in rows), reverse=True)
    # each clip is compared with its own source
    emb = clap.embed_audio(batch, RATE)
    src = clap.embed_audio(sources, RATE)
    expected = torch.stack([emb[r] @ src[r % 2] for r in range(6)])
    assert torch.allclose(torch.tensor(scores.fidelity), expected, atol=1e-5)

    best, ranked, table = select(clap, audio_of(batch, meta=meta), "", 0.5, audio_of(sources))
    assert rows_of(best) == [scores.ranked[0][0], scores.ranked[1][0]]
    assert [m["clip"] for m in best[CANDIDATES_KEY]] == [0, 1]
    assert rows_of(ranked) == scores.ranked[0] + scores.ranked[1]
    assert [m["clip"] for m in ranked[CANDIDATES_KEY]] == [0, 0, 0, 1, 1, 1]
    assert torch.equal(ranked["waveform"], batch[rows_of(ranked)])
    assert "clip 0: 3 candidates" in table and "clip 1: 3 candidates" in table
    assert ranked[CANDIDATES_KEY] is not meta and meta[0]["clip"] == 0  # input metadata left untouched

    # one source for every clip is fine; two sources for three clips is not
    select(clap, audio_of(batch, meta=meta), "", 0.5, audio_of(sources[:1]))
    meta3 = row_meta(6, clip=lambda r: r % 3)
    with pytest.raises(PAEInputError, match=r"PAE_CLAPSelect: input 'source_audio': holds 2 clips .* 3 clip"):
        select(clap, audio_of(batch, meta=meta3), "", 0.5, audio_of(sources))


def test_empty_prompt_uses_the_recorded_target_prompt(clap, signals):
    clips = signals()[:3]
    from_meta = score_candidates(clap, audio_of(clips, meta=row_meta(3, prompt="a cat meowing")), "  ")
    explicit = score_candidates(clap, audio_of(clips), "a cat meowing")
    assert from_meta.prompt_from_metadata and from_meta.prompts == ["a cat meowing"] * 3
    assert torch.allclose(torch.tensor(from_meta.total), torch.tensor(explicit.total), atol=1e-6)
    # an explicit prompt wins over the recorded one
    overridden = score_candidates(clap, audio_of(clips, meta=row_meta(3, prompt="a cat meowing")), PROMPT)
    assert overridden.prompts == [PROMPT] * 3
    _, _, table = select(clap, audio_of(clips, meta=row_meta(3, prompt="a cat meowing")), "")
    assert 'prompt (from the edit): "a cat meowing"' in table

    with pytest.raises(PAEInputError, match=r"PAE_CLAPSelect: input 'prompt': .*records no target prompt"):
        select(clap, audio_of(clips, meta=row_meta(3, prompt=None)), "")
    with pytest.raises(PAEInputError, match=r"PAE_CLAPSelect: input 'prompt': .*no edit metadata"):
        select(clap, audio_of(clips), "")


# ---------------------------------------------------------------------------------------- bad input
def _nan_clip(signals) -> torch.Tensor:
    clip = signals()[:2].clone()
    clip[1, 0, 100] = float("nan")
    return clip


@pytest.mark.parametrize("inputs, name, text", [
    (lambda signals: {"audio": audio_of(torch.zeros(0, 1, RATE))}, "audio", "empty"),
    (lambda signals: {"audio": audio_of(_nan_clip(signals))}, "audio", "NaN"),
    (lambda signals: {"audio": audio_of(signals()[:2], meta=row_meta(3))}, "audio", "list of 2 dicts"),
    (lambda signals: {"audio": audio_of(signals()[:2], meta=[{"clip": "x"}, {"clip": 0}])}, "audio", "clip 'x'"),
    (lambda signals: {"audio": [1, 2]}, "audio", "AUDIO dict"),
    (lambda signals: {"clap": "not a model"}, "clap", "Load CLAP"),
    (lambda signals: {"fidelity_weight": 0.5}, "source_audio", "no source audio is connected"),
    (lambda signals: {"fidelity_weight": -1.0}, "fidelity_weight", ">= 0"),
    (lambda signals: {"fidelity_weight": float("nan")}, "fidelity_weight", ">= 0"),
    (lambda signals: {"source_audio": audio_of(_nan_clip(signals))}, "source_audio", "NaN"),
])
def test_bad_select_inputs_name_node_and_input(clap, signals, inputs, name, text):
    args = {"clap": clap, "audio": audio_of(signals()[:2]), "prompt": PROMPT, "fidelity_weight": 0.0}
    args.update(inputs(signals))
    with pytest.raises(PAEInputError) as info:
        CLAPSelect().run(**args)
    assert str(info.value).startswith(f"PAE_CLAPSelect: input '{name}':")
    assert text in str(info.value)


def test_bad_load_inputs_name_node_input_and_fix(clap_dirs, tmp_path):
    bridge.add_model_root(tmp_path)  # a second models folder (extra_model_paths.yaml style); listed too
    folder = tmp_path / "clap"
    folder.mkdir()
    tiny = clap_dirs / "clap" / TINY
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'model_name': no CLAP folder 'missing'.*"
                       r"laion/clap-htsat-unfused.*models/clap/<name>/"):
        LoadCLAP().run(model_name="missing", dtype="fp32")
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'model_name': .*'bert' model, not CLAP"):
        LoadCLAP().run(model_name="not-clap", dtype="fp32")
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'model_name': .*incomplete, missing: "
                       r"config.json, weights .*preprocessor_config.json, tokenizer files.*laion/larger_clap_music"):
        LoadCLAP().run(model_name="empty", dtype="fp32")
    (folder / "half").mkdir(exist_ok=True)
    (folder / "half" / "config.json").write_text((tiny / "config.json").read_text())
    (folder / "half" / "model.safetensors").write_bytes(b"not really safetensors")
    (folder / "half" / "preprocessor_config.json").write_text((tiny / "preprocessor_config.json").read_text())
    with pytest.raises(PAEInputError, match=r"incomplete, missing: tokenizer files"):
        LoadCLAP().run(model_name="half", dtype="fp32")
    (folder / "half" / "tokenizer.json").write_text((tiny / "tokenizer.json").read_text())
    (folder / "half" / "tokenizer_config.json").write_text((tiny / "tokenizer_config.json").read_text())
    assert list_clap_models() == ["half", TINY]
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'model_name': could not load the CLAP folder "
                       r"'half'.*laion/clap-htsat-unfused"):
        LoadCLAP().run(model_name="half", dtype="fp32")
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'model_name': .*outside"):
        LoadCLAP().run(model_name="../../elsewhere", dtype="fp32")
    with pytest.raises(PAEInputError, match=r"^PAE_LoadCLAP: input 'dtype': unknown dtype 'fp8'"):
        LoadCLAP().run(model_name=TINY, dtype="fp8")


def test_engine_refuses_a_non_scorer_before_any_work(signals):
    with pytest.raises(PAEInputError, match="input 'clap'"):
        clap_engine.select_candidates(object(), audio_of(signals()[:1]), PROMPT, None, 0.0)
