"""Crop geometry: a detected :class:`Face` and the crop policy (:func:`crop_box`,
:func:`crop_square`, :func:`crop_face`; described in :mod:`fakeproof.faces`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Face:
    """One detected face: box in frame pixels (x1, y1, x2, y2), its MTCNN probability and its
    five landmarks ``points`` (x0, y0, ..., x4, y4 in frame pixels; None: unknown)."""

    x1: float
    y1: float
    x2: float
    y2: float
    prob: float
    points: Optional[tuple[float, ...]] = None

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def scaled(self, sx: float, sy: float) -> "Face":
        pts = None if self.points is None else tuple(
            round(v * (sx if i % 2 == 0 else sy), 2) for i, v in enumerate(self.points))
        return Face(round(self.x1 * sx, 2), round(self.y1 * sy, 2), round(self.x2 * sx, 2),
                    round(self.y2 * sy, 2), self.prob, pts)


def crop_box(box: Sequence[float], margin: float) -> tuple[int, int, int]:
    """The square crop of a face box: ``(left, top, side)`` in integer frame pixels.

    See the module docstring: side ``round(max(w, h) * (1 + 2 * margin))``, centred on the box.
    The square may extend past the frame (see :func:`crop_square`).
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    s = max(x2 - x1, y2 - y1)
    side = max(1, int(math.floor(s * (1.0 + 2.0 * margin) + 0.5)))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left = int(math.floor(cx - side / 2.0 + 0.5))
    top = int(math.floor(cy - side / 2.0 + 0.5))
    return left, top, side


def crop_square(frame: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` region at (left, top) of ``frame``; outside pixels are black."""
    h, w = frame.shape[:2]
    out = np.zeros((side, side, frame.shape[2]), dtype=frame.dtype)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = frame[y0:y1, x0:x1]
    return out


def crop_face(frame: np.ndarray, box: Sequence[float], margin: float, image_size: int) -> np.ndarray:
    """Cut and resize one face crop: RGB uint8 (image_size, image_size, 3)."""
    left, top, side = crop_box(box, margin)
    square = crop_square(frame, left, top, side)
    if side == image_size:
        return square
    return np.asarray(Image.fromarray(square, "RGB").resize(
        (image_size, image_size), Image.Resampling.BICUBIC))
