"""Pictures for the browser: spectrograms, per-word attention maps and strips, live previews of a running loop, and
the PNG bytes they are saved as."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch

from ..core.placement import CPU
import torch.nn.functional as F


# Five anchor colours of a perceptual dark-to-bright map (magma-like), interpolated linearly.
_COLOURMAP = np.array([[0.0, 0.0, 0.02], [0.23, 0.06, 0.44], [0.55, 0.16, 0.51], [0.92, 0.37, 0.33],
                       [0.99, 0.99, 0.75]], dtype=np.float32)


def spectrogram_image(waveform: torch.Tensor, sample_rate: int, *, height: int = 256, max_width: int = 1024,
                      dynamic_range_db: float = 80.0) -> torch.Tensor:
    """Log-magnitude spectrogram of a clip [C, T] as an IMAGE tensor [H, W, 3] in [0, 1], time across, frequency up."""
    mono = waveform.detach().to(torch.float32).cpu().mean(dim=0)
    n_fft = 2 * (height - 1)
    if mono.numel() < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.numel()))
    hop = max(n_fft // 4, math.ceil(mono.numel() / max_width))
    window = torch.hann_window(n_fft, device=mono.device)
    spec = torch.stft(mono, n_fft=n_fft, hop_length=hop, window=window, return_complex=True).abs()
    db = 20.0 * torch.log10(spec.clamp_min(1e-10))
    db = (db - db.max()).clamp_min(-dynamic_range_db) / dynamic_range_db + 1.0  # 0 = floor, 1 = loudest
    return colourise(db.flip(0))  # low frequencies at the bottom


def colourise(values: torch.Tensor) -> torch.Tensor:
    """Map values in [0, 1] ([H, W]) through the pack's colour map to an IMAGE tensor [H, W, 3]."""
    position = values.detach().float().cpu().clamp(0.0, 1.0).numpy() * (len(_COLOURMAP) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_COLOURMAP) - 2)
    frac = (position - low)[..., None]
    rgb = _COLOURMAP[low] * (1.0 - frac) + _COLOURMAP[low + 1] * frac
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))


def attention_map_images(maps: list[tuple[str, torch.Tensor]], grid: tuple[int, int]) -> torch.Tensor:
    """Per-word maps as an IMAGE batch [W, H, W', 3]: time across, frequency up, each map scaled to its own peak."""
    height, width = grid[1] * 8, grid[0] * 4
    if not maps:
        return torch.zeros(1, height, width, 3, device=CPU)
    images = []
    for _, values in maps:
        picture = values.T.flip(0)[None, None].float()  # [1, 1, F', T'], low frequencies at the bottom
        picture = F.interpolate(picture, size=(height, width), mode="bilinear", align_corners=False)[0, 0]
        picture = picture / picture.max().clamp_min(1e-12)
        images.append(colourise(picture))
    return torch.stack(images)


def word_strip_images(curves: list[torch.Tensor]) -> torch.Tensor:
    """Per-word attention over time ([steps] each) as an IMAGE batch [words, 48, min(steps x 4, 1024), 3]."""
    if not curves:
        return torch.zeros(1, 48, 64, 3, device=CPU)
    images = []
    for curve in curves:
        curve = curve / curve.max().clamp_min(1e-12)
        width = min(curve.numel() * 4, 1024)  # long runs are averaged down to 1024 columns
        strip = F.interpolate(curve[None, None], size=width, mode="linear" if width < curve.numel()
                              else "nearest")[0, 0]
        images.append(colourise(strip[None].expand(48, -1)))
    return torch.stack(images)


# Live previews: small enough to draw at every step (ComfyUI shrinks a preview to --preview-size, 512 by default).
PREVIEW_HEIGHT, PREVIEW_MAX_WIDTH = 128, 512


def latent_preview(latent: torch.Tensor) -> np.ndarray:
    """A predicted clean latent of one clip as a spectrogram-like 8-bit picture [H, W, 3] for the live preview.

    Not a VAE decode: a linear projection of the latent channels, as ComfyUI's Latent2RGB previews are. No released
    audio VAE has fitted RGB factors (ComfyUI ships none for audio), so a 2-D latent [C, T, F] is projected on its own
    first principal direction of the channels (time across, frequency up, like the mel frames it encodes) and a 1-D
    latent [C, T] (Stable Audio) shows each channel as a row."""
    values = torch.nan_to_num(latent.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    if values.dim() == 3:
        channels = values.reshape(values.shape[0], -1)
        centred = channels - channels.mean(dim=1, keepdim=True)
        _, vectors = torch.linalg.eigh(centred @ centred.T)
        direction = vectors[:, -1]
        if direction.sum() < 0:  # an eigenvector's sign is arbitrary: keep it steady from step to step
            direction = -direction
        picture = (direction @ centred).reshape(values.shape[1:]).T.flip(0)  # [F, T], low frequencies at the bottom
    elif values.dim() == 2:
        picture = values
    else:
        raise ValueError(f"a latent preview takes [C, T, F] or [C, T], not {list(values.shape)}")
    low, high = torch.quantile(picture.flatten()[:: max(1, picture.numel() // 65536)],
                               torch.tensor([0.02, 0.98], device=picture.device))
    picture = (picture - low) / (high - low).clamp_min(1e-8)
    return _preview_pixels(picture, mode="bilinear")


def token_preview(tokens: torch.Tensor, total: int, vocabulary: int) -> np.ndarray:
    """The codes generated so far ([codebooks, n]) as a picture [H, W, 3]: one band per codebook, time across, each
    code's colour from its index; padding (any id ≥ vocabulary) and the frames still to come dark."""
    codebooks, done = tokens.shape
    picture = torch.zeros(codebooks, max(int(total), done, 1), device=tokens.device)
    codes = tokens.float()
    picture[:, :done] = torch.where(codes < vocabulary, (codes + 1.0) / vocabulary, 0.0)
    return _preview_pixels(picture, mode="nearest")


def _preview_pixels(picture: torch.Tensor, mode: str) -> np.ndarray:
    width = min(PREVIEW_MAX_WIDTH, max(picture.shape[1], PREVIEW_HEIGHT))
    sized = F.interpolate(picture.cpu()[None, None], size=(PREVIEW_HEIGHT, width), mode=mode)[0, 0]
    return (colourise(sized).numpy() * 255.0 + 0.5).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB image [H, W, 3] as PNG bytes (zlib from the standard library; no imaging package needed)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter type 0 on every scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
