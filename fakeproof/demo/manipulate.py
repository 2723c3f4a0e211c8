"""Face manipulations applied frame by frame to rendered footage: face swap and self-blending.

Both work on the target clip's frames (the "captured" footage, sensor noise included) and on its
tracked 5-point landmarks, and both leave every pixel outside the face region untouched, so a
fake's face boxes are its original's.

- :func:`face_swap` is a graphics face swap in the manner of FaceForensics++'s FaceSwap and the
  DeepFakes pipeline (Rossler et al., ICCV 2019): the donor's face is aligned to a fixed-size face
  chip by the 5-point similarity (the "generator" resolution, below the face's size in the frame),
  warped back onto the target's landmarks, colour-corrected (mean and standard deviation of
  YCbCr inside the mask) and alpha-blended with a feathered inner-face hull.
- :func:`self_blend` is a self-blended image (Shiohara & Yamasaki, "Detecting Deepfakes with
  Self-Blended Images", CVPR 2022): the frame is blended with a copy of itself that went through
  colour jitter (RGB shift, brightness, contrast, saturation), a frequency change (blur,
  down-and-up sampling, or sharpening) and a small scale/translation warp, through a deformed and
  feathered landmark-hull mask at a random blend ratio.

The parameters of a manipulation are drawn once per clip (one "model" per video), with small
per-frame jitter of the mask, as in real fakes whose blending boundary flickers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fakeproof.demo.clips import Clip
from fakeproof.demo.imaging import (affine_compose, affine_inverse, gaussian_blur, polygon_mask,
                                    rgb_to_ycbcr, to_uint8, warp_affine, ycbcr_to_rgb)
from fakeproof.demo.landmarks import face_outline, face_scale, template_to_image

#: Face chips cover template units [-CHIP_PAD, 112 + CHIP_PAD] on each axis.
CHIP_PAD = 8.0


@dataclass(frozen=True)
class SwapConfig:
    """Per-clip face-swap settings (see :func:`swap_config`)."""

    chip_ratio: float    # chip pixels per target-frame pixel of face (< 1: generator blur)
    mask_scale: float    # inner-face hull scaled about its centre before feathering
    feather: float       # Gaussian sigma of the mask edge, in template units
    colour: float        # share of the colour correction applied (1 = full mean/std match)


@dataclass(frozen=True)
class SbiConfig:
    """Per-clip self-blending settings (see :func:`sbi_config`)."""

    rgb_shift: tuple[float, float, float]
    brightness: float
    contrast: float
    saturation: float
    freq: str            # "blur", "downup" or "sharpen"
    freq_amount: float
    scale: float
    shift: tuple[float, float]  # template units
    mask_scale: float
    jitter: np.ndarray   # per-vertex radial deformation of the hull
    feather: float       # template units
    ratio: float         # blend ratio of the transformed copy


def swap_config(rng: np.random.Generator) -> SwapConfig:
    return SwapConfig(chip_ratio=rng.uniform(0.3, 0.5), mask_scale=rng.uniform(0.9, 1.0),
                      feather=rng.uniform(2.5, 5.0), colour=rng.uniform(0.6, 0.9))


def sbi_config(rng: np.random.Generator, n_vertices: int) -> SbiConfig:
    freq = ("blur", "downup", "sharpen")[int(rng.integers(3))]
    amount = {"blur": rng.uniform(1.2, 2.2), "downup": rng.uniform(0.3, 0.5),
              "sharpen": rng.uniform(1.5, 3.0)}[freq]
    shift = rng.uniform(-4.0, 4.0, 2)
    rgb = rng.uniform(6.0, 18.0, 3) * rng.choice([-1.0, 1.0], 3)
    return SbiConfig(
        rgb_shift=(float(rgb[0]), float(rgb[1]), float(rgb[2])), brightness=rng.uniform(-0.1, 0.1),
        contrast=rng.uniform(-0.15, 0.15), saturation=rng.uniform(-0.2, 0.2), freq=freq,
        freq_amount=amount, scale=rng.uniform(0.93, 1.07), shift=(float(shift[0]), float(shift[1])),
        mask_scale=rng.uniform(0.85, 1.0), jitter=rng.uniform(-0.06, 0.06, n_vertices),
        feather=rng.uniform(1.5, 4.0), ratio=rng.uniform(0.8, 1.0))


def _roi(poly: np.ndarray, margin: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = size
    x0 = int(max(0, np.floor(poly[:, 0].min() - margin)))
    y0 = int(max(0, np.floor(poly[:, 1].min() - margin)))
    x1 = int(min(w, np.ceil(poly[:, 0].max() + margin) + 1))
    y1 = int(min(h, np.ceil(poly[:, 1].max() + margin) + 1))
    return x0, y0, x1, y1


def _scaled(poly: np.ndarray, factor: float, radial: np.ndarray | None = None) -> np.ndarray:
    c = poly.mean(0)
    f = factor * (1.0 + radial[:, None]) if radial is not None else factor
    return c + (poly - c) * f


def _feathered_mask(poly: np.ndarray, roi: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    x0, y0, x1, y1 = roi
    m = polygon_mask(poly, (y1 - y0, x1 - x0), origin=(x0, y0))
    return np.clip(gaussian_blur(m, sigma), 0.0, 1.0)


def _colour_transfer(src: np.ndarray, ref: np.ndarray, weight: np.ndarray, strength: float
                     ) -> np.ndarray:
    """Match the mean and std of ``src`` to ``ref`` in YCbCr where ``weight`` > 0.5.

    ``strength`` blends the matched colours with the donor's own (1: a full match).
    """
    sel = weight > 0.5
    if sel.sum() < 16:
        return src
    s, r = rgb_to_ycbcr(src), rgb_to_ycbcr(ref)
    out = s.copy()
    for c in range(3):
        ms, ss = float(s[..., c][sel].mean()), float(s[..., c][sel].std()) + 1e-3
        mr, sr = float(r[..., c][sel].mean()), float(r[..., c][sel].std()) + 1e-3
        matched = (s[..., c] - ms) * (sr / ss) + mr
        out[..., c] = strength * matched + (1 - strength) * s[..., c]
    return ycbcr_to_rgb(out)


def face_swap(target: Clip, donor: Clip, rng: np.random.Generator) -> np.ndarray:
    """Paste ``donor``'s face onto every frame of ``target`` (frame i from donor frame i)."""
    cfg = swap_config(rng)
    n, h, w, _ = target.frames.shape
    out = target.frames.copy()
    for i in range(n):
        tpts, dpts = target.points[i], donor.points[i % len(donor.points)]
        t_scale = face_scale(tpts)
        chip = max(24, int(round((112 + 2 * CHIP_PAD) * t_scale * cfg.chip_ratio)))
        units = (112 + 2 * CHIP_PAD) / chip  # template units per chip pixel
        chip_to_tpl = np.array([[units, 0.0, -CHIP_PAD], [0.0, units, -CHIP_PAD]])
        # Donor face -> chip, low-passed first so the downscale does not alias.
        d_scale = face_scale(dpts)
        down = d_scale * units  # donor pixels per chip pixel
        src = donor.frames[i % len(donor.frames)].astype(np.float32)
        src = gaussian_blur(src, 0.5 * np.sqrt(max(down * down - 1.0, 0.0)))
        chip_to_donor = affine_compose(template_to_image(dpts), chip_to_tpl)
        chip_img, _ = warp_affine(src, chip_to_donor, (chip, chip))
        # Chip -> target frame, on the region of interest only.
        inner = _scaled(face_outline(tpts, "inner"), cfg.mask_scale)
        sigma = cfg.feather * t_scale
        roi = _roi(face_outline(tpts, "full"), 3.5 * sigma + 2, (h, w))
        x0, y0, x1, y1 = roi
        frame_to_chip = affine_inverse(affine_compose(template_to_image(tpts), chip_to_tpl))
        warped, valid = warp_affine(chip_img, frame_to_chip, (y1 - y0, x1 - x0), origin=(x0, y0))
        mask = _feathered_mask(inner, roi, sigma) * valid
        tgt = out[i, y0:y1, x0:x1].astype(np.float32)
        warped = _colour_transfer(warped, tgt, mask, cfg.colour)
        m = mask[..., None]
        out[i, y0:y1, x0:x1] = to_uint8(warped * m + tgt * (1 - m))
    return out


def _resize_map(src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """Output-to-source affine of a resize that keeps pixel centres aligned."""
    ax, ay = src_w / dst_w, src_h / dst_h
    return np.array([[ax, 0.0, 0.5 * (ax - 1)], [0.0, ay, 0.5 * (ay - 1)]])


def _sbi_source(region: np.ndarray, cfg: SbiConfig) -> np.ndarray:
    """The transformed copy's pixels: colour jitter, then the frequency change."""
    x = region + np.asarray(cfg.rgb_shift, np.float32)
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * (1 + cfg.saturation)
    mean = float(x.mean())
    x = (x - mean) * (1 + cfg.contrast) + mean + 255.0 * cfg.brightness
    if cfg.freq == "blur":
        x = gaussian_blur(x, cfg.freq_amount)
    elif cfg.freq == "sharpen":
        x = x + cfg.freq_amount * (x - gaussian_blur(x, 1.0))
    else:  # downscale by freq_amount (low-passed) and back up, bilinear both ways
        hh, ww = x.shape[:2]
        sh, sw = max(2, int(round(hh * cfg.freq_amount))), max(2, int(round(ww * cfg.freq_amount)))
        small, _ = warp_affine(gaussian_blur(x, 0.5 / cfg.freq_amount), _resize_map(ww, hh, sw, sh),
                               (sh, sw))
        x, _ = warp_affine(small, _resize_map(sw, sh, ww, hh), (hh, ww))
    return np.clip(x, 0.0, 255.0)


def self_blend(target: Clip, rng: np.random.Generator) -> np.ndarray:
    """Self-blended frames of ``target`` (Shiohara & Yamasaki, CVPR 2022)."""
    n, h, w, _ = target.frames.shape
    n_vertices = len(face_outline(target.points[0], "full"))
    cfg = sbi_config(rng, n_vertices)
    out = target.frames.copy()
    for i in range(n):
        pts = target.points[i]
        scale = face_scale(pts)
        full = face_outline(pts, "full")
        jitter = cfg.jitter + rng.uniform(-0.012, 0.012, n_vertices)
        poly = _scaled(full, cfg.mask_scale, jitter)
        sigma = cfg.feather * scale
        roi = _roi(poly, 3.5 * sigma + 4, (h, w))
        x0, y0, x1, y1 = roi
        # Geometric part: the copy is scaled about the face centre and shifted.
        c = full.mean(0)
        s = cfg.scale
        dx, dy = np.asarray(cfg.shift) * scale
        frame_to_src = np.array([[1 / s, 0, c[0] - (c[0] + dx) / s],
                                 [0, 1 / s, c[1] - (c[1] + dy) / s]])
        moved, _ = warp_affine(target.frames[i].astype(np.float32), frame_to_src,
                               (y1 - y0, x1 - x0), origin=(x0, y0))
        src = _sbi_source(moved, cfg)
        m = (_feathered_mask(poly, roi, sigma) * cfg.ratio)[..., None]
        tgt = out[i, y0:y1, x0:x1].astype(np.float32)
        out[i, y0:y1, x0:x1] = to_uint8(src * m + tgt * (1 - m))
    return out
