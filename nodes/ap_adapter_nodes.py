"""AP-Adapter (arXiv 2407.16564): load the adapter and AudioMAE, pick a task preset, apply an audio prompt."""

from __future__ import annotations

from typing import Any

from ..engine.core import bridge
from ..engine.methods.ap_adapter import (AP_TASKS, MAX_SCALE, ap_task_settings, apply_ap_adapter, list_adapter_files,
                                         load_ap_adapter)
from ..engine.models.audiomae import POOLING_RATES, STEREO_READINGS, list_audio_encoders
from .base import PAE_AP_ADAPTER, PAE_MODEL, ModelLoaderNode, PAENode, model_choices

_POOLING_TOOLTIP = ("ω, the AudioMAE pooling rate: 1, 2, 4 or 8 (512, 128, 32 or 8 audio tokens of the clip's 64 x 8 "
                    "patch grid). Low ω passes fine detail of the clip (closer to it); high ω only its overall "
                    "character (freer edits).")


class LoadAPAdapter(ModelLoaderNode):
    NODE_ID = "PAE_LoadAPAdapter"
    MODEL_INPUTS = {"adapter_name": ("AP-Adapter checkpoint", "models/ap_adapter/", "ap-adapter"),
                    "audio_encoder": ("AudioMAE checkpoint", "models/audiomae/", "audiomae")}
    SEARCH_ALIASES = ["ap adapter", "audio prompt", "timbre transfer", "ip adapter audio", "audiomae"]
    DISPLAY_NAME = "Load AP-Adapter (PAE)"
    DESCRIPTION = ("Loads AP-Adapter's released weights (pytorch_model.bin, from models/ap_adapter/) and the AudioMAE "
                   "encoder it reads audio prompts with (the released pretrained.pth, from models/audiomae/; the old "
                   "models/audio_encoders/ is still read). Both are read weights-only, or from the safetensors copies "
                   "`pae models convert` writes, and loaded once, then shared by every node that uses them.")
    RETURN_TYPES = (PAE_AP_ADAPTER,)
    RETURN_NAMES = ("ap_adapter",)
    OUTPUT_TOOLTIPS = ("The adapter's audio key/value projections for each 768-wide cross-attention layer, and "
                       "AudioMAE.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "adapter_name": (model_choices(list_adapter_files()), {
                "tooltip": "The adapter file under models/ap_adapter/ (the "
                             "released pytorch_model.bin; trained for AudioLDM2-large). A converted copy is not listed "
                             "twice: pick the pickle's name (the one workflows store) and its .safetensors twin beside "
                             "it is loaded instead."}),
            "audio_encoder": (model_choices(list_audio_encoders()), {
                "tooltip": "AudioMAE's released pretrained.pth under "
                              "models/audiomae/ (ViT-B/16 on a 1024 x 128 fbank; its decoder half is ignored). Files "
                              "in the old models/audio_encoders/ are listed and load too, with a notice to move them. "
                              "A converted copy is not listed twice: pick pretrained.pth and pretrained.safetensors "
                              "is loaded instead."}),
            "dtype": (list(bridge.DTYPE_CHOICES), {"default": "auto", "tooltip": "AudioMAE's precision. auto: fp16 "
                      "on NVIDIA GPUs, fp32 on CPU. The adapter's projections follow the model's precision."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, adapter_name: str | None = None, audio_encoder: str | None = None) -> bool | str:
        return cls.check_model_inputs(adapter_name=adapter_name, audio_encoder=audio_encoder)

    def execute(self, adapter_name: str, audio_encoder: str, dtype: str = "auto") -> tuple:
        return (load_ap_adapter(adapter_name, audio_encoder, dtype),)


class APAdapterTask(PAENode):
    NODE_ID = "PAE_APAdapterTask"
    SEARCH_ALIASES = ["ap adapter", "timbre transfer", "genre transfer", "accompaniment"]
    DISPLAY_NAME = "AP-Adapter Task (PAE)"
    DESCRIPTION = ("Fills in AP-Adapter's settings for a task: α (scale), ω (pooling), guidance and the prompts from "
                   "the paper's templates. timbre transfer: 'a recording of a {instrument} solo', negative = the "
                   "source instrument (α 0.5, ω 2, guidance 7.5). genre transfer: '{genre} style music', negative "
                   "'Low quality' (paper: α 0.4, ω 1; repository: α 0.55, ω 4, guidance 9.5). accompaniment: "
                   "'Duet, played with {instrument} accompaniment', negative 'solo' (α 0.5, ω 2, guidance 7.5). "
                   "Connect its outputs to AP-Adapter Apply and Sample Audio; set any value here (or unlink it "
                   "there) to override it.")
    RETURN_TYPES = ("STRING", "STRING", "FLOAT", "INT", "FLOAT")
    RETURN_NAMES = ("positive", "negative", "scale", "pooling", "guidance")
    OUTPUT_TOOLTIPS = ("Prompt for Sample Audio.", "Negative prompt for Sample Audio.", "α for AP-Adapter Apply.",
                       "ω for AP-Adapter Apply.", "Guidance for Sample Audio.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "task": (list(AP_TASKS), {"default": "timbre transfer", "tooltip": "The edit to make and the settings it "
                     "comes with (paper or repository values)."}),
            "target": ("STRING", {"default": "violin", "tooltip": "What the clip should become: the instrument "
                       "(timbre transfer, accompaniment) or the genre (genre transfer), e.g. 'violin' or 'Jazz'."}),
            "source": ("STRING", {"default": "piano", "tooltip": "The instrument the clip is played on (timbre "
                       "transfer's negative prompt steers away from it). Unused by the other tasks."}),
            "scale": ("FLOAT", {"default": -1.0, "min": -1.0, "max": MAX_SCALE, "step": 0.05, "tooltip": "Override "
                      "α (how strongly the clip's audio shapes the result); -1 = the task's value."}),
            "pooling": ("INT", {"default": 0, "min": 0, "max": max(POOLING_RATES), "tooltip": "Override ω (1, 2, 4 "
                        "or 8); 0 = the task's value. " + _POOLING_TOOLTIP}),
            "guidance": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 100.0, "step": 0.5, "tooltip": "Override "
                         "the classifier-free guidance; -1 = the task's value."}),
            "positive": ("STRING", {"multiline": True, "default": "", "tooltip": "Override the prompt; empty = the "
                         "task's template with the target filled in."}),
            "negative": ("STRING", {"multiline": True, "default": "", "tooltip": "Override the negative prompt; "
                         "empty = the task's."}),
        }}

    def execute(self, task: str, target: str, source: str = "", scale: float = -1.0, pooling: int = 0,
                guidance: float = -1.0, positive: str = "", negative: str = "") -> tuple:
        s = ap_task_settings(task, target, source, scale=scale, pooling=pooling, guidance=guidance,
                             positive=positive, negative=negative)
        return (s.positive, s.negative, s.scale, s.pooling, s.guidance)


class APAdapterApply(PAENode):
    NODE_ID = "PAE_APAdapterApply"
    SEARCH_ALIASES = ["ap adapter", "audio prompt", "timbre transfer", "genre transfer", "accompaniment"]
    DISPLAY_NAME = "AP-Adapter Apply (PAE)"
    DESCRIPTION = ("Makes a clip the audio prompt of an AudioLDM2 model (AP-Adapter): its AudioMAE features enter "
                   "every 768-wide cross-attention through the adapter's parallel audio attention, output = text + "
                   "α x audio. Returns a patched copy for Sample Audio; the loaded model is left as it was. "
                   "AudioMAE reads the clip's first 10.24 s (16 kHz mono).")
    RETURN_TYPES = (PAE_MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the audio prompt attached; connect it to Sample Audio.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "AudioLDM2 from Load Audio Model (the released adapter was trained on "
                      "audioldm2-large)."}),
            "ap_adapter": (PAE_AP_ADAPTER, {"tooltip": "The adapter and AudioMAE from Load AP-Adapter."}),
            "audio": ("AUDIO", {"tooltip": "The clip whose timbre, style and content guide the generation; any "
                      "rate and channel count (a batch of clips gives one audio prompt each)."}),
            "scale": ("FLOAT", {"default": 0.5, "min": 0.0, "max": MAX_SCALE, "step": 0.05, "tooltip": "α: weight "
                      "of the audio attention (0 = the plain model; the paper uses 0.4-0.6). Higher stays closer to "
                      "the clip, lower follows the text more."}),
            "pooling": ("INT", {"default": 2, "min": min(POOLING_RATES), "max": max(POOLING_RATES),
                        "tooltip": _POOLING_TOOLTIP}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of the "
                      "sampling steps after which the audio prompt starts acting (0 = from the first step)."}),
            "end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Fraction of the "
                    "sampling steps after which it stops (1 = to the last step)."}),
        }, "optional": {
            "stereo": (list(STEREO_READINGS), {"default": "first channel", "tooltip": "What AudioMAE hears of a "
                       "stereo prompt. first channel: the reference's (the mean of both channels removed, then "
                       "Kaldi's fbank reads the left channel). mean of channels: a downmix, so a part panned right "
                       "is heard too. Mono prompts are the same either way."}),
        }}

    def execute(self, model: Any, ap_adapter: Any, audio: dict[str, Any], scale: float = 0.5, pooling: int = 2,
                start: float = 0.0, end: float = 1.0, stereo: str = "first channel") -> tuple:
        return (apply_ap_adapter(model, ap_adapter, audio, scale, pooling, start, end, stereo),)
