"""Tango's released files read as diffusers modules: the file layout, the configs it carries or implies, and the
original AudioLDM VAE / HiFi-GAN keys renamed for diffusers' AutoencoderKL and transformers' SpeechT5HifiGan."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.placement import CPU
from ..core.checkpoints import build_and_load, prefer_safetensors, read_checkpoint, tensor_dict
from ..core.errors import PAEInputError

# T5 was trained with 512 positions; tokenizer files without a limit get this one.
_T5_MAX_TOKENS = 512

# Files of a release. The configs and the tokenizer are looked for beside them.
MAIN_CONFIG, MAIN_WEIGHTS = "main_config.json", "pytorch_model_main.bin"
VAE_CONFIG, VAE_WEIGHTS = "vae_config.json", "pytorch_model_vae.bin"
STFT_CONFIG, STFT_WEIGHTS = "stft_config.json", "pytorch_model_stft.bin"
RELEASE_WEIGHTS = (MAIN_WEIGHTS, VAE_WEIGHTS, STFT_WEIGHTS)
# Optional configs for models whose shapes differ from the built-in ones (tiny test models, other text encoders).
UNET_CONFIG_FILE, T5_CONFIG_FILE = "unet_config.json", "t5_config.json"
_TOKENIZER_HELP = ("put the FLAN-T5 tokenizer files beside the Tango weights: tokenizer.json and tokenizer_config.json "
                   "(spiece.model and special_tokens_map.json may come along) from Hugging Face google/flan-t5-large; "
                   "the Tango releases do not include them (the reference code fetches them at run time).")

# The denoiser: a diffusers UNet2DConditionModel laid out like Stable Diffusion 2.1's, with 8 latent channels.
# Source: declare-lab/tango configs/diffusion_model_config.json (identical in tango2/configs/), which the released
# main_config.json names as unet_model_config_path but the Hugging Face releases do not contain.
# "attention_head_dim" is diffusers' legacy name for the number of heads (5/10/20/20 heads of 64 channels).
TANGO_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
}

# The text encoder: the encoder half of FLAN-T5-large (source: google/flan-t5-large config.json), which
# main_config.json names as text_encoder_name.
FLAN_T5_LARGE_CONFIG: dict[str, Any] = {
    "d_ff": 2816,
    "d_kv": 64,
    "d_model": 1024,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_decoder_layers": 24,
    "num_heads": 16,
    "num_layers": 24,
    "pad_token_id": 0,
    "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32,
    "tie_word_embeddings": False,
    "vocab_size": 32128,
}

# The vocoder inside pytorch_model_vae.bin: AudioLDM's 16 kHz, 64-bin HiFi-GAN (declare-lab/tango
# audioldm/hifigan/utilities.py HIFIGAN_16K_64). Its widths are read from the weights; the strides are not stored.
_HIFIGAN_16K_64: dict[str, Any] = {
    "upsample_rates": [5, 4, 2, 2, 2],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "leaky_relu_slope": 0.1,
}

# The mel front end (TacotronSTFT) when stft_config.json is absent: the values every release carries.
DEFAULT_STFT: dict[str, Any] = {"filter_length": 1024, "hop_length": 160, "win_length": 1024, "n_mel_channels": 64,
                                 "sampling_rate": 16000, "mel_fmin": 0, "mel_fmax": 8000}


# ============================================================================== original -> diffusers keys
_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _vae_resnet_part(part: str) -> str:
    """A resnet's sub-key: the original's 1x1 'nin_shortcut' is diffusers' 'conv_shortcut'; the rest keep their
    names.
    """
    return "conv_shortcut" + part[len("nin_shortcut"):] if part.startswith("nin_shortcut") else part


def vae_state_from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AudioLDM's AutoencoderKL weights (no 'vocoder.' keys) renamed and reshaped for diffusers' AutoencoderKL.

    Keys it does not know are passed through unchanged, so a strict load names them as unexpected.
    """
    levels = {int(m.group(1)) for k in state if (m := re.match(r"decoder\.up\.(\d+)\.", k))}
    top = max(levels, default=0)  # the original counts decoder levels from full resolution up; diffusers the reverse
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        if m := re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key):
            new = f"{m[1]}.conv_norm_out.{m[2]}"
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", key):
            new = f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_vae_resnet_part(m[3])}"
        elif m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key):
            new = f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", key):
            new = f"decoder.up_blocks.{top - int(m[1])}.resnets.{m[2]}.{_vae_resnet_part(m[3])}"
        elif m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key):
            new = f"decoder.up_blocks.{top - int(m[1])}.upsamplers.0.conv.{m[2]}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key):
            new = f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_vae_resnet_part(m[3])}"
        elif m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)", key):
            new = f"{m[1]}.mid_block.attentions.0.{_VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[2] != "norm" and m[3] == "weight" and tensor.dim() == 4:
                tensor = tensor[:, :, 0, 0]  # the original's 1x1 convolutions are diffusers' linear layers
        out[new] = tensor
    return out


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-normalised pairs (weight_g/weight_v, or parametrizations' original0/1) by plain weights."""
    out = dict(state)
    pairs = [(k[: -len(".weight_g")], ".weight_g", ".weight_v") for k in state if k.endswith(".weight_g")]
    pairs += [(k[: -len(".parametrizations.weight.original0")], ".parametrizations.weight.original0",
               ".parametrizations.weight.original1") for k in state if k.endswith(".parametrizations.weight.original0")]
    for base, g_name, v_name in pairs:
        if base + v_name not in out:
            continue
        g, v = out.pop(base + g_name), out.pop(base + v_name)
        # weight = g * v / ||v||, the norm over every axis where g has size 1 (all but dim 0 for torch's default).
        axes = tuple(d for d in range(v.dim()) if g.dim() != v.dim() or g.shape[d] == 1) or None
        norm = v.float().norm(dim=axes, keepdim=True)
        out[base + ".weight"] = (g.float() * v.float() / norm).to(v.dtype)
    return out


def vocoder_state_from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HiFi-GAN weights (the 'vocoder.' part of the VAE file, prefix removed) renamed for SpeechT5HifiGan."""
    out = {}
    for key, tensor in fold_weight_norm(state).items():
        m = re.fullmatch(r"ups\.(\d+)\.(.+)", key)
        out[f"upsampler.{m[1]}.{m[2]}" if m else key] = tensor
    mels = out["conv_pre.weight"].shape[1] if "conv_pre.weight" in out else None
    if mels is not None:
        # SpeechT5HifiGan's input standardisation; AudioLDM's vocoder has none (normalize_before is off).
        out.setdefault("mean", torch.zeros(mels, device=CPU))
        out.setdefault("scale", torch.ones(mels, device=CPU))
    return out


# ====================================================================================== configurations
def read_release_json(path: Path, folder: Path) -> dict[str, Any]:
    try:
        if not path.is_file():
            raise OSError(f"{path.name} is not a regular file")
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, RecursionError) as exc:
        raise PAEInputError("model_name", f"'{folder.name}/{path.name}' could not be read ({exc.__class__.__name__}: "
                            f"{exc}); download it again.") from None
    if not isinstance(data, dict):
        raise PAEInputError("model_name", f"'{folder.name}/{path.name}' is not a JSON object; download it again.")
    return data


def check_main_config(main: dict[str, Any], folder: Path) -> None:
    """Refuse the Tango-family releases this backbone does not model, saying why."""
    unet_path = str(main.get("unet_model_config_path") or "")
    if "music_diffusion_model_config" in unet_path:  # Mustango's main_config.json (declare-lab/tango mustango/)
        raise PAEInputError("model_name", f"'{folder.name}' is Mustango (beat and chord conditioning in its UNet), "
                            "which this pack does not support; use Tango or Tango 2.")
    if main.get("unet_model_name"):
        raise PAEInputError("model_name", f"'{folder.name}' names a pre-trained UNet ('{main['unet_model_name']}') "
                            "with channel adapters, a Tango training variant this pack does not load; use a released "
                            "Tango or Tango 2 checkpoint.")
    encoder = str(main.get("text_encoder_name", ""))
    if "t5" not in encoder.lower():
        raise PAEInputError("model_name", f"'{folder.name}' uses the text encoder '{encoder}'; this pack loads Tango "
                            "models with a FLAN-T5 text encoder (Tango, Tango 2 and their fine-tunes).")


def unet_config_for(folder: Path, main: dict[str, Any]) -> dict[str, Any]:
    """The UNet config: unet_config.json, else the file main_config.json names (if inside the folder), else built-in."""
    from ..core.files import resolve_inside

    if (folder / UNET_CONFIG_FILE).is_file():
        return read_release_json(folder / UNET_CONFIG_FILE, folder)
    named = main.get("unet_model_config_path")
    if isinstance(named, str) and named:
        try:
            path = resolve_inside(folder, named, "model_name", what="model folder")
        except PAEInputError:
            path = None
        if path is not None and path.is_file():
            return read_release_json(path, folder)
    return dict(TANGO_UNET_CONFIG)


def t5_config_for(folder: Path, main: dict[str, Any]) -> dict[str, Any]:
    """The T5 config: t5_config.json, else a T5 config.json (as from google/flan-t5-large), else built-in
    FLAN-T5-large.
    """
    if (folder / T5_CONFIG_FILE).is_file():
        return read_release_json(folder / T5_CONFIG_FILE, folder)
    if (folder / "config.json").is_file():
        config = read_release_json(folder / "config.json", folder)
        if config.get("model_type") == "t5":
            return config
    name = str(main.get("text_encoder_name", ""))
    if name.rstrip("/").lower() != "google/flan-t5-large":
        raise PAEInputError("model_name", f"'{folder.name}' uses the text encoder '{name}', whose config the pack "
                            f"does not carry; put that model's config.json into the folder as {T5_CONFIG_FILE}.")
    return dict(FLAN_T5_LARGE_CONFIG)


def vae_config_from_original(vae_config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """diffusers AutoencoderKL arguments for AudioLDM's AutoencoderKL settings (vae_config.json)."""
    dd = vae_config.get("ddconfig")
    if not isinstance(dd, dict):
        raise PAEInputError("model_name", f"'{folder.name}/{VAE_CONFIG}' has no 'ddconfig'; download it again.")
    if dd.get("attn_resolutions"):
        raise PAEInputError("model_name", f"'{folder.name}/{VAE_CONFIG}' puts attention inside the VAE's levels "
                            f"(attn_resolutions {dd['attn_resolutions']}), which AudioLDM's released VAE does not have "
                            "and diffusers' AutoencoderKL cannot hold.")
    z_channels, embed_dim = int(dd.get("z_channels", 8)), int(vae_config.get("embed_dim", dd.get("z_channels", 8)))
    if z_channels != embed_dim or not dd.get("double_z", True) or int(vae_config.get("subband", 1)) != 1:
        raise PAEInputError("model_name", f"'{folder.name}/{VAE_CONFIG}' describes a VAE variant (embed_dim "
                            f"{embed_dim}, z_channels {z_channels}, subband {vae_config.get('subband', 1)}) that "
                            "Tango's releases do not use.")
    levels = len(dd["ch_mult"])
    return {
        "in_channels": int(dd.get("in_channels", 1)),
        "out_channels": int(dd.get("out_ch", 1)),
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(int(dd["ch"]) * int(m) for m in dd["ch_mult"]),
        "layers_per_block": int(dd["num_res_blocks"]),
        "norm_num_groups": 32,  # fixed in the original (its Normalize helper)
        "latent_channels": z_channels,
        "sample_size": int(dd.get("resolution", 256)),
        # The reference's AutoencoderKL defaults to 1 when the config has no scale_factor.
        "scaling_factor": float(vae_config.get("scale_factor", 1.0)),
    }


def vocoder_config_from_state(state: dict[str, torch.Tensor], sample_rate: int, folder: Path) -> dict[str, Any]:
    """SpeechT5HifiGan settings: widths and kernels from the weights' shapes, strides from AudioLDM's settings."""
    if "conv_pre.weight" not in state:
        raise PAEInputError("model_name", f"'{folder.name}/{VAE_WEIGHTS}' holds no HiFi-GAN vocoder "
                            "('vocoder.conv_pre.weight' is missing); download it again.")
    ups = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"upsampler\.(\d+)\.weight", k)))
    rates = _HIFIGAN_16K_64["upsample_rates"]
    if len(ups) != len(rates):
        raise PAEInputError("model_name", f"'{folder.name}/{VAE_WEIGHTS}' has a vocoder with {len(ups)} upsampling "
                            f"layers; AudioLDM's HiFi-GAN has {len(rates)}.")
    resblocks = {int(m[1]) for k in state if (m := re.fullmatch(r"resblocks\.(\d+)\.convs1\.0\.weight", k))}
    per_level = max(1, len(resblocks) // len(ups))  # the first level's resblocks give the kernel sizes
    pre = state["conv_pre.weight"]
    return {
        "model_in_dim": int(pre.shape[1]),
        "sampling_rate": int(sample_rate),
        "upsample_initial_channel": int(pre.shape[0]),
        "upsample_rates": list(rates),
        "upsample_kernel_sizes": [int(state[f"upsampler.{i}.weight"].shape[-1]) for i in ups],
        "resblock_kernel_sizes": [int(state[f"resblocks.{j}.convs1.0.weight"].shape[-1])
                                  for j in range(per_level) if j in resblocks],
        "resblock_dilation_sizes": [list(d) for d in _HIFIGAN_16K_64["resblock_dilation_sizes"][:per_level]],
        "leaky_relu_slope": _HIFIGAN_16K_64["leaky_relu_slope"],
        "normalize_before": False,
    }


# ============================================================================================ weights
_DOWNLOAD_AGAIN = "download it again from Hugging Face declare-lab/tango or declare-lab/tango2"


def release_weights(folder: Path, name: str) -> Path:
    """The file to read for one of the release's pickles: its safetensors copy (`pae models convert` writes
    pytorch_model_*.safetensors beside it) when present, even with the pickle deleted, else the pickle."""
    return prefer_safetensors(folder / name)


def read_weights(path: Path, folder: Path) -> dict[str, torch.Tensor]:
    """A flat dict of tensors from the release: a torch pickle read weights-only, or its safetensors copy."""
    label = f"'{folder.name}/{path.name}'"
    data = read_checkpoint(path, "model_name", f"the Tango file {label}", _DOWNLOAD_AGAIN)
    return tensor_dict(data, "model_name", label, _DOWNLOAD_AGAIN)


def load_strict(factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], *, what: str, source: str,
                prefix: str = "") -> torch.nn.Module:
    """Build a module without allocating weights, then take every weight from state: no key missing or left over."""
    return build_and_load(factory, state, what=what, source=source, prefix=prefix, input_name="model_name",
                          fix=f"it is not a complete Tango / Tango 2 release (another model, or a damaged download); "
                          f"{_DOWNLOAD_AGAIN}")


def load_tokenizer(folder: Path) -> Any:
    """The T5 tokenizer from the model folder (tokenizer.json, or spiece.model with tokenizer_config.json)."""
    if not (folder / "tokenizer.json").is_file() and not (folder / "spiece.model").is_file():
        raise PAEInputError("model_name", f"'{folder.name}' has no T5 tokenizer; {_TOKENIZER_HELP}")
    from transformers import T5TokenizerFast

    try:
        tokenizer = T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a missing converter (sentencepiece) or a broken file
        raise PAEInputError("model_name", f"the T5 tokenizer in '{folder.name}' could not be read "
                            f"({exc.__class__.__name__}: {str(exc)[:200]}); {_TOKENIZER_HELP} (tokenizer.json is "
                            "needed: reading spiece.model alone needs the sentencepiece package).") from None
    if not tokenizer.model_max_length or tokenizer.model_max_length > 10**6:
        tokenizer.model_max_length = _T5_MAX_TOKENS  # no limit in the files: T5's trained length
    return tokenizer
