"""The training augmentation as fakeproof/augment.py ran it at commit c029a49, before the
drawing of an op's magnitudes was split from its application (for the device feed,
fakeproof/device_feed.py): each op drew from the item's generator as it ran. Kept verbatim (ops
and the step loop) as the reference the split must equal byte for byte, as
tests/test_augment.py keeps the pre-preset ``light``."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from fakeproof.augment import ASPECT, LUMA, PRESETS, clamp01, one_thread


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img))


def flip(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Horizontal mirror image (the step's ``p`` decides whether it happens)."""
    return img[:, :, ::-1]


def jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
           saturation: float = 0.0) -> np.ndarray:
    """Contrast about the mean grey, then brightness, then saturation about each pixel's luma;
    factors drawn in [1 - a, 1 + a] (brightness first, then contrast, then saturation if > 0)."""
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    grey = np.float32((LUMA[0] * img[0] + LUMA[1] * img[1] + LUMA[2] * img[2]).mean())
    out = (img - grey) * np.float32(c) + grey
    out *= np.float32(b)
    if saturation > 0:
        s = np.float32(rng.uniform(1 - saturation, 1 + saturation))
        luma = (np.float32(LUMA[0]) * out[0] + np.float32(LUMA[1]) * out[1]
                + np.float32(LUMA[2]) * out[2])
        out = (out - luma) * s + luma
    return np.clip(out, 0.0, 1.0, out=out)


def resized_crop(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """A crop of ``lo``-``hi`` of the area (aspect 3/4-4/3) resized back to the input size."""
    _, h, w = img.shape
    area = rng.uniform(lo, hi) * h * w
    ratio = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    ch = min(h, max(1, round(math.sqrt(area / ratio))))
    cw = min(w, max(1, round(math.sqrt(area * ratio))))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = TF.resized_crop(_tensor(img), top, left, ch, cw, [h, w], antialias=True)
    return np.clip(out.numpy(), 0.0, 1.0)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Gaussian blur with sigma in [lo, hi] pixels (kernel 2 * ceil(3 sigma) + 1)."""
    sigma = rng.uniform(lo, hi)
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(img.shape[1:]) // 2) - 1)
    return TF.gaussian_blur(_tensor(img), [k, k], [sigma, sigma]).numpy()


def downscale(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Downscale by a factor in [lo, hi] (antialiased), then upscale back (bilinear)."""
    _, h, w = img.shape
    f = rng.uniform(lo, hi)
    small = TF.resize(_tensor(img), [max(1, round(h * f)), max(1, round(w * f))], antialias=True)
    return np.clip(TF.resize(small, [h, w], antialias=False).numpy(), 0.0, 1.0)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Additive white Gaussian noise, sigma in [lo, hi] (pixel units), from the item's generator
    (torchvision's ``gaussian_noise`` draws from the global RNG, so it is not used)."""
    sigma = np.float32(rng.uniform(lo, hi))
    out = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.clip(out, 0.0, 1.0, out=out)


def jpeg(img: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """JPEG re-compression at a quality in [lo, hi] (libjpeg through torchvision)."""
    q = int(rng.integers(int(lo), int(hi) + 1))
    u8 = _tensor(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8))
    return TF.jpeg(u8, q).numpy().astype(np.float32) * np.float32(1.0 / 255.0)


OPS: dict[str, Callable[..., np.ndarray]] = {
    "resized_crop": resized_crop, "flip": flip, "jitter": jitter, "gaussian_blur": gaussian_blur,
    "downscale": downscale, "gaussian_noise": gaussian_noise, "jpeg": jpeg,
}


def augment_before_split(img: np.ndarray, preset: str, rng: np.random.Generator) -> np.ndarray:
    """``augment_image`` at c029a49."""
    with one_thread():
        for step in PRESETS[preset]:
            if step.p < 1.0 and rng.random() >= step.p:
                continue
            img = OPS[step.op](img, rng, *step.args)
    return clamp01(img)
