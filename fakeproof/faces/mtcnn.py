"""Detection: facenet-pytorch's MTCNN configured by ``faces.*`` (:class:`FaceCropper`), its
device (:func:`resolve_device`), the deterministic one-thread setting it runs under
(:func:`deterministic_torch`) and the candidate padding that keeps its memory flat
(:class:`PadBatch`); see :mod:`fakeproof.faces`."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional

import numpy as np
import torch
from PIL import Image

from fakeproof import parallel, runtime
from fakeproof.config import FacesParams
from fakeproof.errors import FakeproofError
from fakeproof.faces.geometry import Face, crop_face

log = logging.getLogger("fakeproof.faces")

DETECT_THREADS = 1
PNET_MULTIPLE = 4
CANDIDATE_MULTIPLE = 32


class FacesError(FakeproofError, RuntimeError):
    """Detection cannot run as configured (no CUDA device for faces.device: cuda, GPU memory)."""


@contextlib.contextmanager
def deterministic_torch(threads: int = DETECT_THREADS, warn_only: bool = False) -> Iterator[None]:
    """Deterministic algorithms and ``threads`` intra-op threads for the block; restores both.

    ``warn_only`` (used on CUDA): an op without a deterministic kernel warns instead of failing.
    """
    was = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(was, warn_only=was_warn_only)


def resolve_device(name: str, rank: int = 0) -> torch.device:
    """MTCNN's device for ``faces.device``: ``cpu``; ``cuda`` (an error if torch sees no GPU);
    ``auto`` = cuda when torch sees one, else cpu. Local worker ``rank`` k takes GPU k mod count.

    On CUDA, cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for deterministic matrix products;
    it is set here (unless set already), which takes effect if no cuBLAS handle exists yet.
    """
    device = runtime.resolve_device(name, rank, "faces.device", FacesError)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def detection_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size of the image given to MTCNN: the frame downscaled to ``max_side`` (never upscaled)."""
    if max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


class PadBatch(torch.nn.Module):
    """Run ``net`` on its input padded with zero rows to a multiple of ``multiple``; return the
    outputs of the real rows.

    MTCNN's R-net and O-net see a different number of candidate boxes on every batch, and oneDNN
    caches compiled primitives per input shape (up to 1024 of them, megabytes each), so the
    stage's memory grew with the number of videos (+200 MiB from 4 to 16 videos). Rounding the
    batch up bounds the number of shapes (512 / 32 = 16 per net) at the cost of at most
    ``multiple - 1`` padded rows. Rows are independent (convolutions, PReLU, pooling, linear layers
    work per sample).
    """

    def __init__(self, net: torch.nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = x.shape[0]
        m = -(-n // self.multiple) * self.multiple
        if m != n:
            x = torch.cat([x, x.new_zeros((m - n,) + tuple(x.shape[1:]))])
        return tuple(o[:n] for o in self.net(x))


def frame_points(points, n: int, sx: float, sy: float) -> list[Optional[tuple[float, ...]]]:
    """MTCNN's landmarks of ``n`` faces, scaled from the detection image to frame pixels and
    rounded to 0.01 px (None each when MTCNN returned none)."""
    if points is None:
        return [None] * n
    pts = np.asarray(points, dtype=object).astype(float).reshape(n, 5, 2) * (sx, sy)
    return [tuple(round(float(v), 2) for v in p.reshape(-1)) for p in pts]


class FaceCropper:
    """MTCNN detection plus the crop policy, configured by ``params.faces``.

    ``detect(frames)`` takes equal-sized RGB uint8 frames (N, H, W, 3) and returns, per frame, the
    selected :class:`Face` list (boxes in frame pixels); ``crop(frame, face)`` cuts one crop.
    MTCNN runs on ``device`` (default: :func:`resolve_device` of ``faces.device``).
    """

    def __init__(self, params: FacesParams, device: Optional[torch.device] = None) -> None:
        from facenet_pytorch import MTCNN

        self.params = params
        self.device = device if device is not None else resolve_device(params.device,
                                                                       parallel.worker_rank())
        self.mtcnn = MTCNN(image_size=params.image_size, margin=0, min_face_size=params.min_face_size,
                           thresholds=list(params.thresholds), factor=0.709, post_process=False,
                           select_largest=True, keep_all=True, device=self.device)
        self.mtcnn.pnet = PadBatch(self.mtcnn.pnet, PNET_MULTIPLE)
        self.mtcnn.rnet = PadBatch(self.mtcnn.rnet, CANDIDATE_MULTIPLE)
        self.mtcnn.onet = PadBatch(self.mtcnn.onet, CANDIDATE_MULTIPLE)
        self.mtcnn.eval()
        self.errors = 0

    def detect_all(self, frames: np.ndarray) -> list[list[Face]]:
        """Every face MTCNN finds (no ``min_prob`` or selection), in frame pixels."""
        n, h, w = frames.shape[:3]
        if n == 0:
            return []
        dw, dh = detection_size(w, h, self.params.detect_max_side)
        if (dw, dh) != (w, h):
            small = np.stack([np.asarray(Image.fromarray(f, "RGB").resize(
                (dw, dh), Image.Resampling.BILINEAR)) for f in frames])
        else:
            small = np.ascontiguousarray(frames)
        sx, sy = w / dw, h / dh
        raw = self._mtcnn(small)
        out: list[list[Face]] = []
        for boxes, probs, points in raw:
            faces = []
            if boxes is not None:
                b = np.asarray(boxes, dtype=object).astype(float).reshape(-1, 4)
                p = np.asarray(probs, dtype=object).astype(float).reshape(-1)
                lm = frame_points(points, len(b), sx, sy)
                for (x1, y1, x2, y2), pr, pts in zip(b, p, lm):
                    faces.append(Face(round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2),
                                      round(y2 * sy, 2), float(pr), pts))
            out.append(faces)
        return out

    def _mtcnn(self, small: np.ndarray) -> list[tuple]:
        """MTCNN on a batch; if the batch fails (facenet-pytorch edge cases, GPU memory), frame by
        frame. Errors of the device itself are raised, never counted as frames without a face."""
        cuda = self.device.type == "cuda"
        try:
            with torch.no_grad(), deterministic_torch(warn_only=cuda):
                boxes, probs, points = self.mtcnn.detect(small, landmarks=True)
            return list(zip(boxes, probs, points))
        except (RuntimeError, ValueError, IndexError) as e:
            oom = isinstance(e, torch.cuda.OutOfMemoryError)
            if (cuda and not oom and "CUDA" in str(e)) or (oom and len(small) == 1):
                raise FacesError(f"faces.device = {self.params.device}: MTCNN failed on "
                                 f"{self.device} ({str(e).strip().splitlines()[0][:160]}); lower "
                                 "faces.detect_max_side or use faces.device: cpu") from None
            if len(small) == 1:
                self.errors += 1
                log.warning("crop_faces: MTCNN failed on a frame; counted as no face")
                return [(None, None, None)]
            return [r for i in range(len(small)) for r in self._mtcnn(small[i:i + 1])]

    def select(self, faces: list[Face]) -> list[Face]:
        """Apply ``min_prob`` and ``select`` (largest first; see the module docstring)."""
        kept = [f for f in faces if f.prob >= self.params.min_prob and f.area > 0]
        kept.sort(key=lambda f: (-f.area, -f.prob, f.x1, f.y1))
        return kept[:1] if self.params.select == "largest" else kept

    def detect(self, frames: np.ndarray) -> list[list[Face]]:
        """Selected faces per frame (see :meth:`select`)."""
        return [self.select(f) for f in self.detect_all(frames)]

    def crop(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return crop_face(frame, face.box, self.params.margin, self.params.image_size)
