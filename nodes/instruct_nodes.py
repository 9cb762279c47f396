"""SAO-Instruct: edit a clip by a free-form instruction (arXiv 2510.22795)."""

from __future__ import annotations

from typing import Any

from ..engine.core import bridge
from ..engine.methods.instruct import (DEFAULT_GUIDANCE, DEFAULT_NOISE_LEVEL, DEFAULT_STEPS, MAX_ROWS, instruct_edit,
                               list_instruct_models, load_instruct_model)
from .base import FIXED_SEED_NOTE, PAE_MODEL, ModelLoaderNode, PAENode, clips_per_call_input, model_choices


class LoadSAOInstruct(ModelLoaderNode):
    NODE_ID = "PAE_LoadSAOInstruct"
    SEARCH_ALIASES = ["sao instruct", "stable audio", "instruction edit"]
    MODEL_INPUTS = {"model_name": ("SAO-Instruct model", "models/diffusers/", "sao-instruct")}
    DISPLAY_NAME = "Load SAO-Instruct (PAE)"
    DESCRIPTION = ("Loads SAO-Instruct, Stable Audio Open fine-tuned to edit a clip from an instruction. Either a "
                   "diffusers folder under models/diffusers/ whose DiT takes 128 channels, or a stable-audio-tools "
                   "checkpoint folder (model_config.json + model.safetensors or model.ckpt, converted on load) with "
                   "Stable Audio Open's text_encoder/ and tokenizer/ copied beside it. The model also works with VAE "
                   "Encode and VAE Decode Audio.")
    RETURN_TYPES = (PAE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SAO-Instruct: Oobleck VAE, T5-base and the input-concatenating DiT.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_name": (model_choices(list_instruct_models()), {
                "tooltip": "SAO-Instruct folder as diffusers/name. Listed: "
                           "diffusers Stable Audio folders with a 128-channel DiT and stable-audio-tools "
                           "checkpoints."}),
            "dtype": (list(bridge.DTYPE_CHOICES), {"default": "auto", "tooltip": "Weight precision. auto: fp16 "
                      "on NVIDIA GPUs (bf16 where fp16 is unsafe), fp32 on CPU. fp16/bf16 halve memory."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None) -> bool | str:
        return cls.check_model_inputs(model_name=model_name)

    def execute(self, model_name: str, dtype: str = "auto") -> tuple:
        return (load_instruct_model(model_name, dtype),)


class InstructEdit(PAENode):
    NODE_ID = "PAE_InstructEdit"
    SEARCH_ALIASES = ["sao instruct", "instruction edit", "stable audio edit", "edit audio"]
    DISPLAY_NAME = "Instruct Edit (PAE)"
    DESCRIPTION = ("SAO-Instruct's edit: the clip's latent is noised to noise_level and denoised with the model's "
                   "DPM-Solver++(2M) SDE, conditioned on the instruction and the clip's duration, while the clean "
                   "latent enters the DiT beside the noisy one. Several instructions (one per line) and batch_size "
                   "seeds run in one batch; rows are clip-major, then instruction, then seed.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("edited",)
    OUTPUT_TOOLTIPS = ("One latent per clip, instruction and seed; decode with VAE Decode Audio.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "SAO-Instruct from Load SAO-Instruct."}),
            "latent": ("LATENT", {"tooltip": "The clip's latent from VAE Encode Audio (with the same model); up to "
                       "the model's 47 s."}),
            "instruction": ("STRING", {"multiline": True, "default": "", "tooltip": "What to change, e.g. 'add rain "
                            "in the background' or 'make the dog bark louder'. One instruction per line: each is a "
                            "separate edit in the same batch."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the added and "
                     "per-step noise (CPU-drawn: the same on any device). batch_size > 1 uses seed, seed+1, ..."
                     + FIXED_SEED_NOTE}),
            "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 1000, "tooltip": "Solver steps from "
                      "noise_level down to the schedule's σ_min (paper: 100). More: slower, finer."}),
            "guidance": ("FLOAT", {"default": DEFAULT_GUIDANCE, "min": 0.0, "max": 100.0, "step": 0.1,
                         "tooltip": "Classifier-free guidance of the instruction (paper: 5). 1 = no unconditional "
                         "branch; higher follows the instruction more strongly."}),
            "noise_level": ("FLOAT", {"default": DEFAULT_NOISE_LEVEL, "min": 0.0, "max": 500.0, "step": 0.01,
                            "tooltip": "σ of the noise added to the clip's latent before denoising (stable-audio-"
                            "tools' init_noise_level; the paper does not give it). 1 (default): half noise, keeps "
                            "timing and texture; 5-20: freer edits; 500: pure noise, the clip enters only as the "
                            "DiT's extra input; 0: returns the clip unchanged; at or below the schedule's σ_min "
                            "(0.3): one step."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_ROWS, "tooltip": "Seeds per clip and "
                           "instruction (seed, seed+1, ...): several takes of the same edit."}),
            "negative": ("STRING", {"multiline": True, "default": "", "tooltip": "Optional negative prompt, e.g. "
                         "'Low quality'. Empty = Stable Audio's unconditional (every text and timing key zero)."}),
        }, "optional": {
            "clips_per_call": clips_per_call_input("DiT"),
        }}

    def execute(self, model: Any, latent: dict[str, Any], instruction: str, seed: int = 0,
                steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
                noise_level: float = DEFAULT_NOISE_LEVEL, batch_size: int = 1, negative: str = "",
                clips_per_call: int = 0) -> tuple:
        return (instruct_edit(model, latent, instruction, negative=negative, steps=steps, guidance=guidance,
                              noise_level=noise_level, seed=seed, batch_size=batch_size,
                              clips_per_call=clips_per_call),)
