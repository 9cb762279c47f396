"""Stable Audio Open (and SAO-Instruct, its input-concatenating fine-tune) behind the Backbone interface.

The DiT is trained in the variance-exploding form x = x0 + σ ε with v-prediction on the input scaled by
1/√(σ² + 1) (diffusers' CosineDPMSolverMultistepScheduler preconditioning). Written in variance-preserving terms,
x_vp = x / √(σ² + 1) = √ᾱ x0 + √(1 − ᾱ) ε with ᾱ = 1/(1 + σ²), that is exactly a v-prediction model whose input is
x_vp at model time t = atan(σ)·2/π. So the pack's DDIM/DDPM formulas (diffusion/steps.py) run this model unchanged on
its own σ schedule, and inversion, attention edits and sampling work as on the UNet backbones.

Cross-attention keys per row: 128 T5 token states (zero past the prompt, attended, not masked, as released)
followed by two timing tokens (seconds_start, seconds_total). The timing tokens are not words: edits map them
position by position, like the padding. The unconditional row (empty prompt) has every key zero, timing included,
while the global condition (timing) stays, as in diffusers' StableAudioPipeline without a negative prompt.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..io.audio import resample, to_channels
from ..core.errors import PAEInputError
from ..core.latent import latent_info, make_latent
from ..core.placement import CPU, weight_dtype
from ..diffusion.steps import StepSchedule, schedule_from_sigmas
from ..diffusion.tiling import tiled_along_time
from .base import Backbone, CrossAttentionSite, TextConditioning, tokenize_checked

TIMING_TOKENS = 2            # seconds_start, seconds_total: the last keys of every cross-attention
_TIMING_WEIGHT = "timing"    # stream [B, 1, 1]: 1 where a row carries the timing tokens, 0 for the unconditional


class StableAudioBackbone(Backbone):
    """Stable Audio Open 1.0: Oobleck VAE (44.1 kHz stereo, 64 channels, 2048 samples per frame), T5-base, DiT."""

    family = "stable_audio"
    sample_rate = 44100
    channels = 2
    latent_channels = 64
    prediction_type = "v_prediction"
    text_streams = ("t5",)
    word_stream = "t5"
    query_prefix = 1         # the DiT puts one global token (timing + time step) before the latent frames
    single_resolution = True

    def __init__(self, *, transformer: Any, vae: Any, text_encoder: Any, tokenizer: Any, projection: Any,
                 scheduler_config: dict[str, Any], name: str, folder: Path):
        self.transformer, self.vae, self.text_encoder = transformer, vae, text_encoder
        self.tokenizer, self.projection = tokenizer, projection
        self.scheduler_config = dict(scheduler_config)
        self.name, self.folder = name, folder
        self.sample_rate = int(vae.config.sampling_rate)
        self.channels = int(vae.config.audio_channels)
        self.hop = int(math.prod(vae.config.downsampling_ratios))
        self.latent_channels = int(vae.config.decoder_input_channels)
        self.in_channels = int(transformer.config.in_channels)
        if self.in_channels not in (self.latent_channels, 2 * self.latent_channels):
            raise PAEInputError("model_name", f"'{name}': the DiT takes {self.in_channels} input channels; Stable "
                                f"Audio takes {self.latent_channels} and SAO-Instruct {2 * self.latent_channels}.")
        self.max_duration_s = int(transformer.config.sample_size) * self.hop / self.sample_rate
        self.prediction_type = self.scheduler_config.get("prediction_type", "v_prediction")
        self._rotary: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def instruct(self) -> bool:
        """True for SAO-Instruct: the DiT reads the noisy latent and the clip's latent stacked on channels."""
        return self.in_channels == 2 * self.latent_channels

    @property
    def reads_input_latent(self) -> bool:
        return self.instruct

    # ------------------------------------------------------------------------------------ modules
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    parts = {"text": ("text_encoder", "projection_model"), "denoiser": ("transformer",), "vae": ("vae",)}

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part, for device placement and memory accounting."""
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder,
                "projection_model": self.projection}

    def step_schedule(self, steps: int, sigma_start: float | None = None) -> StepSchedule:
        """σ log-spaced from σ_max (or sigma_start) down to σ_min, then 0, as the scheduler's 'exponential' schedule.

        A start at or below σ_min is one step to 0.
        """
        config = self.scheduler_config
        sigma_max = float(config.get("sigma_max", 500.0)) if sigma_start is None else float(sigma_start)
        sigma_min = float(config.get("sigma_min", 0.3))
        if steps == 1 or sigma_max <= sigma_min:  # a start below σ_min: one step straight to the clean estimate
            sigmas = [sigma_max]
        else:
            logs = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64, device=CPU)
            sigmas = logs.exp().tolist()
        return schedule_from_sigmas(sigmas + [0.0], self.prediction_type, config, multistep=True)

    def attention_grid(self, latent_shape: tuple[int, ...]) -> tuple[int, int]:
        return int(latent_shape[-1]), 1

    # ---------------------------------------------------------------------------------------- audio
    def padded_length(self, num_samples: int) -> int:
        """Samples after padding to whole latent frames (2048 samples each); decoding trims back."""
        return math.ceil(max(num_samples, 1) / self.hop) * self.hop

    def latent_shape(self, num_samples: int) -> tuple[int, ...]:
        return self.latent_channels, self.padded_length(num_samples) // self.hop

    @property
    def tile_frames(self) -> int:
        """Latent frames the VAE encodes or decodes at once: the DiT's window (longer clips go in tiles)."""
        return int(self.transformer.config.sample_size)

    def _tiled(self, apply: Any, x: torch.Tensor, frames: int, encoding: bool) -> torch.Tensor:
        tile = self.tile_frames
        overlap = max(1, tile // 16) if tile > 1 else 0
        in_per_frame, out_per_frame = (self.hop, 1) if encoding else (1, self.hop)
        return tiled_along_time(apply, x, frames, tile, overlap, in_per_frame, out_per_frame)

    @torch.no_grad()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
        """Any length: a clip longer than the window is encoded in overlapping tiles (memory bounded by the window).

        The DiT itself still takes one window (check_latent_length); a song goes through Split Windows first.
        """
        batch, source_channels, source_len = waveform.shape
        self.activate("vae")
        audio = to_channels(resample(waveform, sample_rate, self.sample_rate), self.channels)
        num_samples = audio.shape[-1]
        audio = torch.nn.functional.pad(audio, (0, self.padded_length(num_samples) - num_samples))

        def encode(part: torch.Tensor) -> torch.Tensor:
            # The mean: encoding is deterministic; Stable Audio's latents are not rescaled.
            return self.vae.encode(part.to(self.device, self.vae.dtype)).latent_dist.mode().float().cpu()

        samples = self._tiled(encode, audio, audio.shape[-1] // self.hop, encoding=True)
        return make_latent(samples, family=self.family, model=self.name, sample_rate=self.sample_rate,
                           num_samples=num_samples, source_sample_rate=sample_rate, source_num_samples=source_len,
                           source_channels=source_channels, gain=torch.ones(batch, device=CPU))

    @torch.no_grad()
    def decode_latent(self, latent: dict[str, Any]) -> torch.Tensor:
        """Any length: a latent longer than the window is decoded in overlapping tiles, as ComfyUI core's tiled
        audio decode does, so memory stays bounded by the window."""
        info = latent_info(latent, self.family, self.latent_channels)
        self.activate("vae")

        def decode(part: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(part.to(self.device, self.vae.dtype)).sample.float().cpu()  # [B, 2, frames * hop]

        samples = latent["samples"]
        audio = self._tiled(decode, samples, samples.shape[-1], encoding=False)
        audio = audio[..., :info.get("num_samples", audio.shape[-1])]
        gain = info.get("gain")
        if gain is not None and gain.numel() == audio.shape[0]:
            audio = audio * gain.to(audio.device)[:, None, None]
        return audio

    def check_latent_length(self, samples: torch.Tensor, input_name: str = "latent") -> None:
        frames = int(samples.shape[-1])
        if frames > self.tile_frames:
            raise PAEInputError(input_name, f"the latent holds {frames * self.hop / self.sample_rate:.2f} s but "
                                f"{self.name}'s DiT takes at most {self.duration_limit()}; cut the recording with "
                                "Split Windows (or Cut Region) before VAE Encode Audio.")

    # ---------------------------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextConditioning:
        self.activate("text")
        device = self.text_encoder.device
        t5_in = tokenize_checked(self.tokenizer, list(prompts), "max_length", "T5")
        mask = t5_in.attention_mask.to(device)
        states = self.text_encoder(input_ids=t5_in.input_ids.to(device), attention_mask=mask)[0]
        states = self.projection(text_hidden_states=states.to(self.projection.dtype)).text_hidden_states
        states = states * mask[..., None].to(states.dtype)
        conditional = torch.tensor([[[float(bool(p.strip()))]] for p in prompts], device=self.device)
        states = states.to(self.device) * conditional.to(states.dtype)
        # Two slots for the timing tokens, filled per run from the latent's length (see predict).
        states = torch.nn.functional.pad(states, (0, 0, 0, TIMING_TOKENS))
        tokens = [self.tokenizer.convert_ids_to_tokens(ids[keep.bool()].tolist())
                  for ids, keep in zip(t5_in.input_ids, t5_in.attention_mask)]
        return TextConditioning(prompts=list(prompts), streams={"t5": states, _TIMING_WEIGHT: conditional},
                                masks={"t5": None, _TIMING_WEIGHT: None}, tokens={"t5": tokens})

    def timing(self, seconds_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-attention timing tokens [B, 2, 768], global condition [B, 1, 1536]) for clips starting at 0 s."""
        start = torch.zeros_like(seconds_total)
        out = self.projection(start_seconds=start, end_seconds=seconds_total)
        tokens = torch.cat([out.seconds_start_hidden_states, out.seconds_end_hidden_states], dim=1)
        return tokens, torch.cat([out.seconds_start_hidden_states, out.seconds_end_hidden_states], dim=2)

    def _rotary_embedding(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        key = (length, str(device))
        if key not in self._rotary:
            dim = self.transformer.config.attention_head_dim // 2
            cos, sin = get_1d_rotary_pos_embed(dim, length, use_real=True, repeat_interleave_real=False)
            self._rotary[key] = (cos.to(device), sin.to(device))
        return self._rotary[key]

    # ----------------------------------------------------------------------------------- denoising
    def check_input_latent(self, input_latent: torch.Tensor | None) -> None:
        """SAO-Instruct needs the clip's latent on every call; Stable Audio Open cannot take one."""
        if self.instruct and input_latent is None:
            raise PAEInputError("model", f"'{self.name}' is SAO-Instruct (its DiT also reads the clip being edited); "
                                "use it with Instruct Edit (PAE), or load Stable Audio Open for this node.")
        if not self.instruct and input_latent is not None:
            raise PAEInputError("model", f"'{self.name}' is Stable Audio Open, not SAO-Instruct: its DiT takes "
                                f"{self.in_channels} input channels, not {2 * self.latent_channels} (noisy latent + "
                                "clip latent); load an SAO-Instruct checkpoint with Load SAO-Instruct.")

    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | float, conditioning: TextConditioning,
                input_latent: torch.Tensor | None = None) -> torch.Tensor:
        """v at model time t = atan(σ)·2/π for VP latents [B, 64, T']; SAO-Instruct also takes the clip's latent."""
        self.check_input_latent(input_latent)
        dit = self.transformer
        dtype, device = weight_dtype(dit), latents.device
        batch, frames = latents.shape[0], latents.shape[-1]
        seconds = torch.full((batch,), frames * self.hop / self.sample_rate, device=device)
        timing_tokens, global_states = self.timing(seconds)
        weight = conditioning.streams[_TIMING_WEIGHT].to(timing_tokens)
        keys = conditioning.streams["t5"].to(timing_tokens)
        keys = torch.cat([keys[:, :-TIMING_TOKENS], timing_tokens * weight], dim=1)
        x = latents if input_latent is None else torch.cat([latents, input_latent.to(latents)], dim=1)
        t = torch.as_tensor(timestep, dtype=torch.float32, device=device).reshape(-1)[:1]
        return dit(x.to(dtype), t, encoder_hidden_states=keys.to(dtype), global_hidden_states=global_states.to(dtype),
                   rotary_embedding=self._rotary_embedding(frames + self.query_prefix, device), return_dict=False)[0]

    def cross_attention_sites(self) -> list[CrossAttentionSite]:
        return [CrossAttentionSite(module_path=f"transformer_blocks.{i}.attn2", stream="t5",
                                   key_dim=block.attn2.to_k.in_features, heads=block.attn2.heads, place="mid",
                                   downsampling=1)
                for i, block in enumerate(self.transformer.transformer_blocks)]


# ============================================================================================== loading
def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    from ..core.files import read_json_dict

    config = read_json_dict(folder / "scheduler" / "scheduler_config.json")
    if config is None:
        raise PAEInputError("model_name", f"'{folder.name}/scheduler/scheduler_config.json' is missing or not JSON; "
                            "download the whole Stable Audio Open folder again.")
    return config


def load_text_parts(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """The T5 encoder and tokenizer from a folder's text_encoder/ and tokenizer/ subfolders."""
    from transformers import AutoTokenizer, T5EncoderModel

    for sub in ("text_encoder", "tokenizer"):
        if not (folder / sub).is_dir():
            raise PAEInputError("model_name", f"'{folder.name}' has no {sub}/ folder; Stable Audio's T5-base {sub} "
                                "goes there (copy it from the stable-audio-open-1.0 diffusers folder).")
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    text_encoder = T5EncoderModel.from_pretrained(str(folder / "text_encoder"), dtype=dtype, local_files_only=True)
    return text_encoder.eval(), tokenizer


# Stable Audio Open's scheduler (diffusers' release), for stable-audio-tools folders and single files, which carry
# none. σ_min 0.3 is also the model card's stable-audio-tools example; ComfyUI core samples the same DiT from 500 down
# to 0.03 (supported_models.StableAudio), a deliberate difference: the pack matches diffusers' pipeline.
STABLE_AUDIO_SCHEDULER = {"sigma_min": 0.3, "sigma_max": 500.0, "sigma_data": 1.0, "sigma_schedule": "exponential",
                          "solver_order": 2, "prediction_type": "v_prediction", "solver_type": "midpoint",
                          "final_sigmas_type": "zero"}


def load_stable_audio_backbone(folder: Path, dtype: torch.dtype, device: torch.device) -> StableAudioBackbone:
    """A diffusers Stable Audio folder component by component (the pipeline class would import torchsde), or a
    stable-audio-tools checkpoint (model_config.json + weights) converted on load, with T5 beside it."""
    from .stable_audio_checkpoint import is_stable_audio_tools_folder, load_stable_audio_tools_parts

    text_encoder, tokenizer = load_text_parts(folder, dtype)
    if is_stable_audio_tools_folder(folder):
        parts = load_stable_audio_tools_parts(folder, dtype, text_encoder.config.d_model)
        scheduler = dict(STABLE_AUDIO_SCHEDULER)
    else:
        from diffusers import AutoencoderOobleck, StableAudioDiTModel
        from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

        parts = {sub: cls.from_pretrained(str(folder / sub), torch_dtype=dtype, local_files_only=True).eval()
                 for sub, cls in (("transformer", StableAudioDiTModel), ("vae", AutoencoderOobleck),
                                  ("projection_model", StableAudioProjectionModel))}
        scheduler = _read_scheduler_config(folder)
    return StableAudioBackbone(transformer=parts["transformer"], vae=parts["vae"], text_encoder=text_encoder,
                               tokenizer=tokenizer, projection=parts["projection_model"], scheduler_config=scheduler,
                               name=folder.name, folder=folder)


# ======================================================================================= one-file layout
T5_FILE = "t5-base.safetensors"  # what ComfyUI's CLIPLoader (type stable_audio) reads from models/text_encoders/
T5_SUPPORT_FOLDER = "t5-base"    # standalone: google-t5/t5-base's config.json and tokenizer files, in text_encoders/
T5_MAX_TOKENS = 128              # Stable Audio Open's T5 conditioner reads 128 tokens (its model_config.json)
_T5_PROBE = "encoder.block.0.layer.0.SelfAttention.k.weight"  # the key ComfyUI's sd.py recognises a T5 file by
_T5_FIX = "use google-t5/t5-base's model.safetensors (ComfyUI's t5-base.safetensors), unchanged"


def is_t5_base_file(path: Path) -> bool:
    """True for a .safetensors T5 encoder 768 wide (T5-base's width), judged from its header alone."""
    from .stable_audio_checkpoint import safetensors_header

    header = safetensors_header(path) if path.suffix == ".safetensors" else None
    shape = header.shape(_T5_PROBE) if header is not None else None
    return shape is not None and len(shape) == 2 and shape[1] == 768


def t5_support_files() -> tuple[Path, Path]:
    """(config.json, tokenizer folder) for T5-base: text_encoders/t5-base/ where the user (or `pae models get
    t5-base`) put it, else ComfyUI's own files (comfy/text_encoders/)."""
    from ..core import bridge

    folders = [root / T5_SUPPORT_FOLDER for root in bridge.model_folders("text_encoders")]
    for folder in folders:
        if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
            return folder / "config.json", folder
    comfy = bridge.comfy_text_encoder_dir()
    if comfy is not None and (comfy / "t5_config_base.json").is_file() and (comfy / "t5_tokenizer" /
                                                                             "tokenizer.json").is_file():
        return comfy / "t5_config_base.json", comfy / "t5_tokenizer"
    folder = next((f for f in folders if f.is_dir()), folders[0])
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    raise PAEInputError("text_encoder", f"T5-base's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                        f"missing from {folder}: put google-t5/t5-base's config.json, tokenizer.json, spiece.model "
                        "and tokenizer_config.json there (`pae models get t5-base` downloads them).")


def t5_encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A T5 file's encoder weights for T5EncoderModel: decoder and LM head dropped by name, the embedding tied."""
    # A file keeps the tied token embedding under one of its two names; the module wants both.
    out = {key: value for key, value in state.items() if not key.startswith(("decoder.", "lm_head."))}
    embedding = out.get("shared.weight", out.get("encoder.embed_tokens.weight"))
    if embedding is not None:
        out.setdefault("shared.weight", embedding)
        out.setdefault("encoder.embed_tokens.weight", embedding)
    return out


def load_t5_file(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    """T5-base's encoder from one transformers-named weights file, strictly, and its tokenizer (128 tokens)."""
    from transformers import AutoTokenizer, T5Config, T5EncoderModel

    from ..core.checkpoints import build_and_load, read_checkpoint, tensor_dict

    config_path, tokenizer_folder = t5_support_files()
    label = f"'text_encoders/{path.name}'"
    state = tensor_dict(read_checkpoint(path, "text_encoder", "text encoder", _T5_FIX), "text_encoder", label, _T5_FIX)
    config = T5Config.from_json_file(str(config_path))
    encoder = build_and_load(lambda: T5EncoderModel(config), t5_encoder_state(state), source=label, fix=_T5_FIX,
                             what=f"T5's encoder as {config_path.name} describes it (transformers naming)",
                             input_name="text_encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder), local_files_only=True)
    tokenizer.model_max_length = T5_MAX_TOKENS  # T5-base's own files say 512
    return torch.nn.Module.to(encoder, dtype).eval(), tokenizer


def load_stable_audio_file(path: Path, text_encoder: Path, dtype: torch.dtype, label: str) -> StableAudioBackbone:
    """Stable Audio Open or SAO-Instruct as ComfyUI keeps it: one checkpoint file plus T5-base's weights file."""
    # The geometry comes from the checkpoint's shapes; the σ range is the folders' (diffusers' release scheduler).
    from .stable_audio_checkpoint import load_single_file_parts

    text_encoder_model, tokenizer = load_t5_file(text_encoder, dtype)
    parts = load_single_file_parts(path, dtype, text_encoder_model.config.d_model, label)
    return StableAudioBackbone(transformer=parts["transformer"], vae=parts["vae"], text_encoder=text_encoder_model,
                               tokenizer=tokenizer, projection=parts["projection_model"],
                               scheduler_config=dict(STABLE_AUDIO_SCHEDULER), name=path.stem, folder=path)
