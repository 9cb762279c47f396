"""AudioLDM2 (base, large, music) from a diffusers folder, behind the Backbone interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .mel import MelFrontEnd
from ..core.placement import made_on_cpu, weight_dtype
from .base import CrossAttentionSite, TextConditioning, tokenize_checked, unet_attention_blocks
from .mel_vae import MelVAEBackbone

# Trained on 10.24 s clips. The UNet and VAE are convolutional, but past 30 s the VAE's mid-block attention
# grows quadratically and the edits drift far from anything the model has seen.
_MAX_DURATION_S = 30.0
# Within a block's cross_attention_dim list, entries 0-1 read the GPT-2 stream and 2-3 the T5 stream
# (AudioLDM2's CrossAttnDownBlock2D routing); None entries are a second self-attention.
_T5_FROM_INDEX = 2


class AudioLDM2Backbone(MelVAEBackbone):
    """AudioLDM2: mel VAE (8 latent channels, /4 in time and frequency), HiFi-GAN, GPT-2 + FLAN-T5 conditioning."""

    family = "audioldm2"
    sample_rate = 16000
    channels = 1
    latent_channels = 8
    max_duration_s = _MAX_DURATION_S
    text_streams = ("gpt2", "t5")
    word_stream = "t5"

    def __init__(self, pipeline: Any, name: str, folder: Path):
        self.pipeline = pipeline
        self.name = name
        self.folder = folder
        self.vae, self.vocoder = pipeline.vae, pipeline.vocoder
        self._read_shapes()
        self.mel = MelFrontEnd(sample_rate=self.sample_rate, n_fft=1024, hop=self.hop, n_mels=self.n_mels,
                               fmin=0.0, fmax=self.sample_rate / 2)
        self.prediction_type = pipeline.scheduler.config.get("prediction_type", "epsilon")
        self.max_new_tokens = int(getattr(pipeline.language_model.config, "max_new_tokens", 8) or 8)

    # ------------------------------------------------------------------------------------ modules
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipeline.unet

    parts = {"text": ("text_encoder", "text_encoder_2", "projection_model", "language_model"), "denoiser": ("unet",),
             "vae": ("vae", "vocoder")}

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part, for device placement and memory accounting."""
        p = self.pipeline
        return {"unet": p.unet, "vae": p.vae, "vocoder": p.vocoder, "text_encoder": p.text_encoder,
                "text_encoder_2": p.text_encoder_2, "projection_model": p.projection_model,
                "language_model": p.language_model}

    def make_scheduler(self) -> Any:
        return type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)


    # ---------------------------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_text(self, prompts: list[str], t5_length: int | None = None) -> TextConditioning:
        """t5_length: pad (or cut) the T5 tokens to this length, as diffusers does for a negative prompt."""
        self.activate("text")
        p = self.pipeline
        device = self.device
        clap_in = tokenize_checked(p.tokenizer, prompts, "max_length", "CLAP")
        clap = p.text_encoder.get_text_features(clap_in.input_ids.to(device),
                                                attention_mask=clap_in.attention_mask.to(device))
        clap = getattr(clap, "pooler_output", clap)[:, None, :]  # transformers 5 returns an output object
        if t5_length is None:
            t5_in = tokenize_checked(p.tokenizer_2, prompts, True, "T5")
        else:
            with made_on_cpu():
                t5_in = p.tokenizer_2(prompts, padding="max_length", max_length=int(t5_length), truncation=True,
                                      return_tensors="pt")
        t5_mask = t5_in.attention_mask.to(device)
        t5 = p.text_encoder_2(t5_in.input_ids.to(device), attention_mask=t5_mask)[0]
        projected = p.projection_model(hidden_states=clap, hidden_states_1=t5,
                                       attention_mask=t5_mask.new_ones((len(prompts), 1)), attention_mask_1=t5_mask)
        gpt2 = generated_hidden_states(p.language_model, projected.hidden_states, projected.attention_mask,
                                       self.max_new_tokens)
        tokens = [p.tokenizer_2.convert_ids_to_tokens(ids[mask.bool()].tolist())
                  for ids, mask in zip(t5_in.input_ids, t5_in.attention_mask)]
        return TextConditioning(prompts=list(prompts), streams={"gpt2": gpt2, "t5": t5},
                                masks={"gpt2": None, "t5": t5_mask}, tokens={"t5": tokens})

    @torch.no_grad()
    def encode_negative(self, negative: str, positive: TextConditioning) -> TextConditioning:
        """diffusers' AudioLDM2Pipeline: the negative's T5 tokens padded or cut to the positive's length. GPT-2 reads
        the pads' positions, so this changes the negative's generated vectors (and is what diffusers samples with)."""
        return self.encode_text([negative], t5_length=int(positive.streams["t5"].shape[1]))

    # ----------------------------------------------------------------------------------- denoising
    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | float, conditioning: TextConditioning,
                input_latent: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_latent(input_latent)
        unet = self.pipeline.unet
        dtype = weight_dtype(unet)
        return unet(latents.to(dtype), timestep,
                    encoder_hidden_states=conditioning.streams["gpt2"].to(dtype),
                    encoder_hidden_states_1=conditioning.streams["t5"].to(dtype),
                    encoder_attention_mask_1=conditioning.masks["t5"], return_dict=False)[0]

    def cross_attention_sites(self) -> list[CrossAttentionSite]:
        sites = []
        for prefix, place, downsampling, block in unet_attention_blocks(self.pipeline.unet):
            dims = getattr(block, "cross_attention_dim", None)
            if not dims:
                continue
            for a, transformer in enumerate(block.attentions):
                position = a % len(dims)
                if dims[position] is None:
                    continue
                for t, layer in enumerate(transformer.transformer_blocks):
                    attn = layer.attn2
                    if attn is None or not attn.is_cross_attention:
                        continue
                    sites.append(CrossAttentionSite(
                        module_path=f"{prefix}.attentions.{a}.transformer_blocks.{t}.attn2",
                        stream="t5" if position >= _T5_FROM_INDEX else "gpt2",
                        key_dim=attn.to_k.in_features, heads=attn.heads, place=place, downsampling=downsampling))
        return sites


def generated_hidden_states(language_model: Any, embeds: torch.Tensor, mask: torch.Tensor, steps: int) -> torch.Tensor:
    """AudioLDM2's "language of audio": GPT-2 run `steps` times, each time on the sequence plus its own last hidden
    state; the new states are returned. Equal to diffusers' generate_language_model bit for bit: with current
    transformers that loop recomputes the whole sequence each step (its cache is handed back under a new name it
    does not read), and so does this one, without the `past_key_values` argument transformers 5.40 removes. The
    cost is negligible: 8 steps over about a hundred positions."""
    for _ in range(steps):
        out = language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, output_hidden_states=True,
                             return_dict=True)
        embeds = torch.cat([embeds, out.hidden_states[-1][:, -1:, :]], dim=1)  # [batch, positions + 1, width]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return embeds[:, -steps:, :]
