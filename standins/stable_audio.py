"""A tiny, randomly initialised Stable Audio Open saved as a diffusers folder, for tests; never real weights.

Components are saved one by one and model_index.json and the scheduler config are written as data, so building
(and the pack's loading) needs no torchsde, which diffusers' CosineDPMSolverMultistepScheduler imports.
"""

from __future__ import annotations

import json
import os
import pathlib

import torch

# Real facts kept: Oobleck VAE at 44.1 kHz stereo, 64 latent channels, downsampling 2·4·4·8·8 = 2048 samples per
# latent frame (21.5 Hz); T5 text states of width 768; timing conditioning (seconds start / end) as two extra
# cross-attention tokens and as the global condition; the scheduler's sigma range and v-prediction.
_SCHEDULER = {"_class_name": "CosineDPMSolverMultistepScheduler", "sigma_min": 0.3, "sigma_max": 500.0,
              "sigma_data": 1.0, "sigma_schedule": "exponential", "solver_order": 2, "prediction_type": "v_prediction",
              "rho": 7.0, "solver_type": "midpoint", "lower_order_final": True, "euler_at_final": False,
              "final_sigmas_type": "zero", "num_train_timesteps": 1000}


def build_tiny_stable_audio(folder: str | os.PathLike, *, seed: int = 0, in_channels: int = 64,
                            max_seconds: float = 47.0, head_dim: int = 8, heads: int = 4) -> pathlib.Path:
    """Build and save a tiny Stable Audio Open folder; in_channels=128 gives SAO-Instruct's input-concat DiT."""
    # head_dim=64 (released, with heads=2): a DiT a single file describes (its shapes do not say the head width).
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from .common import t5_tokenizer

    out = pathlib.Path(folder)
    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=768, d_kv=8, d_ff=32, num_layers=1,
                                           num_heads=2))
    projection = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0, max_value=512)
    # The encoder's last width is mean + scale of the latent, so 128 gives the real 64 latent channels.
    vae = AutoencoderOobleck(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8],
                             channel_multiples=[1, 1, 1, 1, 1], decoder_channels=8, decoder_input_channels=64,
                             audio_channels=2, sampling_rate=44100)
    transformer = StableAudioDiTModel(sample_size=int(max_seconds * 44100 / 2048) + 1, in_channels=in_channels,
                                      num_layers=2, attention_head_dim=head_dim, num_attention_heads=heads,
                                      num_key_value_attention_heads=max(heads // 2, 1), out_channels=64,
                                      cross_attention_dim=768,
                                      time_proj_dim=32, global_states_input_dim=1536, cross_attention_input_dim=768)
    for name, module in (("text_encoder", text_encoder), ("projection_model", projection), ("vae", vae),
                         ("transformer", transformer)):
        module.save_pretrained(out / name)
    tokenizer.save_pretrained(out / "tokenizer")
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(_SCHEDULER, indent=2))
    index = {"_class_name": "StableAudioPipeline", "_diffusers_version": "0.42.1",
             "projection_model": ["stable_audio", "StableAudioProjectionModel"],
             "scheduler": ["diffusers", "CosineDPMSolverMultistepScheduler"],
             "text_encoder": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "T5TokenizerFast"],
             "transformer": ["diffusers", "StableAudioDiTModel"], "vae": ["diffusers", "AutoencoderOobleck"]}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def _dit_to_stable_audio_tools(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers StableAudioDiTModel weights under stable-audio-tools' DiffusionTransformer names (as released)."""
    import re

    out: dict[str, torch.Tensor] = {}
    block_names = {"attn1": "self_attn", "attn2": "cross_attn", "norm1": "pre_norm", "norm2": "cross_attend_norm",
                   "norm3": "ff_norm"}
    for key, value in state.items():
        match = re.match(r"transformer_blocks\.(\d+)\.(.+)", key)
        if match is None:
            top = {"proj_in.weight": "transformer.project_in.weight",
                   "proj_out.weight": "transformer.project_out.weight",
                   "time_proj.weight": "timestep_features.weight"}.get(key)
            if top is None:
                head, _, rest = key.partition(".")
                top = {"timestep_proj": "to_timestep_embed", "global_proj": "to_global_embed",
                       "cross_attention_proj": "to_cond_embed"}.get(head, head) + "." + rest
            out[top] = value[:, None] if key == "time_proj.weight" else value
            continue
        layer, rest = match.groups()
        prefix = f"transformer.layers.{layer}."
        part, _, leaf = rest.partition(".")
        if part.startswith("norm"):
            out[prefix + block_names[part] + "." + {"weight": "gamma", "bias": "beta"}[leaf]] = value
        elif part == "ff":
            out[prefix + "ff.ff." + leaf.removeprefix("net.")] = value
        elif leaf == "to_out.0.weight":
            out[prefix + block_names[part] + ".to_out.weight"] = value
    for layer in sorted({int(m.group(1)) for k in state if (m := re.match(r"transformer_blocks\.(\d+)\.", k))}):
        src = f"transformer_blocks.{layer}."
        dst = f"transformer.layers.{layer}."
        out[dst + "self_attn.to_qkv.weight"] = torch.cat([state[src + f"attn1.to_{n}.weight"] for n in "qkv"])
        out[dst + "cross_attn.to_q.weight"] = state[src + "attn2.to_q.weight"]
        out[dst + "cross_attn.to_kv.weight"] = torch.cat([state[src + f"attn2.to_{n}.weight"] for n in "kv"])
    return {"model.model." + k: v for k, v in out.items()}


def _oobleck_to_stable_audio_tools(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderOobleck weights under stable-audio-tools' OobleckEncoder/Decoder sequential indices."""
    import re

    def unit(rest: str) -> str:  # inside a residual unit: snake, dilated conv, snake, 1x1 conv
        for name, index in (("snake1", 0), ("conv1", 1), ("snake2", 2), ("conv2", 3)):
            rest = re.sub(rf"^{name}\.", f"layers.{index}.", rest)
        return rest

    out = {}
    for key, value in state.items():
        coder, _, rest = key.partition(".")
        if rest.startswith("conv1."):
            new = f"{coder}.layers.0.{rest[len('conv1.'):]}"
        elif rest.startswith("snake1."):
            new = f"{coder}.layers.{blocks + 1}.{rest[len('snake1.'):]}"
        elif rest.startswith("conv2."):
            new = f"{coder}.layers.{blocks + 2}.{rest[len('conv2.'):]}"
        else:
            match = re.match(r"block\.(\d+)\.(\w+?)(\d?)\.(.+)", rest)
            index, name, number, leaf = match.groups()
            layer = f"{coder}.layers.{int(index) + 1}"
            if name == "res_unit":
                position = int(number) - 1 if coder == "encoder" else int(number) + 1
                new = f"{layer}.layers.{position}.{unit(leaf)}"
            else:  # the block's own snake and (transposed) strided conv
                position = {"encoder": {"snake": 3, "conv": 4}, "decoder": {"snake": 0, "conv_t": 1}}[coder][name]
                new = f"{layer}.layers.{position}.{leaf}"
        out["pretransform.model." + new] = value.reshape(-1) if value.dim() == 3 and value.shape[0] == 1 \
            and value.shape[-1] == 1 and "snake" in key else value
    return out


def stable_audio_tools_state(diffusers_folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A tiny diffusers Stable Audio folder as a stable-audio-tools release: (state dict, model_config.json)."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel

    src = pathlib.Path(diffusers_folder)
    dit = StableAudioDiTModel.from_pretrained(src / "transformer")
    vae = AutoencoderOobleck.from_pretrained(src / "vae")
    projection = StableAudioProjectionModel.from_pretrained(src / "projection_model")
    c, v, p = dit.config, vae.config, projection.config
    state = _dit_to_stable_audio_tools(dit.state_dict())
    head_dim = c.attention_head_dim
    rotary = max(head_dim // 2, 32)
    state["model.model.transformer.rotary_pos_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, rotary, 2).float()
                                                                                / rotary)
    state.update(_oobleck_to_stable_audio_tools(vae.state_dict(), len(v.downsampling_ratios)))
    for name, conditioner in (("seconds_start", projection.start_number_conditioner),
                              ("seconds_total", projection.end_number_conditioner)):
        for key, value in conditioner.state_dict().items():
            state[f"conditioner.conditioners.{name}.embedder."
                  f"{key.replace('time_positional_embedding', 'embedding')}"] = value
    state = {k: t.contiguous().clone() for k, t in state.items()}
    hop = int(torch.tensor(v.downsampling_ratios).prod())
    oobleck = {"channels": v.encoder_hidden_size, "c_mults": list(v.channel_multiples),
               "strides": list(v.downsampling_ratios)}
    config = {
        "model_type": "diffusion_cond", "sample_size": c.sample_size * hop, "sample_rate": v.sampling_rate,
        "audio_channels": v.audio_channels,
        "model": {
            "pretransform": {"type": "autoencoder", "config": {
                "encoder": {"type": "oobleck", "config": {"in_channels": v.audio_channels,
                                                          "latent_dim": v.encoder_hidden_size, **oobleck}},
                "decoder": {"type": "oobleck", "config": {"out_channels": v.audio_channels, **oobleck,
                                                          "channels": v.decoder_channels,
                                                          "latent_dim": v.decoder_input_channels}},
                "bottleneck": {"type": "vae"}, "latent_dim": v.decoder_input_channels, "downsampling_ratio": hop,
                "io_channels": v.audio_channels}},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 128}},
                {"id": "seconds_start", "type": "number", "config": {"min_val": p.min_value, "max_val": p.max_value}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": p.min_value, "max_val": p.max_value}}],
                "cond_dim": p.conditioning_dim},
            "diffusion": {"cross_attention_cond_ids": ["prompt", "seconds_start", "seconds_total"],
                          "global_cond_ids": ["seconds_start", "seconds_total"], "type": "dit",
                          "config": {"io_channels": c.out_channels, "embed_dim": c.num_attention_heads * head_dim,
                                     "depth": c.num_layers, "num_heads": c.num_attention_heads,
                                     "cond_token_dim": c.cross_attention_dim,
                                     "global_cond_dim": c.global_states_input_dim,
                                     "project_cond_tokens": False, "transformer_type": "continuous_transformer",
                                     **({"input_concat_dim": c.in_channels - c.out_channels}
                                        if c.in_channels != c.out_channels else {})}},
            "io_channels": c.out_channels},
    }
    return state, config


def save_stable_audio_tools_checkpoint(diffusers_folder: str | os.PathLike, out_folder: str | os.PathLike, *,
                                       weights_name: str = "model.safetensors") -> pathlib.Path:
    """Write a tiny diffusers Stable Audio folder as a stable-audio-tools release: model_config.json and one state
    dict in stable-audio-tools' key names (DiT, Oobleck, timing conditioners), T5 and tokenizer copied beside it."""
    import shutil

    from safetensors.torch import save_file

    src, out = pathlib.Path(diffusers_folder), pathlib.Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    state, config = stable_audio_tools_state(src)
    (out / "model_config.json").write_text(json.dumps(config, indent=2))
    if weights_name.endswith(".safetensors"):
        save_file(state, str(out / weights_name))
    else:
        torch.save({"state_dict": state}, out / weights_name)
    for sub in ("text_encoder", "tokenizer"):
        shutil.copytree(src / sub, out / sub, dirs_exist_ok=True)
    return out


def save_single_file_checkpoint(diffusers_folder: str | os.PathLike, path: str | os.PathLike) -> pathlib.Path:
    """Write a tiny Stable Audio folder as ComfyUI keeps it in checkpoints/: the state dict alone, no config or T5."""
    from safetensors.torch import save_file

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(stable_audio_tools_state(diffusers_folder)[0], str(out))
    return out


def save_t5_text_encoder(diffusers_folder: str | os.PathLike, path: str | os.PathLike,
                         support_folder: str | os.PathLike) -> pathlib.Path:
    """Write the tiny folder's T5 as t5-base.safetensors is laid out, decoder included; config and tokenizer beside."""
    # google-t5/t5-base's model.safetensors: a whole T5ForConditionalGeneration in transformers' names (the decoder
    # randomly initialised here); config.json and the tokenizer files go into support_folder.
    import shutil
    import tempfile

    from transformers import T5EncoderModel, T5ForConditionalGeneration

    src, out, support = pathlib.Path(diffusers_folder), pathlib.Path(path), pathlib.Path(support_folder)
    encoder = T5EncoderModel.from_pretrained(src / "text_encoder")
    torch.manual_seed(0)
    whole = T5ForConditionalGeneration(encoder.config)
    missing, unexpected = whole.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or not all(k.startswith(("decoder.", "lm_head.")) for k in missing):
        raise RuntimeError(f"the encoder does not fit T5ForConditionalGeneration: {missing}, {unexpected}")
    with tempfile.TemporaryDirectory() as scratch:
        whole.save_pretrained(scratch)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pathlib.Path(scratch) / "model.safetensors", out)
        support.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pathlib.Path(scratch) / "config.json", support / "config.json")
    shutil.copytree(src / "tokenizer", support, dirs_exist_ok=True)
    return out
