"""Five-point face landmarks: where faces.csv keeps them, and the face outline they give.

MTCNN (Zhang et al., IEEE SPL 2016) returns five points per face, ordered left eye, right eye,
nose, left mouth corner, right mouth corner (image left/right). The crop_faces stage stores them in
``faces.csv`` in the **crop's** pixel coordinates (0..``faces.image_size``), one column per
coordinate: :data:`LANDMARK_COLUMNS` (``lm0_x, lm0_y, ..., lm4_y``), the one list of those names.

Face outline from five points (:func:`face_outline`). The convex hull of five points covers eyes,
nose and mouth only; Self-Blended Images (Shiohara & Yamasaki, CVPR 2022) blend through the hull of
dlib's 81 points (jaw and forehead). The rule here: the least-squares similarity (rotation, uniform
scale, translation; Umeyama, TPAMI 1991) that maps ArcFace's 112 x 112 five-point template (Deng et
al., CVPR 2019) onto the five points also maps a fixed face-region polygon drawn once in that
template's frame (:data:`FULL_FACE_112`: hairline to chin and ear to ear, 20 vertices;
:data:`INNER_FACE_112`: brows to chin, the 68-point hull) into the crop. So the outline follows the
face's position, size and roll; it does not follow yaw or a jaw's shape as 81 points would.

Unknown landmarks (:func:`box_points`): a faces.csv written before landmarks were stored (or by a
tool that has none) gets the ArcFace template stretched over the face's detection box, the box
placed in the crop by the crop policy (``faces.margin``): a face-shaped default, not a measurement.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np

#: faces.csv's landmark columns, in MTCNN's order (x then y of each point).
LANDMARK_COLUMNS = tuple(f"lm{i}_{axis}" for i in range(5) for axis in ("x", "y"))

#: ArcFace's 5-point template in a 112x112 aligned crop (insightface ``arcface_dst``).
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])

#: The whole face from hairline to chin and ear to ear (the hull SBI blends; Shiohara &
#: Yamasaki use the 81-point hull with the forehead).
FULL_FACE_112 = np.array([
    [16, 50], [17, 66], [20, 81], [25, 95], [33, 106], [44, 114], [56, 117], [68, 114], [79, 106],
    [87, 95], [92, 81], [95, 66], [96, 50], [94, 36], [87, 22], [74, 13], [56, 10], [38, 13],
    [25, 22], [18, 36]], np.float64)

#: The inner face from the brows to the chin (the 68-point hull that graphics face swaps paste).
INNER_FACE_112 = np.array([
    [20, 48], [21, 64], [24, 78], [29, 91], [36, 101], [46, 108], [56, 110], [66, 108], [76, 101],
    [83, 91], [88, 78], [91, 64], [92, 48], [86, 36], [72, 31], [56, 32], [40, 31], [26, 36]],
    np.float64)


def umeyama(src: np.ndarray, dst: np.ndarray, scale: bool = True) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` to ``dst``.

    Returns the 2x3 matrix; Umeyama, TPAMI 1991, with the reflection guard.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    c = float((sig * d).sum() / var_s) if scale else 1.0
    t = mu_d - c * r @ mu_s
    return np.hstack([c * r, t[:, None]])


def face_outline(points: np.ndarray, kind: Literal["full", "inner"] = "full") -> np.ndarray:
    """The face-region polygon (N, 2) in the coordinates of ``points`` (five (x, y) landmarks)."""
    m = umeyama(TEMPLATE_112, np.asarray(points, np.float64).reshape(5, 2))
    poly = FULL_FACE_112 if kind == "full" else INNER_FACE_112
    return poly @ m[:, :2].T + m[:, 2]


def box_points(box: Sequence[float]) -> np.ndarray:
    """The default five points of a face whose landmarks are unknown: ArcFace's template
    stretched over ``box`` (x1, y1, x2, y2), in the box's coordinates."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.stack([x1 + TEMPLATE_112[:, 0] / 112.0 * (x2 - x1),
                     y1 + TEMPLATE_112[:, 1] / 112.0 * (y2 - y1)], axis=1)


def box_in_crop(box: Sequence[float], margin: float, image_size: int) -> tuple[float, ...]:
    """A frame-pixel face box in the pixel coordinates of its stored crop (the crop policy of the
    crop_faces stage: a square of side ``round(max(w, h) * (1 + 2 margin))`` centred on the box,
    resized to ``image_size``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(1, int(math.floor(max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin) + 0.5)))
    left = math.floor((x1 + x2) / 2.0 - side / 2.0 + 0.5)
    top = math.floor((y1 + y2) / 2.0 - side / 2.0 + 0.5)
    k = image_size / side
    return ((x1 - left) * k, (y1 - top) * k, (x2 - left) * k, (y2 - top) * k)


def to_crop(points: np.ndarray, left: int, top: int, side: int, image_size: int) -> np.ndarray:
    """Frame-pixel points in the pixel coordinates of the crop cut at (left, top, side)."""
    return (np.asarray(points, np.float64) - (left, top)) * (image_size / side)


__all__ = ["FULL_FACE_112", "INNER_FACE_112", "LANDMARK_COLUMNS", "TEMPLATE_112", "box_in_crop",
           "box_points", "face_outline", "to_crop", "umeyama"]
