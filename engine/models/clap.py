"""CLAP text-audio scoring: loading a transformers CLAP folder and keeping the best of several edited candidates.

PPAE's guidance bootstrapping edits one clip at several guidance scales and keeps the candidate whose CLAP audio
embedding is closest to the target prompt's text embedding; an optional fidelity term also rewards closeness to
the source clip's audio embedding:

    score(i) = cos(text(prompt), audio(i)) + fidelity_weight * cos(audio(source), audio(i))

Candidates carry their origin in the AUDIO dict under ``CANDIDATES_KEY``: a list with one dict per batch row,
``{"clip": int, "guidance": float, "target_prompt": str, "source_prompt": str}``. Rows of the same clip compete;
rows of different clips do not.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..io.audio import CANDIDATES_KEY, check_audio, make_audio, resample, to_channels
from ..core import loading
from ..core.placement import CPU, made_on_cpu
from ..core.checkpoints import LIBRARY_WEIGHT_SUFFIXES
from ..core.loading import LoadedModel
from ..core.errors import PAEInputError
from ..core.files import read_json_dict

DOWNLOAD_HINT = ("download a transformers CLAP repository such as laion/clap-htsat-unfused or laion/larger_clap_music "
                 "(all of it: config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json and the "
                 "tokenizer files) into models/clap/<name>/")
_WINDOWS_PER_FORWARD = 16  # CLAP windows (10 s each for the real models) per audio-tower forward
_AUDIO_CACHE_SIZE = 512    # audio embeddings a loaded CLAP remembers (a few KB each)



# ------------------------------------------------------------------------------------------- folders


def _is_clap_folder(folder: Path) -> bool:
    config = read_json_dict(folder / "config.json")
    return config is not None and config.get("model_type") == "clap"


def list_clap_models() -> list[str]:
    """Names of the transformers CLAP folders (config.json with model_type 'clap') in every models/clap/ root."""
    return loading.list_model_folders("clap", _is_clap_folder)


def find_clap_folder(name: str) -> Path:
    """Resolve a CLAP model name to its folder inside the registered models/clap/ folders."""
    return loading.find_model("clap", name, "model_name", DOWNLOAD_HINT, folder=True, label="CLAP folder")


def missing_clap_files(folder: Path) -> list[str]:
    """What a CLAP folder lacks to be loaded: config, weights, feature-extractor settings, tokenizer."""
    files = {f.name for f in folder.iterdir() if f.is_file()} if folder.is_dir() else set()
    missing = []
    if "config.json" not in files:
        missing.append("config.json")
    if not any(f.endswith(LIBRARY_WEIGHT_SUFFIXES) for f in files):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not files & {"preprocessor_config.json", "processor_config.json"}:
        missing.append("preprocessor_config.json")
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
        missing.append("tokenizer files (tokenizer.json, or vocab.json + merges.txt)")
    return missing


# ------------------------------------------------------------------------------------------- scorer
def _pooled(output: Any) -> torch.Tensor:
    """The embedding from get_text/audio_features: transformers 5 returns an output object, 4.x a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    return pooled if pooled is not None else output[0]


def _window_starts(length: int, window: int) -> list[int]:
    """Start samples of evenly spaced full windows covering [0, length); one (padded) window when it fits."""
    if length <= window:
        return [0]
    count = math.ceil(length / window)
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


class ClapScorer(LoadedModel):
    """A loaded CLAP model: normalised text and audio embeddings in one shared space."""

    def __init__(self, model: Any, feature_extractor: Any, tokenizer: Any, name: str, folder: Path):
        self.model = model
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.name = name
        self.folder = folder
        self.sample_rate = int(feature_extractor.sampling_rate)  # 48 kHz for the released models
        self.window = int(feature_extractor.nb_max_samples)      # samples per CLAP window (10 s)
        self.fusion = bool(getattr(model.config.audio_config, "enable_fusion", False))
        # Audio embeddings by content: re-scoring after a prompt or weight change re-embeds nothing.
        self._audio_cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"clap": self.model}

    def _place(self) -> tuple[torch.device, torch.dtype]:
        param = next(self.model.parameters())
        return param.device, param.dtype

    @torch.no_grad()
    def embed_text(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings [N, D] (float32, CPU), one per prompt; long prompts are truncated."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        self.activate()
        device, _ = self._place()
        with made_on_cpu():
            tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        output = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                              attention_mask=tokens["attention_mask"].to(device))
        return torch.nn.functional.normalize(_pooled(output).float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_audio(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Unit-length audio embeddings [B, D] (float32, CPU) of a waveform [B, C, T] at any rate.

        Each clip is downmixed to mono and resampled (soxr) to CLAP's rate. A clip up to CLAP's window (10 s) is one
        window, which the feature extractor repeat-pads; a longer one is scored as evenly spaced full windows that
        cover it, their embeddings averaged. This replaces the feature extractor's random crop, so a clip always gets
        the same score. Fusion models see every window flagged as 'longer', as a lone clip is in transformers.
        Identical rows are embedded once, so they score exactly alike; embeddings are remembered by content
        (the last few hundred clips), so scoring the same audio again costs nothing.
        """
        if waveform.dim() != 3 or waveform.shape[0] == 0 or waveform.shape[-1] == 0:
            raise PAEInputError("audio", f"expected a non-empty waveform [batch, channels, samples], got shape "
                                f"{tuple(waveform.shape)}.")
        mono = to_channels(waveform.detach().to(torch.float32).cpu(), 1)[:, 0]
        mono = resample(mono, int(sample_rate), self.sample_rate).contiguous()
        keys = [hashlib.sha256(row.numpy().tobytes()).digest() for row in mono]
        found: dict[bytes, torch.Tensor] = {}
        with self._cache_lock:
            for key in keys:
                if key in self._audio_cache:
                    self._audio_cache.move_to_end(key)
                    found[key] = self._audio_cache[key]
        todo = list(dict.fromkeys(key for key in keys if key not in found))
        if todo:
            first_row = {key: keys.index(key) for key in todo}
            windows: list[Any] = []
            owner: list[int] = []
            for slot, key in enumerate(todo):
                data = mono[first_row[key]].numpy()
                for start in _window_starts(data.shape[0], self.window):
                    windows.append(data[start:start + self.window])
                    owner.append(slot)
            embedded = torch.cat([self._embed_windows(windows[i:i + _WINDOWS_PER_FORWARD])
                                  for i in range(0, len(windows), _WINDOWS_PER_FORWARD)])
            sums = torch.zeros(len(todo), embedded.shape[-1], device=CPU)
            sums.index_add_(0, torch.tensor(owner, device=CPU), embedded)
            fresh = torch.nn.functional.normalize(sums, dim=-1)
            found.update((key, row.clone()) for key, row in zip(todo, fresh))
            with self._cache_lock:
                for key in todo:
                    self._audio_cache[key] = found[key]
                while len(self._audio_cache) > _AUDIO_CACHE_SIZE:
                    self._audio_cache.popitem(last=False)
        return torch.stack([found[key] for key in keys])

    def clear_audio_cache(self) -> None:
        """Forget the remembered audio embeddings."""
        with self._cache_lock:
            self._audio_cache.clear()

    def _embed_windows(self, windows: list[Any]) -> torch.Tensor:
        self.activate()
        device, dtype = self._place()
        with made_on_cpu():
            features = self.feature_extractor(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        is_longer = torch.full((len(windows), 1), self.fusion, dtype=torch.bool, device=device)
        output = self.model.get_audio_features(input_features=features["input_features"].to(device, dtype),
                                               is_longer=is_longer)
        return torch.nn.functional.normalize(_pooled(output).float(), dim=-1).cpu()


def load_clap(name: str, dtype_name: str = "auto") -> ClapScorer:
    """Load a CLAP folder from models/clap/ once per (folder, dtype, device) and share it while in use."""
    folder = find_clap_folder(name)
    config = read_json_dict(folder / "config.json")
    if config is not None and config.get("model_type") != "clap":
        raise PAEInputError("model_name", f"'{name}' holds a '{config.get('model_type')}' model, not CLAP; "
                            f"{DOWNLOAD_HINT}.")
    missing = missing_clap_files(folder)
    if missing:
        raise PAEInputError("model_name", f"the CLAP folder '{name}' is incomplete, missing: {', '.join(missing)}; "
                            f"{DOWNLOAD_HINT}.")

    def build(device: torch.device, dtype: torch.dtype) -> ClapScorer:
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        model = ClapModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        feature_extractor = ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return ClapScorer(model, feature_extractor, tokenizer, folder.name, folder)

    return loading.load_model(folder, dtype_name, build, label=f"clap:{folder.name}", input_name="model_name",
                              what=f"the CLAP folder '{name}'",
                              fix=f"it may be damaged or from another version: {DOWNLOAD_HINT}.")


def clear_cache() -> None:
    """Forget every loaded CLAP model (tests)."""
    loading.clear_cache()


# ------------------------------------------------------------------------------- candidate selection
@dataclass
class CandidateScores:
    """Per-row scores of a candidate batch and the ranking within each clip."""

    text: list[float]                 # cos(text(prompt of the row), audio(row))
    fidelity: list[float] | None      # cos(audio(source of the row's clip), audio(row)); None without source
    total: list[float]                # text + fidelity_weight * fidelity
    clip_of_row: list[int]
    prompts: list[str]                # the prompt each row was scored against
    guidance: list[float | None]
    ranked: dict[int, list[int]]      # clip id -> its rows, best first (ties: lower row first)
    fidelity_weight: float
    prompt_from_metadata: bool
    shared_guidance: float | None = None  # one scale kept for every clip (by the best mean total), or None

    @property
    def clips(self) -> list[int]:
        return sorted(self.ranked)

    @property
    def best_rows(self) -> list[int]:
        return [self.ranked[clip][0] for clip in self.clips]

    @property
    def ranked_rows(self) -> list[int]:
        return [row for clip in self.clips for row in self.ranked[clip]]


def _candidate_metadata(audio: dict[str, Any], batch: int) -> list[dict[str, Any]] | None:
    meta = audio.get(CANDIDATES_KEY)
    if meta is None:
        return None
    if not isinstance(meta, (list, tuple)) or len(meta) != batch or not all(isinstance(m, dict) for m in meta):
        count = len(meta) if isinstance(meta, (list, tuple)) else type(meta).__name__
        raise PAEInputError("audio", f"its '{CANDIDATES_KEY}' entry should be a list of {batch} dicts (one per clip of "
                            f"the batch), got {count}; the node before it changed the batch without updating it.")
    return list(meta)


def _clip_ids(meta: list[dict[str, Any]] | None, batch: int) -> list[int]:
    if meta is None:
        return [0] * batch
    ids = []
    for row, entry in enumerate(meta):
        try:
            ids.append(int(entry.get("clip", 0)))
        except (TypeError, ValueError):
            raise PAEInputError("audio", f"row {row} of '{CANDIDATES_KEY}' has clip {entry.get('clip')!r}; "
                                "it should be the index of the source clip.") from None
    return ids


def _guidances(meta: list[dict[str, Any]] | None, batch: int) -> list[float | None]:
    if meta is None:
        return [None] * batch
    values: list[float | None] = []
    for entry in meta:
        try:
            values.append(float(entry["guidance"]) if entry.get("guidance") is not None else None)
        except (TypeError, ValueError):
            values.append(None)
    return values


def _row_prompts(prompt: str | None, meta: list[dict[str, Any]] | None, batch: int) -> tuple[list[str], bool]:
    """The prompt each row is scored against: the node's prompt, else the edit's target prompt of the row."""
    text = (prompt or "").strip()
    if text:
        return [text] * batch, False
    recorded = [str(entry.get("target_prompt") or "").strip() for entry in meta] if meta is not None else []
    if meta is None or not all(recorded):
        where = ("the audio carries no edit metadata (it did not come from an editing node)" if meta is None
                 else "the edit metadata of the audio records no target prompt")
        raise PAEInputError("prompt", f"the prompt is empty and {where}; type the prompt the result should match.")
    return recorded, True


def _source_rows(source_audio: Any, clips: list[int]) -> tuple[torch.Tensor, int, list[int]]:
    """The source waveform and, for each clip (ascending id), the source row it is compared with."""
    waveform, rate = check_audio(source_audio, "source_audio")
    count = waveform.shape[0]
    if count == 1:
        return waveform, rate, [0] * len(clips)
    if count == len(clips):
        return waveform, rate, list(range(len(clips)))
    raise PAEInputError("source_audio", f"holds {count} clips but the candidates come from {len(clips)} clip(s); "
                        "give one source clip (used for all) or one per clip, in the order of the clips.")


def score_candidates(scorer: ClapScorer, audio: dict[str, Any], prompt: str | None = "",
                     source_audio: dict[str, Any] | None = None, fidelity_weight: float = 0.0) -> CandidateScores:
    """Score every row of a candidate batch and rank the rows of each clip, best first."""
    if not isinstance(scorer, ClapScorer):
        raise PAEInputError("clap", f"expected a CLAP model from Load CLAP, got {type(scorer).__name__}.")
    waveform, rate = check_audio(audio, "audio")
    batch = waveform.shape[0]
    meta = _candidate_metadata(audio, batch)
    try:
        weight = float(fidelity_weight)
    except (TypeError, ValueError):
        weight = float("nan")
    if not math.isfinite(weight) or weight < 0:
        raise PAEInputError("fidelity_weight", f"must be a number >= 0, got {fidelity_weight!r}.")
    prompts, from_meta = _row_prompts(prompt, meta, batch)
    clip_of_row = _clip_ids(meta, batch)
    clips = sorted(set(clip_of_row))
    if source_audio is None and weight > 0:
        raise PAEInputError("source_audio", f"fidelity_weight is {weight:g} but no source audio is connected; "
                            "connect the original clip (e.g. the Load Audio output) or set fidelity_weight to 0.")
    source = _source_rows(source_audio, clips) if source_audio is not None else None

    unique_prompts = list(dict.fromkeys(prompts))
    text_emb = scorer.embed_text(unique_prompts)
    row_text = text_emb[[unique_prompts.index(p) for p in prompts]]
    audio_emb = scorer.embed_audio(waveform, rate)
    text_scores = (row_text * audio_emb).sum(-1)
    total = text_scores.clone()
    fidelity_scores = None
    if source is not None:
        source_wave, source_rate, source_of_clip = source
        source_emb = scorer.embed_audio(source_wave, source_rate)
        index = [source_of_clip[clips.index(c)] for c in clip_of_row]
        fidelity_scores = (source_emb[index] * audio_emb).sum(-1)
        total = total + weight * fidelity_scores
    totals = total.tolist()
    ranked = {clip: sorted((r for r in range(batch) if clip_of_row[r] == clip), key=lambda r: -totals[r])
              for clip in clips}  # sorted() is stable: equal totals keep the lower row first
    return CandidateScores(
        text=text_scores.tolist(),
        fidelity=fidelity_scores.tolist() if fidelity_scores is not None else None,
        total=totals,
        clip_of_row=clip_of_row,
        prompts=prompts,
        guidance=_guidances(meta, batch),
        ranked=ranked,
        fidelity_weight=weight,
        prompt_from_metadata=from_meta,
    )


def share_one_scale(scores: CandidateScores) -> CandidateScores:
    """Keep the same guidance scale for every clip (e.g. every window of a song, so it does not change character from
    window to window): the scale whose candidates have the best mean total over the clips goes first in each clip."""
    by_scale: dict[float, list[float]] = {}
    for row, scale in enumerate(scores.guidance):
        if scale is None:
            raise PAEInputError("one_scale_for_all", "the candidates carry no guidance scale (they did not come from "
                                "an edit run at several scales); turn the option off.")
        by_scale.setdefault(scale, []).append(scores.total[row])
    complete = {s: v for s, v in by_scale.items()
                if {scores.clip_of_row[r] for r in range(len(scores.total)) if scores.guidance[r] == s}
                == set(scores.clips)}
    if not complete:
        raise PAEInputError("one_scale_for_all", "no guidance scale was tried on every clip; turn the option off.")
    chosen = max(complete, key=lambda s: (sum(complete[s]) / len(complete[s]), -s))
    ranked = {clip: sorted(rows, key=lambda r: scores.guidance[r] != chosen) for clip, rows in scores.ranked.items()}
    return replace(scores, ranked=ranked, shared_guidance=chosen)


def format_scores(scores: CandidateScores, model_name: str = "") -> str:
    """A readable table of the ranking: one block per clip, one line per candidate, best first."""
    formula = "text" if scores.fidelity is None else f"text + {scores.fidelity_weight:g} x fidelity"
    lines = [f"CLAP Select{f' ({model_name})' if model_name else ''}: score = {formula}"]
    if not scores.prompt_from_metadata:
        lines.append(f'prompt: "{scores.prompts[0]}"')
    if scores.shared_guidance is not None:
        lines.append(f"one scale for all clips: guidance {scores.shared_guidance:g} (the best mean total)")
    header = f"{'rank':>4} {'row':>4} {'guidance':>8} {'text':>8} {'fidelity':>8} {'total':>8}"
    for clip in scores.clips:
        rows = scores.ranked[clip]
        lines.append("")
        lines.append(f"clip {clip}: {len(rows)} candidate{'s' if len(rows) != 1 else ''}")
        if scores.prompt_from_metadata:
            recorded = " | ".join(dict.fromkeys(scores.prompts[r] for r in rows))
            lines.append(f'prompt (from the edit): "{recorded}"')
        lines.append(header)
        for rank, row in enumerate(rows, start=1):
            guidance = scores.guidance[row]
            fidelity = scores.fidelity[row] if scores.fidelity is not None else None
            lines.append(f"{rank:>4} {row:>4} {'-' if guidance is None else f'{guidance:g}':>8} "
                         f"{scores.text[row]:>8.4f} {'-' if fidelity is None else f'{fidelity:.4f}':>8} "
                         f"{scores.total[row]:>8.4f}{'  kept' if rank == 1 else ''}")
    return "\n".join(lines)


def _rows_of(audio: dict[str, Any], waveform: torch.Tensor, rate: int, rows: list[int]) -> dict[str, Any]:
    out = make_audio(waveform[rows], rate)
    meta = audio.get(CANDIDATES_KEY)
    if meta is not None:
        out[CANDIDATES_KEY] = [dict(meta[r]) for r in rows]
    return out


def select_candidates(scorer: ClapScorer, audio: dict[str, Any], prompt: str | None = "",
                      source_audio: dict[str, Any] | None = None,
                      fidelity_weight: float = 0.0, one_scale_for_all: bool = False,
                      ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Keep the CLAP-best candidate of each clip.

    Returns (best: one row per clip in ascending clip order, ranked: every row clip by clip with the best first,
    scores: a readable table). Both AUDIO outputs carry the candidate metadata of their rows.
    """
    scores = score_candidates(scorer, audio, prompt, source_audio, fidelity_weight)
    if one_scale_for_all:
        scores = share_one_scale(scores)
    waveform, rate = check_audio(audio, "audio")
    best = _rows_of(audio, waveform, rate, scores.best_rows)
    ranked = _rows_of(audio, waveform, rate, scores.ranked_rows)
    return best, ranked, format_scores(scores, scorer.name)
