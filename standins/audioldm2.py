"""Tiny, randomly initialised AudioLDM2 stand-ins for tests and the demo; never real weights."""

from __future__ import annotations

import os
import pathlib

import torch

from .common import clap_feature_extractor, clap_tokenizer, reinit, t5_tokenizer, tiny_clap_config


# Real AudioLDM2 facts mirrored below (sources: diffusers `scripts/convert_original_audioldm2_to_diffusers.py`,
# haoheliu/AudioLDM2 `audioldm2/utils.py` + `openaimodel.py`, diffusers `pipelines/audioldm2/*`):
# - Every UNet attention slot holds one Transformer2DModel per `cross_attention_dim` entry. The original UNet puts an
#   extra self-attention transformer first (`extra_sa_layer`), so base/music use [None, 768, 1024] and large uses
#   [None, 768, 1024, None] with transformer depth 2. A `None` entry builds a block whose attn2 is a second
#   self-attention; entry 1 attends to the GPT-2 ("LOA") stream (768), entry 2 to the Flan-T5 stream (1024).
# - The T5 hidden states go straight into the UNet (`encoder_hidden_states_1`), so T5 d_model must be 1024; the GPT-2
#   output goes straight in as `encoder_hidden_states`, so n_embd must be 768. The projection model maps
#   CLAP projection_dim -> 768 and T5 d_model -> 768 (GPT-2 input); it never produces the 1024 stream.
# - VAE: 1 -> 8 latent channels, ch_mult (1, 2, 4) so time and mel axes shrink by 4, learnt scale 0.4110932946.
# - Vocoder: HiFi-GAN on 64 mel bins at 16 kHz, upsample rates (5, 4, 2, 2, 2) = hop length 160.
# - Scheduler: DDIM, 1000 steps, scaled_linear 0.0015-0.0195, eps prediction, steps_offset 1, no clipping.
# - transformers>=5: GPT2Model lacks GenerationMixin, which the pipeline's generation loop needs, so the language
#   model is GPT2LMHeadModel (as in diffusers' own type hint); its lm_head is tied to wte and adds no weights.
#   It needs >= 1 layer: the pipeline reads `hidden_states[-1]`, which a 0-layer GPT-2 does not return.
# - Size: those fixed widths set the floor (~18-19 MB in float32): one GPT-2 block at 768 (~9.4 MB), the
#   T5 -> GPT-2 projection 1024x768 (~3.1 MB), T5 embeddings at 1024 and the 768/1024-wide UNet to_k/to_v.
# - Layouts: base and music share one architecture (the real checkpoints differ only in weights), so the same seed
#   gives the same weights for both. Everything not listed above is shrunk (UNet: 2 levels instead of 4, first one
#   without attention as in the real model; 1 resnet per level instead of 2).

LAYOUTS: tuple[str, ...] = ("base", "large", "music")

_GPT2_WIDTH = 768
_T5_WIDTH = 1024
_GEN_TOKENS = 8  # sequence_gen_length of the original conditioner

def _unet_cross_attention_dims(layout: str) -> list[int | None]:
    """Return the per-slot cross-attention dims of the real checkpoint family."""
    if layout == "large":
        return [None, _GPT2_WIDTH, _T5_WIDTH, None]
    return [None, _GPT2_WIDTH, _T5_WIDTH]


def build_tiny_audioldm2(folder: str | os.PathLike, *, layout: str = "large", seed: int = 0) -> pathlib.Path:
    """Build a tiny random AudioLDM2 pipeline, save it with save_pretrained at folder, and return the path."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
    )
    from transformers import (
        ClapModel,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    out = pathlib.Path(folder)
    tokenizer = clap_tokenizer()
    tokenizer_2 = t5_tokenizer()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)

        clap_dim = 16
        text_encoder = ClapModel(tiny_clap_config(tokenizer, width=clap_dim))
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=_T5_WIDTH,
                d_kv=8,
                d_ff=16,
                num_layers=1,
                num_heads=2,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        )
        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=clap_dim, text_encoder_1_dim=_T5_WIDTH, langauge_model_dim=_GPT2_WIDTH
        )
        language_model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=8,
                n_positions=192,
                n_embd=_GPT2_WIDTH,
                n_layer=1,
                n_head=2,
                n_inner=16,
                bos_token_id=0,
                eos_token_id=0,
                max_new_tokens=_GEN_TOKENS,
            )
        )
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=256,  # 256 latent frames * 4 * 160 / 16 kHz = 10.24 s default length, like the real ones
            in_channels=8,
            out_channels=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            attention_head_dim=2,  # AudioLDM2's UNet reads this as the number of heads
            cross_attention_dim=[_unet_cross_attention_dims(layout)] * 2,
            transformer_layers_per_block=2 if layout == "large" else 1,
        )
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=8,
            sample_size=1024,  # conversion script's image_size; only the tiling threshold reads it
            scaling_factor=0.4110932946,
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=64,
                sampling_rate=16000,
                upsample_initial_channel=32,
                upsample_rates=[5, 4, 2, 2, 2],
                upsample_kernel_sizes=[16, 16, 8, 4, 4],
                resblock_kernel_sizes=[3, 7, 11],
                resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                normalize_before=False,
            )
        )
        for model in (text_encoder, text_encoder_2, projection_model, language_model, unet, vae):
            reinit(model)
        # The leaky-ReLU HiFi-GAN stack loses variance per stage; a little extra gain keeps its output audible.
        reinit(vocoder, gain=1.2)

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    feature_extractor = clap_feature_extractor()
    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


