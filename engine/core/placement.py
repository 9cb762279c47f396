"""Where tensors are made: on the device a caller names, never on PyTorch's default device by accident.

The pack makes every tensor with an explicit device. Libraries that take no device argument (tokenizers, feature
extractors) make theirs on the default device, which a user's environment may have changed; `made_on_cpu` pins them
to the CPU, and the caller moves them to the model. Random numbers are drawn on the CPU from CPU generators
(core/checks.cpu_generator) so that a seed means the same numbers on any device.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

CPU = torch.device("cpu")


@contextmanager
def made_on_cpu() -> Iterator[None]:
    """Tensors a library makes inside this block without a device land on the CPU."""
    with CPU:
        yield


def cpu_randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Standard normal float32 noise from a CPU generator, made on the CPU (then moved by the caller)."""
    return torch.randn(tuple(shape), generator=generator, device=CPU, dtype=torch.float32)


def weight_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's first floating weight: what its inputs are cast to at each call.

    diffusers' ModelMixin.dtype first walks every submodule for casting hooks (the pack attaches none); on a UNet
    that walk costs ~10 ms, which a denoising step paid three times."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32
