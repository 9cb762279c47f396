"""Tiny, randomly initialised AudioLDM2 stand-ins for tests and the demo; never real weights."""

from __future__ import annotations

import math
import os
import pathlib
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import RobertaTokenizerFast, T5TokenizerFast

# Real AudioLDM2 facts mirrored below (sources: diffusers `scripts/convert_original_audioldm2_to_diffusers.py`,
# haoheliu/AudioLDM2 `audioldm2/utils.py` + `openaimodel.py`, diffusers `pipelines/audioldm2/*`):
# - Every UNet attention slot holds one Transformer2DModel per `cross_attention_dim` entry. The original UNet puts an
#   extra self-attention transformer first (`extra_sa_layer`), so base/music use [None, 768, 1024] and large uses
#   [None, 768, 1024, None] with transformer depth 2. A `None` entry builds a block whose attn2 is a second
#   self-attention; entry 1 attends to the GPT-2 ("LOA") stream (768), entry 2 to the Flan-T5 stream (1024).
# - The T5 hidden states go straight into the UNet (`encoder_hidden_states_1`), so T5 d_model must be 1024; the GPT-2
#   output goes straight in as `encoder_hidden_states`, so n_embd must be 768. The projection model maps
#   CLAP projection_dim -> 768 and T5 d_model -> 768 (GPT-2 input); it never produces the 1024 stream.
# - VAE: 1 -> 8 latent channels, ch_mult (1, 2, 4) so time and mel axes shrink by 4, learnt scale 0.4110932946.
# - Vocoder: HiFi-GAN on 64 mel bins at 16 kHz, upsample rates (5, 4, 2, 2, 2) = hop length 160.
# - Scheduler: DDIM, 1000 steps, scaled_linear 0.0015-0.0195, eps prediction, steps_offset 1, no clipping.
# - transformers>=5: GPT2Model lacks GenerationMixin, which the pipeline's generation loop needs, so the language
#   model is GPT2LMHeadModel (as in diffusers' own type hint); its lm_head is tied to wte and adds no weights.
#   It needs >= 1 layer: the pipeline reads `hidden_states[-1]`, which a 0-layer GPT-2 does not return.
# - Size: those fixed widths set the floor (~18-19 MB in float32): one GPT-2 block at 768 (~9.4 MB), the
#   T5 -> GPT-2 projection 1024x768 (~3.1 MB), T5 embeddings at 1024 and the 768/1024-wide UNet to_k/to_v.
# - Layouts: base and music share one architecture (the real checkpoints differ only in weights), so the same seed
#   gives the same weights for both. Everything not listed above is shrunk (UNet: 2 levels instead of 4, first one
#   without attention as in the real model; 1 resnet per level instead of 2).

LAYOUTS: tuple[str, ...] = ("base", "large", "music")

_GPT2_WIDTH = 768
_T5_WIDTH = 1024
_CLAP_MAX_LENGTH = 64  # real: 512; the pipeline always pads CLAP input to this length
_T5_MAX_LENGTH = 128  # hard-coded to 128 by the original implementation
_GEN_TOKENS = 8  # sequence_gen_length of the original conditioner

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


def tiny_audioldm2_prompt_words() -> list[str]:
    """Return the whole words the tiny T5 vocabulary holds as single '▁word' pieces."""
    return list(dict.fromkeys(_WORDS))


def _t5_tokenizer() -> T5TokenizerFast:
    """Build a T5 (Unigram, SentencePiece-style) tokenizer with pad=0, eos=1, unk=2 and no BOS."""
    from transformers import T5TokenizerFast

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -8.0)]
    seen = {p for p, _ in pieces}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            pieces.append((piece, score))

    for rank, word in enumerate(tiny_audioldm2_prompt_words()):
        add("▁" + word, -5.0 - rank * 1e-3)
    for suffix in _SUFFIXES:
        add(suffix, -7.0)
    for ch in _CHARS:
        add(ch, -10.0)
        add("▁" + ch, -10.5)
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=_T5_MAX_LENGTH)


def _byte_alphabet() -> list[str]:
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


def _clap_tokenizer() -> RobertaTokenizerFast:
    """Build a byte-level BPE RoBERTa tokenizer (CLAP's) from an in-memory vocab and merges."""
    from transformers import RobertaTokenizerFast

    vocab: dict[str, int] = {}
    for tok in ("<s>", "<pad>", "</s>", "<unk>"):
        vocab[tok] = len(vocab)
    alphabet = _byte_alphabet()
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    # Each word is grown left to right, one byte per merge. All 'Ġword' chains rank first: their left side always
    # starts with 'Ġ', which only begins a pre-token, so they never clash and every known word after a space is
    # one token. Bare (sentence-initial) chains rank after them and may stop at sub-word pieces, like real BPE.
    merges: list[tuple[str, str]] = []
    merged: set[tuple[str, str]] = set()
    space = alphabet[ord(" ")]
    words = tiny_audioldm2_prompt_words()
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
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=_CLAP_MAX_LENGTH)


def clap_feature_extractor():
    """CLAP's audio feature extractor with laion/clap-htsat-unfused's settings (48 kHz, 64 mel bins, 10 s)."""
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                                fft_window_size=1024, frequency_min=50, frequency_max=14000,
                                truncation="rand_trunc", padding="repeatpad")


def _is_norm(module: torch.nn.Module) -> bool:
    """Return True for normalisation layers (LayerNorm, GroupNorm, BatchNorm, RMSNorm, T5LayerNorm)."""
    return "norm" in type(module).__name__.lower()


@torch.no_grad()
def _reinit(model: torch.nn.Module, gain: float = 1.0) -> None:
    """Re-draw weights with fan-in scaled normals so activations stay O(1) (transformers 5 inits tiny)."""
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if param.ndim == 0:
                continue
            if norm:
                param.fill_(1.0 if name == "weight" else 0.0)
            elif param.ndim == 1:
                param.normal_(0.0, 0.02 if name.endswith("bias") else 1.0)
            else:
                param.normal_(0.0, gain / math.sqrt(param[0].numel()))


def _unet_cross_attention_dims(layout: str) -> list[int | None]:
    """Return the per-slot cross-attention dims of the real checkpoint family."""
    if layout == "large":
        return [None, _GPT2_WIDTH, _T5_WIDTH, None]
    return [None, _GPT2_WIDTH, _T5_WIDTH]


def build_tiny_audioldm2(folder: str | os.PathLike, *, layout: str = "large", seed: int = 0) -> pathlib.Path:
    """Build a tiny random AudioLDM2 pipeline, save it with save_pretrained at folder, and return the path."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")

    from diffusers import AudioLDM2Pipeline, AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    out = pathlib.Path(folder)
    tokenizer = _clap_tokenizer()
    tokenizer_2 = _t5_tokenizer()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)

        clap_dim = 16
        text_encoder = ClapModel(
            ClapConfig(
                text_config=ClapTextConfig(
                    vocab_size=len(tokenizer),
                    hidden_size=16,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    intermediate_size=32,
                    max_position_embeddings=_CLAP_MAX_LENGTH + 2,
                    projection_dim=clap_dim,
                    pad_token_id=tokenizer.pad_token_id,
                    bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                ),
                audio_config=ClapAudioConfig(
                    num_mel_bins=64,
                    spec_size=256,
                    window_size=8,
                    patch_embeds_hidden_size=8,
                    hidden_size=16,
                    depths=[1, 1],
                    num_attention_heads=[1, 2],
                    num_hidden_layers=2,
                    projection_dim=clap_dim,
                    num_classes=4,
                ),
                projection_dim=clap_dim,
            )
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=_T5_WIDTH,
                d_kv=8,
                d_ff=16,
                num_layers=1,
                num_heads=2,
                feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        )
        projection_model = AudioLDM2ProjectionModel(
            text_encoder_dim=clap_dim, text_encoder_1_dim=_T5_WIDTH, langauge_model_dim=_GPT2_WIDTH
        )
        language_model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=8,
                n_positions=192,
                n_embd=_GPT2_WIDTH,
                n_layer=1,
                n_head=2,
                n_inner=16,
                bos_token_id=0,
                eos_token_id=0,
                max_new_tokens=_GEN_TOKENS,
            )
        )
        unet = AudioLDM2UNet2DConditionModel(
            sample_size=256,  # 256 latent frames * 4 * 160 / 16 kHz = 10.24 s default length, like the real ones
            in_channels=8,
            out_channels=8,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            attention_head_dim=2,  # AudioLDM2's UNet reads this as the number of heads
            cross_attention_dim=[_unet_cross_attention_dims(layout)] * 2,
            transformer_layers_per_block=2 if layout == "large" else 1,
        )
        vae = AutoencoderKL(
            in_channels=1,
            out_channels=1,
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            block_out_channels=(8, 8, 16),
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=8,
            sample_size=1024,  # conversion script's image_size; only the tiling threshold reads it
            scaling_factor=0.4110932946,
        )
        vocoder = SpeechT5HifiGan(
            SpeechT5HifiGanConfig(
                model_in_dim=64,
                sampling_rate=16000,
                upsample_initial_channel=32,
                upsample_rates=[5, 4, 2, 2, 2],
                upsample_kernel_sizes=[16, 16, 8, 4, 4],
                resblock_kernel_sizes=[3, 7, 11],
                resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                normalize_before=False,
            )
        )
        for model in (text_encoder, text_encoder_2, projection_model, language_model, unet, vae):
            _reinit(model)
        # The leaky-ReLU HiFi-GAN stack loses variance per stage; a little extra gain keeps its output audible.
        _reinit(vocoder, gain=1.2)

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0015,
        beta_end=0.0195,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    feature_extractor = clap_feature_extractor()
    pipe = AudioLDM2Pipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        projection_model=projection_model,
        language_model=language_model,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler=scheduler,
        vocoder=vocoder,
    )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


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
