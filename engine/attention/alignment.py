"""Word-to-token alignment between a source and a target prompt (Prompt-to-Prompt's mappers, tokenizer-aware).

Every edit is a linear map on the key axis of the target's attention:
    edited_map = source_map @ from_source  +  target_map * own      (then columns scaled by `weights`)
so samplers can apply it to the values instead of materialising maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .edit import AttentionEdit, find_phrase, prompt_words
from ..core.placement import CPU
from ..core.errors import PAEInputError

# Markers a tokenizer puts on the first piece of a word: SentencePiece (T5) and byte-level BPE (GPT-2, RoBERTa).
_WORD_START = ("▁", "Ġ")
_SPECIAL = re.compile(r"^<(/s|s|pad|\|endoftext\|)>$")


@dataclass(frozen=True)
class TokenMapping:
    """How one stream's target keys take their attention from the source's (all tensors sized to padded L)."""

    from_source: torch.Tensor  # [L, L]: target column j = Σ_i source column i · from_source[i, j]
    own: torch.Tensor          # [L]: 1 where the target keeps its own attention column (Refine's new tokens)
    weights: torch.Tensor      # [L]: factor on each target column (Reweight); 1 elsewhere

    @property
    def is_identity(self) -> bool:
        """True when the edit leaves the target's attention equal to the source's (same tokens, no factors)."""
        eye = torch.eye(self.from_source.shape[0], dtype=self.from_source.dtype, device=self.from_source.device)
        used = self.from_source.sum(dim=0) > 0
        return bool(torch.equal(self.from_source[:, used], eye[:, used]) and not self.own.any()
                    and torch.all(self.weights == 1))


def token_words(tokens: list[str]) -> list[int | None]:
    """Word index of every token (None for special tokens such as T5's '</s>'); a word starts at a marked piece."""
    words: list[int | None] = []
    current = -1
    started = False
    for token in tokens:
        if _SPECIAL.match(token):
            words.append(None)
            continue
        if not started or token.startswith(_WORD_START):
            current += 1
            started = True
        words.append(current)
    return words


def _word_groups(tokens: list[str], prompt: str, which: str) -> tuple[list[list[int]], list[int]]:
    """Token positions of each whitespace word of the prompt, and the positions of special tokens."""
    index = token_words(tokens)
    count = len(prompt_words(prompt))
    groups: list[list[int]] = [[] for _ in range(max(count, 0))]
    specials = [i for i, w in enumerate(index) if w is None]
    found = max([w for w in index if w is not None], default=-1) + 1
    if found != count:
        raise PAEInputError("attention_edit", f"the tokenizer splits the {which} prompt '{prompt}' into {found} "
                            f"words but it has {count} whitespace-separated words; put spaces around punctuation "
                            "that stands alone.")
    for position, word in enumerate(index):
        if word is not None:
            groups[word].append(position)
    return groups, specials


def replace_mapping(source_tokens: list[str], target_tokens: list[str], source_prompt: str, target_prompt: str,
                    length: int) -> torch.Tensor:
    """Replace's matrix: kept words map token to token; a swapped word's tokens spread evenly over the new ones."""
    source_groups, source_special = _word_groups(source_tokens, source_prompt, "source")
    target_groups, target_special = _word_groups(target_tokens, target_prompt, "target")
    if len(source_groups) != len(target_groups):
        raise PAEInputError("attention_edit", f"Replace needs the same number of words; the source has "
                            f"{len(source_groups)} and the target {len(target_groups)}. Use Refine.")
    mapping = torch.zeros(length, length, device=CPU)
    for src, tgt in zip(source_groups, target_groups):
        if len(src) == len(tgt):
            mapping[src, tgt] = 1.0
        else:
            spread_word(mapping, src, tgt)
    for src, tgt in zip(source_special, target_special):
        mapping[src, tgt] = 1.0
    return mapping


def spread_word(mapping: torch.Tensor, source: list[int], target: list[int]) -> None:
    """Give each of a new word's tokens an equal share of the old word's attention (the word's total is kept)."""
    mapping[torch.tensor(source, device=CPU)[:, None], torch.tensor(target, device=CPU)[None, :]] = 1.0 / len(target)


def swapped_words_mapping(edit: AttentionEdit, source_tokens: list[str], target_tokens: list[str],
                          length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace on the swapped words only (EditGen's ReplaceWord): every token of a new word takes the mean of the
    old word's token columns, whatever the two token counts; the mask of those target columns."""
    source_spans = token_word_spans(source_tokens, edit.source_prompt)
    target_spans = token_word_spans(target_tokens, edit.target_prompt)
    mapping = torch.zeros(length, length, device=CPU)
    columns = torch.zeros(length, dtype=torch.bool, device=CPU)
    for word in edit.edited_words()[1]:
        source, target = source_spans[word][1], target_spans[word][1]
        if source and target:
            rows, cols = torch.tensor(source, device=CPU), torch.tensor(target, device=CPU)
            mapping[rows[:, None], cols[None, :]] = 1.0 / len(source)
            columns[target] = True
    return mapping, columns


def _piece(token: str) -> str:
    # A token as the EditGen code compares them: decoded on its own, so SentencePiece's word marker is gone.
    return token[1:] if token.startswith("\u2581") else token


def shared_token_mapping(source_tokens: list[str], target_tokens: list[str],
                         length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """EditGen's Refine pairs: every target token takes the column of an equal source token, special tokens ('</s>',
    '<pad>') skipped. The code pairs all equal tokens many to many and writes them in order, so where a token
    repeats the last equal source token wins; the matrix and the mask of the target columns that take one."""
    mapping = torch.zeros(length, length, device=CPU)
    columns = torch.zeros(length, dtype=torch.bool, device=CPU)
    chosen: dict[int, int] = {}
    for i, source in enumerate(source_tokens):
        for j, target in enumerate(target_tokens):
            if not source.startswith("<") and not target.startswith("<") and _piece(source) == _piece(target):
                chosen[j] = i
    for j, i in chosen.items():
        mapping[i, j] = 1.0
        columns[j] = True
    return mapping, columns


def align_tokens(source: list[str], target: list[str]) -> list[int]:
    """Global alignment of two token sequences (match 1, gap 0, no mismatches): source index per target token, or -1."""
    n, m = len(source), len(target)
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best = max(score[i + 1][j], score[i][j + 1])
            if source[i] == target[j]:
                best = max(best, score[i + 1][j + 1] + 1)
            score[i][j] = best
    mapped = [-1] * m
    i = j = 0
    while i < n and j < m:  # earliest match first: deterministic when several alignments score the same
        if source[i] == target[j] and score[i][j] == score[i + 1][j + 1] + 1:
            mapped[j] = i
            i += 1
            j += 1
        elif score[i + 1][j] >= score[i][j + 1]:
            i += 1
        else:
            j += 1
    return mapped


def refine_mapping(source_tokens: list[str], target_tokens: list[str],
                   length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine's matrix and own-attention mask: aligned target tokens take the source column, new ones keep theirs."""
    mapping = torch.zeros(length, length, device=CPU)
    own = torch.zeros(length, device=CPU)
    for j, i in enumerate(align_tokens(source_tokens, target_tokens)):
        if i >= 0:
            mapping[i, j] = 1.0
        else:
            own[j] = 1.0
    return mapping, own


def reweight_factors(target_tokens: list[str], target_prompt: str, reweight: tuple[tuple[str, float], ...],
                     length: int) -> torch.Tensor:
    """Column factors: every token of a reweighted word or phrase gets its factor (products where they overlap)."""
    weights = torch.ones(length, device=CPU)
    if not reweight:
        return weights
    groups, _ = _word_groups(target_tokens, target_prompt, "target")
    words = prompt_words(target_prompt)
    for phrase, factor in reweight:
        hits = find_phrase(words, phrase)
        if not hits:
            raise PAEInputError("attention_edit", f"'{phrase}' is not a word of the target prompt '{target_prompt}'.")
        for word in hits:
            weights[groups[word]] *= factor
    return weights


def word_stream_mapping(edit: AttentionEdit, source_tokens: list[str], target_tokens: list[str],
                        length: int) -> TokenMapping:
    """The mapping of the stream that carries the words, for the edit's mode (Reweight on top of any mode)."""
    if edit.mode == "replace":
        from_source = replace_mapping(source_tokens, target_tokens, edit.source_prompt, edit.target_prompt, length)
        own = torch.zeros(length, device=CPU)
    elif edit.mode == "refine":
        from_source, own = refine_mapping(source_tokens, target_tokens, length)
    else:  # reweight alone: same words, so the source's columns map one to one
        from_source, own = refine_mapping(source_tokens, target_tokens, length)
    weights = reweight_factors(target_tokens, edit.target_prompt, edit.reweight, length)
    # Keys past both prompts' tokens (padding, Stable Audio's timing tokens) are not words: position to position.
    tail = torch.arange(min(max(len(source_tokens), len(target_tokens)), length), length, device=CPU)
    from_source[tail, tail] = 1.0
    return TokenMapping(from_source, own, weights)


def positional_mapping(real_length: int, length: int) -> TokenMapping:
    """For a stream without words (AudioLDM2's 8 GPT-2 tokens): the target takes the source's map position by
    position.
    """
    from_source = torch.zeros(length, length, device=CPU)
    from_source[range(real_length), range(real_length)] = 1.0
    return TokenMapping(from_source, torch.zeros(length, device=CPU), torch.ones(length, device=CPU))


def token_word_spans(tokens: list[str], prompt: str) -> list[tuple[str, list[int]]]:
    """(word, token positions) for each word of the prompt, for per-word attention maps."""
    groups, _ = _word_groups(tokens, prompt, "target")
    return list(zip(prompt_words(prompt), groups))
