"""The crop_faces stage: reals then fakes, in tasks of ``faces.videos_per_task`` videos run where
``faces.workers`` / ``faces.scheduler`` say, written in one fixed order to the LMDB store and
faces.csv (see :mod:`fakeproof.faces`)."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from fakeproof import parallel
from fakeproof.config import FacesParams, Params
from fakeproof.faces.batching import Boxes, ChunkResult, VideoTask, crop_groups, crop_task
from fakeproof.faces.mtcnn import FaceCropper
from fakeproof.frames import read_frame_index, read_video_table
from fakeproof.io import atomic_path
from fakeproof.landmarks import LANDMARK_COLUMNS
from fakeproof.store import FaceStoreWriter

log = logging.getLogger("fakeproof.faces")

#: Every column crop_faces writes to faces.csv (training reads a few: data.FACES_CSV_READ).
FACES_CSV_COLUMNS = ["key", "video_id", "frame", "face", "x1", "y1", "x2", "y2", "prob",
                     "box_source", *LANDMARK_COLUMNS]


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
        out.writerow(FACES_CSV_COLUMNS)
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
    _log_summary(stats, waves, missing, no_face_videos)
    return stats


def _log_summary(stats: dict, waves: dict[str, tuple[int, float]], missing: list[str],
                 no_face_videos: list[str]) -> None:
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
             stats["frames_no_face"], stats["frames_per_s"], stats["seconds"], stats["workers"],
             stats["device"])


def _some(items: Sequence[str], n: int = 5) -> str:
    head = ", ".join(items[:n])
    return head + (f" and {len(items) - n} more" if len(items) > n else "")
