"""AudioLDM2 (base, large, music) from a diffusers folder, behind the Backbone interface."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..audio import peak_normalise, resample, to_channels
from ..errors import PAEInputError
from ..latent import latent_info, make_latent
from ..mel import MelFrontEnd
from .base import Backbone, CrossAttentionSite, TextConditioning

# AudioLDM's training clips were peak-normalised to 0.5 after removing the mean.
_TRAINING_PEAK = 0.5
# Trained on 10.24 s clips. The UNet and VAE are convolutional, but past 30 s the VAE's mid-block attention
# grows quadratically and the edits drift far from anything the model has seen.
_MAX_DURATION_S = 30.0
# Within a block's cross_attention_dim list, entries 0-1 read the GPT-2 stream and 2-3 the T5 stream
# (AudioLDM2's CrossAttnDownBlock2D routing); None entries are a second self-attention.
_T5_FROM_INDEX = 2


class AudioLDM2Backbone(Backbone):
    """AudioLDM2: mel VAE (8 latent channels, /4 in time and frequency), HiFi-GAN, GPT-2 + FLAN-T5 conditioning."""

    family = "audioldm2"
    sample_rate = 16000
    channels = 1
    latent_channels = 8
    max_duration_s = _MAX_DURATION_S
    text_streams = ("gpt2", "t5")
    word_stream = "t5"

    def __init__(self, pipeline: Any, name: str, folder: Path):
        self.pipeline = pipeline
        self.name = name
        self.folder = folder
        vae = pipeline.vae
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)
        self.hop = int(math.prod(pipeline.vocoder.config.upsample_rates))
        self.n_mels = int(pipeline.vocoder.config.model_in_dim)
        self.sample_rate = int(pipeline.vocoder.config.sampling_rate)
        self.mel = MelFrontEnd(sample_rate=self.sample_rate, n_fft=1024, hop=self.hop, n_mels=self.n_mels,
                               fmin=0.0, fmax=self.sample_rate / 2)
        self.prediction_type = pipeline.scheduler.config.get("prediction_type", "epsilon")
        self.max_new_tokens = int(getattr(pipeline.language_model.config, "max_new_tokens", 8) or 8)

    # ------------------------------------------------------------------------------------ modules
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipeline.unet

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part, for device placement and memory accounting."""
        p = self.pipeline
        return {"unet": p.unet, "vae": p.vae, "vocoder": p.vocoder, "text_encoder": p.text_encoder,
                "text_encoder_2": p.text_encoder_2, "projection_model": p.projection_model,
                "language_model": p.language_model}

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.unet.dtype

    def make_scheduler(self) -> Any:
        return type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)

    # -------------------------------------------------------------------------------- audio <-> latent
    def check_duration(self, num_samples: int, sample_rate: int, input_name: str = "audio") -> None:
        """Refuse clips longer than the backbone takes, saying what the limit is."""
        seconds = num_samples / sample_rate
        if seconds > self.max_duration_s + 1e-6:
            raise PAEInputError(input_name, f"the clip is {seconds:.2f} s but {self.family} takes at most "
                                f"{self.max_duration_s:g} s (it was trained on 10.24 s clips); trim it with the "
                                "start/duration inputs of Load Audio.")

    @torch.no_grad()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
        batch, source_channels, source_len = waveform.shape
        self.check_duration(source_len, sample_rate)
        self.activate()
        mono = to_channels(resample(waveform, sample_rate, self.sample_rate), 1)[:, 0]
        num_samples = mono.shape[-1]
        mono = mono - mono.mean(dim=-1, keepdim=True)
        mono, gain = peak_normalise(mono[:, None], _TRAINING_PEAK)
        # Pad to whole VAE cells (hop * vae_factor samples); decode trims back to num_samples.
        cell = self.hop * self.vae_factor
        padded = math.ceil(max(num_samples, 1) / cell) * cell
        mono = torch.nn.functional.pad(mono[:, 0], (0, padded - num_samples))
        mel = self.mel(mono.to(self.device))  # [B, frames, n_mels]
        vae = self.pipeline.vae
        posterior = vae.encode(mel[:, None].to(vae.dtype)).latent_dist
        samples = posterior.mode() * self.scaling_factor  # the mode: encoding is deterministic
        return make_latent(samples.float(), family=self.family, model=self.name, sample_rate=self.sample_rate,
                           num_samples=num_samples, source_sample_rate=sample_rate, source_num_samples=source_len,
                           source_channels=source_channels, gain=gain)

    @torch.no_grad()
    def decode_latent(self, latent: dict[str, Any]) -> torch.Tensor:
        info = latent_info(latent, self.family, self.latent_channels)
        self.activate()
        samples = latent["samples"].to(self.device, self.pipeline.vae.dtype)
        mel = self.pipeline.vae.decode(samples / self.scaling_factor).sample  # [B, 1, frames, n_mels]
        vocoder = self.pipeline.vocoder
        audio = vocoder(mel[:, 0].to(vocoder.dtype)).float()  # [B, frames * hop]
        num_samples = info.get("num_samples", audio.shape[-1])
        audio = audio[:, :num_samples]
        gain = info.get("gain")
        if gain is not None and gain.numel() == audio.shape[0]:
            audio = audio * gain.to(audio.device)[:, None]
        return audio[:, None].cpu()

    # ---------------------------------------------------------------------------------------- text
    def _tokenize(self, tokenizer: Any, prompts: list[str], padding: Any, stream: str) -> Any:
        limit = int(tokenizer.model_max_length)
        lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
        for prompt, length in zip(prompts, lengths):
            if length > limit:
                raise PAEInputError("prompt", f"'{prompt[:60]}...' is {length} tokens long but the {stream} text "
                                    f"encoder takes at most {limit}; shorten the prompt.")
        return tokenizer(prompts, padding=padding, max_length=limit, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextConditioning:
        self.activate()
        p = self.pipeline
        device = self.device
        clap_in = self._tokenize(p.tokenizer, prompts, "max_length", "CLAP")
        clap = p.text_encoder.get_text_features(clap_in.input_ids.to(device),
                                                attention_mask=clap_in.attention_mask.to(device))
        clap = getattr(clap, "pooler_output", clap)[:, None, :]  # transformers 5 returns an output object
        t5_in = self._tokenize(p.tokenizer_2, prompts, True, "T5")
        t5_mask = t5_in.attention_mask.to(device)
        t5 = p.text_encoder_2(t5_in.input_ids.to(device), attention_mask=t5_mask)[0]
        projected = p.projection_model(hidden_states=clap, hidden_states_1=t5,
                                       attention_mask=t5_mask.new_ones((len(prompts), 1)), attention_mask_1=t5_mask)
        gpt2 = p.generate_language_model(projected.hidden_states, attention_mask=projected.attention_mask,
                                         max_new_tokens=self.max_new_tokens)
        tokens = [p.tokenizer_2.convert_ids_to_tokens(ids[mask.bool()].tolist())
                  for ids, mask in zip(t5_in.input_ids, t5_in.attention_mask)]
        return TextConditioning(prompts=list(prompts), streams={"gpt2": gpt2, "t5": t5},
                                masks={"gpt2": None, "t5": t5_mask}, tokens={"t5": tokens})

    # ----------------------------------------------------------------------------------- denoising
    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | int,
                conditioning: TextConditioning) -> torch.Tensor:
        unet = self.pipeline.unet
        return unet(latents.to(unet.dtype), timestep,
                    encoder_hidden_states=conditioning.streams["gpt2"].to(unet.dtype),
                    encoder_hidden_states_1=conditioning.streams["t5"].to(unet.dtype),
                    encoder_attention_mask_1=conditioning.masks["t5"], return_dict=False)[0]

    def cross_attention_sites(self) -> list[CrossAttentionSite]:
        unet = self.pipeline.unet
        blocks = [("down", i, b) for i, b in enumerate(unet.down_blocks)]
        blocks += [("mid", 0, unet.mid_block)]
        blocks += [("up", i, b) for i, b in enumerate(unet.up_blocks)]
        depth = len(unet.down_blocks)
        sites = []
        for place, index, block in blocks:
            dims = getattr(block, "cross_attention_dim", None)
            attentions = getattr(block, "attentions", None)
            if not dims or attentions is None:
                continue
            prefix = "mid_block" if place == "mid" else f"{place}_blocks.{index}"
            level = {"down": index, "mid": depth - 1, "up": depth - 1 - index}[place]
            for a, transformer in enumerate(attentions):
                position = a % len(dims)
                if dims[position] is None:
                    continue
                for t, layer in enumerate(transformer.transformer_blocks):
                    attn = layer.attn2
                    if attn is None or not attn.is_cross_attention:
                        continue
                    sites.append(CrossAttentionSite(
                        name=f"{prefix}.attentions.{a}.transformer_blocks.{t}.attn2.processor",
                        stream="t5" if position >= _T5_FROM_INDEX else "gpt2",
                        key_dim=attn.to_k.in_features, heads=attn.heads, place=place, downsampling=2 ** level))
        return sites
