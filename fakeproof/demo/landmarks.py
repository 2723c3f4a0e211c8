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
# the template, the outlines and the similarity live in fakeproof.landmarks (SBI training uses them)
from fakeproof.landmarks import FULL_FACE_112, INNER_FACE_112, TEMPLATE_112, umeyama  # noqa: F401
from fakeproof.errors import FakeproofError


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
