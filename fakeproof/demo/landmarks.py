"""Face detection, 5-point landmarks, similarity alignment and face-region outlines.

Detection is facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016), whose weights ship inside the wheel.
It runs on the CPU with one thread and deterministic algorithms, and its landmarks are rounded to
1/4 px, so the demo built on them is reproducible.

Landmarks are ordered left eye, right eye, nose, left mouth corner, right mouth corner (image
left/right). Alignment uses the least-squares similarity of Umeyama ("Least-squares estimation of
transformation parameters between two point patterns", TPAMI 1991) onto the 112x112 five-point
template of ArcFace (Deng et al., CVPR 2019). Face-region polygons are drawn in that template's
frame and mapped into the image with the same similarity, so five points are enough for a hull mask.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np

from fakeproof.demo.imaging import apply_affine
from fakeproof.errors import FakeproofError

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


class FaceNotFoundError(FakeproofError, RuntimeError):
    """MTCNN found no face in an image that must contain one."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1), 5 landmarks (5, 2) and detection probability."""

    box: np.ndarray
    points: np.ndarray
    prob: float

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])


@contextlib.contextmanager
def torch_deterministic(threads: int = 1) -> Iterator[None]:
    """Run torch on ``threads`` CPU threads with deterministic algorithms; restore afterwards."""
    import torch

    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


@functools.lru_cache(maxsize=4)
def _mtcnn(min_face_size: int):
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu", min_face_size=min_face_size)


def detect_faces(image: np.ndarray, min_face_size: int = 20) -> list[Face]:
    """All faces MTCNN finds in an RGB uint8 image, most probable first (points rounded to 1/4 px).

    ``min_face_size`` (px) sets MTCNN's smallest pyramid scale: larger is faster.
    """
    import torch
    from PIL import Image

    with torch_deterministic(1), torch.no_grad():
        pil = Image.fromarray(np.asarray(image, np.uint8))
        boxes, probs, points = _mtcnn(int(min_face_size)).detect(pil, landmarks=True)
    if boxes is None:
        return []
    boxes = np.round(np.asarray(boxes).astype(float) * 4) / 4
    points = np.round(np.asarray(points).astype(float) * 4) / 4
    probs = np.asarray(probs).astype(float)
    order = np.argsort(-probs, kind="stable")
    return [Face(boxes[i], points[i], float(probs[i])) for i in order]


def detect_face(image: np.ndarray, where: str = "image", min_face_size: int = 20) -> Face:
    """The largest face in ``image``; raise :class:`FaceNotFoundError` naming ``where`` if none."""
    faces = detect_faces(image, min_face_size)
    if not faces:
        raise FaceNotFoundError(f"{where}: MTCNN found no face; use a photo with a visible frontal "
                                "face")
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


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


def template_to_image(points: np.ndarray) -> np.ndarray:
    """The similarity mapping the 112x112 template frame onto an image with these landmarks."""
    return umeyama(TEMPLATE_112, points)


def face_outline(points: np.ndarray, kind: Literal["full", "inner"] = "full") -> np.ndarray:
    """Polygon (N, 2) of the face region in image coordinates from the 5 landmarks."""
    poly = FULL_FACE_112 if kind == "full" else INNER_FACE_112
    return apply_affine(template_to_image(points), poly)


def face_scale(points: np.ndarray) -> float:
    """Pixels per template unit: the face's size (112 units span hairline to chin)."""
    m = template_to_image(points)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
