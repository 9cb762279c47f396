"""Live previews of the long loops: pictures that follow the latent (not uniform), sized for ComfyUI's preview, and
sent by every loop of the pack when ComfyUI shows previews."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prompt_audio_edit.engine.core import bridge
from prompt_audio_edit.engine.io.previews import PREVIEW_HEIGHT, latent_preview, token_preview


def brightness(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float64).sum(axis=-1)


def test_a_mel_latent_preview_shows_where_the_energy_is_time_across_frequency_up():
    generator = torch.Generator().manual_seed(0)
    pattern = torch.zeros(64, 16)
    pattern[:32, :4] = 3.0  # loud low frequencies in the first half
    weights = torch.rand(8, generator=generator) + 0.5
    latent = weights[:, None, None] * pattern + 0.1 * torch.randn(8, 64, 16, generator=generator)
    pixels = latent_preview(latent)
    assert pixels.dtype == np.uint8 and pixels.shape == (PREVIEW_HEIGHT, 128, 3)
    light = brightness(pixels)
    low_early = light[-PREVIEW_HEIGHT // 4:, :64].mean()  # bottom rows = low frequencies, left = early
    assert low_early > 3 * light[:PREVIEW_HEIGHT // 2, :].mean() and low_early > 3 * light[:, 64:].mean()
    # a steady sign: the same latent scaled keeps its picture (no flip from the eigenvector's arbitrary sign)
    assert np.array_equal(latent_preview(latent * 2.0), pixels)


def test_a_latent_gone_non_finite_still_gives_a_picture():
    latent = torch.randn(8, 20, 16, generator=torch.Generator().manual_seed(2))
    latent[0, :5] = float("nan")
    latent[1, 3] = float("inf")
    assert latent_preview(latent).shape == (PREVIEW_HEIGHT, 128, 3)
    assert latent_preview(torch.full((64, 30), float("nan"))).shape == (PREVIEW_HEIGHT, 128, 3)


def test_a_one_dimensional_latent_preview_shows_each_channel_as_a_row():
    latent = torch.randn(64, 300, generator=torch.Generator().manual_seed(1)) * 0.1
    latent[0] += 5.0  # the first channel row is loud
    light = brightness(latent_preview(latent))
    band = PREVIEW_HEIGHT // 64
    assert light[:band].mean() > 2 * light[band * 4:].mean()
    assert latent_preview(latent).shape == (PREVIEW_HEIGHT, 300, 3)
    assert latent_preview(torch.randn(64, 5000)).shape[1] == 512  # long clips are drawn at most 512 wide


def test_a_token_preview_leaves_padding_and_frames_to_come_dark():
    tokens = torch.tensor([[5, 700, 2048], [2047, 3, 9]])  # 2048: MusicGen's padding id, outside the codebook
    pixels = token_preview(tokens, total=12, vocabulary=2048)
    light = brightness(pixels)
    dark = light.min()
    step = pixels.shape[1] / 12
    assert light[:, int(3 * step) + 2:].max() == dark  # frames not generated yet
    assert light[PREVIEW_HEIGHT // 2 - 1, int(2.5 * step)] == dark  # padding in the first codebook's band
    assert light[:, : int(2 * step) - 1].min() > dark  # real codes are coloured


@pytest.mark.parametrize("loop", ["sample", "invert", "fuse", "zeta", "instruct", "musicgen"])
def test_every_long_loop_offers_a_preview_of_its_latent(monkeypatch, tiny_dirs, loop):
    """The loops hand Progress a preview of their current estimate; it is a picture of that loop's latent."""
    from prompt_audio_edit.engine.backbones import registry
    from prompt_audio_edit.engine.diffusion.inversion import invert
    from prompt_audio_edit.engine.diffusion.sampling import sample
    from prompt_audio_edit.engine.methods.ppae import fuse_edit
    from prompt_audio_edit.engine.attention.edit import make_attention_edit
    from prompt_audio_edit.engine.methods.zeta import prompt_edit
    from tests.conftest import TINY_MODEL, TINY_MUSICGEN, TINY_SAO_INSTRUCT

    pictures: list[np.ndarray] = []
    original = bridge.Progress.step

    def step(self, n=1, preview=None):
        assert preview is not None, f"{loop}: a step without a preview"
        pictures.append(preview())
        return original(self, n)

    monkeypatch.setattr(bridge.Progress, "step", step)
    if loop == "musicgen":
        from prompt_audio_edit.engine.models.musicgen import SamplingSettings, load_musicgen

        model = load_musicgen(TINY_MUSICGEN, "fp32")
        model.generate_codes(["a piano"], 0.3, SamplingSettings(top_k=50), seed=1, noise_groups=[0])
    elif loop == "instruct":
        from prompt_audio_edit.engine.methods.instruct import instruct_edit, load_instruct_model

        model = load_instruct_model(TINY_SAO_INSTRUCT, "fp32")
        latent = model.encode_audio(torch.randn(1, 2, 44100, generator=torch.Generator().manual_seed(0)), 44100)
        instruct_edit(model, latent, "add rain", steps=4, noise_level=1.0)
    else:
        backbone = registry.load_backbone(TINY_MODEL, "fp32")
        if loop == "sample":
            sample(backbone, "a piano", "", seed=1, steps=3, guidance=3.0, seconds=1.0)
        else:
            latent = backbone.encode_audio(torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0)),
                                           16000)
            inversion = invert(backbone, latent, "a dog barking", steps=4, edit_start=0.0)
            if loop != "invert":
                pictures.clear()
            if loop == "fuse":
                fuse_edit(backbone, inversion, make_attention_edit("replace", "", "a cat barking"),
                          guidance_scales="3")
            elif loop == "zeta":
                prompt_edit(backbone, inversion, "a cat meowing", "3, 6")
    assert len(pictures) >= 3
    assert all(p.dtype == np.uint8 and p.shape[0] == PREVIEW_HEIGHT and p.ndim == 3 for p in pictures)
    assert pictures[0].std() > 0 and not np.array_equal(pictures[0], pictures[-1])  # it follows the loop
