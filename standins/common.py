"""What the stand-in models share: a tiny vocabulary of audio words, T5 and CLAP tokenizers over it, CLAP's
feature extractor and tiny config, re-initialisation that keeps activations O(1), and a synthetic test clip."""

from __future__ import annotations

import math
import os
import pathlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import ClapConfig, RobertaTokenizerFast, T5TokenizerFast

CLAP_MAX_LENGTH = 64  # real: 512; the pipeline always pads CLAP input to this length
T5_MAX_LENGTH = 128  # hard-coded to 128 by the original implementation

_WORDS: tuple[str, ...] = (
    # function words
    "a", "an", "the", "of", "in", "on", "at", "with", "and", "or", "by", "from", "to", "is", "are", "while",
    "into", "over", "under", "near", "far", "some", "many", "two", "three",
    # animals and their sounds
    "dog", "dogs", "puppy", "bark", "barking", "barks", "howling", "cat", "cats", "kitten", "meow", "meowing",
    "purring", "bird", "birds", "chirping", "singing", "tweeting", "cow", "mooing", "horse", "neighing",
    "rooster", "crowing", "frog", "croaking", "insects", "buzzing", "bee", "duck", "quacking", "sheep", "lion",
    "roaring",
    # weather, nature, places
    "rain", "raining", "rainy", "thunder", "thunderstorm", "storm", "wind", "windy", "blowing", "water", "river",
    "stream", "ocean", "sea", "waves", "crashing", "fire", "crackling", "forest", "city", "street", "traffic",
    "beach", "night", "morning", "room", "kitchen", "park", "cafe", "crowd", "background", "distance",
    # people and things
    "man", "woman", "child", "children", "baby", "people", "person", "crying", "laughing", "talking", "speaking",
    "whispering", "shouting", "cheering", "applause", "clapping", "footsteps", "walking", "running", "door",
    "knocking", "closing", "bell", "ringing", "clock", "ticking", "phone", "car", "cars", "engine", "horn",
    "train", "passing", "siren", "plane", "airplane", "helicopter", "motorcycle", "bicycle", "hammer",
    "hitting", "wood", "wooden", "glass", "breaking", "typing", "keyboard", "machine", "alarm", "whistle",
    "dishes", "cooking", "frying", "pouring", "splashing", "dripping",
    # music
    "music", "musical", "song", "melody", "harmony", "chord", "chords", "beat", "beats", "rhythm", "tempo",
    "solo", "band", "orchestra", "choir", "piano", "guitar", "guitars", "bass", "drum", "drums", "violin",
    "cello", "flute", "saxophone", "trumpet", "organ", "synth", "synthesizer", "harp", "ukulele", "banjo",
    "accordion", "vocals", "voice", "jazz", "rock", "pop", "hip", "hop", "classical", "electronic", "techno",
    "house", "ambient", "folk", "blues", "funk", "metal", "reggae", "country", "lofi", "orchestral", "cinematic",
    "acoustic", "electric", "distorted", "playing", "strumming", "riff", "riffs", "loop", "groove",
    # adjectives and production words
    "loud", "quiet", "soft", "gentle", "heavy", "light", "fast", "slow", "upbeat", "calm", "relaxing", "happy",
    "sad", "dark", "bright", "warm", "energetic", "peaceful", "dramatic", "epic", "high", "low", "quality",
    "clear", "noisy", "noise", "sound", "sounds", "audio", "recording", "live", "studio", "short", "long",
    "strong", "deep", "steady", "funky", "smooth", "catchy", "melodic", "minor", "major", "style", "mix",
)
_SUFFIXES: tuple[str, ...] = ("s", "es", "ed", "er", "ers", "ing", "ly", "y", "al", "ic", "ist", "ion")
_CHARS: str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()&/"


def prompt_words() -> list[str]:
    """Return the whole words the tiny T5 vocabulary holds as single '▁word' pieces."""
    return list(dict.fromkeys(_WORDS))


def t5_tokenizer() -> T5TokenizerFast:
    """Build a T5 (Unigram, SentencePiece-style) tokenizer with pad=0, eos=1, unk=2 and no BOS."""
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    seen = {p for p, _ in pieces}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))

    for rank, word in enumerate(prompt_words()):
        add("▁" + word, -5.0 - rank * 1e-3)
    for suffix in _SUFFIXES:
        add(suffix, -7.0)
    for ch in _CHARS:
        add(ch, -10.0)
        add("▁" + ch, -10.5)
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def byte_alphabet() -> list[str]:
    """Return GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def clap_tokenizer() -> RobertaTokenizerFast:
    """Build a byte-level BPE RoBERTa tokenizer (CLAP's) from an in-memory vocab and merges."""
    from transformers import RobertaTokenizerFast

    vocab: dict[str, int] = {}
    for tok in ("<s>", "<pad>", "</s>", "<unk>"):
        vocab[tok] = len(vocab)
    alphabet = byte_alphabet()
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    # Each word is grown left to right, one byte per merge. All 'Ġword' chains rank first: their left side always
    # starts with 'Ġ', which only begins a pre-token, so they never clash and every known word after a space is
    # one token. Bare (sentence-initial) chains rank after them and may stop at sub-word pieces, like real BPE.
    merges: list[tuple[str, str]] = []
    merged: set[tuple[str, str]] = set()
    space = alphabet[ord(" ")]
    words = prompt_words()
    for text in [space + w for w in words] + words:
        current = text[0]
        for ch in text[1:]:
            pair = (current, ch)
            current += ch
            if pair not in merged:
                merged.add(pair)
                merges.append(pair)
            vocab.setdefault(current, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=CLAP_MAX_LENGTH)


def clap_feature_extractor():
    """CLAP's audio feature extractor with laion/clap-htsat-unfused's settings (48 kHz, 64 mel bins, 10 s)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                                fft_window_size=1024, frequency_min=50, frequency_max=14000,
                                truncation="rand_trunc", padding="repeatpad")


def is_norm(module: torch.nn.Module) -> bool:
    """Return True for normalisation layers (LayerNorm, GroupNorm, BatchNorm, RMSNorm, T5LayerNorm)."""
    return "norm" in type(module).__name__.lower()


@torch.no_grad()
def reinit(model: torch.nn.Module, gain: float = 1.0) -> None:
    """Re-draw weights with fan-in scaled normals so activations stay O(1) (transformers 5 inits tiny)."""
    for module in model.modules():
        norm = is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if param.ndim == 0:
                continue
            if norm:
                param.fill_(1.0 if name == "weight" else 0.0)
            elif param.ndim == 1:
                param.normal_(0.0, 0.02 if name.endswith("bias") else 1.0)
            else:
                param.normal_(0.0, gain / math.sqrt(param[0].numel()))


def tiny_clap_config(tokenizer: RobertaTokenizerFast, width: int = 16, patch: int = 4) -> ClapConfig:
    """A CLAP with one text layer and a two-stage HTSAT audio tower of `width` channels (patch x patch patches)."""
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    return ClapConfig(
        text_config=ClapTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * width,
            max_position_embeddings=CLAP_MAX_LENGTH + 2,  # RoBERTa positions start after the padding index
            projection_dim=width,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        audio_config=ClapAudioConfig(
            num_mel_bins=64,
            spec_size=256,
            patch_size=patch,
            patch_stride=(patch, patch),
            window_size=8,
            patch_embeds_hidden_size=8,
            hidden_size=width,
            depths=[1, 1],
            num_attention_heads=[1, 2],
            num_hidden_layers=2,
            projection_dim=width,
            num_classes=4,
            enable_fusion=False,
        ),
        projection_dim=width,
    )


def write_demo_clip(path: str | os.PathLike, seconds: float = 10.0, sample_rate: int = 44100) -> pathlib.Path:
    """Write a synthetic stereo test clip (a plucked A-minor arpeggio over a soft noise bed) for the demo."""
    from ..engine.io.audio import write_audio

    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    clip = torch.zeros(2, t.numel())
    generator = torch.Generator().manual_seed(0)
    for index, freq in enumerate((220.0, 261.63, 329.63, 440.0) * int(max(1, seconds))):
        onset = index * 0.25
        if onset >= seconds:
            break
        local = (t - onset).clamp_min(0.0)
        note = torch.sin(2 * math.pi * freq * local) * torch.exp(-4.0 * local) * (t >= onset)
        clip[index % 2] += 0.3 * note
        clip[(index + 1) % 2] += 0.15 * note
    clip += 0.01 * torch.randn(clip.shape, generator=generator)
    path = pathlib.Path(path)
    return write_audio(path, clip.clamp(-1.0, 1.0), sample_rate, path.suffix.lstrip(".").lower() or "wav")
