"""Impulse (salt-and-pepper) noise: a share of pixel values set to 0 or 1, half each (ImageNet-C
``impulse_noise``, scikit-image's ``'s&p'`` mode)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fakeproof.corruptions._base import check_images, check_severity, finish, generator_or_default, level


def corrupt(images: Tensor, *, severity: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """Each value independently: salt (1) with probability ``amount / 2``, pepper (0) with
    ``amount / 2``, kept otherwise; ``amount`` from ``severity``, draws from ``generator``."""
    images = check_images(images)
    if check_severity(severity) == 0:
        return images.clone()
    amount = level("salt_pepper", severity)
    u = torch.rand(images.shape, generator=generator_or_default(generator)).to(images.device)
    out = torch.where(u < amount / 2, 1.0, images.float())
    out = torch.where((u >= amount / 2) & (u < amount), 0.0, out)
    return finish(out)
