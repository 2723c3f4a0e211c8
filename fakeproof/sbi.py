"""Self-Blended Images: pseudo-fakes made on the fly from real training faces (``train.sbi``).

After Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022
(github.com/mapooon/SelfBlendedImages). One real face crop gives a pseudo-fake by blending two
differently processed copies of itself, so the detector learns the generic traces of blending
(boundary, colour and frequency mismatch inside a face-shaped region) instead of one generator's:

1. **Source-target augmentation** (:func:`source_transform`): one copy (source or target, each
   with probability 0.5, as in the paper's code) gets a colour change (RGB shift of +-20/255 per
   channel, p 0.3; an HSV shift; brightness and contrast +-0.1) and a frequency change (one of:
   downscale by 2 or 4 with nearest neighbour and back up bilinearly, or a sharpen with alpha
   0.2-0.5, lightness 0.5-1.0). The HSV shift uses the paper's limits literally (hue +-0.3 degree,
   saturation and value +-0.3 on 0-255): albumentations applies them to uint8 images, where they
   move a pixel by less than one grey level, so it is kept for fidelity, not for effect.
2. **Geometry** (:func:`rand_affine`): the source and the mask move together by a translation of
   up to 3 % (x) and 1.5 % (y) of the crop and a scale in [0.95, 1/0.95] about the centre; then the
   mask alone gets an elastic deformation (alpha 50, sigma 7 at the paper's 380 px, scaled with the
   crop; Simard et al. 2003, as albumentations' ElasticTransform).
3. **Mask** (:func:`hull_mask`): the face outline from the five landmarks
   (:func:`fakeproof.landmarks.face_outline`; the paper fills the convex hull of dlib's 81 points,
   here the similarity-mapped whole-face polygon, or with probability 0.25 the inner face from the
   brows down, as the paper drops the 13 forehead points with probability 0.25).
4. **Blend** (:func:`blend_mask`, :func:`self_blend`): the paper's ``get_blend_mask`` at its own
   working size (the mask resized to a random 192-256 px square, blurred by an odd kernel of 5-25 px
   and cut at 1, which erodes it, blurred again by a kernel of 5-25 px with sigma 5-45, normalised
   to a maximum of 1, resized back), times a blend ratio drawn from {0.25, 0.5, 0.75, 1, 1, 1};
   ``pseudo_fake = mask * source + (1 - mask) * target``. Where the mask is 0 the pseudo-fake is
   the target, bit for bit.

**The paper's training augmentation** (:func:`sbi_augment`), applied with ``train.sbi`` on to
every training crop, real, pseudo-fake and (``mix``) real fake alike: horizontal flip (p 0.5), RGB
shift (p 0.3), HSV shift (p 0.3), brightness and contrast +-0.3 (p 0.3), JPEG re-compression at
quality 40-100 (p 0.5). ``train.augment`` still applies after it (the SBI recipe sets it to
``none``).

Randomness: every draw comes from a numpy generator seeded by (seed, epoch, item index,
:data:`STREAM`), a stream of its own beside :func:`fakeproof.augment.item_rng`'s: the same face in
the same epoch gives the same pseudo-fake whatever the worker count, process count (DDP) or order,
and a resumed run replays it. Torch ops run on one thread (:func:`fakeproof.augment.one_thread`).
Images are float32 (3, H, W) in [0, 1] in and out. Where in the pipeline (the dataset, the stages,
val and test) is said in :mod:`fakeproof.data` and the README.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw
from scipy import ndimage

from fakeproof.augment import clamp01, flip, jpeg, one_thread
from fakeproof.landmarks import face_outline

#: The paper's blend ratios (``dynamic_blend``): full blends three times as likely as each partial.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
#: The paper's image size, which its pixel-sized parameters (elastic alpha and sigma) refer to.
PAPER_SIZE = 380
#: The method name of pseudo-fake items in a training dataset's ``frames`` table.
PSEUDO_METHOD = "pseudo_sbi"
#: Stream number that keeps the SBI generator apart from the augmentation's.
STREAM = 0x5B1


@dataclass(frozen=True)
class SelfBlend:
    """One pseudo-fake: ``image`` = ``mask`` * ``source`` + (1 - ``mask``) * ``target`` (images
    float32 (3, H, W) in [0, 1]; ``mask`` float32 (H, W) in [0, 1], the blend ratio included);
    ``hull``: the filled face outline the mask was made from, before deformation and blur."""

    image: np.ndarray
    mask: np.ndarray
    source: np.ndarray
    target: np.ndarray
    hull: np.ndarray


def sbi_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The SBI generator of one item in one epoch (independent of worker count and order)."""
    return np.random.default_rng([int(seed), int(epoch), int(index), STREAM])


# ------------------------------------------------------------------------------------------------
# source-target augmentation
# ------------------------------------------------------------------------------------------------
def rgb_shift(img: np.ndarray, rng: np.random.Generator, limit: float = 20 / 255) -> np.ndarray:
    """Add one offset in [-limit, limit] per channel."""
    return np.clip(img + rng.uniform(-limit, limit, (3, 1, 1)).astype(np.float32), 0.0, 1.0)


def hsv_shift(img: np.ndarray, rng: np.random.Generator, hue: float = 0.3 / 360,
              sat: float = 0.3 / 255, val: float = 0.3 / 255) -> np.ndarray:
    """Shift hue (in turns), saturation and value (additive) by amounts in +-the limits."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    dh, ds, dv = rng.uniform(-hue, hue), rng.uniform(-sat, sat), rng.uniform(-val, val)
    hsv = rgb_to_hsv(np.moveaxis(img, 0, -1))
    hsv[..., 0] = np.mod(hsv[..., 0] + dh, 1.0)
    hsv[..., 1:] = np.clip(hsv[..., 1:] + (ds, dv), 0.0, 1.0)
    return np.moveaxis(hsv_to_rgb(hsv), -1, 0).astype(np.float32)


def brightness_contrast(img: np.ndarray, rng: np.random.Generator, limit: float) -> np.ndarray:
    """albumentations' RandomBrightnessContrast: ``img * (1 + c) + b``, b and c in +-limit."""
    b, c = rng.uniform(-limit, limit), rng.uniform(-limit, limit)
    return np.clip(img * np.float32(1 + c) + np.float32(b), 0.0, 1.0)


def down_up(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's RandomDownScale: down by 2 or 4 (nearest), back up (bilinear)."""
    _, h, w = img.shape
    r = int(rng.choice((2, 4)))
    small = TF.resize(torch.from_numpy(np.ascontiguousarray(img)), [max(1, h // r), max(1, w // r)],
                      interpolation=TF.InterpolationMode.NEAREST)
    return TF.resize(small, [h, w], interpolation=TF.InterpolationMode.BILINEAR,
                     antialias=False).numpy()


def sharpen(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """albumentations' Sharpen: the 3x3 kernel (1 - alpha) * identity + alpha * [-1 ... 8 + L ...]."""
    alpha, lightness = rng.uniform(0.2, 0.5), rng.uniform(0.5, 1.0)
    effect = -np.ones((3, 3))
    effect[1, 1] = 8 + lightness
    ident = np.zeros((3, 3))
    ident[1, 1] = 1
    k = (1 - alpha) * ident + alpha * effect
    out = np.stack([ndimage.correlate(c, k, mode="reflect") for c in img])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def source_transform(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's source transforms: colour (RGB shift p 0.3, HSV, brightness-contrast +-0.1),
    then one frequency op (downscale-upscale or sharpen, each p 0.5)."""
    if rng.random() < 0.3:
        img = rgb_shift(img, rng)
    img = hsv_shift(img, rng)
    img = brightness_contrast(img, rng, 0.1)
    return down_up(img, rng) if rng.random() < 0.5 else sharpen(img, rng)


# ------------------------------------------------------------------------------------------------
# mask
# ------------------------------------------------------------------------------------------------
def fill_polygon(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """A float32 (h, w) mask, 1 inside the polygon (pixel centres), 0 elsewhere."""
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x) - 0.5, float(y) - 0.5) for x, y in poly], fill=1)
    return np.asarray(im, np.float32)


def hull_mask(points: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """The filled face outline of the five ``points`` (crop pixels): the whole face, or with
    probability 0.25 the inner face. Never empty: a polygon that misses every pixel centre (a
    face smaller than a pixel, or outside the crop) is replaced by the outline of the crop's
    central box template."""
    from fakeproof.landmarks import box_points

    kind = "inner" if rng.random() < 0.25 else "full"
    mask = fill_polygon(face_outline(points, kind), h, w)
    if not mask.any():
        mask = fill_polygon(face_outline(box_points((0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h))),
                            h, w)
    return mask


def rand_affine(source: np.ndarray, mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Move source and mask together (translate x +-3 %, y +-1.5 %, scale 0.95-1/0.95 about the
    centre; bilinear for the image, edges repeated; nearest for the mask, outside 0), then deform
    the mask elastically (alpha 50, sigma 7 at 380 px, scaled to the crop)."""
    _, h, w = source.shape
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.015, 0.015) * h
    s = rng.uniform(0.95, 1 / 0.95)
    c = np.array([(h - 1) / 2, (w - 1) / 2])
    # output (row, col) -> input: (out - c - t) / s + c
    matrix = np.eye(2) / s
    offset = c - (c + (ty, tx)) / s
    moved = np.stack([ndimage.affine_transform(ch, matrix, offset, order=1, mode="nearest")
                      for ch in source]).astype(np.float32)
    mask = ndimage.affine_transform(mask, matrix, offset, order=0, mode="constant", cval=0.0)
    k = max(h, w) / PAPER_SIZE
    alpha, sigma = 50.0 * k, max(7.0 * k, 0.5)
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    deformed = ndimage.map_coordinates(mask, [yy + dy, xx + dx], order=0, mode="constant", cval=0.0)
    return moved, (deformed if deformed.any() else mask).astype(np.float32)


def _blur(mask: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's GaussianBlur of a 2-D mask: a ``ksize`` kernel of ``sigma`` (0: OpenCV's rule
    0.3 ((k - 1) / 2 - 1) + 0.8), borders reflected (BORDER_REFLECT_101)."""
    sigma = sigma if sigma > 0 else 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    out = ndimage.correlate1d(mask, g, axis=0, mode="mirror")
    return ndimage.correlate1d(out, g, axis=1, mode="mirror")


def _resize(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.float32), "F").resize(
        (w, h), Image.Resampling.BILINEAR), np.float32)


def blend_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's ``get_blend_mask`` (see the module docstring), max 1, same size as ``mask``.
    If the erosion leaves nothing (a hull thinner than the first kernel) it is skipped."""
    h, w = mask.shape
    sh, sw = int(rng.integers(192, 257)), int(rng.integers(192, 257))
    work = _resize(mask, sh, sw)
    k1, k2 = int(rng.choice(np.arange(5, 26, 2))), int(rng.choice(np.arange(5, 26, 2)))
    sigma2 = float(rng.integers(5, 46))
    blurred = _blur(work, k1, 0)
    if blurred.max() > 0:
        blurred = blurred / blurred.max()
    eroded = np.where(blurred < 1, 0.0, blurred)
    blurred = _blur(eroded if eroded.any() else blurred, k2, sigma2)
    blurred = _resize(blurred / max(float(blurred.max()), 1e-12), h, w)
    blurred = np.clip(blurred, 0.0, 1.0)
    blurred[blurred < 1e-6] = 0.0  # below a millionth: exactly 0 (float dust of the convolutions)
    return blurred


def self_blend(img: np.ndarray, points: np.ndarray, rng: np.random.Generator) -> SelfBlend:
    """A pseudo-fake of ``img`` (float32 (3, H, W) in [0, 1]) whose five landmarks are
    ``points`` ((5, 2) crop pixels): steps 1-4 of the module docstring."""
    _, h, w = img.shape
    with one_thread():
        hull = hull_mask(np.asarray(points, np.float64).reshape(5, 2), h, w, rng)
        source, target = img, img
        if rng.random() < 0.5:
            source = source_transform(img, rng)
        else:
            target = source_transform(img, rng)
        source, mask = rand_affine(source, hull, rng)
        mask = blend_mask(mask, rng)
        if not mask.any():  # the deformation and erosion left nothing: blend through the hull
            mask = hull.copy()
    mask = (mask * np.float32(BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))])).astype(np.float32)
    m = mask[None]
    image = np.where(m > 0, m * source + (1 - m) * target, target)
    return SelfBlend(clamp01(image), mask, source, target, hull)


def sbi_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's augmentation of every training crop (real and fake): flip p 0.5, RGB shift p
    0.3, HSV shift p 0.3, brightness-contrast +-0.3 p 0.3, JPEG quality 40-100 p 0.5."""
    with one_thread():
        if rng.random() < 0.5:
            img = flip(img, rng)
        if rng.random() < 0.3:
            img = rgb_shift(img, rng)
        if rng.random() < 0.3:
            img = hsv_shift(img, rng)
        if rng.random() < 0.3:
            img = brightness_contrast(img, rng, 0.3)
        if rng.random() < 0.5:
            img = jpeg(img, rng, 40, 100)
    return clamp01(img)


__all__ = ["BLEND_RATIOS", "PSEUDO_METHOD", "SelfBlend", "blend_mask", "hull_mask", "rand_affine",
           "sbi_augment", "sbi_rng", "self_blend", "source_transform"]
