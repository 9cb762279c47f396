"""What AudioLDM-family backbones share: 16 kHz mono audio <-> AudioLDM's mel VAE latent, HiFi-GAN back to audio."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.placement import CPU
from ..io.audio import peak_normalise, resample, to_channels
from ..core.latent import latent_info, make_latent
from .base import Backbone

# AudioLDM's training clips were peak-normalised to 0.5 after removing the mean.
_TRAINING_PEAK = 0.5


class MelVAEBackbone(Backbone):
    """A backbone whose latent is a mel VAE's (8 channels, /vae_factor in time and frequency), decoded by HiFi-GAN.

    Subclasses set `vae`, `vocoder` and `mel` (a callable [B, T] -> [B, frames, n_mels]) and call _read_shapes().
    """

    vae: Any
    vocoder: Any
    mel: Any
    duration_note = " (it was trained on 10.24 s clips)"
    native_duration_s = 10.24

    def _read_shapes(self) -> None:
        """Latent and audio geometry from the VAE and vocoder configurations."""
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self.latent_channels = int(self.vae.config.latent_channels)
        self.hop = int(math.prod(self.vocoder.config.upsample_rates))
        self.n_mels = int(self.vocoder.config.model_in_dim)
        self.sample_rate = int(self.vocoder.config.sampling_rate)

    def padded_length(self, num_samples: int) -> int:
        """Samples after padding to whole VAE cells (hop x vae_factor); decoding trims back."""
        cell = self.hop * self.vae_factor
        return math.ceil(max(num_samples, 1) / cell) * cell

    def latent_shape(self, num_samples: int) -> tuple[int, ...]:
        frames = self.mel(torch.zeros(1, self.padded_length(num_samples), device=CPU)).shape[1]
        return (self.latent_channels, frames // self.vae_factor, self.n_mels // self.vae_factor)

    @torch.no_grad()
    def encode_audio(self, waveform: torch.Tensor, sample_rate: int) -> dict[str, Any]:
        batch, source_channels, source_len = waveform.shape
        self.check_duration(source_len, sample_rate)
        self.activate("vae")
        mono = to_channels(resample(waveform, sample_rate, self.sample_rate), 1)[:, 0]
        num_samples = mono.shape[-1]
        mono = mono - mono.mean(dim=-1, keepdim=True)
        mono, gain = peak_normalise(mono[:, None], _TRAINING_PEAK)
        mono = torch.nn.functional.pad(mono[:, 0], (0, self.padded_length(num_samples) - num_samples))
        mel = self.mel(mono.to(self.device))  # [B, frames, n_mels]
        posterior = self.vae.encode(mel[:, None].to(self.vae.dtype)).latent_dist
        samples = posterior.mode() * self.scaling_factor  # the mode: encoding is deterministic
        return make_latent(samples.float(), family=self.family, model=self.name, sample_rate=self.sample_rate,
                           num_samples=num_samples, source_sample_rate=sample_rate, source_num_samples=source_len,
                           source_channels=source_channels, gain=gain)

    @torch.no_grad()
    def decode_latent(self, latent: dict[str, Any]) -> torch.Tensor:
        info = latent_info(latent, self.family, self.latent_channels)
        self.activate("vae")
        samples = latent["samples"].to(self.device, self.vae.dtype)
        mel = self.vae.decode(samples / self.scaling_factor).sample  # [B, 1, frames, n_mels]
        audio = self.vocoder(mel[:, 0].to(self.vocoder.dtype)).float()  # [B, frames * hop]
        num_samples = info.get("num_samples", audio.shape[-1])
        audio = audio[:, :num_samples]
        gain = info.get("gain")
        if gain is not None and gain.numel() == audio.shape[0]:
            audio = audio * gain.to(audio.device)[:, None]
        return audio[:, None].cpu()
