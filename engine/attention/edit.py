"""What an attention edit changes (Prompt-to-Prompt's Replace, Refine, Reweight), checked before any model runs.

The spec is plain data, independent of backbones: the diffusion samplers and MusicGen's sampler both read it.
Words are the prompt's whitespace-separated words; punctuation attached to a word belongs to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..core.errors import PAEInputError
from ..core.checks import clean_prompt

EDIT_MODES = ("replace", "refine", "reweight")
STREAM_CHOICES = ("all", "words only")
# Prompt-to-Prompt's defaults: cross-attention edited over the first 80 % of the steps, self-attention
# injected only in layers at 1/4 of the latent resolution or coarser (its 16x16 maps of a 64x64 latent).
DEFAULT_CROSS_WINDOW = 0.8
DEFAULT_SELF_MIN_DOWNSAMPLING = 4


def prompt_words(prompt: str) -> list[str]:
    """The prompt's words as a user counts them: split on whitespace."""
    return prompt.split()


def normalise_word(word: str) -> str:
    """A word compared loosely: lower case, surrounding punctuation removed."""
    return re.sub(r"^\W+|\W+$", "", word.lower())


@dataclass(frozen=True)
class AttentionEdit:
    """One Prompt-to-Prompt edit: the two prompts, how their attention relates, where and when it acts."""

    mode: str                                  # "replace", "refine" or "reweight"
    source_prompt: str                         # "" = the prompt the clip was inverted with
    target_prompt: str
    reweight: tuple[tuple[str, float], ...] = field(default_factory=tuple)  # (word or phrase, factor)
    cross_window: float = DEFAULT_CROSS_WINDOW  # cross-attention edited from the first step to this fraction
    self_window: float = 0.0                    # self-attention injected from the first step to this fraction
    streams: str = "all"                        # "all" or "words only"
    self_min_downsampling: int = DEFAULT_SELF_MIN_DOWNSAMPLING
    # Prompt-to-Prompt's per-word cross windows: (target word or phrase, fraction); other tokens take cross_window.
    word_windows: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def bind(self, inversion_prompt: str, input_name: str = "attention_edit") -> "AttentionEdit":
        """Fill an empty source prompt from the inversion; refuse one that differs from it."""
        if not self.source_prompt:
            return check_attention_edit(replace(self, source_prompt=inversion_prompt,
                                                 target_prompt=self.target_prompt or inversion_prompt),
                                        input_name)
        if self.source_prompt.strip() != inversion_prompt.strip():
            raise PAEInputError(input_name, f"the edit's source prompt '{self.source_prompt}' differs from the "
                                f"prompt the clip was inverted with ('{inversion_prompt}'); the source branch "
                                "must re-denoise with the inversion's prompt. Use the same text in both nodes, or "
                                "leave the Attention Controller's source_prompt empty.")
        return self

    def changes_nothing(self) -> bool:
        """The target prompt is the source's and no word is reweighted: every map the edit would inject is the
        target branch's own, so the edit is the plain re-denoise."""
        return prompt_words(self.target_prompt) == prompt_words(self.source_prompt) and \
            all(weight == 1.0 for _, weight in self.reweight)

    def edited_words(self) -> tuple[list[int], list[int]]:
        """Indices of the words the edit changes, in the source and in the target (for the local blend)."""
        source, target = prompt_words(self.source_prompt), prompt_words(self.target_prompt)
        if self.mode == "replace":
            changed = [i for i, (a, b) in enumerate(zip(source, target)) if a != b]
            src, tgt = changed, list(changed)
        elif self.mode == "refine":
            kept = {normalise_word(w) for w in source}
            made = {normalise_word(w) for w in target}
            src = [i for i, w in enumerate(source) if normalise_word(w) not in made]
            tgt = [i for i, w in enumerate(target) if normalise_word(w) not in kept]
        else:
            src, tgt = [], []
        for phrase, _ in self.reweight:
            tgt += [i for i in find_phrase(target, phrase) if i not in tgt]
            src += [i for i in find_phrase(source, phrase) if i not in src]
        return sorted(src), sorted(tgt)


def find_phrase(words: list[str], phrase: str) -> list[int]:
    """Word indices of every occurrence of a word or phrase (compared loosely) in a word list."""
    wanted = [normalise_word(w) for w in phrase.split()]
    wanted = [w for w in wanted if w]
    plain = [normalise_word(w) for w in words]
    found: list[int] = []
    for start in range(len(plain) - len(wanted) + 1 if wanted else 0):
        if plain[start:start + len(wanted)] == wanted:
            found += range(start, start + len(wanted))
    return sorted(set(found))


def parse_reweight(words: str, weights: str) -> tuple[tuple[str, float], ...]:
    """Pair 'dog, rain' with '2, -1' (or one weight for every word) into ((word, factor), ...)."""
    phrases = [p.strip() for p in words.split(",") if p.strip()]
    if not phrases:
        if weights.strip() and any(w.strip() for w in weights.split(",")):
            raise PAEInputError("reweight_words", "weights were given but no words; list the words to reweight, "
                                "comma-separated (e.g. 'dog, rain'), or clear reweight_weights.")
        return ()
    try:
        factors = [float(w) for w in weights.split(",") if w.strip()]
    except ValueError:
        raise PAEInputError("reweight_weights", f"'{weights}' is not a comma-separated list of numbers; write "
                            "e.g. '2' (every word) or '2, -1' (one per word).") from None
    if not factors:
        raise PAEInputError("reweight_weights", "give a factor for the reweighted words, e.g. '2' (stronger) or "
                            "'-1' (suppressed); 1 leaves a word as it is.")
    if len(factors) == 1:
        factors *= len(phrases)
    if len(factors) != len(phrases):
        raise PAEInputError("reweight_weights", f"{len(factors)} weights for {len(phrases)} words "
                            f"({', '.join(phrases)}); give one weight for all or one per word.")
    for factor in factors:
        if not -100.0 <= factor <= 100.0:
            raise PAEInputError("reweight_weights", f"{factor:g} is outside -100..100; the paper uses -2..2.")
    return tuple(zip(phrases, factors))


def check_attention_edit(edit: AttentionEdit, input_name: str | None = None) -> AttentionEdit:
    """Refuse edits that cannot work, saying what to change (input names are the controller's unless given)."""
    def fail(name: str, message: str) -> None:
        raise PAEInputError(input_name or name, message)

    if edit.mode not in EDIT_MODES:
        fail("mode", f"'{edit.mode}' is not one of {', '.join(EDIT_MODES)}.")
    if edit.streams not in STREAM_CHOICES:
        fail("streams", f"'{edit.streams}' is not one of {', '.join(STREAM_CHOICES)}.")
    for name, value in (("cross_window", edit.cross_window), ("self_window", edit.self_window)):
        if not 0.0 <= value <= 1.0:
            fail(name, f"{value:g} is not a fraction of the steps; use 0..1.")
    if not edit.target_prompt.strip() and not (edit.mode == "reweight" and not edit.source_prompt):
        fail("target_prompt", "the target prompt is empty; describe what the clip should become.")
    if not edit.source_prompt:
        return edit  # completed by bind() once the inversion's prompt is known
    source, target = prompt_words(edit.source_prompt), prompt_words(edit.target_prompt)
    if edit.mode == "replace" and len(source) != len(target):
        fail("target_prompt", f"Replace swaps words one for one, but the source has {len(source)} words and the "
             f"target {len(target)}; use Refine to add or remove words.")
    if edit.mode == "reweight" and [normalise_word(w) for w in source] != [normalise_word(w) for w in target]:
        fail("target_prompt", "Reweight keeps the prompt and changes how strongly words act; the target differs "
             "from the source. To change words use Replace or Refine (their reweight words apply on top).")
    if edit.mode == "reweight" and not edit.reweight:
        fail("reweight_words", "Reweight needs the words to reweight (e.g. 'rain') and their weights.")
    for phrase, _ in edit.reweight:
        if not find_phrase(target, phrase):
            fail("reweight_words", f"'{phrase}' is not a word of the target prompt '{edit.target_prompt}'; "
                 "reweight words must appear in it.")
    for phrase, _ in edit.word_windows:
        if not find_phrase(target, phrase):
            fail("word_windows", f"'{phrase}' is not a word of the target prompt '{edit.target_prompt}'; a word "
                 "window names a target word (Prompt-to-Prompt looks words up in the target).")
    return edit


def parse_word_windows(text: str) -> tuple[tuple[str, float], ...]:
    """'cat: 0.4, rain: 1' (commas or new lines) -> ((word, fraction), ...): P2P's cross window per word."""
    pairs = []
    for part in re.split(r"[,\n;]", str(text)):
        if not part.strip():
            continue
        word, sep, value = part.rpartition(":")
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or not word.strip() or not 0.0 <= fraction <= 1.0:
            raise PAEInputError("word_windows", f"'{part.strip()}' is not 'word: fraction' with a fraction in 0..1 "
                                "(e.g. 'cat: 0.4, rain: 1').")
        pairs.append((clean_prompt(word), fraction))
    if len(pairs) > 77:
        raise PAEInputError("word_windows", f"{len(pairs)} word windows; a prompt has at most 77 tokens.")
    return tuple(pairs)


def make_attention_edit(mode: str, source_prompt: str, target_prompt: str, reweight_words: str = "",
                        reweight_weights: str = "", cross_window: float = DEFAULT_CROSS_WINDOW,
                        self_window: float = 0.0, streams: str = "all",
                        self_min_downsampling: int = DEFAULT_SELF_MIN_DOWNSAMPLING,
                        word_windows: str = "") -> AttentionEdit:
    """Build and check an edit from the controller's inputs (the source prompt may be left to the inversion)."""
    source_prompt = clean_prompt(source_prompt)
    target_prompt = clean_prompt(target_prompt)
    if mode == "reweight" and not target_prompt:
        target_prompt = source_prompt
    edit = AttentionEdit(mode=mode, source_prompt=source_prompt, target_prompt=target_prompt,
                         reweight=parse_reweight(reweight_words, reweight_weights), cross_window=float(cross_window),
                         self_window=float(self_window), streams=streams,
                         self_min_downsampling=int(self_min_downsampling),
                         word_windows=parse_word_windows(word_windows))
    return check_attention_edit(edit)
