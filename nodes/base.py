"""What every node of the pack shares: category, the pack's type names, node-prefixed errors."""

from __future__ import annotations

from typing import Any

from ..engine.core.checks import MAX_CLIPS_PER_CALL
from ..engine.core.errors import PAEInputError
from ..engine.install.catalogue import NO_MODEL, missing_model_message

CATEGORY = "audio/edit"
# The pack's own ComfyUI types, named once.
PAE_MODEL = "PAE_MODEL"
PAE_INVERSION = "PAE_INVERSION"    # an inverted clip: start latent, per-step noise, prompt, scheduler settings
PAE_ATTENTION_EDIT = "PAE_ATTENTION_EDIT"  # what to change in the attention: prompts, mode, words, windows
PAE_CLAP = "PAE_CLAP"              # a loaded CLAP text-audio model
PAE_MUSICGEN = "PAE_MUSICGEN"      # a loaded MusicGen: T5, codebook decoder, EnCodec
PAE_AP_ADAPTER = "PAE_AP_ADAPTER"  # AP-Adapter's audio projections and the AudioMAE that encodes audio prompts
PAE_REGION = "PAE_REGION"          # where a cut region came from in its recording, sample-exact
PAE_WINDOWS = "PAE_WINDOWS"        # how a recording was split into overlapping windows
# ComfyUI's frontend widget that plays audio; its upload button and result player need it on the node.
AUDIO_PLAYER = "AUDIO_UI"
# Said on every edit seed: why the shipped workflows keep it fixed.
FIXED_SEED_NOTE = (" The shipped workflows keep it fixed, so re-running an edit gives the same result; set control "
                   "after generate to randomize for a new take each run.")



def clips_per_call_input(what: str) -> tuple[str, dict[str, Any]]:
    """The optional chunk-size widget of every node that runs a model over a batch (one name, one meaning)."""
    return ("INT", {"default": 0, "min": 0, "max": MAX_CLIPS_PER_CALL, "advanced": True,
                    "tooltip": "How many clips of the batch "
                    f"(e.g. a song's windows from Split Windows) go through the {what} at once; memory grows with it. "
                    "0: all at once. The result is the same up to float rounding."})


class PAENode:
    """Base of the pack's nodes: ComfyUI calls run(); subclasses implement execute() and set NODE_ID."""

    NODE_ID = ""
    DISPLAY_NAME = ""
    CATEGORY = CATEGORY
    FUNCTION = "run"

    def run(self, **inputs: Any) -> Any:
        try:
            return self.execute(**inputs)
        except PAEInputError as exc:
            raise exc.for_node(self.NODE_ID) from None

    def execute(self, **inputs: Any) -> Any:  # pragma: no cover - every node overrides it
        raise NotImplementedError


def model_choices(names: list[str]) -> list[str]:
    """A loader's dropdown: the installed names, or one placeholder saying how to get one (never an empty list)."""
    return names or [NO_MODEL]


class ModelLoaderNode(PAENode):
    """A loader node: its model inputs are checked before the run with a message saying how to get the model."""

    # input name -> (what it is, the folder it is read from, the catalogue entry to suggest)
    MODEL_INPUTS: dict[str, tuple[str, str, str]] = {}

    @classmethod
    def check_model_inputs(cls, **values: str | None) -> bool | str:
        """True when every named model input holds an installed choice, else one line for the node."""
        required = cls.INPUT_TYPES()["required"]
        for name, value in values.items():
            if value != NO_MODEL and value in required[name][0]:
                continue
            return f"{cls.NODE_ID}: input '{name}': {missing_model_message(value, *cls.MODEL_INPUTS[name])}"
        return True
