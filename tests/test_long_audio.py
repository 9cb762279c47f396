"""Long audio through the VAEs: time tiles for Stable Audio beyond its window, and batches in chunks of clips."""

from __future__ import annotations

import pytest
import torch

from prompt_audio_edit.engine.backbones import registry as model_registry
from prompt_audio_edit.engine.diffusion.tiling import tile_spans, tiled_along_time
from prompt_audio_edit.engine.diffusion.vae import vae_decode, vae_encode
from prompt_audio_edit.nodes import NODE_CLASS_MAPPINGS

from tests.conftest import TINY_SAO
from tests.helpers import audio_clip, expect_input_error


@pytest.mark.parametrize("frames, tile, overlap", [(10, 4, 1), (100, 16, 4), (17, 16, 4), (16, 16, 4), (5, 16, 2)])
def test_tiles_are_whole_cover_the_clip_and_overlap_by_at_least_the_overlap(frames, tile, overlap):
    spans = tile_spans(frames, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(end - start == min(tile, frames) for start, end in spans)
    assert all(b[0] <= a[1] - overlap for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("in_per_frame, out_per_frame", [(1, 1), (1, 8), (8, 1)])
def test_blending_reproduces_a_frame_local_map_exactly(in_per_frame, out_per_frame):
    # A map that sees each frame alone: tiles can only differ from the whole run by the blend itself, which must
    # then be the identity (weights summing to one everywhere, no seam).
    torch.manual_seed(0)
    frames = 157
    x = torch.randn(2, 3, frames * in_per_frame)

    calls = []

    def per_frame(part: torch.Tensor) -> torch.Tensor:
        calls.append(part.shape[-1])
        grouped = part.reshape(*part.shape[:-1], -1, in_per_frame).mean(-1)  # [..., frames]
        return torch.tanh(grouped).repeat_interleave(out_per_frame, dim=-1) * 3 - 1

    whole = per_frame(x)
    calls.clear()
    tiled = tiled_along_time(per_frame, x, frames, 32, 6, in_per_frame, out_per_frame)
    assert calls == [32 * in_per_frame] * len(tile_spans(frames, 32, 6)) and len(calls) == 6
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=1e-6, atol=1e-6)


@pytest.fixture
def sao(tiny_dirs):
    return model_registry.load_backbone(TINY_SAO, "fp32")


def test_stable_audio_beyond_its_window_encodes_and_decodes_in_tiles(sao, monkeypatch):
    assert sao.tile_frames == sao.transformer.config.sample_size  # the DiT's window
    monkeypatch.setattr(type(sao), "tile_frames", 48)  # a shorter window keeps the test fast; overlap 3 frames
    window = sao.tile_frames * sao.hop
    song = audio_clip(2.3 * window / 44100, 44100, 2, kind="noise", seed=4)
    latent = vae_encode(sao, song)
    frames = latent["samples"].shape[-1]
    assert frames == -(-song["waveform"].shape[-1] // sao.hop) and len(tile_spans(frames, sao.tile_frames, 3)) == 3
    assert torch.isfinite(latent["samples"]).all()
    # Away from the seams each tile is the window's own encoding: the first window's frames equal a plain encode
    # of the first window (up to the frames the encoder's reach carries across a tile edge).
    first = vae_encode(sao, {"waveform": song["waveform"][..., :window], "sample_rate": 44100})["samples"]
    inner = sao.tile_frames - 8
    torch.testing.assert_close(latent["samples"][..., :inner], first[..., :inner], rtol=1e-4, atol=1e-4)
    back = vae_decode(sao, latent)
    assert back["waveform"].shape == song["waveform"].shape and torch.isfinite(back["waveform"]).all()
    whole = sao.vae.decode(latent["samples"]).sample  # the untiled decode, for comparison only
    interior = slice(0, inner * sao.hop)
    torch.testing.assert_close(back["waveform"][..., interior], whole[..., interior], rtol=1e-4, atol=1e-4)
    seam_error = (back["waveform"] - whole[..., :back["waveform"].shape[-1]]).abs().max()
    assert seam_error < 0.02 * whole.abs().max()  # the blended seams stay close to the whole decode


def test_a_window_or_less_is_one_plain_vae_call(sao):
    clip = audio_clip(2.0, 44100, 2, kind="noise", seed=1)
    latent = vae_encode(sao, clip)
    length = clip["waveform"].shape[-1]
    padded = torch.nn.functional.pad(clip["waveform"], (0, latent["samples"].shape[-1] * sao.hop - length))
    assert torch.equal(latent["samples"], sao.vae.encode(padded).latent_dist.mode())
    assert torch.equal(vae_decode(sao, latent, "model")["waveform"],
                       sao.vae.decode(latent["samples"]).sample[..., :length])


def test_vae_nodes_in_chunks_of_clips_give_the_batch_with_each_clips_level(tiny_backbone):
    # Clips at different levels: AudioLDM2 peak-normalises each, so each row carries its own gain.
    clips = audio_clip(1.0, 16000, 1, kind="noise", seed=2, clips=3)
    clips["waveform"] = clips["waveform"] * torch.tensor([1.0, 0.25, 0.6])[:, None, None]
    encode, decode = NODE_CLASS_MAPPINGS["PAE_VAEEncode"](), NODE_CLASS_MAPPINGS["PAE_VAEDecode"]()
    (whole,) = encode.run(model=tiny_backbone, audio=clips)
    (chunked,) = encode.run(model=tiny_backbone, audio=clips, clips_per_call=2)
    torch.testing.assert_close(chunked["samples"], whole["samples"], rtol=1e-5, atol=1e-5)
    assert torch.equal(chunked["pae"]["gain"], whole["pae"]["gain"]) and len(set(whole["pae"]["gain"].tolist())) == 3
    whole["pae"]["candidates"] = [{"guidance": float(g)} for g in (3, 6, 9)]
    (audio_whole,) = decode.run(model=tiny_backbone, latent=whole)
    (audio_chunked,) = decode.run(model=tiny_backbone, latent=whole, clips_per_call=1)
    torch.testing.assert_close(audio_chunked["waveform"], audio_whole["waveform"], rtol=1e-5, atol=1e-5)
    assert audio_chunked["pae_candidates"] == audio_whole["pae_candidates"]
    assert not torch.allclose(audio_whole["waveform"][0], audio_whole["waveform"][1])
    err = expect_input_error(decode.run, model=tiny_backbone, latent=whole, clips_per_call=5000)
    assert str(err).startswith("PAE_VAEDecode: input 'clips_per_call':")
