"""The crop_faces stage: MTCNN face detection and the crop policy.

Detection. facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016; weights ship in the wheel) runs on the
CPU on batches of up to ``faces.batch_size`` frames of one video (MTCNN batches need equal sizes;
all stored frames of a video share one size). Frames are first downscaled (PIL bilinear, aspect
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
exactly the geometry used.

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

Determinism. Detection runs with ``torch.use_deterministic_algorithms(True)`` (MTCNN's CPU ops
all support it) on one intra-op thread (:data:`DETECT_THREADS`); both settings are restored
afterwards. With one thread the results do not depend on the machine's core count (MTCNN's boxes
move by about 1e-5 px between 1 and 2 threads, which the 0.01 px rounding absorbs except at
rounding boundaries; CPU instruction sets can differ likewise). Outputs are byte-identical
between runs (``faces.csv`` and ``data.mdb``; checked by ``tests/test_faces.py``).

Speed and memory (``benchmarks/bench_crop.py``, 2 shared cores). One thread is also the fast
choice: with other work on the cores, MTCNN on 2 threads ran at 2 frames/s against 12 on one
(OpenMP threads wait on each other). A background thread reads and JPEG-decodes the next batch
of frames while MTCNN runs (:func:`prefetch`); the stage runs at 0.85x bare ``MTCNN.detect()``
on the same frames (640x360, 32 frames per video). Frames stream one batch at a time and peak
RSS is flat in the number of videos (1227 MiB for 4 videos, 1215 MiB for 16): R-/O-net inputs
are padded to a multiple of 32 candidates (:class:`PadBatch`) because oneDNN caches a compiled
primitive per input shape, which made RSS grow by 200 MiB from 4 to 16 videos.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fakeproof.config import FacesParams, Params
from fakeproof.frames import iter_frame_batches, read_frame_index, read_video_table
from fakeproof.io import atomic_path
from fakeproof.store import FaceStoreWriter, face_key

log = logging.getLogger(__name__)

DETECT_THREADS = 1
PNET_MULTIPLE = 4
CANDIDATE_MULTIPLE = 32
FACES_COLUMNS = ["key", "video_id", "frame", "face", "x1", "y1", "x2", "y2", "prob", "box_source"]


@dataclass(frozen=True)
class Face:
    """One detected face: box in frame pixels (x1, y1, x2, y2) and its MTCNN probability."""

    x1: float
    y1: float
    x2: float
    y2: float
    prob: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def scaled(self, sx: float, sy: float) -> "Face":
        return Face(round(self.x1 * sx, 2), round(self.y1 * sy, 2), round(self.x2 * sx, 2),
                    round(self.y2 * sy, 2), self.prob)


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


@contextlib.contextmanager
def deterministic_torch(threads: int = DETECT_THREADS) -> Iterator[None]:
    """Deterministic algorithms and ``threads`` intra-op threads for the block; restores both."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


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
    """

    def __init__(self, params: FacesParams) -> None:
        from facenet_pytorch import MTCNN

        self.params = params
        self.mtcnn = MTCNN(image_size=params.image_size, margin=0, min_face_size=params.min_face_size,
                           thresholds=list(params.thresholds), factor=0.709, post_process=False,
                           select_largest=True, keep_all=True, device=torch.device("cpu"))
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
        for boxes, probs in raw:
            faces = []
            if boxes is not None:
                b = np.asarray(boxes, dtype=object).astype(float).reshape(-1, 4)
                p = np.asarray(probs, dtype=object).astype(float).reshape(-1)
                for (x1, y1, x2, y2), pr in zip(b, p):
                    faces.append(Face(round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2),
                                      round(y2 * sy, 2), float(pr)))
            out.append(faces)
        return out

    def _mtcnn(self, small: np.ndarray) -> list[tuple]:
        """MTCNN on a batch; if the batch fails (facenet-pytorch edge cases), frame by frame."""
        try:
            with torch.no_grad(), deterministic_torch():
                boxes, probs = self.mtcnn.detect(small)
            return list(zip(boxes, probs))
        except (RuntimeError, ValueError, IndexError):
            if len(small) == 1:
                self.errors += 1
                log.warning("crop_faces: MTCNN failed on a frame; counted as no face")
                return [(None, None)]
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
# The stage
# --------------------------------------------------------------------------------------------------


def _fmt(v: float, nd: int) -> str:
    return f"{v:.{nd}f}"


_DONE = object()


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` items ahead (order kept; errors re-raised).

    Frame archives are read and JPEG-decoded (PIL releases the GIL) while MTCNN runs on the
    previous batch, which keeps the stage close to bare detection speed.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, _DONE))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))

    t = threading.Thread(target=work, name="frame-prefetch", daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.1)


def _video_batches(frames_dir: Path, vids: Sequence[str], batch_size: int
                   ) -> Iterator[tuple[str, list[int], np.ndarray]]:
    for vid in vids:
        for indices, frames in iter_frame_batches(frames_dir, vid, batch_size):
            yield vid, indices, frames
        yield vid, [], _END_OF_VIDEO


_END_OF_VIDEO = np.zeros((0, 0, 0, 3), np.uint8)


@dataclass
class _VideoState:
    """What the stage tracks while one video's batches stream by."""

    vid: str
    reuse: Optional[tuple[int, int, dict[int, list[Face]]]]
    keep: Optional[dict[int, list[Face]]]
    n_faces: int = 0
    size: tuple[int, int] = (0, 0)


def _crop_batch(cropper: FaceCropper, st: _VideoState, indices: list[int], frames: np.ndarray,
                writer: FaceStoreWriter, out, stats: dict) -> None:
    """Boxes (reused or detected) for one batch of a video's frames; crops into the store/CSV."""
    h, w = frames.shape[1:3]
    st.size = (w, h)
    chosen: list[Optional[list[Face]]] = [None] * len(indices)
    sources = ["self"] * len(indices)
    if st.reuse is not None:
        ow, oh, obox = st.reuse
        for k, fi in enumerate(indices):
            if obox.get(fi):
                chosen[k] = [f.scaled(w / ow, h / oh) if (ow, oh) != (w, h) else f for f in obox[fi]]
                sources[k] = "original"
    todo = [k for k, c in enumerate(chosen) if c is None]
    if todo:
        for k, faces in zip(todo, cropper.detect(frames[todo])):
            chosen[k] = faces
    for k, fi in enumerate(indices):
        faces = chosen[k] or []
        stats["frames"] += 1
        stats["frames_reused"] += sources[k] == "original"
        if st.keep is not None and faces:
            st.keep[fi] = faces
        if not faces:
            stats["frames_no_face"] += 1
        for j, face in enumerate(faces):
            key = face_key(st.vid, fi, j)
            writer.put(key, cropper.crop(frames[k], face))
            out.writerow([key, st.vid, fi, j, _fmt(face.x1, 2), _fmt(face.y1, 2), _fmt(face.x2, 2),
                          _fmt(face.y2, 2), _fmt(face.prob, 6), sources[k]])
            st.n_faces += 1


def run_crop_faces(params: Params, videos_csv: Path, frames_dir: Path, out_lmdb: Path,
                   out_csv: Path) -> dict:
    """Run the stage: crops of every stored frame into ``out_lmdb`` and ``out_csv`` (faces.csv).

    Returns stats: videos, videos_no_frames, videos_no_face, frames, frames_no_face, faces,
    frames_reused, frames_per_s, seconds.
    """
    t0 = time.perf_counter()
    fp = params.faces
    frames_dir = Path(frames_dir)
    videos = read_video_table(videos_csv)
    index = read_frame_index(frames_dir)
    have = set(index["video_id"].astype(str))
    missing = videos.loc[~videos["video_id"].isin(have), "video_id"].tolist()
    videos = videos[videos["video_id"].isin(have)]
    reals = videos[videos["label"] == 0].sort_values("video_id", kind="stable")
    fakes = videos[videos["label"] == 1].sort_values("video_id", kind="stable")
    originals = set(fakes["original"]) & set(reals["video_id"]) if fp.reuse_original_boxes else set()
    order = list(reals.itertuples(index=False)) + list(fakes.itertuples(index=False))

    cropper = FaceCropper(fp)
    # video_id -> (width, height, {frame index: [Face]}) for reals that some fake refers to.
    boxes_of: dict[str, tuple[int, int, dict[int, list[Face]]]] = {}
    stats = dict(videos=0, videos_no_frames=len(missing), videos_no_face=0, frames=0,
                 frames_no_face=0, faces=0, frames_reused=0)
    no_face_videos: list[str] = []
    with atomic_path(out_csv) as csv_tmp, open(csv_tmp, "w", newline="") as fh, \
            FaceStoreWriter(out_lmdb, fp.encoding, fp.jpeg_quality) as writer, \
            contextlib.ExitStack() as stack:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(FACES_COLUMNS)
        rows = {r.video_id: r for r in order}
        batches = prefetch(_video_batches(frames_dir, [r.video_id for r in order], fp.batch_size))
        progress = tqdm(total=len(order), desc="crop_faces", unit="video", disable=None)
        state: Optional[_VideoState] = None
        stack.callback(batches.close)
        stack.callback(progress.close)
        for vid, indices, frames in batches:
            if state is None:
                row = rows[vid]
                reuse = boxes_of.get(row.original) if row.label == 1 and row.original else None
                state = _VideoState(vid, reuse, {} if vid in originals else None)
            if frames is _END_OF_VIDEO:
                stats["videos"] += 1
                stats["faces"] += state.n_faces
                if state.n_faces == 0:
                    stats["videos_no_face"] += 1
                    no_face_videos.append(vid)
                if state.keep:  # "was detected": at least one frame with a face
                    boxes_of[vid] = (state.size[0], state.size[1], state.keep)
                state = None
                progress.update(1)
                continue
            _crop_batch(cropper, state, indices, frames, writer, out, stats)
    seconds = time.perf_counter() - t0
    stats["detect_errors"] = cropper.errors
    stats["frames_per_s"] = round(stats["frames"] / seconds, 2) if seconds > 0 else 0.0
    stats["seconds"] = round(seconds, 2)
    if missing:
        log.warning("crop_faces: %d videos have no stored frames (skipped by extract_frames; see "
                    "its problems.csv): %s", len(missing), _some(missing))
    if stats["frames_no_face"]:
        log.warning("crop_faces: %d of %d frames had no face; %d videos had none at all%s",
                    stats["frames_no_face"], stats["frames"], stats["videos_no_face"],
                    f": {_some(no_face_videos)}" if no_face_videos else "")
    log.info("crop_faces: %d videos, %d frames, %d faces (%d frames with reused boxes), "
             "%d frames without a face; %.1f frames/s, %.1fs", stats["videos"], stats["frames"],
             stats["faces"], stats["frames_reused"], stats["frames_no_face"], stats["frames_per_s"],
             stats["seconds"])
    return stats


def _some(items: Sequence[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")

