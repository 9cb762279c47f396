"""Loading and saving audio files."""

from __future__ import annotations

import json
from typing import Any

from ..engine.core import bridge
from ..engine.io.audio import MP3_QUALITIES, READ_EXTENSIONS, WRITE_FORMATS
from ..engine.io.audio_files import (MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, compare_previews, load_audio_file,
                                  save_audio_with_previews)
from ..engine.core.errors import PAEInputError
from ..engine.core.files import content_hash
from .base import AUDIO_PLAYER, PAENode


class LoadAudio(PAENode):
    NODE_ID = "PAE_LoadAudio"
    SEARCH_ALIASES = ["load audio", "open audio", "audio file"]
    DISPLAY_NAME = "Load Audio (PAE)"
    DESCRIPTION = ("Loads an audio file (wav, flac, mp3, ogg/opus, m4a, any channel count) from ComfyUI's input "
                   "folder, optionally cut to a time range, resampled and downmixed to mono.")
    RETURN_TYPES = ("AUDIO",)
    OUTPUT_TOOLTIPS = ("The clip as a [1, channels, samples] float waveform with its sample rate.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        files = bridge.list_input_files(READ_EXTENSIONS)
        return {"required": {
            "audio": (files, {"audio_upload": True, "tooltip": "Audio file in the input folder; use the upload "
                              "button to add one."}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                "tooltip": "Where the clip starts, in seconds from the beginning of the file."}),
            "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 86400.0, "step": 0.01,
                                   "tooltip": "Length of the clip in seconds; 0 keeps everything after start. Only "
                                   "this part is decoded (the file is sought to start); one clip holds at most 2 GiB "
                                   "of samples (about 1 h 30 min of 48 kHz stereo): load longer files in parts."}),
            "sample_rate": ("INT", {"default": 0, "min": 0, "max": MAX_SAMPLE_RATE, "step": 1,
                                    "tooltip": f"Resample to this rate in Hz ({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE}, "
                                    "soxr very high quality); 0 keeps the file's own rate. Editing nodes "
                                    "resample as their model needs anyway."}),
            "mono": ("BOOLEAN", {"default": False, "tooltip": "Average all channels into one."}),
        }, "optional": {"audioUI": (AUDIO_PLAYER, {"tooltip": "Player for the chosen file (display only)."})}}

    def execute(self, audio: str, start: float = 0.0, duration: float = 0.0, sample_rate: int = 0,
                mono: bool = False, audioUI: Any = None) -> tuple:
        return (load_audio_file(audio, start, duration, sample_rate, mono),)

    @classmethod
    def IS_CHANGED(cls, audio: str | None = None, **_: Any) -> str:
        try:
            return content_hash(bridge.resolve_input_file(audio)) if audio else ""
        except (PAEInputError, OSError):
            return ""

    @classmethod
    def VALIDATE_INPUTS(cls, audio: str | None = None) -> bool | str:
        # Only 'audio' is named: ComfyUI skips its own checks for named inputs (so fresh uploads pass)
        # and still range-checks the others. ComfyUI leaves the argument out when the dropdown is empty.
        if not audio:
            return (f"{cls.NODE_ID}: input 'audio': no file chosen, and the input folder holds no audio file; upload "
                    f"one with the node's 'choose file to upload' button, or put it in {bridge.input_directory()} "
                    "and refresh the page.")
        try:
            path = bridge.resolve_input_file(audio)
        except PAEInputError as exc:
            return str(exc.for_node(cls.NODE_ID))
        if not path.is_file():
            return f"{cls.NODE_ID}: input 'audio': file not found: '{audio}'. Put it in the input folder or upload it."
        return True


class SaveAudio(PAENode):
    NODE_ID = "PAE_SaveAudio"
    SEARCH_ALIASES = ["save audio", "export audio", "spectrogram"]
    DISPLAY_NAME = "Save Audio (PAE)"
    DESCRIPTION = ("Saves every clip of an AUDIO batch to the output folder as wav, flac or mp3, with the "
                   "workflow and prompt embedded (drag a flac or mp3 back into ComfyUI to get the graph; ComfyUI's "
                   "page reads workflows from flac, mp3 and ogg only, so a wav keeps them in its tags but does not "
                   "reopen the graph), and shows a player and a spectrogram.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("spectrogram",)
    OUTPUT_TOOLTIPS = ("Log-magnitude spectrogram of each clip (time across, frequency up).",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "The clips to save; one file per clip of the batch."}),
                "filename_prefix": ("STRING", {"default": "audio/PAE", "tooltip": "File name start, may include "
                                    "subfolders inside the output folder; a counter and the extension are added."}),
                "format": (list(WRITE_FORMATS), {"default": "flac", "tooltip": "flac: lossless and compact; wav: "
                           "16-bit PCM (ComfyUI's page cannot reopen a workflow from a wav: its readers take flac, "
                           "mp3 and ogg); mp3: lossy, smallest."}),
                "mp3_quality": (list(MP3_QUALITIES), {"default": "V0", "tooltip": "mp3 only: V0 = variable "
                                "bit rate, best quality; or a constant bit rate in kbit/s."}),
            },
            "optional": {"audioUI": (AUDIO_PLAYER, {"tooltip": "Player for the saved audio (display only)."})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def execute(self, audio: dict[str, Any], filename_prefix: str = "audio/PAE", format: str = "flac",
                mp3_quality: str = "V0", audioUI: Any = None, prompt: Any = None,
                extra_pnginfo: Any = None) -> dict[str, Any]:
        metadata = {}
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = json.dumps(value)
        shown, spectrograms = save_audio_with_previews(audio, filename_prefix, format, mp3_quality=mp3_quality,
                                                       metadata=metadata)
        return {"ui": shown, "result": (spectrograms,)}


class CompareAudio(PAENode):
    NODE_ID = "PAE_CompareAudio"
    SEARCH_ALIASES = ["before after", "a/b", "compare audio", "ab compare"]
    DISPLAY_NAME = "Before / After (PAE)"
    DESCRIPTION = ("Plays the source and the edit side by side in the browser, with an A/B switch that keeps the "
                   "play position, and shows both spectrograms. Nothing is saved to the output folder (the clips "
                   "go to ComfyUI's temp folder); use Save Audio for that.")
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "before": ("AUDIO", {"tooltip": "The source clip (one clip, or one per edit)."}),
            "after": ("AUDIO", {"tooltip": "The edit; a batch (candidates, seeds, instructions) gives one pair per "
                                "clip, each against the source."}),
        }}

    def execute(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        return {"ui": compare_previews(before, after), "result": ()}
