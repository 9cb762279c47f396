"""AudioMAE (ViT-B/16 on a 1024 x 128 Kaldi fbank): the audio-prompt encoder of AP-Adapter.

Features follow the AP-Adapter reference exactly (its `extract_kaldi_fbank_feature`, which is the Audio
Spectrogram Transformer's setting): 16 kHz, mean removed, the first channel, Kaldi fbank with 128 HTK-mel
bins, 25 ms Hann window, 10 ms shift, pre-emphasis 0.97, per-frame DC removal, no energy, no dither;
zero-padded or cut to 1024 frames (10.24 s) and only then normalised with the AudioSet statistics. The fbank is
computed with `transformers.audio_utils`, never torchaudio.

The module's parameter names are those of facebookresearch/AudioMAE's `mae_vit_base_patch16`, so the released
`pretrained.pth` (its `model` entry) loads directly; the MAE decoder stored beside the encoder is ignored by name.
Its safetensors copy (`pae models convert`) holds the encoder's flat state dict and is read in the pickle's stead.
"""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.placement import CPU
from ..io.audio import check_audio, resample, to_channels
from ..core import loading
from ..core.loading import LoadedModel
from ..core.checkpoints import build_and_load, find_weight_file, list_weight_files, read_checkpoint, tensor_dict
from ..core.errors import PAEInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FBANK_FRAMES = 1024          # 10.24 s at a 10 ms shift
FBANK_BINS = 128
AUDIOSET_MEAN = -4.2677393   # AST / AudioMAE normalisation: (x - mean) / (2 std)
AUDIOSET_STD = 4.5689974
PATCH = 16
GRID = (FBANK_FRAMES // PATCH, FBANK_BINS // PATCH)  # 64 time x 8 frequency patches
POOLING_RATES = (1, 2, 4, 8)
_FRAME, _SHIFT, _FFT = 400, 160, 512  # 25 ms, 10 ms, Kaldi rounds the window up to a power of two
_SILENCE_PEAK = 1e-4                  # -80 dBFS after removing the mean
# Parts of the released MAE checkpoint that belong to the decoder (reconstruction only; unused here).
_DECODER_PREFIXES = ("decoder_", "mask_token")
DOWNLOAD_HINT = ("put AudioMAE's released pretrained.pth (ViT-B/16, AudioSet-2M; the file AP-Adapter's README links) "
                 "into models/audiomae/")
# Where AudioMAE files are looked for, in order: its own folder, then its old place (ComfyUI's own Audio Encoder Loader
# lists audio_encoders/ too and shows the AudioMAE pickle it cannot load); a file found only there loads, with a notice.
AUDIOMAE_KINDS = ("audiomae", "audio_encoders")
_noticed: set[str] = set()


# ----------------------------------------------------------------------------------------- features
@functools.lru_cache(maxsize=1)
def _fbank_filters() -> tuple[np.ndarray, np.ndarray]:
    from transformers.audio_utils import mel_filter_bank, window_function

    with warnings.catch_warnings():
        # 128 Kaldi bins over 257 FFT bins leave the lowest filters empty: Kaldi's own behaviour, not a mistake.
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        filters = mel_filter_bank(num_frequency_bins=_FFT // 2 + 1, num_mel_filters=FBANK_BINS, min_frequency=20.0,
                              max_frequency=SAMPLE_RATE / 2, sampling_rate=SAMPLE_RATE, norm=None, mel_scale="kaldi",
                                  triangularize_in_mel_space=True)
    return window_function(_FRAME, "hann", periodic=False), filters


def kaldi_fbank(mono: np.ndarray) -> np.ndarray:
    """Kaldi log-mel fbank [frames, 128] of a 16 kHz mono signal (snip-edges framing: 1 + (N - 400) // 160 frames)."""
    from transformers.audio_utils import spectrogram

    if mono.shape[-1] < _FRAME:
        return np.zeros((0, FBANK_BINS), dtype=np.float32)
    window, filters = _fbank_filters()
    features = spectrogram(mono.astype(np.float64), window, frame_length=_FRAME, hop_length=_SHIFT, fft_length=_FFT,
                           power=2.0, center=False, preemphasis=0.97, mel_filters=filters, log_mel="log",
                           mel_floor=float(np.finfo(np.float32).eps), remove_dc_offset=True)
    return features.T.astype(np.float32)


STEREO_READINGS = ("first channel", "mean of channels")


def prompt_channel(waveform: torch.Tensor, stereo: str = "first channel", input_name: str = "stereo") -> torch.Tensor:
    """[B, C, T] at 16 kHz -> the mono clip AudioMAE reads, its mean removed. 'first channel' is the reference's:
    the mean of every channel and sample is removed, then Kaldi's fbank reads channel 0 (its default); 'mean of
    channels' downmixes first (a stereo prompt whose channels differ then counts both)."""
    if stereo not in STEREO_READINGS:
        raise PAEInputError(input_name, f"'{stereo}' is not one of {', '.join(STEREO_READINGS)}.")
    waveform = waveform.double()
    if stereo == "first channel":
        return waveform[:, 0] - waveform.mean(dim=(1, 2))[:, None]
    mono = to_channels(waveform, 1)[:, 0]
    return mono - mono.mean(dim=-1, keepdim=True)


def audio_features(audio: Any, input_name: str = "audio", stereo: str = "first channel") -> torch.Tensor:
    """AUDIO batch -> normalised fbank [B, 1024, 128], as AP-Adapter's reference computes it (first 10.24 s)."""
    waveform, rate = check_audio(audio, input_name)
    mono = prompt_channel(resample(waveform, rate, SAMPLE_RATE), stereo)
    batch = []
    for index, clip in enumerate(mono):
        if clip.abs().max() < _SILENCE_PEAK:
            raise PAEInputError(input_name, f"clip {index + 1} of the audio prompt is silent (peak below -80 dBFS "
                                "after removing DC; with stereo 'first channel' only the left channel is read); "
                                "AP-Adapter takes its timbre and style from this clip, so give it the recording to "
                                "transfer from.")
        fbank = torch.from_numpy(kaldi_fbank(clip.numpy()))
        if fbank.shape[0] == 0:
            raise PAEInputError(input_name, f"clip {index + 1} of the audio prompt is "
                                f"{clip.shape[-1] / SAMPLE_RATE * 1000:.1f} ms long; AudioMAE needs at least one 25 ms "
                                "frame (and reads up to 10.24 s).")
        if fbank.shape[0] > FBANK_FRAMES:
            log.info("AP-Adapter: the audio prompt is %.2f s; AudioMAE reads its first %.2f s, as the reference does.",
                     clip.shape[-1] / SAMPLE_RATE, FBANK_FRAMES * _SHIFT / SAMPLE_RATE)
        # Zero-pad (before normalising, as the reference does) or cut to 1024 frames.
        fbank = F.pad(fbank, (0, 0, 0, max(0, FBANK_FRAMES - fbank.shape[0])))[:FBANK_FRAMES]
        batch.append(fbank)
    return (torch.stack(batch) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)


def pool_audio_tokens(hidden: torch.Tensor, rate: int) -> torch.Tensor:
    """AudioMAE output [B, 513, D] -> [B, 512 / rate², D]: CLS dropped, (avg + max) / 2 over rate x rate patches."""
    check_pooling_rate(rate)
    batch, _, dim = hidden.shape
    grid = hidden[:, 1:].transpose(1, 2).reshape(batch, dim, *GRID)  # patches are time-major: index = t * 8 + f
    pooled = (F.avg_pool2d(grid, rate, rate) + F.max_pool2d(grid, rate, rate)) / 2
    return pooled.flatten(2).transpose(1, 2)


def check_pooling_rate(rate: Any, input_name: str = "pooling") -> int:
    """ω must be one of 1, 2, 4, 8 (512, 128, 32 or 8 audio tokens)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or int(rate) not in POOLING_RATES:
        raise PAEInputError(input_name, f"{rate!r} is not an AP-Adapter pooling rate; use one of "
                            f"{', '.join(map(str, POOLING_RATES))} (512, 128, 32 or 8 audio tokens; the paper uses 1 "
                            "for genre transfer, the repository 2 for timbre and 4 for style).")
    return int(rate)


# ------------------------------------------------------------------------------------------- model
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """timm's pre-norm ViT block (the names the released weights use)."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=PATCH, stride=PATCH)


class AudioMAE(nn.Module):
    """The MAE encoder run without masking: [B, 1024, 128] fbank -> [B, 1 + 512, D] (CLS first), final LayerNorm."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, mlp_hidden: int = 3072):
        super().__init__()
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed 2-D sin-cos table in the released file; loaded from it like any weight.
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + GRID[0] * GRID[1], dim), requires_grad=False)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(fbank[:, None]).flatten(2).transpose(1, 2)  # [B, 512, D], time-major
        x = x + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def audiomae_shape(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Width, depth and MLP size of an AudioMAE encoder from its weights (heads: one per 64 channels, as ViT-B)."""
    dim = int(state["cls_token"].shape[-1])
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    return {"dim": dim, "depth": depth, "heads": max(1, dim // 64),
            "mlp_hidden": int(state["blocks.0.mlp.fc1.weight"].shape[0])}


class AudioPromptEncoder(LoadedModel):
    """A loaded AudioMAE: clips -> pooled audio tokens; remembers the silent prompt's tokens per pooling rate."""

    def __init__(self, model: AudioMAE, name: str, path: Path):
        self.model = model
        self.name = name
        self.path = path
        self.width = model.cls_token.shape[-1]
        self._silence: dict[int, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self.model.cls_token.device

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"audiomae": self.model}

    @torch.no_grad()
    def encode_fbank(self, fbank: torch.Tensor, rate: int) -> torch.Tensor:
        """Normalised fbank [B, 1024, 128] -> pooled tokens [B, 512 / rate², D] (float32, on the CPU)."""
        if self.managed is not None:
            self.managed.activate()
        hidden = self.model(fbank.to(self.device, self.model.cls_token.dtype))
        return pool_audio_tokens(hidden.float(), rate).cpu()

    def audio_tokens(self, audio: Any, rate: int, input_name: str = "audio",
                     stereo: str = "first channel") -> torch.Tensor:
        """An AUDIO batch's audio-prompt tokens [B, 512 / rate², D]."""
        rate = check_pooling_rate(rate)
        return self.encode_fbank(audio_features(audio, input_name, stereo), rate)

    def silence_tokens(self, rate: int) -> torch.Tensor:
        """Tokens of the all-zero (normalised) fbank [1, N, D]: the unconditional audio prompt of the reference."""
        rate = check_pooling_rate(rate)
        if rate not in self._silence:
            self._silence[rate] = self.encode_fbank(torch.zeros(1, FBANK_FRAMES, FBANK_BINS, device=CPU), rate)
        return self._silence[rate]


# ------------------------------------------------------------------------------------------ loading
def encoder_state(data: Any, label: str, *, wrapped: bool = True) -> dict[str, torch.Tensor]:
    """The encoder's weights without the decoder's keys: from a released checkpoint's `model` entry (wrapped), or
    from the flat state dict of its safetensors copy."""
    if wrapped:
        if not isinstance(data, dict) or "model" not in data:
            found = ", ".join(map(str, list(data)[:5])) if isinstance(data, dict) else type(data).__name__
            raise PAEInputError("audio_encoder", f"{label} has no 'model' entry (found: {found}); it is not AudioMAE's "
                                f"released checkpoint: {DOWNLOAD_HINT}.")
        data = data["model"]
    state = tensor_dict(data, "audio_encoder", label, DOWNLOAD_HINT)
    state = {k: v for k, v in state.items() if not k.startswith(_DECODER_PREFIXES)}
    for needed in ("cls_token", "blocks.0.mlp.fc1.weight", "pos_embed"):
        if needed not in state:
            raise PAEInputError("audio_encoder", f"{label} has no '{needed}': it is not an AudioMAE ViT encoder; "
                                f"{DOWNLOAD_HINT}.")
    return state


def read_encoder_state(path: Path, label: str) -> dict[str, torch.Tensor]:
    """The encoder's weights from the released pickle (weights-only) or its safetensors copy (the flat encoder state
    `pae models convert` writes): the one reader of AudioMAE files."""
    # The MAE training script stores its command-line arguments (an argparse.Namespace) beside the weights.
    data = read_checkpoint(path, "audio_encoder", label, DOWNLOAD_HINT, allowed_classes=[argparse.Namespace])
    return encoder_state(data, label, wrapped=path.suffix != ".safetensors")


def list_audio_encoders() -> list[str]:
    """AudioMAE files of models/audiomae/ and the old models/audio_encoders/, each name once (a pickle's name stands
    for its safetensors twin)."""
    return list_weight_files(AUDIOMAE_KINDS)


def find_audio_encoder(name: str) -> Path:
    """The file to read for a listed AudioMAE name: models/audiomae/ first, its safetensors copy preferred; one notice
    per file found only in the old models/audio_encoders/."""
    path, kind = find_weight_file(AUDIOMAE_KINDS, name, "audio_encoder", DOWNLOAD_HINT, label="AudioMAE file")
    if kind != AUDIOMAE_KINDS[0] and str(path) not in _noticed:
        _noticed.add(str(path))
        log.warning("Prompt Audio Edit: AudioMAE '%s' was found in %s, its old place; move it to models/audiomae/ "
                    "(ComfyUI's own Audio Encoder Loader lists models/%s/ too and cannot load AudioMAE).", name,
                    path.parent, kind)
    return path


def load_audio_encoder(name: str, dtype_name: str = "auto") -> AudioPromptEncoder:
    """Load AudioMAE (see find_audio_encoder) once per (file, dtype, device) and share it while in use."""
    path = find_audio_encoder(name)
    label = f"the AudioMAE file '{name}'" + (f" (its copy {path.name})" if path.name != Path(name).name else "")

    def build(device: torch.device, dtype: torch.dtype) -> AudioPromptEncoder:
        state = read_encoder_state(path, label)
        shape = audiomae_shape(state)
        model = build_and_load(lambda: AudioMAE(**shape), state, what="the AudioMAE ViT encoder", source=label,
                               fix=DOWNLOAD_HINT, input_name="audio_encoder")
        grid = state["pos_embed"].shape[1] - 1
        if grid != GRID[0] * GRID[1] or tuple(state["patch_embed.proj.weight"].shape[1:]) != (1, PATCH, PATCH):
            raise PAEInputError("audio_encoder", f"{label} is an AudioMAE for another input ({grid} patches); "
                                f"AP-Adapter needs the 1024 x 128 fbank model with 16 x 16 patches: {DOWNLOAD_HINT}.")
        return AudioPromptEncoder(model.to(dtype), Path(name).stem, path)

    return loading.load_model(path, dtype_name, build, label=f"audiomae:{name}", input_name="audio_encoder",
                              what=label, fix=f"{DOWNLOAD_HINT}.")


def clear_cache() -> None:
    """Forget every loaded AudioMAE (tests)."""
    loading.clear_cache()


def token_count(rate: int) -> int:
    """Audio tokens per clip at a pooling rate (512 / ω²)."""
    rate = check_pooling_rate(rate)
    return (GRID[0] // rate) * (GRID[1] // rate)
