"""Generating audio from a prompt (and an AP-Adapter audio prompt), from noise or from a clip's latent."""

from __future__ import annotations

from typing import Any

from ..engine.diffusion.sampling import MAX_BATCH, sample
from .base import FIXED_SEED_NOTE, PAE_MODEL, PAENode, clips_per_call_input


class Sample(PAENode):
    NODE_ID = "PAE_Sample"
    SEARCH_ALIASES = ["generate audio", "text to audio", "ap adapter sample", "ddim sample"]
    DISPLAY_NAME = "Sample Audio (PAE)"
    DESCRIPTION = ("Generates audio with DDIM from a prompt and a negative prompt, with any model from Load Audio "
                   "Model or AP-Adapter Apply (then the conditional branch hears the clip's audio prompt and the "
                   "unconditional one a silent prompt, as in AP-Adapter). From noise (the paper's setting), or, with "
                   "a latent connected and denoise below 1, from that clip's latent noised part-way (ComfyUI's "
                   "KSampler convention). Returns batch_size clips per clip, clip-major.")
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The generated latents; decode them with VAE Decode Audio.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone from Load Audio Model, or the patched model from AP-Adapter "
                      "Apply."}),
            "positive": ("STRING", {"multiline": True, "default": "", "tooltip": "What to generate, e.g. 'a recording "
                         "of a violin solo'."}),
            "negative": ("STRING", {"multiline": True, "default": "", "tooltip": "What to steer away from, e.g. 'Low "
                         "quality' or the clip's own instrument; empty = unconditional."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the starting "
                     "noise (drawn on the CPU: the same seed gives the same noise on any device)." + FIXED_SEED_NOTE}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "DDIM steps that run (AP-Adapter: 50). "
                      "More: slower, finer."}),
            "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Classifier-free "
                         "guidance (AudioLDM2: 3.5; AP-Adapter: 7.5, style 9.5). 1 = no unconditional branch."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": MAX_BATCH, "tooltip": "Clips generated per audio "
                           "prompt (or per input clip), each from its own noise."}),
            "seconds": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 30.0, "step": 0.01, "tooltip": "Length of "
                        "clips generated from noise, in seconds (AudioLDM2 was trained on 10.24 s). Ignored when a "
                        "latent is connected: its length is used."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "With a latent: "
                        "how much of it is redrawn (1 = generate from noise with its length; 0.5 = keep its coarse "
                        "structure). Without a latent it must be 1."}),
        }, "optional": {
            "latent": ("LATENT", {"tooltip": "A clip's latent from VAE Encode Audio to start from (optional)."}),
            "clips_per_call": clips_per_call_input("denoiser"),
        }}

    def execute(self, model: Any, positive: str, negative: str = "", seed: int = 0, steps: int = 50,
                guidance: float = 3.5, batch_size: int = 1, seconds: float = 10.0, denoise: float = 1.0,
                latent: dict[str, Any] | None = None, clips_per_call: int = 0) -> tuple:
        return (sample(model, positive, negative, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size,
                       seconds=seconds, latent=latent, denoise=denoise, clips_per_call=clips_per_call),)
