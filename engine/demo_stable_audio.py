"""A tiny, randomly initialised Stable Audio Open saved as a diffusers folder, for tests; never real weights.

Components are saved one by one and model_index.json and the scheduler config are written as data, so building
(and the pack's loading) needs no torchsde, which diffusers' CosineDPMSolverMultistepScheduler imports.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch

# Real facts kept: Oobleck VAE at 44.1 kHz stereo, 64 latent channels, downsampling 2·4·4·8·8 = 2048 samples per
# latent frame (21.5 Hz); T5 text states of width 768; timing conditioning (seconds start / end) as two extra
# cross-attention tokens and as the global condition; the scheduler's sigma range and v-prediction.
_SCHEDULER = {"_class_name": "CosineDPMSolverMultistepScheduler", "sigma_min": 0.3, "sigma_max": 500.0,
              "sigma_data": 1.0, "sigma_schedule": "exponential", "solver_order": 2, "prediction_type": "v_prediction",
              "rho": 7.0, "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
              "final_sigmas_type": "zero", "num_train_timesteps": 1000}


def build_tiny_stable_audio(folder: str | os.PathLike, *, seed: int = 0, in_channels: int = 64,
                            max_seconds: float = 47.0) -> pathlib.Path:
    """Build and save a tiny Stable Audio Open folder; in_channels=128 gives SAO-Instruct's input-concat DiT."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from .demo_models import _t5_tokenizer

    out = pathlib.Path(folder)
    torch.manual_seed(seed)
    tokenizer = _t5_tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=768, d_kv=8, d_ff=32, num_layers=1,
                                           num_heads=2))
    projection = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                            max_value=int(max_seconds))
    # The encoder's last width is mean + scale of the latent, so 128 gives the real 64 latent channels.
    vae = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8],
                             channel_multiples=[1, 1, 1, 1, 1], decoder_channels=8, decoder_input_channels=64,
                             audio_channels=2, sampling_rate=44100)
    transformer = StableAudioDiTModel(sample_size=int(max_seconds * 44100 / 2048) + 1, in_channels=in_channels,
                                      num_layers=2, attention_head_dim=8, num_attention_heads=4,
                                      num_key_value_attention_heads=2, out_channels=64, cross_attention_dim=768,
                                      time_proj_dim=32, global_states_input_dim=1536, cross_attention_input_dim=768)
    for name, module in (("text_encoder", text_encoder), ("projection_model", projection), ("vae", vae),
                         ("transformer", transformer)):
        module.save_pretrained(out / name)
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(_SCHEDULER, indent=2))
    index = {"_class_name": "StableAudioPipeline", "_diffusers_version": "0.42.1",
             "projection_model": ["stable_audio", "StableAudioProjectionModel"],
             "scheduler": ["diffusers", "CosineDPMSolverMultistepScheduler"],
             "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "transformer": ["diffusers", "StableAudioDiTModel"], "vae": ["diffusers", "AutoencoderOobleck"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
