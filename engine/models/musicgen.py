"""MusicGen (transformers folder under models/musicgen/<name>/): text encoding with tokens, generation, EnCodec.

Generation is the pack's own loop over the decoder (KV cache, one frame of codebook tokens per step, MusicGen's
delay pattern) rather than `generate()`, for two reasons EditGen needs:
- classifier-free guidance rows are laid out as transformers does ([conditional rows; unconditional rows], the
  unconditional text being all zeros and fully masked), so attention control knows which rows to edit;
- sampling draws its randomness once per step per *noise group* (Gumbel-max over the filtered logits, which is
  exact categorical sampling), so rows in the same group (an edit's source and target) see the same random
  numbers: an identity edit reproduces the source token for token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..core import bridge
from ..core import loading
from ..core.loading import LoadedModel
from ..core.placement import CPU, made_on_cpu
from ..core.errors import PAEInputError
from ..core.checks import check_guidance, cpu_generator
from ..core.files import read_json_dict
from ..io.previews import token_preview

log = logging.getLogger(__name__)

MUSICGEN_TYPES = ("musicgen", "musicgen_melody")
DOWNLOAD_HINT = ("download a MusicGen repository (facebook/musicgen-small, -medium or -large: config.json, "
                 "the weights, generation_config.json, preprocessor_config.json and the tokenizer files) "
                 "into models/musicgen/<name>/")
_DEFAULT_MAX_SECONDS = 30.0  # the released generation configs stop at 1500 frames (30 s at 50 Hz)


def _is_musicgen_folder(folder: Path) -> bool:
    config = read_json_dict(folder / "config.json")
    return config is not None and config.get("model_type") in MUSICGEN_TYPES


def list_musicgen_models() -> list[str]:
    """Names of the MusicGen folders (config.json with a musicgen model_type) in every models/musicgen/ root."""
    return loading.list_model_folders("musicgen", _is_musicgen_folder)


def find_musicgen_folder(name: str) -> Path:
    """Resolve a MusicGen name inside the registered models/musicgen/ folders."""
    return loading.find_model("musicgen", name, "model_name", DOWNLOAD_HINT, folder=True, label="MusicGen folder")


@dataclass
class SamplingSettings:
    """How each frame's codebook tokens are drawn."""

    guidance: float = 3.0       # classifier-free guidance on the logits (EditGen and MusicGen: 3)
    top_k: int = 250            # 0 = off (MusicGen's audiocraft default: 250)
    top_p: float = 0.0          # 0 = off
    temperature: float = 1.0

    def check(self) -> None:
        check_guidance(self.guidance, note=" (MusicGen: 3)")
        if self.top_k < 0:
            raise PAEInputError("top_k", f"{self.top_k}: use 0 (off) or a positive count (MusicGen: 250).")
        if not 0.0 <= self.top_p <= 1.0:
            raise PAEInputError("top_p", f"{self.top_p:g}: use 0 (off) or a probability mass in (0, 1].")
        if self.temperature <= 0.0:
            raise PAEInputError("temperature", f"{self.temperature:g}: use a positive temperature (1 = as trained).")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the top-k and/or the nucleus of mass top_p (at least the best token); the rest become -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True, dim=-1)
        mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = mass - torch.softmax(ordered, dim=-1) >= top_p  # tokens after the nucleus is full
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class MusicGen(LoadedModel):
    """A loaded MusicGen: T5 text encoder, the codebook decoder, EnCodec at 32 kHz."""

    family = "musicgen"

    def __init__(self, model: Any, tokenizer: Any, name: str, folder: Path):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.folder = folder
        decoder_config = model.decoder.config
        self.num_codebooks = int(decoder_config.num_codebooks)
        self.codebook_size = int(decoder_config.vocab_size)
        self.audio_channels = int(getattr(decoder_config, "audio_channels", 1))
        self.start_token = int(model.generation_config.decoder_start_token_id
                               if model.generation_config.decoder_start_token_id is not None
                               else decoder_config.decoder_start_token_id)
        audio_config = model.config.audio_encoder
        self.sample_rate = int(audio_config.sampling_rate)
        self.frame_rate = float(audio_config.frame_rate)
        max_length = getattr(model.generation_config, "max_length", None)
        self.max_duration_s = int(max_length) / self.frame_rate if max_length and int(max_length) > 2 * \
            self.num_codebooks else _DEFAULT_MAX_SECONDS
        self.has_cross_attention = model.config.model_type == "musicgen"

    @property
    def device(self) -> torch.device:
        """The compute device, where activate() brings each part (inside ComfyUI a part may sit offloaded)."""
        return self.managed.device if self.managed is not None else self.model.decoder.device

    parts = {"text": ("text_encoder",), "decoder": ("decoder", "enc_to_dec_proj", "audio_enc_to_dec_proj"),
             "codec": ("audio_encoder",)}

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return dict(self.model.named_children())  # text_encoder, decoder, audio_encoder (EnCodec), projections

    # ---------------------------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_text(self, prompts: list[str], guidance: float) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
        """Encoder states [R, L, D] and mask [R, L] for the decoder (conditional rows, then with guidance > 1 as many
        all-zero masked rows), plus each prompt's tokens."""
        from ..backbones.base import tokenize_checked

        self.activate("text")
        encoded = tokenize_checked(self.tokenizer, prompts, True, "T5")
        ids, mask = encoded.input_ids.to(self.device), encoded.attention_mask.to(self.device)
        states = self.model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if guidance > 1.0:
            states = torch.cat([states, torch.zeros_like(states)])
            mask = torch.cat([mask, torch.zeros_like(mask)])
        model = self.model
        if model.text_encoder.config.hidden_size != model.decoder.config.hidden_size and \
                model.decoder.config.cross_attention_hidden_size is None:
            states = model.enc_to_dec_proj(states)
        states = states * mask[..., None].to(states.dtype)
        tokens = [self.tokenizer.convert_ids_to_tokens(row[m.bool()].tolist())
                  for row, m in zip(encoded.input_ids, encoded.attention_mask)]
        return states, mask, tokens

    # ---------------------------------------------------------------------------------- generation
    def frames_for(self, seconds: float) -> int:
        """Audio frames (codebook steps) for a duration, refusing what the model cannot make."""
        if not 0.0 < seconds <= self.max_duration_s + 1e-6:
            raise PAEInputError("duration", f"{seconds:g} s: {self.name} generates up to {self.max_duration_s:g} s "
                                f"({self.frame_rate:g} frames per second).")
        return max(1, int(round(seconds * self.frame_rate)))

    @torch.no_grad()
    def generate_codes(self, prompts: list[str], seconds: float, settings: SamplingSettings, seed: int = 0,
                       noise_groups: list[int] | None = None,
                       on_step: Callable[[int, int], None] | None = None,
                       forced: torch.Tensor | None = None) -> torch.Tensor:
        """Codebook tokens [B, K, frames] for each prompt; rows in the same noise group share every random draw.

        `forced` [F, K, frames] teacher-forces the first F rows: they are fed these tokens (a recording's) instead of
        sampling, one frame at a time like the others, so their attention at every step is at hand for an edit.
        """
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        settings.check()
        frames = self.frames_for(float(seconds)) if forced is None else int(forced.shape[-1])
        batch = len(prompts)
        groups = list(range(batch)) if noise_groups is None else list(noise_groups)
        if len(groups) != batch:
            raise ValueError("one noise group per prompt")
        states, mask, _ = self.encode_text(prompts, settings.guidance)
        self.activate("decoder")
        guided = settings.guidance > 1.0
        k = self.num_codebooks
        length = frames + k  # the start token, then frames + K - 1 delayed steps
        decoder = self.model.decoder
        start = torch.full((batch * k, 1), self.start_token, dtype=torch.long, device=self.device)
        with made_on_cpu():  # transformers builds the pattern on the default device, then moves it
            _, pattern = decoder.build_delay_pattern_mask(start, pad_token_id=self.start_token, max_length=length)
        if forced is not None:
            given = torch.cat([start[: forced.shape[0] * k].view(-1, k, 1), forced.to(self.device)], dim=-1)
            with made_on_cpu():
                _, forced_pattern = decoder.build_delay_pattern_mask(given.reshape(-1, frames + 1),
                                                                     pad_token_id=self.start_token, max_length=length)
            pattern = torch.cat([forced_pattern, pattern[forced.shape[0] * k:]])
        sequence = start
        tokens = start.repeat(2, 1) if guided else start
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        generator = cpu_generator(seed)
        distinct = sorted(set(groups))
        row_group = torch.tensor([distinct.index(g) for g in groups], device=CPU).repeat_interleave(k).to(self.device)
        with bridge.Progress(length - 1, "MusicGen") as progress:
            for step in range(1, length):
                if on_step is not None:
                    on_step(step - 1, length - 1)
                logits = decoder(input_ids=tokens, encoder_hidden_states=states, encoder_attention_mask=mask,
                                 cache=cache, use_cache=True).logits[:, -1].float()
                if guided:
                    cond, uncond = logits.chunk(2)
                    logits = uncond + settings.guidance * (cond - uncond)
                logits = filter_logits(logits / settings.temperature, settings.top_k, settings.top_p)
                # Gumbel-max: argmax(logits + G) samples softmax(logits); one G per noise group and codebook.
                uniform = torch.rand((len(distinct), k, logits.shape[-1]), generator=generator, dtype=torch.float64,
                                     device=CPU)
                gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16))).to(self.device, torch.float32)
                noise = gumbel[row_group, torch.arange(batch * k, device=self.device) % k]
                chosen = torch.argmax(logits + noise, dim=-1)
                fixed = pattern[:, step]
                chosen = torch.where(fixed == -1, chosen, fixed)[:, None]
                sequence = torch.cat([sequence, chosen], dim=1)
                tokens = chosen.repeat(2, 1) if guided else chosen
                progress.step(preview=lambda: token_preview(sequence[:k, 1:], length - 1, self.codebook_size))
        sequence = decoder.apply_delay_pattern_mask(sequence, pattern)
        return sequence[sequence != self.start_token].reshape(batch, k, -1)

    @torch.no_grad()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, input_name: str = "source_audio") -> torch.Tensor:
        """One clip [C, T] at any rate -> EnCodec tokens [1, K, frames] (resampled to 32 kHz, downmixed to mono)."""
        from ..io.audio import resample, to_channels

        seconds = waveform.shape[-1] / sample_rate
        if seconds > self.max_duration_s + 1e-6:
            raise PAEInputError(input_name, f"the recording is {seconds:.2f} s but {self.name} makes at most "
                                f"{self.max_duration_s:g} s; trim it with Load Audio's start/duration.")
        if sample_rate != self.sample_rate:
            log.info("MusicGen: the recording is resampled from %d Hz to %d Hz for EnCodec.", sample_rate,
                     self.sample_rate)
        self.activate("codec")
        mono = to_channels(resample(waveform[None].float(), sample_rate, self.sample_rate), self.audio_channels)
        encoder = self.model.audio_encoder
        bandwidth = max(self.model.config.audio_encoder.target_bandwidths)
        codes = encoder.encode(mono.to(self.device, encoder.dtype), bandwidth=bandwidth).audio_codes[0]
        if codes.shape[-1] < 1:
            raise PAEInputError(input_name, "the recording is shorter than one EnCodec frame (20 ms).")
        return codes.long()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook tokens [B, K, frames] -> audio [B, channels, samples] at 32 kHz (on the CPU)."""
        self.activate("codec")
        codes = codes.to(self.device)[None]
        encoder = self.model.audio_encoder
        scales = [None] * codes.shape[1]
        if self.audio_channels == 1:
            audio = encoder.decode(codes, audio_scales=scales).audio_values
        else:
            left = encoder.decode(codes[:, :, ::2], audio_scales=scales).audio_values
            right = encoder.decode(codes[:, :, 1::2], audio_scales=scales).audio_values
            audio = torch.cat([left, right], dim=1)
        return audio.float().cpu()




def load_musicgen(name: str, dtype_name: str = "auto") -> MusicGen:
    """Load a MusicGen folder once per (folder, dtype, device) and share it while in use."""
    folder = find_musicgen_folder(name)
    config = read_json_dict(folder / "config.json")
    if config is None or config.get("model_type") not in MUSICGEN_TYPES:
        raise PAEInputError("model_name", f"'{name}' is not a MusicGen folder (config.json model_type "
                            f"{None if config is None else config.get('model_type')!r}); {DOWNLOAD_HINT}.")

    def build(device: torch.device, dtype: torch.dtype) -> MusicGen:
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

        cls = MusicgenForConditionalGeneration if config["model_type"] == "musicgen" else \
            MusicgenMelodyForConditionalGeneration
        model = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        return MusicGen(model.eval(), tokenizer, folder.name, folder)

    return loading.load_model(folder, dtype_name, build, label=f"musicgen:{folder.name}", input_name="model_name",
                              what=f"the MusicGen folder '{name}'", fix=f"{DOWNLOAD_HINT}.")


def clear_cache() -> None:
    """Forget every loaded MusicGen (tests)."""
    loading.clear_cache()
