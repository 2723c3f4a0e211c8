"""Small deterministic image operations in numpy (float32, RGB in [0, 255]).

Everything here is plain numpy or PIL arithmetic with a fixed order of operations, so the same
inputs give bit-identical outputs whatever the thread count: the demo's clips must be reproducible
byte for byte.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw


def affine_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    a = np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def affine_compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``x -> outer(inner(x))``."""
    o = np.vstack([np.asarray(outer, np.float64), [0.0, 0.0, 1.0]])
    i = np.vstack([np.asarray(inner, np.float64), [0.0, 0.0, 1.0]])
    return (o @ i)[:2]


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map points (N, 2) with a 2x3 affine matrix."""
    pts = np.asarray(pts, np.float64)
    return pts @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def grid(h: int, w: int, x0: float = 0.0, y0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an (h, w) window whose top-left pixel is (x0, y0)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs + x0, ys + y0


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``img`` (H, W, C) at float coordinates; outside pixels repeat the edge.

    Returns the samples (h, w, C) float32 and a float32 mask, 1 where (x, y) lay inside the image.
    """
    h, w = img.shape[:2]
    src = np.asarray(img, np.float32).reshape(h * w, -1)
    inside = ((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)).astype(np.float32)
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = (x - x0).astype(np.float32)[..., None]
    fy = (y - y0).astype(np.float32)[..., None]
    top = src[y0 * w + x0] * (1 - fx) + src[y0 * w + x1] * fx
    bot = src[y1 * w + x0] * (1 - fx) + src[y1 * w + x1] * fx
    return top * (1 - fy) + bot * fy, inside


def warp_affine(img: np.ndarray, out_to_src: np.ndarray, out_hw: tuple[int, int],
                origin: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``img`` onto an output window: ``out_to_src`` maps output pixel coords to ``img``.

    ``origin`` is the output coordinate of the window's top-left pixel (to render a region of
    interest of a larger frame). Returns (pixels, inside-mask) as from :func:`bilinear`.
    """
    xs, ys = grid(out_hw[0], out_hw[1], *origin)
    m = np.asarray(out_to_src, np.float64)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return bilinear(img, sx, sy)


def gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W) or (H, W, C) float array (reflect padding)."""
    if sigma <= 0.05:
        return np.asarray(img, np.float32).copy()
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    out = np.asarray(img, np.float32)
    for axis in (0, 1):
        n = out.shape[axis]
        rr = min(r, n - 1)
        pad = [(0, 0)] * out.ndim
        pad[axis] = (rr, rr)
        padded = np.pad(out, pad, mode="reflect") if rr > 0 else out
        kk = k[r - rr: r + rr + 1]
        kk = kk / kk.sum()
        acc = np.zeros_like(out)
        for i, wgt in enumerate(kk):
            sl = [slice(None)] * out.ndim
            sl[axis] = slice(i, i + n)
            acc += wgt * padded[tuple(sl)]
        out = acc
    return out


def polygon_mask(poly: np.ndarray, hw: tuple[int, int], origin: tuple[float, float] = (0.0, 0.0),
                 supersample: int = 2) -> np.ndarray:
    """Float mask (h, w) in [0, 1] of a filled polygon, antialiased by supersampling."""
    h, w = hw
    s = supersample
    im = Image.new("L", (w * s, h * s), 0)
    pts = (np.asarray(poly, np.float64) - np.asarray(origin) + 0.5) * s
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    if s > 1:
        im = im.resize((w, h), Image.BOX)
    return np.asarray(im, np.float32) / 255.0


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased (Lanczos) resize of a uint8 RGB image to (width, height)."""
    return np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize(size, Image.LANCZOS))


# ITU-R BT.601 full-range YCbCr (as in JPEG).
_RGB2YCC = np.array([[0.299, 0.587, 0.114],
                     [-0.168736, -0.331264, 0.5],
                     [0.5, -0.418688, -0.081312]], np.float32)
_YCC2RGB = np.linalg.inv(_RGB2YCC.astype(np.float64)).astype(np.float32)
_YCC_OFFSET = np.array([0.0, 128.0, 128.0], np.float32)


def _mix(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per-pixel 3x3 colour matrix, written out (no BLAS: identical results on any thread count)."""
    c = [img[..., i] for i in range(3)]
    return np.stack([m[j, 0] * c[0] + m[j, 1] * c[1] + m[j, 2] * c[2] for j in range(3)], axis=-1)


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    return _mix(np.asarray(img, np.float32), _RGB2YCC) + _YCC_OFFSET


def ycbcr_to_rgb(img: np.ndarray) -> np.ndarray:
    return _mix(np.asarray(img, np.float32) - _YCC_OFFSET, _YCC2RGB)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip a float image to uint8."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def smooth_curve(rng: np.random.Generator, t: np.ndarray, amplitude: float,
                 freqs: Sequence[float] = (0.25, 0.9), drift: float = 0.0) -> np.ndarray:
    """A smooth random signal over times ``t`` (seconds): two sinusoids plus a linear drift.

    Frequencies are drawn in ``freqs`` (Hz), phases uniformly; the result has peak amplitude of
    about ``amplitude`` plus ``drift`` over the clip (drift drawn in [-drift, drift]).
    """
    out = np.zeros_like(t, dtype=np.float64)
    for _ in range(2):
        f = rng.uniform(*freqs)
        weight = rng.uniform(0.3, 0.7)
        phase = rng.uniform(0, 2 * np.pi)
        out += weight * amplitude * np.sin(2 * np.pi * f * t + phase)
    span = max(float(t[-1] - t[0]), 1e-6) if len(t) > 1 else 1.0
    out += rng.uniform(-drift, drift) * (t - t[0]) / span
    return out
