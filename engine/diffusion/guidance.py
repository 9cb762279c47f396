"""Prompts into conditioning and classifier-free guidance around one denoiser call: what every sampler shares."""

from __future__ import annotations

import weakref

import torch

from ..backbones.base import Backbone, TextConditioning
from ..core.errors import PAEInputError
from .steps import guide


# Each model's encodings of the prompts it was given last (Invert and the Fuser of one graph both encode the source
# prompt; ZETA's scales re-encode the target): encoded once, for as long as the model lives.
MAX_REMEMBERED_PROMPTS = 64
_encodings: "weakref.WeakKeyDictionary[Backbone, dict[str, TextConditioning]]" = weakref.WeakKeyDictionary()


def encode_prompts(backbone: Backbone, prompts: list[str], input_name: str) -> TextConditioning:
    """Encode each distinct prompt on its own (so its encoding never depends on the others) and stack them, then
    bring the denoiser in for the steps that follow (inside ComfyUI the text encoders may now be offloaded)."""
    unique = list(dict.fromkeys(prompts))
    remembered = _encodings.setdefault(backbone, {})
    encoded = {}
    for prompt in unique:
        if prompt not in remembered:
            try:
                conditioning = backbone.encode_text([prompt])
            except PAEInputError as exc:
                raise PAEInputError(input_name, exc.message) from None
            if len(remembered) >= MAX_REMEMBERED_PROMPTS:
                remembered.pop(next(iter(remembered)))
            remembered[prompt] = conditioning
        encoded[prompt] = remembered[prompt]
    stacked = TextConditioning.concat([encoded[p] for p in unique])
    backbone.activate("denoiser")
    return stacked.rows([unique.index(p) for p in prompts])


def encode_prompt_pair(backbone: Backbone, positive: str, negative: str) -> TextConditioning:
    """A sampler's [negative, positive] conditioning, the negative encoded as the model's reference pipeline does
    beside the positive (diffusers' AudioLDM2Pipeline pads its T5 tokens to the positive's length)."""
    positive_text = encode_prompts(backbone, [positive], "positive")
    try:
        negative_text = backbone.encode_negative(negative, positive_text)
    except PAEInputError as exc:
        raise PAEInputError("negative", exc.message) from None
    backbone.activate("denoiser")
    return TextConditioning.concat([negative_text, positive_text])


def guided_prediction(backbone: Backbone, latents: torch.Tensor, timestep: float, uncond: TextConditioning,
                      cond: TextConditioning, scales: torch.Tensor, input_latent: torch.Tensor | None = None,
                      ) -> torch.Tensor:
    """The guided model output for a batch of latents: uncond + w (cond − uncond) per row, one model call on the
    stacked halves (the cond half alone when every scale is 1). input_latent goes to both halves (SAO-Instruct)."""
    # Passed only when given, so a denoiser that reads no input latent needs no such argument.
    if torch.all(scales == 1.0):
        extra = {} if input_latent is None else {"input_latent": input_latent}
        return backbone.predict(latents, timestep, cond, **extra).float()
    both = TextConditioning.concat([uncond, cond])
    extra = {} if input_latent is None else {"input_latent": torch.cat([input_latent, input_latent])}
    out = backbone.predict(torch.cat([latents, latents]), timestep, both, **extra).float()
    return guide(*out.chunk(2), scales)


def chunked_prediction(backbone: Backbone, latents: torch.Tensor, timestep: float, uncond: TextConditioning,
                       cond: TextConditioning, scales: torch.Tensor, chunk: int = 0,
                       input_latent: torch.Tensor | None = None) -> torch.Tensor:
    """guided_prediction over the batch `chunk` rows at a time (0: all at once): the denoiser's activations are then
    bounded by the chunk, not by the batch (a song's windows), for the same outputs up to float rounding."""
    rows = latents.shape[0]
    if chunk <= 0 or rows <= chunk:
        return guided_prediction(backbone, latents, timestep, uncond, cond, scales, input_latent)
    parts = [guided_prediction(backbone, latents[i:i + chunk], timestep, uncond.rows(slice(i, i + chunk)),
                               cond.rows(slice(i, i + chunk)), scales[i:i + chunk],
                               None if input_latent is None else input_latent[i:i + chunk])
             for i in range(0, rows, chunk)]
    return torch.cat(parts)
