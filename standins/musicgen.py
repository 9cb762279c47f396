"""A tiny, randomly initialised MusicGen saved as a transformers folder, for tests and the demo; never real weights."""

from __future__ import annotations

import os
import pathlib

import torch

# Real facts kept: EnCodec at 32 kHz with upsampling 8·5·4·4 = 640 (50 frames per second) and 2048-entry codebooks;
# 4 codebooks, and the decoder's pad / start token is the codebook size. The decoder has as many codebooks as
# EnCodec has quantizers at its (only) bandwidth: 2.2 kbps with 11-bit codebooks at 50 Hz gives 4.
_CODEBOOK = 2048


def build_tiny_musicgen(folder: str | os.PathLike, *, seed: int = 0, max_seconds: float = 30.0,
                        melody: bool = False) -> pathlib.Path:
    """Build a tiny MusicGen (T5 text encoder, 2-layer decoder, EnCodec), save it with its tokenizer, return the path.

    melody=True builds MusicGen-melody's layout: no cross-attention, text and chroma enter as a decoder prefix."""
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                              MusicgenMelodyConfig, MusicgenMelodyDecoderConfig, MusicgenMelodyForConditionalGeneration,
                              T5Config)

    from .common import t5_tokenizer

    tokenizer = t5_tokenizer()
    text = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                    decoder_start_token_id=0)
    codec = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=16, num_filters=4, num_residual_layers=1,
                          upsampling_ratios=[8, 5, 4, 4], codebook_size=_CODEBOOK, codebook_dim=16,
                          target_bandwidths=[2.2], num_lstm_layers=1, use_causal_conv=False, normalize=False)
    decoder_config = MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig
    decoder = decoder_config(vocab_size=_CODEBOOK, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             ffn_dim=64, num_codebooks=codec.num_quantizers, max_position_embeddings=256,
                             pad_token_id=_CODEBOOK, bos_token_id=_CODEBOOK, decoder_start_token_id=_CODEBOOK,
                             initializer_factor=0.3)
    # initializer_factor 0.3 (transformers: 0.02): logits far from uniform, so an attention edit changes tokens.
    torch.manual_seed(seed)
    if melody:
        model = MusicgenMelodyForConditionalGeneration(MusicgenMelodyConfig(
            text_encoder=text, audio_encoder=codec, decoder=decoder, num_chroma=12, chroma_length=20))
    else:
        model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=text, audio_encoder=codec,
                                                                decoder=decoder))
    # EnCodec's codebooks start all-zero (they are learned by k-means in training): every code would then decode to
    # the same audio and a test on decoded audio could not see the tokens. Random entries make audio follow codes.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
            layer.codebook.cluster_size.fill_(1.0)
    generation = model.generation_config
    generation.pad_token_id = generation.decoder_start_token_id = generation.bos_token_id = _CODEBOOK
    generation.max_length = int(max_seconds * codec.frame_rate)
    generation.do_sample, generation.guidance_scale, generation.top_k = True, 3.0, 250
    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
