"""The crop_faces stage: MTCNN face detection and the crop policy.

Detection. facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016; weights ship in the wheel) runs on
``faces.device`` (``auto``: the GPU when torch sees one) on batches of up to ``faces.batch_size``
frames of the ``faces.videos_per_task`` videos of one task (default 1; MTCNN batches need equal
sizes, so a batch closes when the frame size changes). Frames are first downscaled (PIL bilinear, aspect
kept) so that their longer side is at most ``faces.detect_max_side``, and boxes are scaled back to
frame pixels, as the DFDC winner does (selimsef/dfdc_deepfake_challenge). Parameters:

- ``faces.thresholds``: P-/R-/O-net score thresholds (MTCNN's own; the DFDC winner used
  [0.85, 0.95, 0.95]);
- ``faces.min_face_size``: the smallest face MTCNN searches for, in pixels of the *detection*
  image (the frame after downscaling to ``detect_max_side``): it sets the image pyramid;
- ``faces.min_prob``: faces whose O-net probability is below this are dropped;
- ``faces.select``: ``largest`` keeps the face with the largest box area per frame, ``all`` keeps
  every face, numbered 0, 1, ... by decreasing area (ties: higher probability, then left, top).

Boxes are rounded to 0.01 px and the crops are cut from the rounded boxes, so ``faces.csv`` holds
exactly the geometry used. Beside each box, ``faces.csv`` holds MTCNN's five landmarks in the
**crop's** pixel coordinates (columns :data:`fakeproof.landmarks.LANDMARK_COLUMNS`, 0.01 px; the
blend masks of ``train.sbi`` are built from them). A face cropped with its original's boxes (box
reuse, below) carries the original's landmarks with them; a face with none (never from MTCNN) is
written with the box template of :func:`fakeproof.landmarks.box_points`. Landmarks are written to
the CSV only: the crops, and so the LMDB store, are the same bytes as without them.

Crop policy (:func:`crop_box`). For a box ``(x1, y1, x2, y2)`` with longer side
``s = max(x2 - x1, y2 - y1)`` and centre ``(cx, cy)``, the crop is the square of side
``S = round(s * (1 + 2 * margin))`` (at least 1) whose top-left pixel is
``(floor(cx - S/2 + 0.5), floor(cy - S/2 + 0.5))``: the box grown by ``margin * s`` on each side
(default one third, the DFDC winner's margin), made square about its centre. Parts of the square
outside the frame are filled with black (zeros), never shifted or stretched, so the face stays
centred and the policy is the same at the borders. The square is resized to
``faces.image_size`` x ``faces.image_size`` with PIL bicubic (antialiased when shrinking).

Box reuse. A fake whose ``original`` (a real video) has stored frames is cropped with the
original's boxes for the same frame index when ``faces.reuse_original_boxes`` is true
(``box_source = original``; probabilities are the original's), scaled if the fake's frames have
another size. The crop then shows the same region in both videos and the detector's behaviour on
manipulated faces cannot leak into the crop (DFDC winner's practice). Frames whose index has no
face in the original fall back to detection on the fake (``box_source = self``). Reals are
processed first, so every original is detected before its fakes; only the boxes of reals that
some fake refers to are kept in memory (a few floats per frame).

Parallelism (:mod:`fakeproof.parallel`). The stage runs in two waves, reals then fakes (a fake's
task carries its original's boxes). Each wave is cut into tasks of ``faces.videos_per_task``
videos, run by ``faces.workers`` local processes (0, the default: every core; 1: this process)
or by the workers of the Dask scheduler at ``faces.scheduler``. A worker builds MTCNN once, runs
it on one intra-op thread, and returns encoded crops and CSV rows; this process writes them in
one fixed order. Detection batches depend on the params only, never on which worker ran them,
so the LMDB store and ``faces.csv`` are byte-identical to a run in this process
(``tests/test_parallel_preprocess.py``, for local processes and a 2-worker Dask LocalCluster)
and to the single-process implementation before parallelism. On a GPU every local worker holds
its own CUDA context (worker k takes GPU k mod count); ``videos_per_task: 8`` with a larger
``batch_size`` gives MTCNN bigger batches there. CPU and GPU boxes differ slightly (other
kernels), so switching devices can move a box by a rounding step.

Determinism. Detection runs with ``torch.use_deterministic_algorithms(True)`` (MTCNN's CPU ops
all support it) on one intra-op thread (:data:`DETECT_THREADS`); both settings are restored
afterwards. With one thread the results do not depend on the machine's core count (MTCNN's boxes
move by about 1e-5 px between 1 and 2 threads, which the 0.01 px rounding absorbs except at
rounding boundaries; CPU instruction sets can differ likewise). Outputs are byte-identical
between runs (``faces.csv`` and ``data.mdb``; checked by ``tests/test_faces.py``).

Speed and memory (``benchmarks/bench_crop.py``, 2 shared cores). One thread is also the fast
choice: with other work on the cores, MTCNN on 2 threads ran at 2 frames/s against 12 on one
(OpenMP threads wait on each other). A background thread reads and JPEG-decodes the next batch
of frames while MTCNN runs (:func:`prefetch`). Per core (CPU time per frame, which the load of a
shared machine hardly moves) the stage runs at 0.89x bare ``MTCNN.detect()`` on the same frames
in one process and 0.87x on every core (640x360, 16 frames per video; 0.65x on a 2-worker Dask
LocalCluster sharing the 2 cores with its scheduler). Frames stream one batch at a time, at most
two tasks per worker are in flight, and memory is flat in the number of videos: from 90 to 900
demo-sized videos (720 to 7,200 frames, 2 processes) the stage and worker peak RSS stay at 856
and 746 MiB and anonymous memory over all processes grows by 5 MiB. R-/O-net inputs are padded
to a multiple of 32 candidates (:class:`PadBatch`) because oneDNN caches a compiled primitive per
input shape, which made RSS grow by 200 MiB from 4 to 16 videos.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fakeproof import parallel
from fakeproof.config import FacesParams, Params
from fakeproof.errors import FakeproofError
from fakeproof.frames import iter_frame_batches, read_frame_index, read_video_table
from fakeproof.io import atomic_path
from fakeproof.landmarks import LANDMARK_COLUMNS, box_points, to_crop
from fakeproof.parallel import prefetch  # noqa: F401  (also used by fakeproof.detect)
from fakeproof.store import FaceStoreWriter, encode_image, face_key

log = logging.getLogger(__name__)

DETECT_THREADS = 1
PNET_MULTIPLE = 4
CANDIDATE_MULTIPLE = 32
FACES_COLUMNS = ["key", "video_id", "frame", "face", "x1", "y1", "x2", "y2", "prob", "box_source",
                 *LANDMARK_COLUMNS]


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


# --------------------------------------------------------------------------------------------------
# Crop policy
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------


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
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if name == "cuda":
            raise FacesError("faces.device = cuda: torch sees no CUDA device in this process; "
                             "use faces.device: auto or cpu")
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.device("cuda", rank % torch.cuda.device_count())


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
                lm = _frame_points(points, len(b), sx, sy)
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


# --------------------------------------------------------------------------------------------------
# The stage: tasks of videos, cropped where the executor puts them
# --------------------------------------------------------------------------------------------------


def _fmt(v: float, nd: int) -> str:
    return f"{v:.{nd}f}"


Boxes = dict[int, list[Face]]  # frame index -> faces (frames with at least one face)


@dataclass(frozen=True)
class VideoTask:
    """One video for a worker. ``reuse``: (width, height, boxes) of the original of a fake;
    ``keep``: return this video's boxes (a real that some fake refers to)."""

    vid: str
    reuse: Optional[tuple[int, int, Boxes]] = None
    keep: bool = False


@dataclass
class VideoResult:
    """A cropped video: store entries and faces.csv rows in output order, counts, kept boxes."""

    vid: str
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    frames: int = 0
    frames_reused: int = 0
    frames_no_face: int = 0
    size: tuple[int, int] = (0, 0)
    boxes: Optional[Boxes] = None


@dataclass
class ChunkResult:
    """The videos of one task, the frames MTCNN failed on, and the device it ran on."""

    videos: list[VideoResult]
    detect_errors: int
    device: str


class _Group:
    """Crops one group of videos. Frames needing detection are pooled across the group's videos
    (equal sizes only) into batches of ``faces.batch_size``; a batch never spans two groups, so
    batches depend on the params alone, not on the executor."""

    def __init__(self, cropper: FaceCropper, tasks: Sequence[VideoTask]) -> None:
        self.cropper, self.tasks = cropper, tasks
        self.done: list[dict[int, tuple[list[Face], str, list[bytes]]]] = [{} for _ in tasks]
        self.size = [(0, 0)] * len(tasks)
        self.pending: list[tuple[int, int, np.ndarray]] = []  # (task, frame index, frame)

    def add(self, t: int, indices: list[int], frames: np.ndarray) -> None:
        h, w = frames.shape[1:3]
        self.size[t] = (w, h)
        reuse = self.tasks[t].reuse
        for k, fi in enumerate(indices):
            if reuse is not None and reuse[2].get(fi):
                ow, oh, obox = reuse
                faces = [f.scaled(w / ow, h / oh) if (ow, oh) != (w, h) else f for f in obox[fi]]
                self._finish(t, fi, frames[k], faces, "original")
                continue
            if self.pending and self.pending[0][2].shape != frames[k].shape:
                self.flush()
            self.pending.append((t, fi, frames[k]))
            if len(self.pending) >= self.cropper.params.batch_size:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            found = self.cropper.detect(np.stack([f for _, _, f in self.pending]))
            for (t, fi, frame), faces in zip(self.pending, found):
                self._finish(t, fi, frame, faces, "self")
            self.pending = []

    def _finish(self, t: int, fi: int, frame: np.ndarray, faces: list[Face], source: str) -> None:
        fp = self.cropper.params
        crops = [encode_image(self.cropper.crop(frame, f), fp.encoding, fp.jpeg_quality) for f in faces]
        self.done[t][fi] = (faces, source, crops)

    def results(self) -> list[VideoResult]:
        self.flush()
        out = []
        for t, task in enumerate(self.tasks):
            res = VideoResult(task.vid, size=self.size[t], boxes={} if task.keep else None)
            for fi in sorted(self.done[t]):
                faces, source, crops = self.done[t][fi]
                res.frames += 1
                res.frames_reused += source == "original"
                res.frames_no_face += not faces
                if res.boxes is not None and faces:
                    res.boxes[fi] = faces
                for j, (face, value) in enumerate(zip(faces, crops)):
                    key = face_key(task.vid, fi, j)
                    res.entries.append((key, value))
                    res.rows.append([key, task.vid, fi, j, _fmt(face.x1, 2), _fmt(face.y1, 2),
                                     _fmt(face.x2, 2), _fmt(face.y2, 2), _fmt(face.prob, 6), source,
                                     *landmark_cells(face, self.cropper.params)])
            out.append(res)
        return out


def _frame_points(points, n: int, sx: float, sy: float) -> list[Optional[tuple[float, ...]]]:
    """MTCNN's landmarks of ``n`` faces, scaled from the detection image to frame pixels and
    rounded to 0.01 px (None each when MTCNN returned none)."""
    if points is None:
        return [None] * n
    pts = np.asarray(points, dtype=object).astype(float).reshape(n, 5, 2) * (sx, sy)
    return [tuple(round(float(v), 2) for v in p.reshape(-1)) for p in pts]


def landmark_cells(face: Face, fp: FacesParams) -> list[str]:
    """faces.csv's landmark cells of one face: its five points in the crop's pixel coordinates
    (0.01 px); the box template (:func:`fakeproof.landmarks.box_points`) when it has none."""
    left, top, side = crop_box(face.box, fp.margin)
    pts = (np.asarray(face.points, np.float64).reshape(5, 2) if face.points is not None
           else box_points(face.box))
    return [_fmt(v, 2) for v in to_crop(pts, left, top, side, fp.image_size).reshape(-1)]


_END_OF_GROUP = -1


def _group_batches(frames_dir: Path, groups: Sequence[Sequence[VideoTask]], batch_size: int
                   ) -> Iterator[tuple[int, list[int], Optional[np.ndarray]]]:
    for group in groups:
        for t, task in enumerate(group):
            for indices, frames in iter_frame_batches(frames_dir, task.vid, batch_size):
                yield t, indices, frames
        yield _END_OF_GROUP, [], None


def crop_groups(cropper: FaceCropper, frames_dir: Path, groups: Sequence[Sequence[VideoTask]]
                ) -> Iterator[ChunkResult]:
    """Crop each group of videos in turn (frames read one batch ahead, :func:`prefetch`)."""
    stream = prefetch(_group_batches(Path(frames_dir), groups, cropper.params.batch_size))
    try:
        gi, errors = 0, cropper.errors
        group = _Group(cropper, groups[0]) if groups else None
        for t, indices, frames in stream:
            if t != _END_OF_GROUP:
                group.add(t, indices, frames)
                continue
            videos = group.results()
            yield ChunkResult(videos, cropper.errors - errors, str(cropper.device))
            gi, errors = gi + 1, cropper.errors
            group = _Group(cropper, groups[gi]) if gi < len(groups) else None
    finally:
        stream.close()


_cached: Optional[tuple[str, FaceCropper]] = None


def crop_task(task: tuple[FacesParams, str, list[VideoTask]]) -> ChunkResult:
    """One executor task: crop a group of videos with this worker's (cached) cropper."""
    global _cached
    fp, frames_dir, group = task
    if _cached is None or _cached[0] != repr(fp):
        _cached = (repr(fp), FaceCropper(fp))
    return next(crop_groups(_cached[1], Path(frames_dir), [group]))


def _wave(ex: parallel.Executor, fp: FacesParams, frames_dir: Path, tasks: list[VideoTask],
          local: Callable[[], FaceCropper]) -> Iterator[ChunkResult]:
    per = fp.videos_per_task
    groups = [tasks[i:i + per] for i in range(0, len(tasks), per)]
    if ex.in_process:  # one read-ahead stream over the whole wave
        yield from crop_groups(local(), frames_dir, groups)
    else:
        yield from ex.imap(crop_task, ((fp, str(frames_dir), g) for g in groups))


def run_crop_faces(params: Params, videos_csv: Path, frames_dir: Path, out_lmdb: Path,
                   out_csv: Path) -> dict:
    """Run the stage: crops of every stored frame into ``out_lmdb`` and ``out_csv`` (faces.csv).

    Two waves: reals, then fakes (a fake reuses its original's boxes, see the module docstring).
    Tasks run where ``faces.workers``/``faces.scheduler`` say (:mod:`fakeproof.parallel`); results
    are written in one fixed order (reals then fakes, each by video id), so the outputs are
    byte-identical to a run in this process.

    Returns stats: videos, videos_no_frames, videos_no_face, frames, frames_no_face, faces,
    frames_reused, detect_errors, frames_per_s, seconds, seconds_reals, seconds_fakes, workers,
    device.
    """
    t0 = time.perf_counter()
    fp = params.faces
    frames_dir = Path(frames_dir).resolve()  # workers may not share our working directory
    videos = read_video_table(videos_csv)
    index = read_frame_index(frames_dir)
    have = set(index["video_id"].astype(str))
    missing = videos.loc[~videos["video_id"].isin(have), "video_id"].tolist()
    videos = videos[videos["video_id"].isin(have)]
    reals = videos[videos["label"] == 0].sort_values("video_id", kind="stable")
    fakes = videos[videos["label"] == 1].sort_values("video_id", kind="stable")
    originals = set(fakes["original"]) & set(reals["video_id"]) if fp.reuse_original_boxes else set()

    local: list[FaceCropper] = []

    def local_cropper() -> FaceCropper:  # the in-process cropper, made on first use
        if not local:
            local.append(FaceCropper(fp))
        return local[0]

    # video_id -> (width, height, boxes) for reals that some fake refers to.
    boxes_of: dict[str, tuple[int, int, Boxes]] = {}
    stats = dict(videos=0, videos_no_frames=len(missing), videos_no_face=0, frames=0,
                 frames_no_face=0, faces=0, frames_reused=0, detect_errors=0)
    no_face_videos: list[str] = []
    devices: set[str] = set()
    n_tasks = -(-len(reals) // fp.videos_per_task) + -(-len(fakes) // fp.videos_per_task)
    with atomic_path(out_csv) as csv_tmp, open(csv_tmp, "w", newline="") as fh, \
            FaceStoreWriter(out_lmdb, fp.encoding, fp.jpeg_quality) as writer, \
            parallel.executor("faces", fp.workers, fp.scheduler, tasks=n_tasks,
                              preload=parallel.PREPROCESS_MODULES) as ex, \
            tqdm(total=len(reals) + len(fakes), desc="crop_faces", unit="video",
                 disable=None) as progress:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(FACES_COLUMNS)
        waves = {}
        for name, rows in (("reals", reals), ("fakes", fakes)):
            tw = time.perf_counter()
            tasks = [VideoTask(r.video_id,
                               boxes_of.get(r.original) if r.label == 1 and r.original else None,
                               r.video_id in originals) for r in rows.itertuples(index=False)]
            for chunk in _wave(ex, fp, frames_dir, tasks, local_cropper):
                devices.add(chunk.device)
                stats["detect_errors"] += chunk.detect_errors
                for res in chunk.videos:
                    for key, value in res.entries:
                        writer.put_value(key, value)
                    out.writerows(res.rows)
                    stats["videos"] += 1
                    stats["frames"] += res.frames
                    stats["frames_reused"] += res.frames_reused
                    stats["frames_no_face"] += res.frames_no_face
                    stats["faces"] += len(res.entries)
                    if not res.entries:
                        stats["videos_no_face"] += 1
                        no_face_videos.append(res.vid)
                    if res.boxes:  # "was detected": at least one frame with a face
                        boxes_of[res.vid] = (res.size[0], res.size[1], res.boxes)
                progress.update(len(chunk.videos))
            waves[name] = (len(tasks), time.perf_counter() - tw)
    seconds = time.perf_counter() - t0
    stats["frames_per_s"] = round(stats["frames"] / seconds, 2) if seconds > 0 else 0.0
    stats["seconds"] = round(seconds, 2)
    stats["seconds_reals"], stats["seconds_fakes"] = (round(waves[w][1], 2) for w in ("reals", "fakes"))
    stats["workers"] = ex.description
    stats["device"] = ",".join(sorted(devices)) or "none"
    if missing:
        log.warning("crop_faces: %d videos have no stored frames (skipped by extract_frames; see "
                    "its problems.csv): %s", len(missing), _some(missing))
    if stats["frames_no_face"]:
        log.warning("crop_faces: %d of %d frames had no face; %d videos had none at all%s",
                    stats["frames_no_face"], stats["frames"], stats["videos_no_face"],
                    f": {_some(no_face_videos)}" if no_face_videos else "")
    log.info("crop_faces: %d videos (%d reals in %.1fs, %d fakes in %.1fs), %d frames, %d faces "
             "(%d frames with reused boxes), %d frames without a face; %.1f frames/s, %.1fs on %s, "
             "MTCNN on %s", stats["videos"], waves["reals"][0], waves["reals"][1], waves["fakes"][0],
             waves["fakes"][1], stats["frames"], stats["faces"], stats["frames_reused"],
             stats["frames_no_face"], stats["frames_per_s"], stats["seconds"], ex.description,
             stats["device"])
    return stats


def _some(items: Sequence[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
