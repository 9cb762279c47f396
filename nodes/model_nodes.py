"""Loading a backbone and moving audio in and out of its latent space."""

from __future__ import annotations

from typing import Any

from ..engine.core import bridge
from ..engine.backbones.registry import (DEFAULT_TEXT_ENCODER, DIFFUSION_KINDS, list_models, list_text_encoders,
                                         load_backbone)
from ..engine.diffusion.vae import DECODE_RATES, vae_decode, vae_encode
from .base import PAE_MODEL, ModelLoaderNode, PAENode, clips_per_call_input, model_choices


class LoadModel(ModelLoaderNode):
    NODE_ID = "PAE_LoadModel"
    SEARCH_ALIASES = ["load audio model", "audioldm2", "tango", "stable audio", "checkpoint"]
    MODEL_INPUTS = {"model_name": ("audio diffusion model", "models/diffusers/, models/tango/ or models/checkpoints/",
                                   "audioldm2-large")}
    DISPLAY_NAME = "Load Audio Model (PAE)"
    DESCRIPTION = ("Loads an audio diffusion backbone from the models folder: AudioLDM2 base, large or music (a "
                   "diffusers folder under models/diffusers/), Stable Audio Open or SAO-Instruct (a diffusers folder, "
                   "or the single checkpoint ComfyUI uses, under models/checkpoints/, with t5-base.safetensors in "
                   "models/text_encoders/) or Tango / Tango 2 (the released files under models/tango/). The backbone "
                   "is recognised from its files; a model is loaded once and shared by every node that uses it.")
    RETURN_TYPES = (PAE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded backbone: VAE, vocoder, text encoders and denoiser.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_name": (model_choices(list_models(DIFFUSION_KINDS)), {"tooltip": "Model folder as kind/name, e.g. "
                           "diffusers/audioldm2-large or tango/tango2, or a single-file Stable Audio checkpoint as "
                           "checkpoints/stable-audio-open-1.0.safetensors. "
                           "Folders and files that are not a recognised audio model are not listed. Stable Audio "
                           "samples σ 500 → 0.3 as diffusers' release does (ComfyUI core's KSampler: 500 → 0.03)."}),
            "dtype": (list(bridge.DTYPE_CHOICES), {"default": "auto", "tooltip": "Weight precision. auto: fp16 "
                      "on NVIDIA GPUs (bf16 where fp16 is unsafe), fp32 on CPU. fp16/bf16 halve memory."}),
        }, "optional": {
            "text_encoder": (list_text_encoders(), {"default": DEFAULT_TEXT_ENCODER, "tooltip": "T5-base weights "
                             "in models/text_encoders/, used only for a checkpoints/ model (a folder brings its own "
                             "T5). Its config and tokenizer: models/text_encoders/t5-base/ where present, else "
                             "ComfyUI's own (comfy/text_encoders/)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None) -> bool | str:
        return cls.check_model_inputs(model_name=model_name)

    def execute(self, model_name: str, dtype: str = "auto", text_encoder: str = DEFAULT_TEXT_ENCODER) -> tuple:
        return (load_backbone(model_name, dtype, text_encoder),)


class VAEEncode(PAENode):
    NODE_ID = "PAE_VAEEncode"
    SEARCH_ALIASES = ["vae encode audio", "audio to latent"]
    DISPLAY_NAME = "VAE Encode Audio (PAE)"
    DESCRIPTION = ("Encodes audio into the model's latent space. The clip is resampled and downmixed as the model "
                   "needs (AudioLDM2: 16 kHz mono, peak-normalised as in training; Stable Audio: 44.1 kHz stereo, mono "
                   "duplicated); its length, rate, channels and "
                   "level are recorded so VAE Decode can restore them.")
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent batch, one entry per clip, tagged with the backbone that made it.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone from Load Audio Model."}),
            "audio": ("AUDIO", {"tooltip": "Clips to encode, any rate and channel count, up to the model's "
                      "length limit (AudioLDM2: 30 s). Stable Audio takes any length, encoded in overlapping "
                      "47.55 s tiles, but its DiT edits one window: split a song with Split Windows first."}),
        }, "optional": {
            "clips_per_call": clips_per_call_input("VAE"),
        }}

    def execute(self, model: Any, audio: dict[str, Any], clips_per_call: int = 0) -> tuple:
        return (vae_encode(model, audio, clips_per_call),)


class VAEDecode(PAENode):
    NODE_ID = "PAE_VAEDecode"
    SEARCH_ALIASES = ["vae decode audio", "latent to audio"]
    DISPLAY_NAME = "VAE Decode Audio (PAE)"
    DESCRIPTION = ("Decodes a latent back to audio through the model's VAE and vocoder, trimmed to the encoded "
                   "length and restored to the encoded level. A Stable Audio latent longer than 47.55 s (e.g. from "
                   "core's VAE Encode Audio) is decoded in overlapping tiles, as core's tiled audio decode does.")
    RETURN_TYPES = ("AUDIO",)
    OUTPUT_TOOLTIPS = ("The decoded clips.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone that encoded the latent."}),
            "latent": ("LATENT", {"tooltip": "Latent from VAE Encode or an editing node of the same backbone."}),
            "sample_rate": (list(DECODE_RATES), {"default": "source", "tooltip": "source: back to the encoded "
                            "clip's sample rate and channel count (mono output duplicated), so it lines up with "
                            "the original; model: the model's own rate (AudioLDM2: 16 kHz mono)."}),
        }, "optional": {
            "clips_per_call": clips_per_call_input("VAE and vocoder"),
        }}

    def execute(self, model: Any, latent: dict[str, Any], sample_rate: str = "source",
                clips_per_call: int = 0) -> tuple:
        return (vae_decode(model, latent, sample_rate, clips_per_call),)
