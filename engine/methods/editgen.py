"""EditGen (arXiv 2507.11096): Prompt-to-Prompt inside MusicGen's decoder, on generated music.

Matched point by point with the official code (billsioros/EditGen): its call counter and depth factor, its
self-attention lerp modifier (the paper's evaluation) and attention lerp (its demos), ReplaceWord's mean of the old
word's tokens, Refine's pairs of equal tokens, Reweight's "divide others" from the source's map, edits at every
frame, the offset as round(offset x frames). Where the pack differs, on purpose:
- source and target share their random numbers (one noise group), so an identity edit is the identity; the code
  samples them independently;
- `layers` selects decoder layers (self and cross); the code's ablations select by the call counter, under which
  the last layer's cross-attention is call 0;
- the duration is what is asked, not rounded to a power of two of frames;
- `use_windows` can limit edits to the Attention Controller's windows (the code has none).
The spec of the edit is the pack's AttentionEdit (from PAE_AttentionController); the settings here are EditGen's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.placement import CPU
from ..attention.alignment import (reweight_factors, shared_token_mapping, swapped_words_mapping,
                                   token_word_spans)
from ..attention.edit import AttentionEdit, find_phrase, prompt_words
from ..io.audio import check_audio
from ..io.previews import word_strip_images
from ..core.errors import PAEInputError
from ..models.musicgen import MusicGen, SamplingSettings
from ..models.musicgen_attention import DecoderAttentionSite, decoder_attention_control

REWEIGHT_FORMS = ("scale", "divide others")
MODIFIERS = ("self-attention lerp", "attention lerp")


@dataclass(frozen=True)
class EditGenSettings:
    """EditGen's knobs around an AttentionEdit; the defaults are the paper's evaluation (its code's settings)."""

    blend: float = 1.0                    # how far edited columns move toward the source's (evaluation: 1)
    reweight_form: str = "divide others"  # code: target := source, other columns / w; "scale": word x c (paper text)
    modifier: str = "self-attention lerp"  # how depth α applies (see EditGenController)
    depth_blend: bool = True              # False: no modifier, the full edit in every layer (the bare controllers)
    fixed_alpha: float | None = None      # a constant α instead of the depth (tests)
    offset: float = 0.0                   # fraction of the frames generated before any edit
    layers: frozenset[int] | None = None  # decoder layers edited (None = all)
    heads: frozenset[int] | None = None   # heads edited in cross-attention (None = all)
    use_windows: bool = False             # True: only inside the Attention Controller's windows (EditGen: always)


@dataclass
class EditRecording:
    """The target's cross-attention per step (mean over layers and heads) for the per-word preview; optionally
    every edited map before and after (tests)."""

    per_step: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> [keys], summed over the layers
    changes: list[tuple[DecoderAttentionSite, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    keep_changes: bool = False


class EditGenController:
    """EditGen's controllers and modifiers as the official code composes them, on the target's conditional rows.

    Counting (the code's counter is advanced before use): call k = 1..N of frame s (N = 2 x layers; self then
    cross, layer by layer) sees the counter c = k mod N, so the last layer's cross-attention sees 0, and the frame
    s + 1 at that last call. Depth α = c / N.
    - self-attention lerp (the paper's evaluation): self-attention moves toward the source's by α,
      A ← A + α (A_source − A); cross-attention takes the full edit.
    - attention lerp (the code's demos): every map becomes α·A + (1 − α)·edit(A), self-attention's edit being the
      source's map.
    - depth_blend off: the bare controllers, self-attention copied from the source and the full cross edit.
    Cross edits: Replace gives the new word's tokens the mean of the old word's columns, blended by `blend`;
    Refine blends every token equal to one of the source's (special tokens skipped) toward that column; Reweight
    "divide others" takes the source's map and divides every other column by the weight, "scale" multiplies the
    word's columns by c (the paper's text).
    """

    def __init__(self, edit: AttentionEdit, settings: EditGenSettings, source_tokens: list[str],
                 target_tokens: list[str], key_length: int, layers: int, prompts: int):
        self.spec, self.settings = edit, settings
        self.calls_per_step = 2 * layers
        self.targets = list(range(1, prompts))  # conditional rows: [source, targets...], unconditional rows after
        self.step, self.steps = 0, 1
        self.recording = EditRecording()
        self.target_tokens = target_tokens
        length = key_length
        self.mapping = torch.zeros(length, length, device=CPU)
        # target columns that take the source's attention
        self.blended = torch.zeros(length, dtype=torch.bool, device=CPU)
        if edit.mode == "replace":
            self.mapping, self.blended = swapped_words_mapping(edit, source_tokens, target_tokens, length)
        elif edit.mode == "refine":
            self.mapping, self.blended = shared_token_mapping(source_tokens, target_tokens, length)
        self.weights = self._reweight(target_tokens, length)

    def _reweight(self, tokens: list[str], length: int) -> torch.Tensor:
        if not self.spec.reweight:
            return torch.ones(length, device=CPU)
        if self.settings.reweight_form == "scale":
            return reweight_factors(tokens, self.spec.target_prompt, self.spec.reweight, length)
        weights = torch.ones(length, device=CPU)
        words = prompt_words(self.spec.target_prompt)
        spans = token_word_spans(tokens, self.spec.target_prompt)
        for phrase, weight in self.spec.reweight:
            chosen = torch.zeros(length, dtype=torch.bool, device=CPU)
            for word in find_phrase(words, phrase):
                chosen[spans[word][1]] = True
            weights = torch.where(chosen, weights, weights / weight)  # '</s>' and padding columns too, as the code
        return weights

    def begin_step(self, index: int, total: int) -> None:
        self.step, self.steps = index, max(total, 1)

    def counter(self, site: DecoderAttentionSite) -> tuple[int, int]:
        """(call counter, frame) as the official controller sees them at this site in the current frame."""
        k = site.call_index + 1
        return k % self.calls_per_step, self.step + (1 if k == self.calls_per_step else 0)

    def _active(self, site: DecoderAttentionSite, frame: int) -> bool:
        if frame < round(self.settings.offset * self.steps):
            return False
        if not self.settings.use_windows:
            return True
        window = self.spec.self_window if site.kind == "self" else self.spec.cross_window
        return self.step / self.steps < window

    def _alpha(self, counter: int) -> float:
        if self.settings.fixed_alpha is not None:
            return float(self.settings.fixed_alpha)
        return counter / self.calls_per_step if self.settings.depth_blend else 0.0

    def edit(self, site: DecoderAttentionSite, probs: torch.Tensor) -> torch.Tensor:
        """probs [rows, heads, 1, keys] -> the edited probabilities (target conditional rows only)."""
        if self.settings.layers is not None and site.layer not in self.settings.layers:
            return probs
        if site.kind == "cross" and self.targets:
            row = probs[self.targets[0]].float().mean(dim=(0, 1)).cpu()
            previous = self.recording.per_step.get(self.step)
            self.recording.per_step[self.step] = row if previous is None else previous + row
        counter, frame = self.counter(site)
        if not self.targets or not self._active(site, frame):
            return probs
        source = probs[0]
        out = probs.clone()
        alpha = self._alpha(counter)
        self_lerp = self.settings.modifier == "self-attention lerp" and self.settings.depth_blend
        for row in self.targets:
            original = probs[row]
            if site.kind == "self":
                edited = source
                # self-attention lerp: toward the source by α; otherwise original + (1 − α)(edit − original).
                weight = alpha if self_lerp else 1.0 - alpha
            else:
                edited = self._edit_cross(source, original)
                if self.settings.heads is not None:
                    keep = [h for h in range(original.shape[0]) if h not in self.settings.heads]
                    edited[keep] = original[keep]
                weight = 1.0 if self_lerp else 1.0 - alpha
            # Written as a step from the original: exactly the original wherever the edit changes nothing.
            out[row] = original + weight * (edited - original)
            if self.recording.keep_changes:
                self.recording.changes.append((site, original.clone(), out[row].clone()))
        return out

    def _edit_cross(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mapping = self.mapping.to(target.device, target.dtype)
        divide_others = self.spec.reweight and self.settings.reweight_form == "divide others"
        # The code's Reweight starts from the source's whole map (its prompts are the same but for the weight).
        edited = source.clone() if divide_others and self.spec.mode == "reweight" else target.clone()
        if self.blended.any():
            columns = self.blended.to(target.device)
            carried = source @ mapping  # [heads, 1, keys]: the source's attention moved onto target columns
            b = self.settings.blend
            edited[..., columns] = target[..., columns] + b * (carried[..., columns] - target[..., columns])
        return edited * self.weights.to(target.device, target.dtype)


def check_editgen_settings(settings: EditGenSettings, layers: int, heads: int) -> None:
    """Refuse settings that cannot apply to this model, naming the input."""
    if not 0.0 <= settings.blend <= 1.0:
        raise PAEInputError("blend", f"{settings.blend:g}: use 0..1 (0 = no change, 1 = the source's columns).")
    if settings.reweight_form not in REWEIGHT_FORMS:
        raise PAEInputError("reweight_form", f"'{settings.reweight_form}' is not one of {', '.join(REWEIGHT_FORMS)}.")
    if settings.modifier not in MODIFIERS:
        raise PAEInputError("modifier", f"'{settings.modifier}' is not one of {', '.join(MODIFIERS)}.")
    if not 0.0 <= settings.offset < 1.0:
        raise PAEInputError("offset", f"{settings.offset:g}: use a fraction of the frames in [0, 1).")
    for name, chosen, count in (("layers", settings.layers, layers), ("heads", settings.heads, heads)):
        if chosen is not None and (not chosen or not all(0 <= i < count for i in chosen)):
            raise PAEInputError(name, f"{sorted(chosen)}: this model has {name} 0..{count - 1}.")


def parse_indices(text: str, input_name: str, count: int | None = None) -> frozenset[int] | None:
    """'all' or '' -> None; '0, 2-4' -> {0, 2, 3, 4}; with count, every index and range is checked against
    0..count-1 before it is expanded (a mistyped '0-30000000' is refused, not built)."""
    text = str(text).strip().lower()
    if text in ("", "all"):
        return None
    chosen = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            low, high = (int(p) for p in part.split("-", 1)) if "-" in part[1:] else (int(part), int(part))
        except ValueError:
            raise PAEInputError(input_name, f"'{text}' is not 'all' or a list of numbers such as '0, 2-4'.") from None
        if count is not None and not 0 <= low <= high < count:
            raise PAEInputError(input_name, f"'{part}': this model has {input_name} 0..{count - 1}.")
        if high - low > 10_000:
            raise PAEInputError(input_name, f"'{part}' spans {high - low + 1} indices; give the ones the model has.")
        chosen.update(range(low, high + 1))
    return frozenset(chosen)


def edit_music(musicgen: MusicGen, edit: Any, settings: EditGenSettings, *, seconds: float,
               sampling: SamplingSettings, seed: int = 0, record_changes: bool = False,
               recording: torch.Tensor | None = None) -> tuple[torch.Tensor, EditGenController]:
    """Generate the source and the edited target together; codes [2, K, frames] and the controller (its maps).

    With `recording` (EnCodec tokens [1, K, frames] of a real clip) the source row is teacher-forced on it under the
    source prompt instead of sampled, so the target is edited against the recording's attention.
    """
    if not isinstance(edit, AttentionEdit):
        raise PAEInputError("attention_edit", "expected the output of Attention Controller.")
    if not edit.source_prompt:
        raise PAEInputError("attention_edit", "MusicGen generates the source itself: give the Attention Controller "
                            "a source prompt.")
    if not musicgen.has_cross_attention and (edit.mode in ("replace", "refine") or edit.reweight):
        raise PAEInputError("musicgen", f"'{musicgen.name}' is a MusicGen-melody model: its decoder has no "
                            "cross-attention (text enters as a prefix), so word-level edits cannot act on it; use "
                            "musicgen-small, -medium or -large.")
    decoder_config = musicgen.model.decoder.config
    check_editgen_settings(settings, decoder_config.num_hidden_layers, decoder_config.num_attention_heads)
    prompts = [edit.source_prompt, edit.target_prompt]
    encoded = musicgen.tokenizer(prompts, padding=True)
    tokens = [musicgen.tokenizer.convert_ids_to_tokens([i for i, m in zip(ids, mask) if m])
              for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    controller = EditGenController(edit, settings, tokens[0], tokens[1], len(encoded["input_ids"][0]),
                                   decoder_config.num_hidden_layers, len(prompts))
    controller.recording.keep_changes = record_changes
    with decoder_attention_control(musicgen.model, controller):
        codes = musicgen.generate_codes(prompts, seconds, sampling, seed, noise_groups=[0, 0],
                                        on_step=controller.begin_step, forced=recording)
    return codes, controller


def word_attention_images(controller: EditGenController) -> torch.Tensor:
    """Per-word cross-attention of the target over time as an IMAGE batch [words, 48, min(steps x 4, 1024), 3]."""
    per_step = controller.recording.per_step
    if not per_step:
        return word_strip_images([])
    steps = torch.stack([per_step[i] for i in sorted(per_step)])  # [steps, keys]
    spans = token_word_spans(controller.target_tokens, controller.spec.target_prompt)
    return word_strip_images([steps[:, positions].sum(dim=-1) for _, positions in spans])


def musicgen_edit(musicgen: Any, edit: Any, *, seed: int = 0, duration: float = 10.0, guidance: float = 3.0,
                  top_k: int = 250, top_p: float = 0.0, temperature: float = 1.0, blend: float = 1.0,
                  reweight_form: str = "divide others", depth_blend: bool = True, offset: float = 0.0,
                  layers: str = "all", heads: str = "all", source_audio: dict[str, Any] | None = None,
                  modifier: str = "self-attention lerp",
                  use_windows: bool = False) -> tuple[dict[str, Any], torch.Tensor]:
    """The MusicGen Edit node: [source, edited] per clip as an AUDIO batch, and the (first) target's per-word maps."""
    if not isinstance(musicgen, MusicGen):
        raise PAEInputError("musicgen", "expected the output of Load MusicGen.")
    decoder = musicgen.model.decoder.config
    settings = EditGenSettings(blend=float(blend), reweight_form=reweight_form, modifier=modifier,
                               depth_blend=bool(depth_blend), offset=float(offset), use_windows=bool(use_windows),
                               layers=parse_indices(layers, "layers", int(decoder.num_hidden_layers)),
                               heads=parse_indices(heads, "heads", int(decoder.num_attention_heads)))
    sampling = SamplingSettings(guidance=float(guidance), top_k=int(top_k), top_p=float(top_p),
                                temperature=float(temperature))
    if source_audio is None:
        runs = [edit_music(musicgen, edit, settings, seconds=float(duration), sampling=sampling, seed=seed)]
    else:
        waveform, rate = check_audio(source_audio, "source_audio")
        runs = [edit_music(musicgen, edit, settings, seconds=0.0, sampling=sampling, seed=seed,
                           recording=musicgen.encode_audio(clip, rate)) for clip in waveform]
    codes, controller = torch.cat([codes for codes, _ in runs]), runs[0][1]
    audio = {"waveform": musicgen.decode(codes), "sample_rate": musicgen.sample_rate}
    return audio, word_attention_images(controller)
