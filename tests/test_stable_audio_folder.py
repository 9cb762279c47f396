"""Groundwork for Stable Audio Open (issue 6): the tiny diffusers folder the tests will build and load."""

from __future__ import annotations

import torch

from prompt_audio_edit.standins.stable_audio import build_tiny_stable_audio
from prompt_audio_edit.engine.backbones.registry import detect_family, missing_components


def test_tiny_stable_audio_folder_is_recognised_complete_and_runs(tmp_path):
    from diffusers import AutoencoderOobleck, StableAudioDiTModel

    folder = build_tiny_stable_audio(tmp_path / "diffusers" / "tiny-sao")
    assert detect_family(folder) == "stable_audio" and missing_components(folder) == []
    vae = AutoencoderOobleck.from_pretrained(folder / "vae")
    latent = vae.encode(torch.randn(1, 2, 44100)).latent_dist.mode()
    assert latent.shape == (1, 64, 21)  # 2048 samples per latent frame, 64 channels: the real geometry
    assert vae.decode(latent).sample.shape == (1, 2, 21 * 2048)
    assert StableAudioDiTModel.from_pretrained(folder / "transformer").config.in_channels == 64
    instruct = build_tiny_stable_audio(tmp_path / "diffusers" / "tiny-sao-instruct", in_channels=128)
    assert StableAudioDiTModel.from_pretrained(instruct / "transformer").config.in_channels == 128
