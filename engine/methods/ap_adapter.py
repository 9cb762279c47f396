"""AP-Adapter (arXiv 2407.16564): an audio prompt enters AudioLDM2 through decoupled cross-attention.

AudioMAE tokens of the clip are appended after AudioLDM2's 8 GPT-2 ("LOA") tokens. Every cross-attention layer
whose key projection takes 768 inputs (the GPT-2 stream; 32 layers in audioldm2-large) gets a processor that
attends the text on the first keys with the layer's own projections and the audio tokens with the adapter's
`to_k_ip` / `to_v_ip`, both with the same query:  out = text + α · audio.  The unconditional branch is the
negative prompt with the AudioMAE tokens of an all-zero fbank, as in the reference pipeline.

Applying the adapter does not touch the loaded model: it returns a copy of the backbone carrying an `AudioPrompt`,
and samplers install the processors for their run only, restoring the originals afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..attention.processors import close_attention, open_attention, processors_installed, project_keys
from ..models.audiomae import AudioPromptEncoder, check_pooling_rate, load_audio_encoder
from ..backbones.base import Backbone, CrossAttentionSite, TextConditioning
from ..core import loading
from ..core.checkpoints import find_weight_file, key_report, list_weight_files, read_checkpoint, tensor_dict
from ..core.errors import PAEInputError
from ..core.checks import clean_prompt

log = logging.getLogger(__name__)

AUDIO_TOKEN_WIDTH = 768   # AudioMAE ViT-B width = AudioLDM2's GPT-2 stream width
_KEY_SUFFIXES = (".to_k_ip.weight", ".to_v_ip.weight")
DOWNLOAD_HINT = ("put AP-Adapter's released pytorch_model.bin (from the fundwotsai2001/AP-adapter README) into "
                 "models/ap_adapter/")
MAX_SCALE = 2.0


@dataclass
class AdapterWeights:
    """The released adapter: per attention-processor name, the audio key and value projections [hidden, 768]."""

    name: str
    path: Path
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    _placed: dict[Any, dict[str, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict, repr=False)

    def placed(self, device: torch.device, dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The weights on a device and dtype (one copy kept: runs on the same device reuse it)."""
        key = (str(device), str(dtype))
        if key not in self._placed:
            self._placed.clear()
            self._placed[key] = {n: (k.to(device, dtype), v.to(device, dtype)) for n, (k, v) in self.layers.items()}
        return self._placed[key]


@dataclass
class APAdapter:
    """What the adapter loader gives: the adapter's weights and the AudioMAE that encodes audio prompts."""

    weights: AdapterWeights
    encoder: AudioPromptEncoder


def parse_adapter_state(state: dict[str, torch.Tensor], label: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Group '<processor>.to_k_ip.weight' / '.to_v_ip.weight' pairs; anything else is refused by name."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    stray = []
    for key, tensor in state.items():
        suffix = next((s for s in _KEY_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            stray.append(key)
            continue
        layers.setdefault(key[: -len(suffix)], {})[suffix] = tensor
    unpaired = [name + s for name, pair in layers.items() for s in _KEY_SUFFIXES if s not in pair]
    if stray or unpaired:
        raise PAEInputError("adapter_name", f"{label} is not an AP-Adapter checkpoint ({key_report(unpaired, stray)}; "
                            "it should hold only '<layer>.processor.to_k_ip.weight' and '.to_v_ip.weight' pairs); "
                            f"{DOWNLOAD_HINT}.")
    result = {}
    for name, pair in layers.items():
        k, v = pair[_KEY_SUFFIXES[0]], pair[_KEY_SUFFIXES[1]]
        if k.dim() != 2 or k.shape != v.shape or k.shape[1] != AUDIO_TOKEN_WIDTH:
            raise PAEInputError("adapter_name", f"{label}: layer {name} has projections {tuple(k.shape)} / "
                                f"{tuple(v.shape)}, not two [hidden, {AUDIO_TOKEN_WIDTH}] matrices; {DOWNLOAD_HINT}.")
        result[name] = (k.float(), v.float())
    return result


def read_adapter_state(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The adapter's flat state dict from the released pickle (weights-only) or its safetensors copy: the one reader
    of adapter files."""
    return tensor_dict(read_checkpoint(path, "adapter_name", label, DOWNLOAD_HINT), "adapter_name", label,
                       DOWNLOAD_HINT)


def list_adapter_files() -> list[str]:
    """Adapter files under models/ap_adapter/, each name once (a pickle's name stands for its safetensors twin)."""
    return list_weight_files(("ap_adapter",))


def load_ap_adapter(adapter_name: str, audio_encoder: str, dtype_name: str = "auto") -> APAdapter:
    """Load the adapter file from models/ap_adapter/ (its safetensors copy preferred) and AudioMAE (each once,
    shared)."""
    path, _ = find_weight_file(("ap_adapter",), adapter_name, "adapter_name", DOWNLOAD_HINT)

    def load() -> AdapterWeights:
        label = f"the adapter file '{adapter_name}'" + (f" (its copy {path.name})"
                                                        if path.name != Path(adapter_name).name else "")
        return AdapterWeights(Path(adapter_name).stem, path, parse_adapter_state(read_adapter_state(path, label),
                                                                                 label))

    weights = loading.cached(os.path.realpath(path), load)
    return APAdapter(weights, load_audio_encoder(audio_encoder, dtype_name))


def clear_cache() -> None:
    """Forget every loaded adapter file (tests)."""
    loading.clear_cache()


# --------------------------------------------------------------------------------------- the layers
def adapted_sites(backbone: Backbone) -> list[CrossAttentionSite]:
    """The cross-attention layers an AP-Adapter extends: every one whose key projection takes 768 inputs."""
    return [site for site in backbone.cross_attention_sites() if site.key_dim == AUDIO_TOKEN_WIDTH]


def bind_adapter(weights: AdapterWeights, backbone: Backbone) -> list[CrossAttentionSite]:
    """Check the adapter fits the model layer by layer (names and shapes); returns the adapted sites."""
    sites = adapted_sites(backbone)
    if not sites:
        raise PAEInputError("model", f"{backbone.family} '{backbone.name}' has no cross-attention with "
                            f"{AUDIO_TOKEN_WIDTH}-wide keys (AudioLDM2's GPT-2 stream), which AP-Adapter extends; load "
                            "AudioLDM2 (the released adapter was trained on audioldm2-large).")
    names = {site.name for site in sites}
    missing = [n + s for n in names - set(weights.layers) for s in _KEY_SUFFIXES]
    unexpected = [n + s for n in set(weights.layers) - names for s in _KEY_SUFFIXES]
    if missing or unexpected:
        raise PAEInputError("ap_adapter", f"'{weights.name}' does not fit {backbone.family} '{backbone.name}' "
                            f"({len(sites)} layers with 768-wide keys): {key_report(missing, unexpected)}. The "
                            "released adapter is for audioldm2-large; load that model.")
    for site in sites:
        attn = backbone.denoiser.get_submodule(site.module_path)
        hidden = attn.to_k.out_features
        k, _ = weights.layers[site.name]
        if k.shape[0] != hidden:
            raise PAEInputError("ap_adapter", f"'{weights.name}' layer {site.name} projects to {k.shape[0]} channels "
                                f"but the model's layer has {hidden}: the adapter was trained for another model size "
                                "(the released one is for audioldm2-large).")
    log.info("AP-Adapter '%s': %d layers bound, 0 missing, 0 unexpected.", weights.name, len(sites))
    return sites


@dataclass
class AudioPrompt:
    """An applied adapter: the clips' audio tokens, the silent prompt's, α, ω and the active part of the run."""

    weights: AdapterWeights
    sites: list[CrossAttentionSite]
    tokens: torch.Tensor     # [P, N, 768] one row per prompt clip
    silence: torch.Tensor    # [1, N, 768] AudioMAE of the all-zero fbank (the unconditional branch)
    scale: float             # α
    pooling: int             # ω
    start: float = 0.0       # fraction of the steps where the audio prompt starts acting
    end: float = 1.0         # ... and stops

    @property
    def stream(self) -> str:
        return self.sites[0].stream

    @property
    def clips(self) -> int:
        return self.tokens.shape[0]

    def scale_at(self, index: int, total: int) -> float:
        """α at step `index` of `total` (0 outside [start, end))."""
        return self.scale if self.start <= index / max(total, 1) < self.end else 0.0

    def extend(self, conditioning: TextConditioning, clip_of_row: list[int | None]) -> TextConditioning:
        """Append audio tokens to the adapted stream: a clip's tokens on its conditional rows, silence (None) else."""
        stream = conditioning.streams[self.stream]
        rows = [self.silence[0] if c is None else self.tokens[c] for c in clip_of_row]
        audio = torch.stack(rows).to(stream.device, stream.dtype)
        streams = dict(conditioning.streams)
        streams[self.stream] = torch.cat([stream, audio], dim=1)
        masks = dict(conditioning.masks)
        if masks.get(self.stream) is not None:
            mask = masks[self.stream]
            masks[self.stream] = torch.cat([mask, mask.new_ones(mask.shape[0], audio.shape[1])], dim=1)
        return TextConditioning(conditioning.prompts, streams, masks, conditioning.tokens)


def apply_ap_adapter(backbone: Backbone, adapter: Any, audio: Any, scale: float = 0.5, pooling: int = 2,
                     start: float = 0.0, end: float = 1.0, stereo: str = "first channel") -> Backbone:
    """A copy of the backbone that generates with the clip(s) as audio prompt; the loaded model stays as it was."""
    if not isinstance(adapter, APAdapter):
        raise PAEInputError("ap_adapter", "expected the output of Load AP-Adapter.")
    if getattr(backbone, "audio_prompt", None) is not None:
        raise PAEInputError("model", "this model already carries an audio prompt; connect Load Audio Model directly "
                            "(one AP-Adapter per model).")
    if not 0.0 <= float(scale) <= MAX_SCALE:
        raise PAEInputError("scale", f"{scale:g} is outside 0..{MAX_SCALE:g} (paper: 0.4-0.6; 0 = the plain model).")
    pooling = check_pooling_rate(pooling)
    if not 0.0 <= float(start) < float(end) <= 1.0:
        raise PAEInputError("start", f"start {start:g} and end {end:g} must satisfy 0 <= start < end <= 1 (fractions "
                            "of the sampling steps).")
    sites = bind_adapter(adapter.weights, backbone)
    tokens = adapter.encoder.audio_tokens(audio, pooling, stereo=stereo)
    prompt = AudioPrompt(adapter.weights, sites, tokens, adapter.encoder.silence_tokens(pooling), float(scale), pooling,
                         float(start), float(end))
    patched = copy.copy(backbone)
    patched.audio_prompt = prompt
    return patched


# ----------------------------------------------------------------------------------- the processor
class AudioPromptProcessor:
    """Decoupled cross-attention: the text keys with the layer's projections plus α x the audio tokens' attention."""

    def __init__(self, to_k_ip: torch.Tensor, to_v_ip: torch.Tensor, audio_tokens: int,
                 control: "AudioPromptController"):
        self.to_k_ip = to_k_ip
        self.to_v_ip = to_v_ip
        self.audio_tokens = audio_tokens
        self.control = control

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args: Any,
                 **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] <= self.audio_tokens:
            raise RuntimeError("AP-Adapter layer called without the appended audio tokens")
        split = encoder_hidden_states.shape[1] - self.audio_tokens
        if attention_mask is not None:
            attention_mask = attention_mask[..., :split]
        # contiguous: a strided slice can take another matmul path than the plain layer and differ in the last bit
        call = open_attention(attn, hidden_states, encoder_hidden_states[:, :split].contiguous(), attention_mask, temb)
        key, value = project_keys(attn, call, call.context)
        out = F.scaled_dot_product_attention(call.query, key, value, attn_mask=call.mask)
        scale = self.control.scale_now
        if scale != 0.0:
            audio = encoder_hidden_states[:, split:]
            if attn.norm_cross:
                audio = attn.norm_encoder_hidden_states(audio)
            ip_key = call.heads(attn, F.linear(audio, self.to_k_ip))
            ip_value = call.heads(attn, F.linear(audio, self.to_v_ip))
            out = out + scale * F.scaled_dot_product_attention(call.query, ip_key, ip_value)
        return close_attention(attn, out, call)


@dataclass
class AudioPromptController:
    """The adapter's StepController for one run: α for the current step."""

    prompt: AudioPrompt
    scale_now: float = 0.0

    def begin_step(self, index: int, total: int) -> None:
        self.scale_now = self.prompt.scale_at(index, total)


@contextlib.contextmanager
def audio_prompt_attention(backbone: Backbone) -> Iterator[AudioPromptController | None]:
    """Install the adapter's processors for one run (nothing without an audio prompt); the originals come back after."""
    prompt = getattr(backbone, "audio_prompt", None)
    if prompt is None:
        yield None
        return
    control = AudioPromptController(prompt, prompt.scale)
    weights = prompt.weights.placed(backbone.device, backbone.dtype)
    count = prompt.tokens.shape[1]
    processors = {site.name: AudioPromptProcessor(*weights[site.name], count, control) for site in prompt.sites}
    with processors_installed(backbone.denoiser, processors):
        yield control


# ------------------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class APTask:
    """A task's settings: α, ω, guidance and prompt templates ({instrument} / {genre} = the target, {source})."""

    scale: float
    pooling: int
    guidance: float
    positive: str
    negative: str
    origin: str


# The repository's inference configs (config.py) and the paper's genre setting. The paper gives no guidance for
# its genre setting; it uses the repository's default of 7.5.
AP_TASKS: dict[str, APTask] = {
    "timbre transfer": APTask(0.5, 2, 7.5, "a recording of a {instrument} solo", "a recording of a {source} solo",
                              "repository"),
    "genre transfer (paper)": APTask(0.4, 1, 7.5, "{genre} style music", "Low quality", "paper"),
    "genre transfer (repository)": APTask(0.55, 4, 9.5, "{genre} style music", "Low quality", "repository"),
    "accompaniment": APTask(0.5, 2, 7.5, "Duet, played with {instrument} accompaniment", "solo", "repository"),
}


@dataclass(frozen=True)
class APSettings:
    """What a task preset fills in, after the user's overrides."""

    positive: str
    negative: str
    scale: float
    pooling: int
    guidance: float


def ap_task_settings(task: str, target: str, source: str = "", *, scale: float = -1.0, pooling: int = 0,
                     guidance: float = -1.0, positive: str = "", negative: str = "") -> APSettings:
    """A preset's α, ω, guidance and prompts; any value given (scale/guidance >= 0, pooling > 0, text) overrides it."""
    if task not in AP_TASKS:
        raise PAEInputError("task", f"'{task}' is not one of {', '.join(AP_TASKS)}.")
    preset = AP_TASKS[task]
    target, source, positive, negative = map(clean_prompt, (target, source, positive, negative))
    if not positive:
        if not target:
            what = "genre (e.g. 'Jazz')" if "{genre}" in preset.positive else "instrument (e.g. 'violin')"
            raise PAEInputError("target", f"name the {what} for '{task}', or write the positive prompt yourself.")
        positive = preset.positive.format(instrument=target, genre=target)
    if not negative:
        if "{source}" in preset.negative and not source:
            raise PAEInputError("source", f"'{task}' steers away from the clip's own instrument: name it (e.g. "
                                "'piano'), or write the negative prompt yourself.")
        negative = preset.negative.format(source=source)
    if scale < 0 and scale != -1.0:
        raise PAEInputError("scale", f"{scale:g}: use -1 for the preset's value or 0..{MAX_SCALE:g}.")
    if guidance < 0 and guidance != -1.0:
        raise PAEInputError("guidance", f"{guidance:g}: use -1 for the preset's value or 0..100.")
    return APSettings(positive=positive, negative=negative,
                      scale=preset.scale if scale < 0 else float(scale),
                      pooling=preset.pooling if int(pooling) == 0 else check_pooling_rate(int(pooling)),
                      guidance=preset.guidance if guidance < 0 else float(guidance))
