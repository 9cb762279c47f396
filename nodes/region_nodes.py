"""Long recordings: cut a time range out and paste the edit back, or split into windows and join them again."""

from __future__ import annotations

from typing import Any

from ..engine.core.errors import PAEInputError
from ..engine.methods.regions import cut_region, join_windows, paste_region, split_windows
from .base import PAE_MODEL, PAE_REGION, PAE_WINDOWS, PAENode

_MAX_SECONDS = 86400.0


class CutRegion(PAENode):
    NODE_ID = "PAE_CutRegion"
    SEARCH_ALIASES = ["cut audio", "crop audio", "region", "excerpt"]
    DISPLAY_NAME = "Cut Region (PAE)"
    DESCRIPTION = ("Cuts seconds start–end out of a recording of any length, with `context` seconds on each side so "
                   "the edit fits its surroundings, for any edit graph; Paste Region puts the edit back. With a model "
                   "linked, the context is clamped so region plus context fits the model's window.")
    RETURN_TYPES = ("AUDIO", PAE_REGION)
    RETURN_NAMES = ("audio", "region")
    OUTPUT_TOOLTIPS = ("The region plus its context, at the recording's rate and channels: edit this.",
                       "Where the cut came from (sample-exact), for Paste Region.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The whole recording (any length, rate and channel count)."}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": _MAX_SECONDS, "step": 0.01,
                                "tooltip": "Where the region starts, in seconds."}),
            "end": ("FLOAT", {"default": 10.0, "min": 0.0, "max": _MAX_SECONDS, "step": 0.01,
                              "tooltip": "Where the region ends, in seconds (after start, inside the recording)."}),
            "context": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.1,
                                  "tooltip": "Seconds of the recording on each side of the region that the model also "
                                  "hears, so the edit fits what is around it; clamped to the file and, with a model "
                                  "linked, to its window. Paste Region keeps the original there (apart from the "
                                  "crossfade)."}),
        }, "optional": {
            "model": (PAE_MODEL, {"tooltip": "The model that will edit the region: the context is clamped to its "
                                  "window."}),
        }}

    def execute(self, audio: dict[str, Any], start: float = 0.0, end: float = 10.0, context: float = 1.0,
                model: Any = None) -> tuple:
        return cut_region(audio, start, end, context, None if model is None else model.max_duration_s)


class PasteRegion(PAENode):
    NODE_ID = "PAE_PasteRegion"
    SEARCH_ALIASES = ["paste audio", "splice", "region", "crossfade"]
    DISPLAY_NAME = "Paste Region (PAE)"
    DESCRIPTION = ("Puts an edited region back into its recording. Outside [start − crossfade, end + crossfade] the "
                   "output is the original, bit for bit; across each boundary the original and the edit cross over "
                   "with an equal-power fade centred on the boundary. The edit is resampled and rechannelled to the "
                   "original's format first. A batch of candidates gives one recording per candidate.")
    RETURN_TYPES = ("AUDIO",)
    OUTPUT_TOOLTIPS = ("The recording with the region edited (one per edited clip).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "original": ("AUDIO", {"tooltip": "The recording Cut Region was given."}),
            "edited": ("AUDIO", {"tooltip": "The edited cut (any rate and channels; a batch of candidates gives one "
                                 "result each)."}),
            "region": (PAE_REGION, {"tooltip": "The region output of Cut Region."}),
            "crossfade": ("FLOAT", {"default": 20.0, "min": 0.0, "max": 5000.0, "step": 1.0,
                                    "tooltip": "Length of each equal-power crossfade in milliseconds, centred on the "
                                    "region's boundary (kept inside what was cut)."}),
            "match_loudness": ("BOOLEAN", {"default": False, "tooltip": "Scale the edit so the region's RMS level "
                                           "equals the original region's (models often return a different level)."}),
        }}

    def execute(self, original: dict[str, Any], edited: dict[str, Any], region: Any, crossfade: float = 20.0,
                match_loudness: bool = False) -> tuple:
        return (paste_region(original, edited, region, crossfade, match_loudness),)


class SplitWindows(PAENode):
    NODE_ID = "PAE_SplitWindows"
    SEARCH_ALIASES = ["split audio", "windows", "long audio", "song", "chunks"]
    DISPLAY_NAME = "Split Windows (PAE)"
    DESCRIPTION = ("Splits a recording of any length into overlapping windows, one AUDIO batch (clip-major) that "
                   "any edit graph takes as a batch of clips; Join Windows puts the edited windows back together. "
                   "Every window is edited with the same settings and seed, so a re-run is reproducible.")
    RETURN_TYPES = ("AUDIO", PAE_WINDOWS)
    RETURN_NAMES = ("windows", "layout")
    OUTPUT_TOOLTIPS = ("The windows as a batch of clips (the last one zero-padded to the window length).",
                       "How the recording was split, for Join Windows.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "audio": ("AUDIO", {"tooltip": "The whole recording (any length)."}),
            "window": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 600.0, "step": 0.01,
                                 "tooltip": "Window length in seconds; 0 takes the linked model's native length "
                                 "(10.24 s for AudioLDM2 and Tango, 47.55 s for Stable Audio Open)."}),
            "overlap": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.1,
                                  "tooltip": "Seconds shared by neighbouring windows; Join Windows crossfades over "
                                  "them."}),
        }, "optional": {
            "model": (PAE_MODEL, {"tooltip": "The model that will edit the windows: sets the window when it is 0."}),
        }}

    def execute(self, audio: dict[str, Any], window: float = 0.0, overlap: float = 1.0, model: Any = None) -> tuple:
        if not window:
            if model is None:
                raise PAEInputError("window", "give a window length in seconds, or link the model that will edit "
                                    "the windows to use its native length.")
            window = model.native_duration_s
        return split_windows(audio, window, overlap)


class JoinWindows(PAENode):
    NODE_ID = "PAE_JoinWindows"
    SEARCH_ALIASES = ["join audio", "windows", "long audio", "song", "overlap add"]
    DISPLAY_NAME = "Join Windows (PAE)"
    DESCRIPTION = ("Joins edited windows back into recordings of the original length, crossfading over the "
                   "overlaps with weights that sum to one (unedited windows join back to the input). Several "
                   "candidates per window give one recording per candidate.")
    RETURN_TYPES = ("AUDIO",)
    OUTPUT_TOOLTIPS = ("The joined recording(s), at the original rate and channel count.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "windows": ("AUDIO", {"tooltip": "The edited windows, in the order Split Windows made them (candidates of "
                                  "a window next to each other)."}),
            "layout": (PAE_WINDOWS, {"tooltip": "The layout output of Split Windows."}),
        }}

    def execute(self, windows: dict[str, Any], layout: Any) -> tuple:
        return (join_windows(windows, layout),)
