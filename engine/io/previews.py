"""Pictures for the browser: spectrograms, per-word attention maps and strips, and the PNG bytes they are saved as."""

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


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit RGB image [H, W, 3] as PNG bytes (zlib from the standard library; no imaging package needed)."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))  # filter type 0 on every scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b"")
