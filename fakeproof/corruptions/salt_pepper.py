"""Impulse (salt-and-pepper) noise: a share of pixel values set to 0 or 1, half each (ImageNet-C
``impulse_noise``, scikit-image's ``'s&p'`` mode)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import corruption, finish, generator_or_default


@corruption("salt_pepper")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """Each value independently: salt (1) with probability ``amount / 2``, pepper (0) with
    ``amount / 2``, kept otherwise; ``amount`` from ``severity``, draws from ``generator``."""
    amount = amount
    u = torch.rand(images.shape, generator=generator_or_default(generator)).to(images.device)
    out = torch.where(u < amount / 2, 1.0, images.float())
    out = torch.where((u >= amount / 2) & (u < amount), 0.0, out)
    return finish(out)
