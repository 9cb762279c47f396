"""stable-audio-tools checkpoints converted on load: a folder (model_config.json + model.safetensors / model.ckpt) or
one .safetensors file in models/checkpoints/, as ComfyUI keeps Stable Audio Open (no config: geometry from the shapes).

SAO-Instruct, like Stable Audio Open's own release, is a stable-audio-tools model: one state dict holding the DiT
(`model.model.*`), the Oobleck autoencoder (`pretransform.model.*`) and the timing conditioners
(`conditioner.conditioners.seconds_*`). T5-base is not in it (stable-audio-tools loads it by name), so the folder
also needs Stable Audio Open's `text_encoder/` and `tokenizer/`. Key renaming follows diffusers'
scripts/convert_stable_audio.py; every converted key must fill the diffusers module exactly.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..core.checkpoints import build_and_load, read_checkpoint, tensor_dict
from ..core.errors import PAEInputError
from ..core.files import read_json_dict

CONFIG_NAME = "model_config.json"
WEIGHT_NAMES = ("model.safetensors", "model.ckpt")
_FIX = "use the model_config.json and weights of a stable-audio-tools release, unchanged"
_FILE_FIX = ("use the released stable-audio-open-1.0.safetensors (or an SAO-Instruct checkpoint in the same layout), "
             "unchanged")
PREFIXES = {"dit": "model.model.", "autoencoder": "pretransform.model.", "conditioners": "conditioner.conditioners."}
# The rotary buffer: ComfyUI's model_detection recognises the Stable Audio DiT by it; diffusers recomputes it.
ROTARY_KEY = "model.model.transformer.rotary_pos_emb.inv_freq"
_DROPPED = (ROTARY_KEY,)
# What a single file's shapes cannot say, from Stable Audio Open 1.0's released model_config.json.
RELEASED_HEAD_DIM = 64
RELEASED_SAMPLE_RATE = 44100
RELEASED_SAMPLE_SIZE = 2097152  # samples in the DiT's window (1024 latent frames, 47.55 s)
RELEASED_SECONDS = (0, 512)     # the timing conditioners' min_val / max_val
_HEADER_LIMIT = 64 * 2 ** 20    # a safetensors header larger than this is not a model's


def is_stable_audio_tools_folder(folder: Path) -> bool:
    """True for a folder holding a stable-audio-tools conditional diffusion model's config."""
    config = read_json_dict(folder / CONFIG_NAME)
    return config is not None and config.get("model_type") == "diffusion_cond"


def dit_key(key: str) -> str | None:
    """A stable-audio-tools DiT key (after 'model.model.') in diffusers' StableAudioDiTModel naming."""
    new = key.replace("transformer.", "").replace("layers", "transformer_blocks")
    for old, repl in (("self_attn", "attn1"), ("cross_attn", "attn2"), ("ff.ff", "ff.net"), ("pre_norm", "norm1"),
                      ("cross_attend_norm", "norm2"), ("ff_norm", "norm3"), ("to_out", "to_out.0"),
                      ("gamma", "weight"), ("beta", "bias"), ("project", "proj"),
                      ("to_timestep_embed", "timestep_proj"), ("to_global_embed", "global_proj"),
                      ("to_cond_embed", "cross_attention_proj"), ("timestep_features", "time_proj")):
        new = new.replace(old, repl)
    return new


def convert_dit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DiT weights: renamed, fused qkv / kv projections split, the Fourier weights made 1-D."""
    out = {}
    for key, value in state.items():
        new = dit_key(key)
        if new == "time_proj.weight":
            value = value.reshape(-1)
        if ".to_qkv." in new:
            for name, part in zip("qkv", torch.chunk(value, 3, dim=0)):
                out[new.replace("to_qkv", f"to_{name}")] = part
        elif ".to_kv." in new:
            for name, part in zip("kv", torch.chunk(value, 2, dim=0)):
                out[new.replace("to_kv", f"to_{name}")] = part
        else:
            out[new] = value
    return out


def _autoencoder_key(key: str, blocks: int) -> str:
    new = key.replace("coder.layers.0", "coder.conv1")
    match = re.search(r"coder\.layers\.(\d+)", new)
    if not match:
        return new
    index = int(match.group(1))
    new = new.replace(f"coder.layers.{index}", f"coder.block.{index - 1}")
    block = f"block.{index - 1}"
    if "encoder" in new:  # residual units 0-2, then snake and the strided conv
        for unit in range(3):
            new = new.replace(f"{block}.layers.{unit}", f"{block}.res_unit{unit + 1}")
        new = new.replace(f"{block}.layers.3", f"{block}.snake1").replace(f"{block}.layers.4", f"{block}.conv1")
    else:  # snake and the transposed conv, then residual units 2-4
        for unit in range(2, 5):
            new = new.replace(f"{block}.layers.{unit}", f"{block}.res_unit{unit - 1}")
        new = new.replace(f"{block}.layers.0", f"{block}.snake1").replace(f"{block}.layers.1", f"{block}.conv_t1")
    for old, repl in (("layers.0.beta", "snake1.beta"), ("layers.0.alpha", "snake1.alpha"),
                      ("layers.2.beta", "snake2.beta"), ("layers.2.alpha", "snake2.alpha"),
                      ("layers.1.bias", "conv1.bias"), ("layers.1.weight_", "conv1.weight_"),
                      ("layers.3.bias", "conv2.bias"), ("layers.3.weight_", "conv2.weight_")):
        new = new.replace(old, repl)
    if index == blocks + 1:
        new = new.replace(block, "snake1")
    elif index == blocks + 2:
        new = new.replace(block, "conv2")
    return new


def convert_autoencoder(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """Oobleck weights: sequential layer indices to diffusers' named blocks; snake parameters to [1, C, 1]."""
    out = {}
    for key, value in state.items():
        new = _autoencoder_key(key, blocks)
        if "snake" in new:
            value = value.reshape(1, -1, 1)
        out[new] = value
    return out


def convert_conditioners(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Timing conditioners (and a T5 output projection, if the model has one) to StableAudioProjectionModel."""
    out = {}
    for key, value in state.items():
        new = key.replace("seconds_start.", "start_number_conditioner.").replace("seconds_total.",
                                                                                  "end_number_conditioner.")
        new = new.replace("embedder.embedding", "time_positional_embedding").replace("prompt.proj_out",
                                                                                      "text_projection")
        out[new] = value
    return out


def _kv_width(dit: dict[str, torch.Tensor], cond_dim: int) -> int:
    """Width of the cross-attention keys: the fused key/value projection's rows / 2 (cond_dim as released)."""
    fused = dit.get("transformer.layers.0.cross_attn.to_kv.weight")
    return int(fused.shape[0]) // 2 if fused is not None else cond_dim


def _section(config: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = config
    for name in path:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        raise PAEInputError("model_name", f"{CONFIG_NAME} has no '{'.'.join(path)}' section; {_FIX}.")
    return node


def read_stable_audio_tools(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The folder's model config and its state dict (a Lightning 'state_dict' entry unwrapped)."""
    config = read_json_dict(folder / CONFIG_NAME)
    if config is None or config.get("model_type") != "diffusion_cond":
        raise PAEInputError("model_name", f"'{folder.name}/{CONFIG_NAME}' is not a stable-audio-tools conditional "
                            f"diffusion config; {_FIX}.")
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise PAEInputError("model_name", f"'{folder.name}' has {CONFIG_NAME} but no weights "
                            f"({' or '.join(WEIGHT_NAMES)}); put the checkpoint beside the config.")
    data = read_checkpoint(weights, "model_name", f"'{folder.name}/{weights.name}'", _FIX)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return config, tensor_dict(data, "model_name", f"'{folder.name}/{weights.name}'", _FIX)


def split_state(state: dict[str, torch.Tensor], source: str, fix: str = _FIX) -> dict[str, dict[str, torch.Tensor]]:
    """The state dict's parts by prefix; anything outside the known parts is refused by name."""
    prefixes = PREFIXES
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in prefixes}
    unknown = []
    for key, value in state.items():
        if key in _DROPPED:
            continue
        part = next((name for name, prefix in prefixes.items() if key.startswith(prefix)), None)
        if part is None:
            unknown.append(key)
        else:
            parts[part][key[len(prefixes[part]):]] = value
    if unknown:
        raise PAEInputError("model_name", f"{source} holds weights outside the DiT, autoencoder and "
                            f"conditioners ({', '.join(sorted(unknown)[:4])}); {fix}.")
    for name, part in parts.items():
        if not part:
            raise PAEInputError("model_name", f"{source} has no {name} weights ({prefixes[name]}*); {fix}.")
    return parts


def load_stable_audio_tools_parts(folder: Path, dtype: torch.dtype, text_dim: int) -> dict[str, Any]:
    """Build the DiT, Oobleck VAE and projection model from a stable-audio-tools checkpoint, strictly.

    text_dim is the T5 encoder's width (768 for T5-base); a model whose conditioning width differs has a
    projection after T5, which the checkpoint must then carry.
    """
    config, state = read_stable_audio_tools(folder)
    source = f"'{folder.name}'"
    parts = split_state(state, source)
    model = _section(config, "model")
    dit_config = _section(model, "diffusion", "config")
    pretransform = _section(model, "pretransform", "config")
    encoder = _section(pretransform, "encoder", "config")
    decoder = _section(pretransform, "decoder", "config")
    conditioning = {c.get("id"): c.get("config", {}) for c in _section(model, "conditioning").get("configs", [])}
    timing = conditioning.get("seconds_start") or {}
    try:
        heads = int(dit_config["num_heads"])
        head_dim = int(dit_config["embed_dim"]) // heads
        io_channels = int(dit_config["io_channels"])
        cond_dim = int(dit_config["cond_token_dim"])
        # SAO-Instruct's DiT also takes the clip's latent: read the real input width from the weights.
        in_channels = int(parts["dit"]["preprocess_conv.weight"].shape[1]) if "preprocess_conv.weight" in \
            parts["dit"] else io_channels + int(dit_config.get("input_concat_dim", 0) or 0)
        downsampling = int(pretransform.get("downsampling_ratio", 2048))
        dit_args = dict(sample_size=int(config["sample_size"]) // downsampling, in_channels=in_channels,
                        num_layers=int(dit_config["depth"]), attention_head_dim=head_dim, num_attention_heads=heads,
                        num_key_value_attention_heads=_kv_width(parts["dit"], cond_dim) // head_dim,
                        out_channels=io_channels,
                        cross_attention_dim=cond_dim,
                        time_proj_dim=int(parts["dit"]["timestep_features.weight"].numel()) * 2,
                        global_states_input_dim=int(dit_config["global_cond_dim"]), cross_attention_input_dim=cond_dim)
        vae_args = dict(encoder_hidden_size=int(encoder["channels"]), downsampling_ratios=list(encoder["strides"]),
                        decoder_channels=int(decoder["channels"]), decoder_input_channels=int(decoder["latent_dim"]),
                        audio_channels=int(pretransform.get("io_channels", 2)),
                        channel_multiples=list(encoder["c_mults"]),
                        sampling_rate=int(config["sample_rate"]))
        projection_args = dict(text_encoder_dim=int(text_dim),
                               conditioning_dim=int(_section(model, "conditioning")["cond_dim"]),
                               min_value=int(timing.get("min_val", 0)), max_value=int(timing.get("max_val", 512)))
    except (KeyError, TypeError, ValueError) as exc:
        raise PAEInputError("model_name", f"{source}/{CONFIG_NAME} lacks or garbles a setting ({exc!s:.80}); "
                            f"{_FIX}.") from None
    if int(encoder.get("latent_dim", encoder["channels"])) != int(encoder["channels"]):
        _refuse_oobleck_width(source)
    return build_parts(parts, dit_args, vae_args, projection_args, dtype, source, _FIX)


def build_parts(parts: dict[str, dict[str, torch.Tensor]], dit_args: dict[str, Any], vae_args: dict[str, Any],
                projection_args: dict[str, Any], dtype: torch.dtype, source: str, fix: str) -> dict[str, Any]:
    """The DiT, Oobleck VAE and projection model built from their arguments and filled strictly from the parts."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    common = dict(source=source, fix=fix, input_name="model_name")
    dit = build_and_load(lambda: StableAudioDiTModel(**dit_args), convert_dit(parts["dit"]),
                         what="the DiT (keys in diffusers naming)",
                         **common)
    vae = build_and_load(lambda: AutoencoderOobleck(**vae_args),
                         convert_autoencoder(parts["autoencoder"], len(vae_args["downsampling_ratios"])),
                         what="the Oobleck autoencoder (keys in diffusers naming)", **common)
    projection = build_and_load(lambda: StableAudioProjectionModel(**projection_args),
                                convert_conditioners(parts["conditioners"]),
                                what="the timing conditioners (keys in diffusers naming)",
                                **common)
    return {"transformer": _cast(dit, dtype), "vae": _cast(vae, dtype), "projection_model": _cast(projection, dtype)}


def _refuse_oobleck_width(source: str) -> None:
    raise PAEInputError("model_name", f"{source}: an Oobleck encoder whose latent width differs from its channel "
                        "count has no diffusers equivalent; only Stable Audio Open's autoencoder is supported.")


# ==================================================================================== single files
class SafetensorsHeader(NamedTuple):
    """A .safetensors file's tensor entries (name -> dtype, shape, data_offsets) and where their data starts."""

    tensors: dict[str, dict[str, Any]]
    data_start: int

    @property
    def needed_bytes(self) -> int:
        """The file size the header promises."""
        return self.data_start + max((int(t["data_offsets"][1]) for t in self.tensors.values()), default=0)

    def shape(self, name: str) -> tuple[int, ...] | None:
        """A tensor's shape, None where the file has no such tensor."""
        entry = self.tensors.get(name)
        return None if entry is None else tuple(int(n) for n in entry["shape"])


_headers: dict[tuple[str, int, int], SafetensorsHeader | None] = {}


def _parse_header(path: Path) -> SafetensorsHeader | None:
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8).ljust(8, b"\xff"), "little")
        if not 2 <= length <= _HEADER_LIMIT:
            return None
        raw = json.loads(file.read(length))
    if not isinstance(raw, dict):
        return None
    tensors = {k: v for k, v in raw.items() if k != "__metadata__"}
    for entry in tensors.values():
        if not (isinstance(entry, dict) and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2):
            return None
    return SafetensorsHeader(tensors, 8 + length)


def safetensors_header(path: Path) -> SafetensorsHeader | None:
    """A .safetensors file's header (its first bytes only, no tensor read), None if it is not one."""
    # Cached per file version: listing a checkpoints folder again costs one stat per file.
    try:
        stat = path.stat()
        key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
        if key not in _headers:
            if len(_headers) > 512:
                _headers.clear()
            _headers[key] = _parse_header(path)
        return _headers[key]
    except (OSError, ValueError, TypeError):  # unreadable, not JSON, not UTF-8, odd numbers: not a safetensors file
        return None


def is_stable_audio_header(header: SafetensorsHeader | None) -> bool:
    """True when the key names are a stable-audio-tools Stable Audio state dict (DiT, Oobleck, both timings)."""
    # The DiT by its rotary buffer, as ComfyUI's model_detection does.
    if header is None or ROTARY_KEY not in header.tensors:
        return False
    wanted = (PREFIXES["autoencoder"], PREFIXES["conditioners"] + "seconds_start.",
              PREFIXES["conditioners"] + "seconds_total.")
    return all(any(name.startswith(prefix) for name in header.tensors) for prefix in wanted)


def is_stable_audio_file(path: Path) -> bool:
    """True for a .safetensors single-file Stable Audio Open / SAO-Instruct checkpoint (its header read only)."""
    return path.suffix == ".safetensors" and is_stable_audio_header(safetensors_header(path))


def check_stable_audio_file(path: Path, label: str) -> None:
    """Refuse, in one line naming the file, anything but a complete single-file Stable Audio checkpoint."""
    if path.suffix != ".safetensors":
        raise PAEInputError("model_name", f"{label} is a {path.suffix or 'suffix-less'} file; single-file Stable Audio "
                            "checkpoints are read as .safetensors only (a pickle is never unpickled to find out what "
                            "it is). Use stable-audio-open-1.0.safetensors, or put a stable-audio-tools model.ckpt "
                            f"with its {CONFIG_NAME} in a folder under models/diffusers/.")
    header = safetensors_header(path)
    if header is None:
        raise PAEInputError("model_name", f"{label} is not a readable safetensors file (its header does not parse); "
                            "download it again.")
    if not is_stable_audio_header(header):
        raise PAEInputError("model_name", f"{label} is not a Stable Audio Open or SAO-Instruct checkpoint: it lacks "
                            f"the stable-audio-tools keys ({ROTARY_KEY}, {PREFIXES['autoencoder']}*, "
                            f"{PREFIXES['conditioners']}seconds_start/seconds_total.*); {_FILE_FIX}.")
    size = path.stat().st_size
    if size < header.needed_bytes:
        raise PAEInputError("model_name", f"{label} is truncated: its header lists {header.needed_bytes} bytes but "
                            f"the file holds {size}; download it again.")


def _layer_count(dit: dict[str, torch.Tensor]) -> int:
    return len({int(m.group(1)) for key in dit if (m := re.match(r"transformer\.layers\.(\d+)\.", key))})


def infer_geometry(parts: dict[str, dict[str, torch.Tensor]], rotary: torch.Tensor | None, text_dim: int,
                   source: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(DiT, Oobleck, projection) constructor arguments read from the weights' shapes, the rest as released."""
    def shape(part: str, key: str) -> tuple[int, ...]:
        tensor = parts[part].get(key)
        if tensor is None:
            raise PAEInputError("model_name", f"{source} lacks {PREFIXES[part]}{key}, which every Stable Audio Open "
                                f"checkpoint has; {_FILE_FIX}.")
        return tuple(tensor.shape)

    def refuse(what: str) -> None:
        raise PAEInputError("model_name", f"{source}: {what}; {_FILE_FIX}.")

    # DiT. stable-audio-tools rotates max(head_dim / 2, 32) features, so a head up to 64 wide reads as the released 64.
    width, in_channels = shape("dit", "transformer.project_in.weight")
    head_dim = max(RELEASED_HEAD_DIM, 4 * (rotary.numel() if rotary is not None else 0))
    kv_rows, _ = shape("dit", "transformer.layers.0.cross_attn.to_kv.weight")
    if width % head_dim or kv_rows % (2 * head_dim):
        refuse(f"the DiT's width {width} and cross-attention key width {kv_rows // 2} are not whole numbers of "
               f"{head_dim}-wide heads")
    cond_width, cond_in = shape("dit", "to_cond_embed.0.weight")
    global_in = shape("dit", "to_global_embed.0.weight")[1]
    timing_width = shape("conditioners", "seconds_start.embedder.embedding.1.weight")[0]
    if cond_in != timing_width or global_in != 2 * timing_width:
        refuse(f"the DiT takes {cond_in}-wide text keys and a {global_in}-wide global condition, but its timing "
               f"conditioners give {timing_width} (both together {2 * timing_width})")
    # Oobleck: the first conv gives the channel count, each block's strided conv (kernel 2·stride) its stride and width.
    channels, audio_channels, _ = shape("autoencoder", "encoder.layers.0.weight_v")
    strides, multiples = [], []
    while (conv := parts["autoencoder"].get(f"encoder.layers.{len(strides) + 1}.layers.4.weight_v")) is not None:
        out, _, kernel = conv.shape
        if out % channels or kernel % 2:
            refuse(f"Oobleck encoder block {len(strides) + 1} ({out} channels, kernel {kernel}) is not a multiple of "
                   f"{channels} channels with a kernel of twice its stride")
        strides.append(int(kernel) // 2)
        multiples.append(int(out) // channels)
    if not strides:
        refuse("the Oobleck encoder has no downsampling blocks")
    encoded = shape("autoencoder", f"encoder.layers.{len(strides) + 2}.weight_v")[0]
    latent = shape("autoencoder", "decoder.layers.0.weight_v")[1]
    if encoded != channels:
        _refuse_oobleck_width(source)
    if encoded != 2 * latent:
        refuse(f"the Oobleck encoder gives {encoded} channels, not twice the decoder's {latent} (mean and scale)")
    hop = math.prod(strides)
    dit_args = dict(sample_size=RELEASED_SAMPLE_SIZE // hop, in_channels=in_channels, num_layers=_layer_count(
                        parts["dit"]), attention_head_dim=head_dim, num_attention_heads=width // head_dim,
                    num_key_value_attention_heads=kv_rows // 2 // head_dim,
                    out_channels=shape("dit", "transformer.project_out.weight")[0], cross_attention_dim=cond_width,
                    time_proj_dim=2 * shape("dit", "timestep_features.weight")[0],
                    global_states_input_dim=global_in, cross_attention_input_dim=cond_in)
    vae_args = dict(encoder_hidden_size=channels, downsampling_ratios=strides, channel_multiples=multiples,
                    decoder_channels=shape("autoencoder", f"decoder.layers.{len(strides) + 2}.weight_v")[1],
                    decoder_input_channels=latent, audio_channels=audio_channels,
                    sampling_rate=RELEASED_SAMPLE_RATE)
    projection_args = dict(text_encoder_dim=int(text_dim), conditioning_dim=timing_width,
                           min_value=RELEASED_SECONDS[0], max_value=RELEASED_SECONDS[1])
    return dit_args, vae_args, projection_args


def load_single_file_parts(path: Path, dtype: torch.dtype, text_dim: int, label: str) -> dict[str, Any]:
    """The DiT, Oobleck VAE and projection model from one stable-audio-tools .safetensors (label: its listed name)."""
    check_stable_audio_file(path, f"'{label}'")
    state = tensor_dict(read_checkpoint(path, "model_name", "checkpoint", _FILE_FIX), "model_name", f"'{label}'",
                        _FILE_FIX)
    rotary = state.get(ROTARY_KEY)
    parts = split_state(state, f"'{label}'", _FILE_FIX)
    dit_args, vae_args, projection_args = infer_geometry(parts, rotary, text_dim, f"'{label}'")
    return build_parts(parts, dit_args, vae_args, projection_args, dtype, f"'{label}'", _FILE_FIX)


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    # Module.to, not ModelMixin.to: the latter warns about float32-only modules, of which these models have none.
    return torch.nn.Module.to(module, dtype).eval()
