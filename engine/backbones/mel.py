"""AudioLDM's mel front end: the log-mel features its VAE and HiFi-GAN were trained on."""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised filters (librosa's defaults, which AudioLDM uses): [n_mels, n_fft//2 + 1]."""
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=fmin,
                              max_frequency=fmax, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(filters.T.copy()).to(torch.float32)


class MelFrontEnd:
    """Waveform [B, T] -> log-mel [B, frames, n_mels], frames = T // hop (AudioLDM's TacotronSTFT)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 160, n_mels: int = 64,
                 fmin: float = 0.0, fmax: float = 8000.0):
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.fmin, self.fmax = fmin, fmax

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform.to(torch.float32)
        # Reflect-pad (n_fft - hop) / 2 per side and use center=False, as AudioLDM does: frames = T // hop.
        pad = (self.n_fft - self.hop) // 2
        x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        window = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=window, center=False,
                          onesided=True, return_complex=True).abs()
        mel = _mel_basis(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax).to(x.device) @ spec
        # AudioLDM's dynamic-range compression: log(clamp(x, 1e-5) * C) with C = 1.
        return torch.log(mel.clamp_min(1e-5)).transpose(1, 2)
