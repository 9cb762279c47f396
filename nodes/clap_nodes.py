"""Loading a CLAP text-audio model and keeping the edited candidate that best matches the prompt."""

from __future__ import annotations

from typing import Any

from ..engine.core import bridge
from ..engine.models.clap import list_clap_models, load_clap, select_candidates
from .base import PAE_CLAP, ModelLoaderNode, PAENode, model_choices


class LoadCLAP(ModelLoaderNode):
    NODE_ID = "PAE_LoadCLAP"
    SEARCH_ALIASES = ["clap", "laion clap", "text audio score"]
    MODEL_INPUTS = {"model_name": ("CLAP model", "models/clap/", "clap-htsat-unfused")}
    DISPLAY_NAME = "Load CLAP (PAE)"
    DESCRIPTION = ("Loads a CLAP text-audio model (a transformers folder under models/clap/, e.g. "
                   "laion/clap-htsat-unfused or laion/larger_clap_music). CLAP Select uses it to score how well "
                   "each edited candidate matches the prompt. Loaded once and shared while in use.")
    RETURN_TYPES = (PAE_CLAP,)
    RETURN_NAMES = ("clap",)
    OUTPUT_TOOLTIPS = ("The loaded CLAP model: text and audio encoders into one embedding space (audio at 48 kHz).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model_name": (model_choices(list_clap_models()), {
                "tooltip": "CLAP folder under models/clap/ (a transformers folder "
                           "with config.json, weights, preprocessor_config.json and tokenizer files). Folders that "
                           "are not CLAP are not listed."}),
            "dtype": (list(bridge.DTYPE_CHOICES), {"default": "auto", "tooltip": "Weight precision. auto: fp16 "
                      "on NVIDIA GPUs (bf16 where fp16 is unsafe), fp32 on CPU. fp16/bf16 halve memory and may move "
                      "scores in the third decimal."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model_name: str | None = None) -> bool | str:
        return cls.check_model_inputs(model_name=model_name)

    def execute(self, model_name: str, dtype: str = "auto") -> tuple:
        return (load_clap(model_name, dtype),)


class CLAPSelect(PAENode):
    NODE_ID = "PAE_CLAPSelect"
    SEARCH_ALIASES = ["clap", "best candidate", "guidance bootstrapping", "pick best"]
    DISPLAY_NAME = "CLAP Select (PAE)"
    DESCRIPTION = ("Keeps the best of several edited candidates (PPAE's guidance bootstrapping: one candidate per "
                   "guidance scale). Each candidate scores cos(CLAP text of the prompt, CLAP audio of the candidate) "
                   "+ fidelity_weight x cos(CLAP audio of the source clip, CLAP audio of the candidate). Candidates "
                   "of different source clips are ranked separately. Audio is downmixed to mono and resampled to "
                   "48 kHz for scoring only; the outputs keep the candidates' own rate and channels. Clips longer "
                   "than 10 s are scored as evenly spaced 10 s windows, averaged.")
    RETURN_TYPES = ("AUDIO", "AUDIO", "STRING")
    RETURN_NAMES = ("best", "ranked", "scores")
    OUTPUT_TOOLTIPS = (
        "The best candidate of each source clip (one clip per source clip, in source order).",
        "Every candidate, source clip by source clip, best first.",
        "The ranking as a table: rank, batch row, guidance scale, text score, fidelity score and total "
        "(cosines in [-1, 1]).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clap": (PAE_CLAP, {"tooltip": "The CLAP model from Load CLAP."}),
                "audio": ("AUDIO", {"tooltip": "The candidates: a batch of clips at any sample rate and channel "
                          "count, e.g. the decoded output of an edit run at several guidance scales."}),
                "prompt": ("STRING", {"multiline": False, "default": "", "tooltip": "Text the kept candidate should "
                           "match. Empty: the edit's target prompt recorded in the audio by the editing node."}),
                "fidelity_weight": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.05,
                                    "tooltip": "Weight of the similarity to source_audio (unitless, added to the "
                                    "prompt score). 0: prompt match only; higher values prefer candidates that "
                                    "keep more of the original. Needs source_audio when above 0."}),
            },
            "optional": {
                "source_audio": ("AUDIO", {"tooltip": "The original clip(s) the candidates were edited from: one clip "
                                 "for all, or one per source clip in order. Enables the fidelity score."}),
                "one_scale_for_all": ("BOOLEAN", {"default": False, "tooltip": "Keep the same guidance scale for "
                                      "every clip: the one with the best mean score over the clips (for the windows "
                                      "of one song, so it does not change character from window to window). Off: "
                                      "the best candidate of each clip on its own."}),
            },
        }

    def execute(self, clap: Any, audio: dict[str, Any], prompt: str = "", fidelity_weight: float = 0.0,
                source_audio: dict[str, Any] | None = None, one_scale_for_all: bool = False) -> tuple:
        return select_candidates(clap, audio, prompt, source_audio, fidelity_weight, bool(one_scale_for_all))
