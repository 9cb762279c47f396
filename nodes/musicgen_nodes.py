"""EditGen: Prompt-to-Prompt attention edits inside MusicGen (arXiv 2507.11096)."""

from __future__ import annotations

from typing import Any

from ..engine.core import bridge
from ..engine.methods.editgen import MODIFIERS, REWEIGHT_FORMS, musicgen_edit
from ..engine.models.musicgen import list_musicgen_models, load_musicgen
from .base import FIXED_SEED_NOTE, PAE_ATTENTION_EDIT, PAE_MUSICGEN, ModelLoaderNode, PAENode, model_choices


class LoadMusicGen(ModelLoaderNode):
    NODE_ID = "PAE_LoadMusicGen"
    SEARCH_ALIASES = ["musicgen", "load musicgen", "editgen"]
    MODEL_INPUTS = {"model_name": ("MusicGen model", "models/musicgen/", "musicgen-small")}
    DISPLAY_NAME = "Load MusicGen (PAE)"
    DESCRIPTION = ("Loads MusicGen (a transformers folder under models/musicgen/: facebook/musicgen-small, -medium or "
                   "-large; -melody loads but has no cross-attention for word edits). Loaded once and shared.")
    RETURN_TYPES = (PAE_MUSICGEN,)
    RETURN_NAMES = ("musicgen",)
    OUTPUT_TOOLTIPS = ("The loaded MusicGen: T5 text encoder, codebook decoder, EnCodec at 32 kHz.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_name": (model_choices(list_musicgen_models()), {
                "tooltip": "MusicGen folder under models/musicgen/ (config.json, "
                           "weights, generation_config.json, tokenizer files)."}),
            "dtype": (list(bridge.DTYPE_CHOICES), {"default": "auto", "tooltip": "Weight precision. auto: fp16 on "
                      "NVIDIA GPUs, fp32 on CPU."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None) -> bool | str:
        return cls.check_model_inputs(model_name=model_name)

    def execute(self, model_name: str, dtype: str = "auto") -> tuple:
        return (load_musicgen(model_name, dtype),)


class MusicGenEdit(PAENode):
    NODE_ID = "PAE_MusicGenEdit"
    SEARCH_ALIASES = ["musicgen edit", "editgen", "music edit", "prompt to prompt", "p2p"]
    DISPLAY_NAME = "MusicGen Edit (PAE)"
    DESCRIPTION = ("EditGen: generates the Attention Controller's source prompt and, in the same batch with the same "
                   "random numbers, its target prompt with edited attention, as the official code does: the target's "
                   "self-attention moves toward the source's with depth, its cross-attention is Replace-d, Refine-d "
                   "or Reweight-ed, at every frame. Where it differs from the code: source and target share their "
                   "random numbers (so an identity edit reproduces the source token for token; the code samples "
                   "them independently), layers are chosen by decoder layer, and the duration is not rounded to a "
                   "power of two of frames. Returns [source, edited] as one AUDIO batch and the target's per-word "
                   "attention over time. With a source_audio connected (beyond the paper), the "
                   "source branch is that recording, teacher-forced through the decoder under the source prompt, "
                   "and the target is generated against its attention: the result follows the recording's timing "
                   "and phrase structure through self-attention, but its notes and sound are sampled anew, so it "
                   "is a re-generation in the recording's shape, not a resynthesis that keeps everything else.")
    RETURN_TYPES = ("AUDIO", "IMAGE")
    RETURN_NAMES = ("audio", "attention_maps")
    OUTPUT_TOOLTIPS = ("Two clips at 32 kHz: the source, then the edited target.",
                       "One strip per target word: its cross-attention over time (left to right), scaled to its peak.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "musicgen": (PAE_MUSICGEN, {"tooltip": "The model from Load MusicGen."}),
            "attention_edit": (PAE_ATTENTION_EDIT, {"tooltip": "The edit from Attention Controller (its source prompt "
                               "is required: MusicGen generates the source)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip": "Seed of the sampling "
                     "noise, shared by source and target (drawn on the CPU: the same on any device)."
                     + FIXED_SEED_NOTE}),
            "duration": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 30.0, "step": 0.1, "tooltip": "Seconds of "
                         "music (50 frames per second; the released models stop at 30 s). Ignored with a source_audio: "
                         "the recording's length is used."}),
            "guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Classifier-free "
                         "guidance on the logits (MusicGen and EditGen: 3; 1 = none)."}),
            "top_k": ("INT", {"default": 250, "min": 0, "max": 4096, "tooltip": "Sample among the k likeliest "
                      "tokens (MusicGen: 250; 0 = off)."}),
            "top_p": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Nucleus sampling: "
                      "keep the likeliest tokens up to this probability mass (0 = off)."}),
            "temperature": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 5.0, "step": 0.01, "tooltip": "Softmax "
                            "temperature (1 = as trained; lower = safer, higher = wilder)."}),
            "blend": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "How far Replace / "
                      "Refine move the target's word columns toward the source's (1 = take the source's, the "
                      "paper's evaluation; the code's classes default to 0.5). Replace gives every token of the new "
                      "word the mean of the old word's token columns, as the code does."}),
            "reweight_form": (list(REWEIGHT_FORMS), {"default": "divide others", "tooltip": "divide others (the "
                              "code and the paper's evaluation, weight 2): the target takes the source's map and "
                              "every other column, '</s>' included, is divided by the weight. scale: the word's "
                              "columns x weight (the paper's text, c in -2..2)."}),
            "depth_blend": ("BOOLEAN", {"default": True, "tooltip": "Depth factor α = c / N, c the code's attention-"
                            "call counter (1..N-1 along the layers, 0 at the last layer's cross-attention, N = 2 x "
                            "layers), applied as `modifier` says. Off: no modifier, the full edit in every layer "
                            "(self-attention copied from the source)."}),
            "offset": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip": "Fraction of the "
                       "frames generated before any edit: frames below round(offset x frames) are left alone, as "
                       "the code's offset (keeps the opening of the source)."}),
            "layers": ("STRING", {"default": "all", "tooltip": "Decoder layers to edit (self- and cross-attention): "
                       "'all' or e.g. '0-11' or '2, 5' (small: 24 layers, medium 48, large 48). The code's "
                       "ablations choose attention calls by its counter instead."}),
            "heads": ("STRING", {"default": "all", "tooltip": "Cross-attention heads to edit: 'all' or a list such as "
                      "'0-7'."}),
        }, "optional": {
            "source_audio": ("AUDIO", {"tooltip": "A recording to edit instead of generating the source (any rate: "
                             "resampled to 32 kHz mono; up to 30 s; its length sets the duration). Each clip of a "
                             "batch gives a [source, edited] pair; the source is its EnCodec rendition."}),
            "modifier": (list(MODIFIERS), {"default": "self-attention lerp", "tooltip": "How the depth factor α acts "
                         "(the code's modifiers). self-attention lerp (the paper's evaluation): self-attention moves "
                         "toward the source's by α, deeper layers more; cross-attention takes the full edit. "
                         "attention lerp (the code's demos): every map is α·own + (1 - α)·edited, deeper layers "
                         "keeping more of their own."}),
            "use_windows": ("BOOLEAN", {"default": False, "tooltip": "Off (EditGen): edit at every frame, ignoring "
                            "the Attention Controller's windows. On: self- and cross-attention only within its "
                            "self_window and cross_window (fractions of the frames)."}),
        }}

    def execute(self, musicgen: Any, attention_edit: Any, seed: int = 0, duration: float = 10.0,
                guidance: float = 3.0, top_k: int = 250, top_p: float = 0.0, temperature: float = 1.0,
                blend: float = 1.0, reweight_form: str = "scale", depth_blend: bool = True, offset: float = 0.0,
                layers: str = "all", heads: str = "all", source_audio: dict[str, Any] | None = None,
                modifier: str = "self-attention lerp", use_windows: bool = False) -> tuple:
        return musicgen_edit(musicgen, attention_edit, seed=seed, duration=duration, guidance=guidance, top_k=top_k,
                             top_p=top_p, temperature=temperature, blend=blend, reweight_form=reweight_form,
                             depth_blend=depth_blend, offset=offset, layers=layers, heads=heads,
                             source_audio=source_audio, modifier=modifier, use_windows=use_windows)
