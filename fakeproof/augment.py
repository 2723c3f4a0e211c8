"""Training-crop augmentation presets (``train.augment``): ``none | light | standard | strong``.

Applied by :class:`fakeproof.data.FaceDataset` to **training** crops only (val and test never), in
the DataLoader workers, from a numpy generator seeded by ``(seed, epoch, index)``: the same face in
the same epoch is augmented the same way whatever the worker count or order, and no global RNG
is touched. A preset is a sequence of :class:`Step` s applied in order; a step with ``p < 1`` draws
one uniform number to decide whether it runs, then its op draws its own magnitudes.

=========  =================================================================================
preset     steps (in order; p = probability, ranges drawn uniformly)
=========  =================================================================================
none       the identity
light      flip (p 0.5); brightness and contrast factors in [0.9, 1.1]. Exactly the
           augmentation that ``train.augment: true`` applied before the presets existed.
standard   resized crop (p 0.3, 75-95 % of the area, aspect 3/4-4/3); flip (p 0.5);
           brightness, contrast, saturation factors in [0.8, 1.2]; Gaussian blur (p 0.2, sigma
           0.3-1.5 px); downscale-then-upscale (p 0.2, factor 0.5-0.9); Gaussian noise (p 0.2,
           sigma 1.3/255-7.7/255); JPEG re-compression (p 0.5, quality 40-95)
strong     the same ops, more often and harder: crop p 0.5 (60-95 %); jitter [0.7, 1.3];
           blur p 0.3 (sigma to 2.5 px); downscale p 0.3 (factor 0.3-0.9); noise p 0.3 (sigma to
           15/255); JPEG p 0.7 (quality 20-95)
=========  =================================================================================

The ``standard`` and ``strong`` sets follow what the face-forgery detectors that generalise train
with: the DFDC winner (Seferbekov, Deepfake Detection Challenge 1st place, 2020: JPEG quality
60-100, Gaussian noise and blur, flips, brightness/contrast and hue/saturation jitter, isotropic
down-resize) and Self-Blended Images (Shiohara & Yamasaki, CVPR 2022: JPEG quality 40-100,
downscale, RGB/HSV and brightness/contrast jitter). JPEG comes last, as a platform compresses last.

Geometric and codec ops (resized crop, blur, resize, JPEG) are ``torchvision.transforms.v2``
functional ops with parameters drawn here, run on one torch thread (:func:`one_thread`); per-pixel
arithmetic (flip, jitter, noise) is numpy, single-threaded by construction. One thread because
torch's intra-op threads on one small image cost far more than they gain when the cores are busy
(measured on 2 busy cores, ``standard`` at 128 px: 6.7 ms per crop on one thread, 66 ms on two;
see also ``benchmarks/bench_loader.py``), and because antialiased resizing splits its work by
thread count and rounds differently on two threads: one thread keeps an item's augmentation the
same in the main process and in a worker. Images are float32 (3, H, W) in [0, 1] in and out:
:func:`augment_image` clips its result to [0, 1] (:func:`clamp01`), whatever its ops round to.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from fakeproof.config import AUGMENT_PRESETS
from fakeproof.errors import FakeproofError

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as torchvision's rgb_to_grayscale
ASPECT = (3 / 4, 4 / 3)  # the resized crop's aspect range (torchvision's RandomResizedCrop)


class AugmentError(FakeproofError, ValueError):
    """An unknown augmentation preset or one asked for on val/test crops (one-line message)."""


@dataclass(frozen=True)
class Step:
    """One op of a preset: applied with probability ``p``; ``args`` are the op's magnitudes."""

    op: str
    p: float = 1.0
    args: tuple[float, ...] = ()


# ------------------------------------------------------------------------------------------------
# ops: draw magnitudes from an item's generator, apply them to float32 (3, H, W) in [0, 1]
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, restoring the caller's count after (a DataLoader
    worker already runs one; the main process with ``num_workers: 0`` runs ``train.threads``)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img))


# Each op is two functions: ``draw_<op>(rng, h, w, *args)`` draws its magnitudes from the item's
# generator, in the order the op always drew them, and returns them as a tuple;
# ``<op>_with(img, *drawn)`` applies them. The CPU path runs both in turn per item
# (:func:`augment_image`); the device path (:mod:`fakeproof.device_feed`) draws in the dataset and
# applies to batches on the device.
def draw_flip(rng: np.random.Generator, h: int, w: int) -> tuple:
    return ()


def flip_with(img: np.ndarray) -> np.ndarray:
    """Horizontal mirror image (the step's ``p`` decides whether it happens)."""
    return img[:, :, ::-1]


def draw_jitter(rng: np.random.Generator, h: int, w: int, brightness: float, contrast: float,
                saturation: float = 0.0) -> tuple:
    """Factors in [1 - a, 1 + a]: brightness, contrast, then saturation if > 0 (else None)."""
    b = rng.uniform(1 - brightness, 1 + brightness)
    c = rng.uniform(1 - contrast, 1 + contrast)
    s = np.float32(rng.uniform(1 - saturation, 1 + saturation)) if saturation > 0 else None
    return b, c, s


def jitter_with(img: np.ndarray, b: float, c: float, s: Optional[np.float32]) -> np.ndarray:
    """Contrast about the mean grey, then brightness, then saturation about each pixel's luma."""
    grey = np.float32((LUMA[0] * img[0] + LUMA[1] * img[1] + LUMA[2] * img[2]).mean())
    out = (img - grey) * np.float32(c) + grey
    out *= np.float32(b)
    if s is not None:
        luma = (np.float32(LUMA[0]) * out[0] + np.float32(LUMA[1]) * out[1]
                + np.float32(LUMA[2]) * out[2])
        out = (out - luma) * s + luma
    return np.clip(out, 0.0, 1.0, out=out)


def draw_resized_crop(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple:
    """(top, left, height, width) of a crop of ``lo``-``hi`` of the area, aspect 3/4-4/3."""
    area = rng.uniform(lo, hi) * h * w
    ratio = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    ch = min(h, max(1, round(math.sqrt(area / ratio))))
    cw = min(w, max(1, round(math.sqrt(area * ratio))))
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def resized_crop_with(img: np.ndarray, top: int, left: int, ch: int, cw: int) -> np.ndarray:
    """The crop resized back to the input size (antialiased)."""
    out = TF.resized_crop(_tensor(img), top, left, ch, cw, list(img.shape[1:]), antialias=True)
    return np.clip(out.numpy(), 0.0, 1.0)


def draw_gaussian_blur(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple:
    """(kernel, sigma): sigma in [lo, hi] pixels, kernel 2 * ceil(3 sigma) + 1 (within the crop)."""
    sigma = rng.uniform(lo, hi)
    return min(2 * math.ceil(3 * sigma) + 1, 2 * (min(h, w) // 2) - 1), sigma


def gaussian_blur_with(img: np.ndarray, k: int, sigma: float) -> np.ndarray:
    return TF.gaussian_blur(_tensor(img), [k, k], [sigma, sigma]).numpy()


def draw_downscale(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple:
    """The small size for a factor in [lo, hi]."""
    f = rng.uniform(lo, hi)
    return max(1, round(h * f)), max(1, round(w * f))


def downscale_with(img: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Downscale (antialiased), then upscale back (bilinear)."""
    small = TF.resize(_tensor(img), [sh, sw], antialias=True)
    return np.clip(TF.resize(small, list(img.shape[1:]), antialias=False).numpy(), 0.0, 1.0)


def draw_gaussian_noise(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple:
    """(sigma, noise field (3, h, w) float32): white Gaussian noise from the item's generator
    (torchvision's ``gaussian_noise`` draws from the global RNG, so it is not used)."""
    sigma = np.float32(rng.uniform(lo, hi))
    return sigma, rng.standard_normal((3, h, w), dtype=np.float32)


def gaussian_noise_with(img: np.ndarray, sigma: np.float32, noise: np.ndarray) -> np.ndarray:
    out = img + noise * sigma
    return np.clip(out, 0.0, 1.0, out=out)


def draw_jpeg(rng: np.random.Generator, h: int, w: int, lo: float, hi: float) -> tuple:
    """The quality, in [lo, hi]."""
    return (int(rng.integers(int(lo), int(hi) + 1)),)


def jpeg_with(img: np.ndarray, q: int) -> np.ndarray:
    """JPEG re-compression at quality ``q`` (libjpeg through torchvision)."""
    u8 = _tensor(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8))
    return TF.jpeg(u8, q).numpy().astype(np.float32) * np.float32(1.0 / 255.0)


DRAW: dict[str, Callable[..., tuple]] = {
    "resized_crop": draw_resized_crop, "flip": draw_flip, "jitter": draw_jitter,
    "gaussian_blur": draw_gaussian_blur, "downscale": draw_downscale,
    "gaussian_noise": draw_gaussian_noise, "jpeg": draw_jpeg,
}
APPLY: dict[str, Callable[..., np.ndarray]] = {
    "resized_crop": resized_crop_with, "flip": flip_with, "jitter": jitter_with,
    "gaussian_blur": gaussian_blur_with, "downscale": downscale_with,
    "gaussian_noise": gaussian_noise_with, "jpeg": jpeg_with,
}


def _op(name: str) -> Callable[..., np.ndarray]:
    def op(img: np.ndarray, rng: np.random.Generator, *args: float) -> np.ndarray:
        return APPLY[name](img, *DRAW[name](rng, *img.shape[1:], *args))
    op.__name__ = name
    op.__doc__ = f"``{name}`` in one call: draw its magnitudes from ``rng``, apply them."
    return op


#: ops in one call: (image, rng, *args) -> image, float32 (3, H, W) in [0, 1]
OPS: dict[str, Callable[..., np.ndarray]] = {name: _op(name) for name in DRAW}
flip, jpeg = OPS["flip"], OPS["jpeg"]  # fakeproof.sbi's

PRESETS: dict[str, tuple[Step, ...]] = {
    "none": (),
    "light": (Step("flip", 0.5), Step("jitter", 1.0, (0.1, 0.1))),
    "standard": (
        Step("resized_crop", 0.3, (0.75, 0.95)),
        Step("flip", 0.5),
        Step("jitter", 1.0, (0.2, 0.2, 0.2)),
        Step("gaussian_blur", 0.2, (0.3, 1.5)),
        Step("downscale", 0.2, (0.5, 0.9)),
        Step("gaussian_noise", 0.2, (1.3 / 255, 7.7 / 255)),
        Step("jpeg", 0.5, (40, 95)),
    ),
    "strong": (
        Step("resized_crop", 0.5, (0.6, 0.95)),
        Step("flip", 0.5),
        Step("jitter", 1.0, (0.3, 0.3, 0.3)),
        Step("gaussian_blur", 0.3, (0.3, 2.5)),
        Step("downscale", 0.3, (0.3, 0.9)),
        Step("gaussian_noise", 0.3, (1.3 / 255, 15 / 255)),
        Step("jpeg", 0.7, (20, 95)),
    ),
}


def resolve_preset(augment: Union[bool, str, None]) -> str:
    """The preset name for ``train.augment`` (``True``/``False`` mean ``light``/``none``, the
    meaning the boolean had before the presets)."""
    if augment is None or augment is False:
        return "none"
    if augment is True:
        return "light"
    if augment not in PRESETS:
        raise AugmentError(f"train.augment = {augment!r}: unknown preset; use one of "
                           f"{', '.join(PRESETS)}")
    return str(augment)


def draw_step(step: Step, rng: np.random.Generator, h: int, w: int) -> Optional[tuple]:
    """One step's draws on an (h, w) item: whether it runs (only when ``p < 1``), then its op's
    magnitudes; None when it does not run."""
    if step.p < 1.0 and rng.random() >= step.p:
        return None
    return DRAW[step.op](rng, h, w, *step.args)


def apply_step(img: np.ndarray, step: Step, rng: np.random.Generator) -> np.ndarray:
    """Run one step: draw whether it applies, then the op (:func:`draw_step`)."""
    drawn = draw_step(step, rng, *img.shape[1:])
    return img if drawn is None else APPLY[step.op](img, *drawn)


def draw_preset(preset: str, rng: np.random.Generator, h: int, w: int) -> list[tuple[str, tuple]]:
    """The ``(op, drawn magnitudes)`` of the steps of ``preset`` that run on an (h, w) item, in
    order: each step with ``p < 1`` draws whether it runs, then its op draws (the draws of
    :func:`draw_step`, in order from one generator; every op keeps the size)."""
    out = []
    for step in PRESETS[preset]:
        drawn = draw_step(step, rng, h, w)
        if drawn is not None:
            out.append((step.op, drawn))
    return out


def augment_image(img: np.ndarray, preset: str, rng: np.random.Generator) -> np.ndarray:
    """``img`` (float32 (3, H, W) in [0, 1]) through every step of ``preset``; a new contiguous
    float32 array (``img`` is never written to)."""
    drawn = draw_preset(preset, rng, *img.shape[1:])
    with one_thread():
        for op, args in drawn:
            img = APPLY[op](img, *args)
    return clamp01(img)


def clamp01(img: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy clipped to [0, 1]: every augmented crop ends in range by
    construction (a Gaussian blur's float sum, for one, can land at 1 + 1.2e-7, which the attacks'
    input check refuses)."""
    return np.ascontiguousarray(np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0),
                                dtype=np.float32)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch (independent of worker count and order)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


__all__ = ["APPLY", "AugmentError", "DRAW", "OPS", "PRESETS", "Step", "apply_step", "augment_image",
           "clamp01", "draw_preset", "draw_step", "item_rng", "one_thread", "resolve_preset"]

if tuple(PRESETS) != tuple(AUGMENT_PRESETS):
    raise ImportError("fakeproof.augment: PRESETS must list exactly fakeproof.config.AUGMENT_PRESETS")
