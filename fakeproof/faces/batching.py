"""Tasks of videos cut into MTCNN batches: a worker's group of videos streams its stored frames
in batches (a batch closes when the frame size changes), detects or reuses an original's boxes, and
returns encoded crops and faces.csv rows (:func:`crop_groups`, :func:`crop_task`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from fakeproof.config import FacesParams
from fakeproof.faces.geometry import Face, crop_box
from fakeproof.faces.mtcnn import FaceCropper
from fakeproof.frames import iter_frame_batches
from fakeproof.landmarks import box_points, to_crop
from fakeproof.parallel import prefetch
from fakeproof.store import encode_image, face_key

log = logging.getLogger("fakeproof.faces")


def _fmt(v: float, nd: int) -> str:
    return f"{v:.{nd}f}"


def landmark_cells(face: Face, fp: FacesParams) -> list[str]:
    """faces.csv's landmark cells of one face: its five points in the crop's pixel coordinates
    (0.01 px); the box template (:func:`fakeproof.landmarks.box_points`) when it has none."""
    left, top, side = crop_box(face.box, fp.margin)
    pts = (np.asarray(face.points, np.float64).reshape(5, 2) if face.points is not None
           else box_points(face.box))
    return [_fmt(v, 2) for v in to_crop(pts, left, top, side, fp.image_size).reshape(-1)]


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
