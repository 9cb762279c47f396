"""PPAE: invert a clip, describe the attention edit, fuse it in while re-denoising (arXiv 2406.04350)."""

from __future__ import annotations

from typing import Any

from ..engine.attention.edit import (DEFAULT_CROSS_WINDOW, DEFAULT_SELF_MIN_DOWNSAMPLING, EDIT_MODES, STREAM_CHOICES,
                                     make_attention_edit)
from ..engine.attention.control import BLEND_MAPS
from ..engine.methods.ppae import DEFAULT_BLEND_START, fuse_edit
from ..engine.methods.zeta import prompt_edit
from ..engine.attention.schedule import SCHEDULE_KINDS, FusionSchedule
from ..engine.diffusion.inversion import INVERSION_METHODS, invert
from .base import PAE_ATTENTION_EDIT, PAE_INVERSION, PAE_MODEL, PAENode, clips_per_call_input

_DEFAULT_SCHEDULE = FusionSchedule()


class DDIMInvert(PAENode):
    NODE_ID = "PAE_DDIMInvert"
    SEARCH_ALIASES = ["inversion", "invert audio", "ddim inversion", "ddpm inversion", "edit friendly", "zeta"]
    DISPLAY_NAME = "Invert Audio Latent (PAE)"
    DESCRIPTION = ("Inverts a clip's latent with its description, so edits can re-denoise it. ddpm (edit-friendly "
                   "DDPM inversion, PPAE's choice) reproduces the clip exactly when nothing is edited; ddim is the "
                   "deterministic ODE inversion (close, not exact). Only the steps after edit_start are computed. "
                   "ComfyUI caches the result: changing the edit or the target prompt does not re-run it.")
    RETURN_TYPES = (PAE_INVERSION,)
    RETURN_NAMES = ("inversion",)
    OUTPUT_TOOLTIPS = ("The inverted clip: start latent, per-step noise, source prompt, guidance and schedule; "
                       "feed it to one or many Fusers.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone from Load Audio Model (the one that encoded the latent)."}),
            "latent": ("LATENT", {"tooltip": "The clip's latent from VAE Encode Audio."}),
            "source_prompt": ("STRING", {"multiline": True, "default": "",
                              "tooltip": "What the clip is, e.g. 'a dog barking in the rain'. Edits swap or add "
                              "words of this text."}),
            "method": (list(INVERSION_METHODS), {"default": "ddpm", "tooltip": "ddpm: edit-friendly DDPM "
                       "inversion (exact reconstruction, PPAE's choice). ddim: deterministic DDIM inversion."}),
            "steps": ("INT", {"default": 100, "min": 2, "max": 1000, "tooltip": "Denoising steps of the whole "
                      "schedule (PPAE: 100). More steps: slower, finer."}),
            "guidance": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1,
                         "tooltip": "Classifier-free guidance of the source prompt while inverting (the paper "
                         "leaves it open; ZETA uses 3). The edit's source branch uses the same value."}),
            "edit_start": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                           "tooltip": "Fraction of the steps skipped before editing starts (PPAE: 50 of 100 = 0.5). "
                           "Higher keeps more of the original; lower allows bigger changes. Also cuts the cost."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": False,
                     "tooltip": "Seed of the noise DDPM inversion draws (same seed, same inversion). "
                     "Unused by ddim. Kept fixed on purpose (no control-after-generate): re-running an edit must "
                     "reuse the same inversion, which is then taken from the cache; change it by hand for another "
                     "take."}),
        }, "optional": {
            "clips_per_call": clips_per_call_input("denoiser"),
        }}

    def execute(self, model: Any, latent: dict[str, Any], source_prompt: str, method: str = "ddpm",
                steps: int = 100, guidance: float = 3.0, edit_start: float = 0.5, seed: int = 0,
                clips_per_call: int = 0) -> tuple:
        return (invert(model, latent, source_prompt, method=method, steps=steps, guidance=guidance,
                       edit_start=edit_start, seed=seed, clips_per_call=clips_per_call),)


class AttentionController(PAENode):
    NODE_ID = "PAE_AttentionController"
    SEARCH_ALIASES = ["prompt to prompt", "p2p", "attention edit", "word swap", "reweight", "refine"]
    DISPLAY_NAME = "Attention Controller (PAE)"
    DESCRIPTION = ("Describes a Prompt-to-Prompt edit: Replace swaps words one for one ('dog' -> 'cat'), Refine "
                   "adds or removes words ('rain' -> 'heavy rain'), Reweight makes words act more or less. "
                   "Reweight words apply on top of Replace and Refine too. Checked here, applied by the Fuser.")
    RETURN_TYPES = (PAE_ATTENTION_EDIT,)
    RETURN_NAMES = ("attention_edit",)
    OUTPUT_TOOLTIPS = ("The edit: prompts, mode, reweighted words and the attention windows.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "source_prompt": ("STRING", {"multiline": True, "default": "",
                              "tooltip": "The clip's description; empty = the prompt it was inverted with. If "
                              "given it must equal the inversion's prompt."}),
            "target_prompt": ("STRING", {"multiline": True, "default": "",
                              "tooltip": "What the clip should become. Replace: same number of words; Refine: "
                              "words added or removed; Reweight: empty or the same as the source."}),
            "mode": (list(EDIT_MODES), {"default": "replace", "tooltip": "replace: word swap; refine: words "
                     "added/removed (tokens aligned); reweight: scale the attention of reweight_words only."}),
            "reweight_words": ("STRING", {"default": "", "tooltip": "Comma-separated words or phrases of the "
                               "target prompt whose attention is scaled, e.g. 'rain, thunder'. Empty: none."}),
            "reweight_weights": ("STRING", {"default": "", "tooltip": "Factor per reweighted word, or one for all, "
                                 "e.g. '2, -1'. >1 stronger, 0 removes, <0 suppresses (PPAE uses -2..2); no "
                                 "renormalisation."}),
            "cross_window": ("FLOAT", {"default": DEFAULT_CROSS_WINDOW, "min": 0.0, "max": 1.0, "step": 0.01,
                             "tooltip": "Cross-attention is edited from the first edit step to this fraction of "
                             "the edit's steps (PPAE, P2P: 0.8); after it the target attends freely."}),
            "self_window": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "Self-attention of the target is replaced by the source's up to this "
                            "fraction of the steps (PPAE: 0.0 = never). Keeps structure, limits change."}),
            "streams": (list(STREAM_CHOICES), {"advanced": True,
                                               "default": "all", "tooltip": "Which conditioning streams are "
                        "edited. The word stream (T5) always; 'all' also injects the source's map into streams "
                        "without words (AudioLDM2's 8 GPT-2 tokens, position by position, with the target's "
                        "values); 'words only' lets those attend freely. Tango has only the word stream."}),
            "self_min_downsampling": ("INT", {"advanced": True,
                                              "default": DEFAULT_SELF_MIN_DOWNSAMPLING, "min": 1, "max": 64,
                                      "tooltip": "Self-attention is injected only in layers whose latent grid "
                                      "is downsampled at least this much (P2P: 4, its 16x16 maps). 1 = every "
                                      "layer (costly, rigid)."}),
        }, "optional": {
            "word_windows": ("STRING", {"advanced": True,
                                        "default": "", "tooltip": "Prompt-to-Prompt's cross window per word, e.g. "
                             "'cat: 0.4, rain: 1': the target word's tokens are edited for that fraction of the "
                             "steps (counted as P2P, int(w x (steps + 1))), every other token for cross_window. "
                             "Words of the target prompt. Empty: one window for all. The Fuser reads it; MusicGen "
                             "Edit does not (EditGen has no windows)."}),
        }}

    def execute(self, source_prompt: str, target_prompt: str, mode: str = "replace", reweight_words: str = "",
                reweight_weights: str = "", cross_window: float = DEFAULT_CROSS_WINDOW, self_window: float = 0.0,
                streams: str = "all", self_min_downsampling: int = DEFAULT_SELF_MIN_DOWNSAMPLING,
                word_windows: str = "") -> tuple:
        return (make_attention_edit(mode, source_prompt, target_prompt, reweight_words, reweight_weights,
                                    cross_window, self_window, streams, self_min_downsampling, word_windows),)


class Fuser(PAENode):
    NODE_ID = "PAE_Fuser"
    SEARCH_ALIASES = ["ppae", "prompt to prompt", "p2p", "edit audio", "audio edit", "cross attention fusion"]
    DISPLAY_NAME = "Fuser: Edit by Attention (PAE)"
    DESCRIPTION = ("PPAE's edit sampler: re-denoises the inverted clip with the target prompt while the source's "
                   "attention, edited as the Attention Controller says, is fused in with ratio S(t). Each guidance "
                   "scale gives one candidate, all in one batch (pick with CLAP Select). Optionally keeps "
                   "everything outside the edited words' attention from the source (local blend). An edit that "
                   "changes nothing (the source prompt as target, no reweight) at the inversion's own guidance is "
                   "run as the plain re-denoise it equals, and returns the clip exactly (no maps to draw).")
    RETURN_TYPES = ("LATENT", "IMAGE")
    RETURN_NAMES = ("candidates", "attention_maps")
    OUTPUT_TOOLTIPS = ("One latent per clip and guidance scale (clip-major), each tagged with its scale; decode "
                       "with VAE Decode Audio.",
                       "Mean cross-attention of each target word (first clip, first scale) over the edit: time "
                       "across, frequency up, bright = strong.")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        s = _DEFAULT_SCHEDULE
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone that made the inversion."}),
            "inversion": (PAE_INVERSION, {"tooltip": "From Invert Audio Latent."}),
            "attention_edit": (PAE_ATTENTION_EDIT, {"tooltip": "From Attention Controller."}),
            "guidance_scales": ("STRING", {"default": "5, 10, 15, 20, 25", "tooltip": "Comma-separated "
                                "classifier-free guidance scales of the target; one candidate each, batched "
                                "(guidance bootstrapping; PPAE: 5 scales, best near 25). One value = one result."}),
            "schedule": (list(SCHEDULE_KINDS), {"default": s.kind, "tooltip": "Shape of the fusion ratio S(t), "
                         "decaying from eta_max to eta_min over [schedule_start, schedule_end]: cosine (PPAE), "
                         "linear, exponential, binary (a step at schedule_end; eta 1/0 = plain Prompt-to-Prompt)."}),
            "schedule_start": ("FLOAT", {"default": s.start, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Where the decay starts, as a fraction of the edit's steps (default: the "
                               "12 of 50 edit steps that end the 0.8 cross window, as in PPAE's figure)."}),
            "schedule_end": ("FLOAT", {"default": s.end, "min": 0.0, "max": 1.0, "step": 0.01,
                             "tooltip": "Where the decay ends (fraction of the edit's steps); eta_min after it."}),
            "eta_min": ("FLOAT", {"advanced": True, "default": s.eta_min, "min": 0.0, "max": 1.0, "step": 0.01,
                        "tooltip": "Fusion ratio after the decay (0 = target's own attention; PPAE's refusion "
                        "uses 0.4-0.6)."}),
            "eta_max": ("FLOAT", {"advanced": True, "default": s.eta_max, "min": 0.0, "max": 1.0, "step": 0.01,
                        "tooltip": "Fusion ratio before the decay (1 = the edited source attention fully)."}),
            "decay_rate": ("FLOAT", {"advanced": True, "default": s.decay_rate, "min": 0.01, "max": 50.0, "step": 0.1,
                           "tooltip": "exponential only: how fast it falls (e^(-k u), renormalised to reach "
                           "eta_min at schedule_end)."}),
            "local_blend": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.99, "step": 0.01,
                            "tooltip": "0 = off. Otherwise the threshold (P2P: 0.3) of a time-frequency mask from "
                            "the edited words' attention; outside it the result keeps the source exactly."}),
            "blend_start": ("FLOAT", {"advanced": True,
                                      "default": DEFAULT_BLEND_START, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "Local blend acts from this fraction of the edit's steps (P2P: 0.2)."}),
            "attention_maps": ("BOOLEAN", {"default": True, "tooltip": "Record the per-word attention maps "
                               "output (small extra cost). Off: a blank image."}),
        }, "optional": {
            "blend_maps": (list(BLEND_MAPS), {"advanced": True,
                                              "default": BLEND_MAPS[0], "tooltip": "The attention the local blend "
                           "mask is made from. all steps, 1/4 resolution (Prompt-to-Prompt's LocalBlend): the edited "
                           "words' maps summed over every step so far at the layers of 1/4 the latent's resolution "
                           "(the nearest level where a model has none), max-pooled 3x3 there and enlarged. this step, "
                           "every layer: only the current step's maps, from every layer, on the latent grid (steadier "
                           "early, follows late changes faster)."}),
        }}

    def execute(self, model: Any, inversion: Any, attention_edit: Any, guidance_scales: str = "5, 10, 15, 20, 25",
                schedule: str = "cosine", schedule_start: float = _DEFAULT_SCHEDULE.start,
                schedule_end: float = _DEFAULT_SCHEDULE.end, eta_min: float = 0.0, eta_max: float = 1.0,
                decay_rate: float = 5.0, local_blend: float = 0.0, blend_start: float = DEFAULT_BLEND_START,
                attention_maps: bool = True, blend_maps: str = BLEND_MAPS[0]) -> tuple:
        fusion = FusionSchedule(schedule, schedule_start, schedule_end, eta_min, eta_max, decay_rate)
        return fuse_edit(model, inversion, attention_edit, guidance_scales=guidance_scales, schedule=fusion,
                         local_blend=local_blend, blend_start=blend_start, attention_maps=attention_maps,
                         blend_maps=blend_maps)


class PromptEdit(PAENode):
    NODE_ID = "PAE_PromptEdit"
    SEARCH_ALIASES = ["zeta", "ddpm edit", "edit friendly", "text edit audio", "edit audio"]
    DISPLAY_NAME = "Edit by Prompt (ZETA) (PAE)"
    DESCRIPTION = ("Zero-shot text editing by edit-friendly DDPM inversion (ZETA, Manor & Michaeli 2024): re-denoises "
                   "the inverted clip with the target prompt and the inversion's stored noise, without touching the "
                   "attention. The source prompt and guidance, the steps and the start point come from the "
                   "inversion (ZETA: 200 steps, source guidance 3); the target's guidance is set here (ZETA: 12). "
                   "With the source prompt and guidance it reproduces the clip exactly.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("edited",)
    OUTPUT_TOOLTIPS = ("One latent per clip and guidance scale (clip-major); decode with VAE Decode Audio.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {
            "model": (PAE_MODEL, {"tooltip": "The backbone that made the inversion."}),
            "inversion": (PAE_INVERSION, {"tooltip": "From Invert Audio Latent with method ddpm (ddim works, but "
                          "does not reproduce the clip exactly)."}),
            "target_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": "What the clip should "
                              "become, e.g. 'a cat meowing in the rain'. Any wording: nothing is aligned."}),
            "guidance_scales": ("STRING", {"default": "12", "tooltip": "Comma-separated target guidance scales "
                                "(ZETA: 12); one candidate each, batched (pick with CLAP Select)."}),
        }}

    def execute(self, model: Any, inversion: Any, target_prompt: str, guidance_scales: str = "12") -> tuple:
        return (prompt_edit(model, inversion, target_prompt, guidance_scales),)
