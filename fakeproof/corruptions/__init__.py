"""Common corruptions for evaluating detectors on re-encoded, noisy, blurred or re-lit video.

One corruption per module, one call signature (as :mod:`fakeproof.attacks`)::

    out = corrupt(images, *, severity, generator=None)

``images`` float (N, 3, H, W) in [0, 1]; ``severity`` 0-5 (0 is the identity, byte for byte);
``generator`` a CPU :class:`torch.Generator` for the random ones. Outputs are float32 in [0, 1] on
multiples of 1/255. The levels of severities 1-5 are defined once, in :data:`LEVELS`
(``_base.py``), with their sources: ImageNet-C (Hendrycks & Dietterich, ICLR 2019) and
DeeperForensics-1.0 (Jiang et al., CVPR 2020).

==============  ===============================================  ================================
name            what                                             severity 1 .. 5
==============  ===============================================  ================================
jpeg            JPEG re-compression per crop                     quality 25, 18, 15, 10, 7
h264            the video's crops re-encoded by libx264 (ffmpeg)  CRF 23, 28, 33, 38, 43
gaussian_noise  additive white Gaussian noise                    sigma 0.032 .. 0.224
salt_pepper     impulse noise (values set to 0 or 1)             share 0.03 .. 0.27
gaussian_blur   Gaussian blur                                    kernel 7 .. 21 px (sigma k / 6)
brightness      HSV value raised                                 +0.1 .. +0.5
contrast        contrast about the channel mean                  factor 0.85 .. 0.35
downscale       shrink and re-enlarge (bilinear)                 factor 2 .. 6
==============  ===============================================  ================================

The names are listed once, in :data:`fakeproof.config.CORRUPTION_NAMES` (the params loader
validates ``eval.corruptions`` against them without importing torch); :data:`CORRUPTIONS` must
hold exactly those, checked on import.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from fakeproof.config import CORRUPTION_NAMES
from fakeproof.corruptions import (brightness, contrast, downscale, gaussian_blur, gaussian_noise, h264,
                                   jpeg, salt_pepper)
from fakeproof.corruptions._base import LEVELS, SEVERITIES, CorruptionError, check_severity, level
from fakeproof.errors import registered

CorruptionFn = Callable[..., Tensor]

CORRUPTIONS: dict[str, CorruptionFn] = {
    "jpeg": jpeg.corrupt,
    "h264": h264.corrupt,
    "gaussian_noise": gaussian_noise.corrupt,
    "salt_pepper": salt_pepper.corrupt,
    "gaussian_blur": gaussian_blur.corrupt,
    "brightness": brightness.corrupt,
    "contrast": contrast.corrupt,
    "downscale": downscale.corrupt,
}

if tuple(CORRUPTIONS) != tuple(CORRUPTION_NAMES) or tuple(LEVELS) != tuple(CORRUPTION_NAMES):
    raise ImportError("fakeproof.corruptions: CORRUPTIONS and LEVELS must list exactly "
                      "fakeproof.config.CORRUPTION_NAMES, in its order")


def get_corruption(name: str) -> CorruptionFn:
    """The corruption registered as ``name``; unknown names raise :class:`CorruptionError`."""
    return registered(CORRUPTIONS, name, CorruptionError, f"corruption {name!r} is not registered")


__all__ = ["CORRUPTIONS", "LEVELS", "SEVERITIES", "CorruptionError", "CorruptionFn", "check_severity",
           "get_corruption", "level"]
