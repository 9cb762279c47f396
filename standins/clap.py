"""A tiny, randomly initialised CLAP saved as a transformers folder, for tests and the demo; never real weights."""

from __future__ import annotations

import os
import pathlib

import torch

from .common import clap_feature_extractor, clap_tokenizer, reinit, tiny_clap_config

# Real CLAP facts mirrored below (transformers' ClapAudioEncoder and the laion/clap-htsat-unfused files):
# - The feature extractor always yields a 10 s window of 48 kHz audio as 1001 x 64 log-mel frames (dB). HTSAT lays
#   them out as a spec_size x spec_size image: freq_ratio = spec_size // num_mel_bins = 4, the 1001 frames are
#   stretched to spec_size * freq_ratio = 1024 and folded into 4 bands of 256. spec_size 256 and 64 mel bins are
#   therefore kept; smaller values make the folded width shorter than 1001 frames, which the encoder refuses.
# - Patches are 8 x 8 (real: 4 x 4, a 64 x 64 grid) for a 32 x 32 grid, 4x fewer tokens; window 8 divides the grid
#   at both stages (32 and 16), and the final 16 frequency rows still fold into freq_ratio = 4 bands. hidden_size
#   must equal patch_embeds_hidden_size * 2 ** (stages - 1) (the width after the last patch merging).
# - Fusion is off (as in clap-htsat-unfused and larger_clap_music); the feature extractor then uses 'rand_trunc'.
# - The encoder's first layer is a BatchNorm over the mel bins: a trained one holds the dB statistics of real audio.
#   Fresh running stats (mean 0, variance 1) would leave features around -66 dB and make every clip look alike, so
#   the tiny model gets typical statistics instead.
_MEL_DB_MEAN = -66.0
_MEL_DB_STD = 36.0
_WIDTH = 16


def build_tiny_clap(folder: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Build a tiny random CLAP (text + HTSAT audio tower), save it as a transformers folder, and return the path.

    The folder holds what a released CLAP repository holds: config.json, model.safetensors, preprocessor_config.json
    (a ClapFeatureExtractor at 48 kHz with clap-htsat-unfused's settings) and the tokenizer files (a tiny byte-level
    RoBERTa BPE). ClapProcessor.from_pretrained and the pack's loader both read it.
    """
    from transformers import ClapModel

    out = pathlib.Path(folder)
    tokenizer = clap_tokenizer()
    config = tiny_clap_config(tokenizer, width=_WIDTH, patch=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
        reinit(model)
    with torch.no_grad():
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.fill_(_MEL_DB_MEAN)
        norm.running_var.fill_(_MEL_DB_STD ** 2)
    feature_extractor = clap_feature_extractor()
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    # The released layout (preprocessor_config.json + tokenizer files); transformers 5's ClapProcessor.save_pretrained
    # would write processor_config.json instead, which the real repositories do not have.
    feature_extractor.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
