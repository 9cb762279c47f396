"""Tango and Tango 2 (declare-lab) from their released files, behind the Backbone interface."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..core.checkpoints import key_report
from ..core.errors import PAEInputError
from ..core.placement import weight_dtype
from .base import CrossAttentionSite, TextConditioning, tokenize_checked, unet_attention_blocks
from .mel_vae import MelVAEBackbone
from .tango_checkpoint import (DEFAULT_STFT, MAIN_CONFIG, MAIN_WEIGHTS, STFT_CONFIG, STFT_WEIGHTS, T5_CONFIG_FILE,
                               UNET_CONFIG_FILE, VAE_CONFIG,
                               VAE_WEIGHTS, check_main_config, load_strict, load_tokenizer, read_release_json,
                               read_weights, release_weights, t5_config_for, unet_config_for, vae_config_from_original,
                               vae_state_from_original, vocoder_config_from_state, vocoder_state_from_original)

# Tango's training clips had the mean removed and were peak-normalised to 0.5 (tools/torch_tools.py of the reference).
# Trained on 10.24 s clips; the same limit as AudioLDM2 (the VAE's mid-block attention grows quadratically).
_MAX_DURATION_S = 30.0
# The noise schedule: Tango's main_config.json names scheduler_name "stabilityai/stable-diffusion-2-1", whose
# scheduler/scheduler_config.json holds this (the reference loads it from the hub at run time; the pack carries it).
SD21_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}

def make_tango_scheduler() -> Any:
    """A DDIM scheduler on Stable Diffusion 2.1's schedule (v-prediction), which Tango was trained with."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD21_SCHEDULE)


# =========================================================================================== mel front end
class TangoMelFrontEnd:
    """Waveform [B, T] -> log-mel [B, T // hop, n_mels], framed as Tango's TacotronSTFT frames it.

    Unlike AudioLDM2's front end, the reference reflect-pads n_fft / 2 per side (frames centred on multiples of the
    hop) and keeps the first T // hop frames (it cuts 10.24 s to 1024 frames).
    """

    def __init__(self, mel_basis: torch.Tensor, n_fft: int, hop: int, win_length: int):
        self.mel_basis = mel_basis.to(torch.float32)
        self.n_fft, self.hop, self.win_length = int(n_fft), int(hop), int(win_length)
        self.n_mels = int(mel_basis.shape[0])

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        x = waveform.to(torch.float32).clamp(-1.0, 1.0)
        frames = x.shape[-1] // self.hop
        pad = self.n_fft // 2
        x = torch.nn.functional.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]
        # A periodic Hann window of win_length, zero-padded to n_fft in the middle (scipy get_window + pad_center).
        window = torch.hann_window(self.win_length, device=x.device)
        left = (self.n_fft - self.win_length) // 2
        window = torch.nn.functional.pad(window, (left, self.n_fft - self.win_length - left))
        spec = torch.stft(x, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=window, center=False,
                          onesided=True, return_complex=True).abs()[..., :frames]
        mel = self.mel_basis.to(x.device) @ spec
        return torch.log(mel.clamp_min(1e-5)).transpose(1, 2)  # dynamic-range compression, C = 1


# ============================================================================================ backbone
def cross_attention_sites_of(unet: torch.nn.Module) -> list[CrossAttentionSite]:
    """Every true cross-attention layer of a diffusers UNet2DConditionModel, all fed by the T5 stream."""
    sites = []
    for prefix, place, downsampling, block in unet_attention_blocks(unet):
        for a, transformer in enumerate(block.attentions):
            for t, layer in enumerate(getattr(transformer, "transformer_blocks", [])):
                attn = getattr(layer, "attn2", None)
                if attn is None or not attn.is_cross_attention:
                    continue
                sites.append(CrossAttentionSite(
                    module_path=f"{prefix}.attentions.{a}.transformer_blocks.{t}.attn2", stream="t5",
                    key_dim=attn.to_k.in_features, heads=attn.heads, place=place, downsampling=downsampling))
    return sites


class TangoBackbone(MelVAEBackbone):
    """Tango / Tango 2: AudioLDM's mel VAE (8 latent channels, /4 in time and frequency) and HiFi-GAN,
    a Stable-Diffusion-2.1-shaped v-prediction UNet, FLAN-T5-large text conditioning."""

    family = "tango"
    sample_rate = 16000
    channels = 1
    latent_channels = 8
    max_duration_s = _MAX_DURATION_S
    prediction_type = "v_prediction"
    text_streams = ("t5",)
    word_stream = "t5"

    def __init__(self, *, unet: Any, text_encoder: Any, tokenizer: Any, vae: Any, vocoder: Any,
                 mel: TangoMelFrontEnd, name: str, folder: Path):
        self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer
        self.vae, self.vocoder, self.mel = vae, vocoder, mel
        self.name = name
        self.folder = folder
        self._read_shapes()
        self.prediction_type = SD21_SCHEDULE["prediction_type"]

    # ------------------------------------------------------------------------------------ modules
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.unet

    parts = {"text": ("text_encoder",), "denoiser": ("unet",), "vae": ("vae", "vocoder")}

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Every weight-bearing part, for device placement and memory accounting."""
        return {"unet": self.unet, "vae": self.vae, "vocoder": self.vocoder, "text_encoder": self.text_encoder}

    def make_scheduler(self) -> Any:
        return make_tango_scheduler()


    # ---------------------------------------------------------------------------------------- text
    def _tokenize(self, prompts: list[str]) -> Any:
        # As the reference: pad to the longest prompt, keys past a prompt's end masked (the empty prompt is '</s>').
        return tokenize_checked(self.tokenizer, prompts, True, "T5")

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextConditioning:
        self.activate("text")
        device = self.text_encoder.device
        t5_in = self._tokenize(list(prompts))
        mask = t5_in.attention_mask.to(device)
        t5 = self.text_encoder(input_ids=t5_in.input_ids.to(device), attention_mask=mask)[0]
        tokens = [self.tokenizer.convert_ids_to_tokens(ids[keep.bool()].tolist())
                  for ids, keep in zip(t5_in.input_ids, t5_in.attention_mask)]
        return TextConditioning(prompts=list(prompts), streams={"t5": t5.to(self.device)},
                                masks={"t5": mask.to(self.device)}, tokens={"t5": tokens})

    # ----------------------------------------------------------------------------------- denoising
    def predict(self, latents: torch.Tensor, timestep: torch.Tensor | float, conditioning: TextConditioning,
                input_latent: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input_latent(input_latent)
        unet = self.unet
        dtype = weight_dtype(unet)
        return unet(latents.to(dtype), timestep,
                    encoder_hidden_states=conditioning.streams["t5"].to(dtype),
                    encoder_attention_mask=conditioning.masks.get("t5"), return_dict=False)[0]

    def cross_attention_sites(self) -> list[CrossAttentionSite]:
        return cross_attention_sites_of(self.unet)


# ============================================================================================== loading
def load_tango_backbone(folder: Path, dtype: torch.dtype, device: torch.device) -> TangoBackbone:
    """Build Tango from a release folder: strict loads of the UNet, T5 encoder, VAE and vocoder; tokenizer from disk.

    Weights stay on the CPU in the requested dtype; the caller moves them to the device.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig, T5Config, T5EncoderModel

    from .mel import _mel_basis

    for required in (MAIN_CONFIG, VAE_CONFIG):
        if not (folder / required).is_file():
            raise PAEInputError("model_name", f"'{folder.name}' has no {required}; download the whole release "
                                "(Hugging Face declare-lab/tango or declare-lab/tango2) into it.")
    main = read_release_json(folder / MAIN_CONFIG, folder)
    check_main_config(main, folder)
    tokenizer = load_tokenizer(folder)
    stft = dict(DEFAULT_STFT)
    if (folder / STFT_CONFIG).is_file():
        stft.update(read_release_json(folder / STFT_CONFIG, folder))

    unet_config = unet_config_for(folder, main)
    t5_config = T5Config(**{k: v for k, v in t5_config_for(folder, main).items() if not k.startswith("_")})
    main_path = release_weights(folder, MAIN_WEIGHTS)
    weights = read_weights(main_path, folder)
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}}
    stray = []
    for key, tensor in weights.items():
        head, _, rest = key.partition(".")
        if head in parts and rest:
            parts[head][rest] = tensor
        else:
            stray.append(key)
    if stray:
        raise PAEInputError("model_name", f"'{folder.name}/{main_path.name}' has weights outside the UNet and the text "
                            f"encoder ({key_report([], stray)}); it is not a Tango / Tango 2 release.")
    te = parts["text_encoder"]
    # The input embedding is shared: accept a file that stores it under only one of its two names.
    for one, other in (("shared.weight", "encoder.embed_tokens.weight"),
                       ("encoder.embed_tokens.weight", "shared.weight")):
        if one in te and other not in te:
            te[other] = te[one]
    source_main = f"'{folder.name}/{main_path.name}'"
    unet = load_strict(lambda: UNet2DConditionModel.from_config(unet_config), parts["unet"], source=source_main,
                       what=f"the UNet ({UNET_CONFIG_FILE} or the built-in Tango config)", prefix="unet.")
    text_encoder = load_strict(lambda: T5EncoderModel(t5_config), te, source=source_main,
                               what=f"the T5 encoder ({T5_CONFIG_FILE} or the built-in FLAN-T5-large config)",
                               prefix="text_encoder.")
    del weights, parts, te

    vae_path = release_weights(folder, VAE_WEIGHTS)
    vae_weights = read_weights(vae_path, folder)
    vae_state = vae_state_from_original({k: v for k, v in vae_weights.items() if not k.startswith("vocoder.")})
    vocoder_state = vocoder_state_from_original({k[len("vocoder."):]: v for k, v in vae_weights.items()
                                                 if k.startswith("vocoder.")})
    del vae_weights
    vae_config = vae_config_from_original(read_release_json(folder / VAE_CONFIG, folder), folder)
    source_vae = f"'{folder.name}/{vae_path.name}'"
    vae = load_strict(lambda: AutoencoderKL(**vae_config), vae_state,
                      what="AudioLDM's VAE as diffusers' AutoencoderKL (names after renaming)", source=source_vae)
    vocoder_config = SpeechT5HifiGanConfig(**vocoder_config_from_state(vocoder_state, int(stft["sampling_rate"]),
                                                                       folder))
    vocoder = load_strict(lambda: SpeechT5HifiGan(vocoder_config), vocoder_state,
                          what="AudioLDM's HiFi-GAN as SpeechT5HifiGan (names after renaming)", source=source_vae,
                          prefix="vocoder.")

    hop, n_fft, n_mels = int(stft["hop_length"]), int(stft["filter_length"]), int(stft["n_mel_channels"])
    if hop != math.prod(vocoder_config.upsample_rates) or n_mels != vocoder_config.model_in_dim:
        raise PAEInputError("model_name", f"'{folder.name}/{STFT_CONFIG}' (hop {hop}, {n_mels} mel bins) does not "
                            f"match the vocoder (hop {math.prod(vocoder_config.upsample_rates)}, "
                            f"{vocoder_config.model_in_dim} mel bins).")
    basis = _mel_basis(int(stft["sampling_rate"]), n_fft, n_mels, float(stft["mel_fmin"]), float(stft["mel_fmax"]))
    stft_path = release_weights(folder, STFT_WEIGHTS)
    if stft_path.is_file():
        stored = read_weights(stft_path, folder).get("mel_basis")
        if stored is None or tuple(stored.shape) != tuple(basis.shape):
            raise PAEInputError("model_name", f"'{folder.name}/{stft_path.name}' has no mel_basis of shape "
                                f"{tuple(basis.shape)} for {STFT_CONFIG}; download both again.")
        basis = stored.to(torch.float32).clone()  # the filters the model was trained with, exactly
    mel = TangoMelFrontEnd(basis, n_fft=n_fft, hop=hop, win_length=int(stft.get("win_length", n_fft)))

    # torch's own .to: diffusers' override warns about fp32-only modules on every cast, though these models have none.
    for module in (unet, vae, vocoder):
        torch.nn.Module.to(module, dtype)
    # T5 overflows in float16 (it was trained in bfloat16): keep the text encoder in float32 then.
    text_encoder.to(torch.float32 if dtype == torch.float16 else dtype)
    return TangoBackbone(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, vocoder=vocoder,
                         mel=mel, name=folder.name, folder=folder)
