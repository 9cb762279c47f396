"""The narrow interface every diffusion backbone offers, so each method is written once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import PAEInputError
from ..core.loading import LoadedModel
from ..core.placement import made_on_cpu, weight_dtype


@dataclass(frozen=True)
class CrossAttentionSite:
    """One true cross-attention layer: where a word-level edit can act."""

    # the Attention module in the denoiser, e.g. "down_blocks.1.attentions.1.transformer_blocks.0.attn2"
    module_path: str
    stream: str        # conditioning stream that feeds its keys, e.g. "gpt2" or "t5"
    key_dim: int       # in_features of its key projection
    heads: int
    place: str         # "down", "mid" or "up"
    downsampling: int  # latent-grid downsampling at this layer (1 = full latent resolution)

    @property
    def name(self) -> str:
        """The layer's key in the denoiser's attn_processors (what processors are installed under)."""
        return processor_name(self.module_path)


def processor_name(module_path: str) -> str:
    """diffusers' attn_processors key of the Attention module at module_path."""
    return f"{module_path}.processor"


@dataclass
class TextConditioning:
    """Encoded prompts, one row per prompt, for every conditioning stream of a backbone."""

    prompts: list[str]
    streams: dict[str, torch.Tensor]                  # stream -> [B, L, D]
    masks: dict[str, torch.Tensor | None]             # stream -> [B, L] (1 = a real key) or None
    tokens: dict[str, list[list[str]]] = field(default_factory=dict)  # word-carrying stream -> tokens per prompt

    def rows(self, index: list[int] | slice) -> "TextConditioning":
        """A sub-batch (e.g. the conditional half), keeping the shared padding."""
        picked = list(range(len(self.prompts)))[index] if isinstance(index, slice) else list(index)
        return TextConditioning(
            prompts=[self.prompts[i] for i in picked],
            streams={k: v[picked] for k, v in self.streams.items()},
            masks={k: None if v is None else v[picked] for k, v in self.masks.items()},
            tokens={k: [v[i] for i in picked] for k, v in self.tokens.items()},
        )

    @staticmethod
    def concat(parts: list["TextConditioning"]) -> "TextConditioning":
        """Stack prompts encoded separately, padding each stream to the longest with masked zeros."""
        streams, masks = {}, {}
        for name in parts[0].streams:
            tensors = [p.streams[name] for p in parts]
            length = max(t.shape[1] for t in tensors)
            if all(p.masks.get(name) is None for p in parts) and all(t.shape[1] == length for t in tensors):
                streams[name], masks[name] = torch.cat(tensors), None
                continue
            padded, padded_masks = [], []
            for part, tensor in zip(parts, tensors):
                mask = part.masks.get(name)
                if mask is None:
                    mask = torch.ones(tensor.shape[:2], dtype=torch.long, device=tensor.device)
                extra = length - tensor.shape[1]
                padded.append(torch.nn.functional.pad(tensor, (0, 0, 0, extra)))
                padded_masks.append(torch.nn.functional.pad(mask, (0, extra)))
            streams[name], masks[name] = torch.cat(padded), torch.cat(padded_masks)
        tokens = {k: [row for p in parts for row in p.tokens[k]] for k in parts[0].tokens}
        return TextConditioning([q for p in parts for q in p.prompts], streams, masks, tokens)


class Backbone(LoadedModel, ABC):
    """A latent audio diffusion model: audio <-> latent, text -> conditioning, one denoising prediction."""

    family: str                # "audioldm2", "tango", "stable_audio": latents are exchangeable only within a family
    name: str                  # the model folder's name
    sample_rate: int           # the rate the model hears and speaks
    channels: int              # 1 = mono, 2 = stereo
    latent_channels: int
    max_duration_s: float      # longest clip the backbone takes
    duration_note: str = ""    # why the limit is what it is, appended to length refusals
    prediction_type: str       # "epsilon" or "v_prediction"
    text_streams: tuple[str, ...]
    word_stream: str           # the stream whose tokens are words (for word-level edits)
    # A plain model carries no audio prompt; methods.ap_adapter.apply_ap_adapter returns a copy that does.
    audio_prompt: Any = None
    query_prefix: int = 0      # positions the denoiser puts before the latent's own in attention (DiT: 1 global token)
    single_resolution: bool = False  # every attention layer sees the latent at full resolution (DiT)

    @property
    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part by name (the denoiser among them), for device placement and memory accounting."""

    @property
    def device(self) -> torch.device:
        """The compute device, where activate() brings each part: a method puts its latents and noise there (inside
        ComfyUI a part may sit offloaded between runs)."""
        return self.managed.device if self.managed is not None else self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's weight dtype (a method computes in float32 and casts at the model's door)."""
        return weight_dtype(self.denoiser)

    @abstractmethod
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
        """[B, C, T] audio at any rate -> a LATENT dict carrying what decode needs to restore length and level."""

    @abstractmethod
    def decode_latent(self, latent: dict[str, Any]) -> torch.Tensor:
        """LATENT dict -> [B, channels, T] audio at the model's rate, trimmed to the encoded length."""

    @abstractmethod
    def encode_text(self, prompts: list[str]) -> TextConditioning:
        """Encode prompts together (shared padding), returning every stream and the word stream's tokens."""

    def encode_negative(self, negative: str, positive: TextConditioning) -> TextConditioning:
        """Encode a sampler's negative prompt the way the model's reference pipeline does beside `positive`
        (alone unless a backbone's pipeline pads it to the positive, as diffusers' AudioLDM2 does)."""
        return self.encode_text([negative])

    reads_input_latent: bool = False  # the denoiser also reads a clean latent beside the noisy one (SAO-Instruct)

    @abstractmethod
    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | float, conditioning: TextConditioning,
                input_latent: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's output (noise or v, see prediction_type) for latents at a timestep.

        input_latent: the clean latent a denoiser with reads_input_latent takes beside the noisy one (one row per
        latent row); given to any other backbone it is refused (check_input_latent).
        """

    def check_input_latent(self, input_latent: torch.Tensor | None) -> None:
        """Refuse an input latent this denoiser cannot read (and, where it must read one, its absence)."""
        if input_latent is not None and not self.reads_input_latent:
            raise PAEInputError("model", f"{self.family} '{self.name}' does not read the clip's latent beside the "
                                "noisy one (SAO-Instruct does); load SAO-Instruct for instruction edits.")

    @property
    def native_duration_s(self) -> float:
        """The clip length the model was trained on: the window a long recording is best edited in."""
        return self.max_duration_s

    def duration_limit(self) -> str:
        """The longest clip, for messages: '30 s', '47.55 s'."""
        return f"{self.max_duration_s:.2f}".rstrip("0").rstrip(".") + " s" + self.duration_note

    def check_duration(self, num_samples: int, sample_rate: int, input_name: str = "audio") -> None:
        """Refuse clips longer than the backbone takes, saying what the limit is."""
        seconds = num_samples / sample_rate
        if seconds > self.max_duration_s + 1e-6:
            raise PAEInputError(input_name, f"the clip is {seconds:.2f} s but {self.name} takes at most "
                                f"{self.duration_limit()}; trim it with the start/duration inputs of Load Audio.")

    def check_latent_length(self, samples: torch.Tensor, input_name: str = "latent") -> None:
        """Refuse a latent longer than the denoiser takes (VAE Encode may take longer clips than the denoiser)."""

    def num_samples_of(self, latent_shape: tuple[int, ...]) -> int:
        """Samples of audio a latent of this shape (per clip, no batch axis) holds, for latents made elsewhere (core's
        Empty Latent Audio) that carry no record: whole latent frames of the time axis, the one latent_shape grows
        along (measured over a minute, so padding to whole frames does not round it)."""
        minute = 60 * self.sample_rate
        one, two = self.latent_shape(self.sample_rate), self.latent_shape(minute)
        axis = next(i for i, (a, b) in enumerate(zip(one, two)) if a != b)
        return int(latent_shape[axis]) * round(minute / two[axis])

    def latent_shape(self, num_samples: int) -> tuple[int, ...]:
        """Shape [C, ...] of one clip's latent for a clip of num_samples at the model's rate."""
        raise NotImplementedError(f"{self.family} cannot start from an empty latent")

    def step_schedule(self, steps: int, sigma_start: float | None = None) -> Any:
        """The diffusion.steps.StepSchedule of a `steps`-step run, from the model's own scheduler configuration.

        sigma_start: start the run at this noise level σ instead of the schedule's top (a partial run from a noised
        clip); only σ-scheduled backbones (Stable Audio) lay their steps out that way.
        """
        from ..diffusion.steps import make_step_schedule

        if sigma_start is not None:
            raise ValueError(f"{self.family} schedules are laid out in timesteps, not from a starting σ")
        with made_on_cpu():  # diffusers' schedulers make their tables on the default device
            return make_step_schedule(self.make_scheduler(), steps, self.prediction_type)

    def attention_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int]:
        """(time, frequency) positions of a latent of this shape as the attention layers lay them out."""
        return int(latent_shape[-2]), int(latent_shape[-1])

    @abstractmethod
    def cross_attention_sites(self) -> list[CrossAttentionSite]:
        """Every true cross-attention layer of the denoiser (second self-attentions excluded)."""

    def make_scheduler(self) -> Any:
        """A fresh diffusers scheduler configured as the model was trained (its own state per run)."""
        raise NotImplementedError(f"{self.family} lays out its steps in step_schedule without a diffusers scheduler")

    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The module whose attention processors the sites name."""


def refuse_audio_prompt(backbone: Any, purpose: str) -> None:
    """Refuse a model carrying an AP-Adapter audio prompt where a method would silently ignore it."""
    if getattr(backbone, "audio_prompt", None) is not None:
        raise PAEInputError("model", f"this model carries an AP-Adapter audio prompt, which {purpose} cannot use; "
                            "connect the model from Load Audio Model directly (the audio prompt works with Sample "
                            "Audio).")


def tokenize_checked(tokenizer: Any, prompts: list[str], padding: Any, stream: str) -> Any:
    """Tokenize prompts, refusing (not truncating) any longer than the text encoder takes."""
    limit = int(tokenizer.model_max_length)
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    for prompt, length in zip(prompts, lengths):
        if length > limit:
            raise PAEInputError("prompt", f"'{prompt[:60]}...' is {length} tokens long but the {stream} text "
                                f"encoder takes at most {limit}; shorten the prompt.")
    with made_on_cpu():
        return tokenizer(prompts, padding=padding, max_length=limit, truncation=True, return_tensors="pt")


def unet_attention_blocks(unet: torch.nn.Module) -> list[tuple[str, str, int, torch.nn.Module]]:
    """(processor-name prefix, place, downsampling, block) for every block of a diffusers UNet that has attentions."""
    blocks = [("down", i, b) for i, b in enumerate(unet.down_blocks)]
    blocks += [("mid", 0, unet.mid_block)]
    blocks += [("up", i, b) for i, b in enumerate(unet.up_blocks)]
    depth = len(unet.down_blocks)
    found = []
    for place, index, block in blocks:
        if getattr(block, "attentions", None) is None:
            continue
        prefix = "mid_block" if place == "mid" else f"{place}_blocks.{index}"
        level = {"down": index, "mid": depth - 1, "up": depth - 1 - index}[place]
        found.append((prefix, place, 2 ** level, block))
    return found
