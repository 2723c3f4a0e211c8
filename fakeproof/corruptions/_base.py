"""Shared conventions of the corruptions: the severity table, checks and 8-bit output.

Every corruption is ``corrupt(images, *, severity, generator=None) -> images``: ``images`` float
(N, 3, H, W) in [0, 1] (for ``h264``, the face crops of one video in frame order); ``severity`` an
integer 0-5, 0 returning ``images`` unchanged (a copy, equal byte for byte), 1-5 the levels of
:data:`LEVELS`; ``generator`` a CPU :class:`torch.Generator` for the random ones (noise), never
the global RNG. The output is float32 in [0, 1] on multiples of 1/255: what an 8-bit frame
delivered by a platform holds.

The levels are applied at the crop's resolution, as ImageNet-C applies its levels to 224 px
images; DeeperForensics-1.0 applies its own to whole frames, where a face spans a few hundred
pixels, so its blur and noise levels are harsher on a 128 px crop than on the frame they were
set for.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from fakeproof.errors import FakeproofError

#: Severities 1-5 of every corruption, defined here once; entry ``k - 1`` is severity ``k``.
#: IN-C: ImageNet-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
#: Corruptions and Perturbations", ICLR 2019, github.com/hendrycks/robustness).
#: DF: DeeperForensics-1.0 (Jiang et al., CVPR 2020, its perturbation code's
#: ``get_distortion_parameter``).
LEVELS: dict[str, tuple[float, ...]] = {
    # JPEG quality (IN-C jpeg_compression)
    "jpeg": (25, 18, 15, 10, 7),
    # libx264 constant rate factor: DF's video compression (VC) is libx264 at CRF 30-40; here
    # from x264's default 23 (what platforms deliver) to 43 in steps of 5
    "h264": (23, 28, 33, 38, 43),
    # noise standard deviation (DF GNC: variances 0.001, 0.002, 0.005, 0.01, 0.05)
    "gaussian_noise": tuple(math.sqrt(v) for v in (0.001, 0.002, 0.005, 0.01, 0.05)),
    # share of pixel values set to 0 or 1 (IN-C impulse_noise, skimage 's&p')
    "salt_pepper": (0.03, 0.06, 0.09, 0.17, 0.27),
    # Gaussian kernel size in pixels, sigma = size / 6 (DF GB)
    "gaussian_blur": (7, 9, 13, 17, 21),
    # added to the HSV value channel (IN-C brightness)
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    # contrast factor about each channel's mean: DF CC factors, IN-C's contrast formula
    "contrast": (0.85, 0.725, 0.6, 0.475, 0.35),
    # downscale factor, then back up, bilinear both ways (DF's 'JPEG' distortion, a pixelation)
    "downscale": (2, 3, 4, 5, 6),
}
SEVERITIES = (1, 2, 3, 4, 5)


class CorruptionError(FakeproofError, ValueError):
    """A corruption could not be applied (an unknown name or severity, an ffmpeg failure)."""


def check_severity(severity: Any) -> int:
    """``severity`` as an int in 0-5 (0: the identity), else :class:`CorruptionError`."""
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= 5:
        raise CorruptionError(f"severity = {severity!r}: use an integer 1-5 (0: no corruption)")
    return severity


def level(name: str, severity: int) -> float:
    """The parameter of ``name`` at ``severity`` (1-5) from :data:`LEVELS`."""
    return LEVELS[name][check_severity(severity) - 1]


def corruption(name: str) -> Callable[[Callable[[Tensor, float, Optional[torch.Generator]], Tensor]],
                                      Callable[..., Tensor]]:
    """Turn ``fn(images, amount, generator)`` into the corruption ``name``'s public
    ``corrupt(images, *, severity, generator=None)``: the input checks, severity 0 as the identity
    (a copy) and the level of ``severity`` (:data:`LEVELS`) are done here, once for all."""
    def wrap(fn: Callable[[Tensor, float, Optional[torch.Generator]], Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def corrupt(images: Tensor, *, severity: int,
                    generator: Optional[torch.Generator] = None) -> Tensor:
            images = check_images(images)
            if check_severity(severity) == 0:
                return images.clone()
            return fn(images, level(name, severity), generator)
        return corrupt
    return wrap


def check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise CorruptionError(f"images of shape {shape}: give float (N, 3, H, W) in [0, 1]")
    return images


def generator_or_default(generator: Optional[torch.Generator]) -> torch.Generator:
    """``generator``, or a fresh one seeded 0 (deterministic; the global RNG is never used)."""
    return generator if generator is not None else torch.Generator().manual_seed(0)


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats to uint8 (round half to even, as numpy's ``rint``)."""
    return torch.round(images.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def finish(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8 bits: float32 on multiples of 1/255."""
    return to_uint8(images).to(torch.float32) / 255.0
