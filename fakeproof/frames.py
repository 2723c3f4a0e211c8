"""The extract_frames stage: sample frames from every video and store them, one file per video.

For each row of the video table (``data/raw/videos.csv``, columns in :mod:`fakeproof.sources`):

1. check the file (missing, empty, not a video, stream errors such as a truncated file) and probe
   its size, frame rate and exact frame count (:func:`fakeproof.video.probe`);
2. choose frame indices with :func:`fakeproof.video.sample_indices`: ``frames.mode: count`` keeps
   ``frames.count`` frames spaced evenly (32 by default, as DeepfakeBench), ``fps`` keeps
   ``frames.fps`` frames per second up to ``frames.max_frames``;
3. decode only those frames, downscaled so that the longer side is at most ``frames.max_side``;
4. write ``<out_dir>/<video_id>.tar``: JPEG frames named ``<index:06d>.jpg`` (PIL, quality
   ``frames.jpeg_quality``, 4:2:0 like the source video, no EXIF), members sorted, with fixed
   mtime/uid/gid/owner names, so the bytes depend on the inputs and params only. One file per
   video keeps DVC fast (it is slow with one file per frame).

Beside the tars: ``index.csv`` (video_id, frame, width, height, n_frames_video, fps: one row per
stored frame) and ``problems.csv`` (video_id, path, stage, reason: one row per video that was
skipped). A bad video never stops the stage and is never dropped silently: it is logged and listed
in ``problems.csv``. The whole folder is written to a temporary sibling and renamed into place,
so a failed run leaves the previous ``out_dir`` intact.

Relative video paths are resolved against the current directory (the project root, where DVC runs
the stages; the download stage writes them that way).

Parallelism (:mod:`fakeproof.parallel`). Videos are extracted by ``frames.workers`` local
processes (0, the default, = every core; 1 = in this process), or by the workers of a Dask
cluster when ``frames.scheduler`` is a ``tcp://`` address. Each video's archive depends on that
video and the params only, and ``index.csv``/``problems.csv`` are built in table order, so the
folder is byte-identical whatever the backend (``tests/test_parallel_preprocess.py``). The ffmpeg
calls run one thread each.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from fakeproof import parallel, video
from fakeproof.config import FramesParams, Params
from fakeproof.io import atomic_path, read_stage_csv, write_csv
from fakeproof.sources import PROBLEM_COLUMNS, SourceError, validate_video_table
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

STAGE = "extract_frames"
INDEX_COLUMNS = ["video_id", "frame", "width", "height", "n_frames_video", "fps"]
INDEX_FILE = "index.csv"
PROBLEMS_FILE = "problems.csv"
TAR_SUFFIX = ".tar"
FRAME_SUFFIX = ".jpg"


class FramesError(FakeproofError, RuntimeError):
    """The stage cannot run at all (unreadable video table, missing frames folder); one line."""


# --------------------------------------------------------------------------------------------------
# Video table
# --------------------------------------------------------------------------------------------------


def read_video_table(videos_csv: str | Path) -> pd.DataFrame:
    """Read and validate ``videos.csv``; raise :class:`FramesError` naming the file if unusable."""
    videos_csv = Path(videos_csv)
    df = read_stage_csv(videos_csv, "download", FramesError, dtype=str)
    try:
        return validate_video_table(df, str(videos_csv))
    except (ValueError, TypeError) as e:
        raise FramesError(f"{videos_csv}: bad values ({str(e).splitlines()[0]}); "
                          "re-run the download stage") from None
    except SourceError as e:
        raise FramesError(str(e)) from None


def resolve_path(path: str, base: Optional[Path] = None) -> Path:
    """A video path from the table: absolute as given, else relative to ``base`` (default: the
    current directory)."""
    p = Path(path)
    return p if p.is_absolute() or base is None else Path(base) / p


def choose_indices(params: FramesParams, info: video.VideoInfo) -> list[int]:
    """The frame indices kept for a video (see the module docstring)."""
    return video.sample_indices(info.n_frames, info.fps, params.mode, params.count, params.fps,
                                params.max_frames)


def stream_errors(path: str | Path) -> str:
    """The first error ffmpeg reports while reading every video packet ('' when clean).

    Demuxing only (``-c copy``): a truncated or damaged file shows up as ``partial file`` or
    ``Invalid NAL unit size`` without the cost of decoding.
    """
    proc = subprocess.run(
        [video.ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *video.INPUT_GUARD,
         "-i", video.local_input(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace")
    lines = [_clean(ln.strip()) for ln in proc.stderr.splitlines() if ln.strip()]
    if proc.returncode != 0 and not lines:
        lines = [f"ffmpeg exit code {proc.returncode}"]
    return lines[0] if lines else ""


# --------------------------------------------------------------------------------------------------
# Per-video frame archives
# --------------------------------------------------------------------------------------------------


def frame_name(index: int) -> str:
    return f"{int(index):06d}{FRAME_SUFFIX}"


def tar_path(frames_dir: str | Path, video_id: str) -> Path:
    return Path(frames_dir) / f"{video_id}{TAR_SUFFIX}"


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """Deterministic baseline JPEG (PIL/libjpeg, 4:2:0, no EXIF, no optimisation pass)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame), "RGB").save(
        buf, "JPEG", quality=int(quality), subsampling=2, optimize=False)
    return buf.getvalue()


def write_frames_tar(dest: str | Path, indices: Sequence[int], frames: np.ndarray,
                     quality: int) -> None:
    """Write frames as ``<index:06d>.jpg`` members of a tar with fixed metadata (sorted by index)."""
    order = np.argsort(np.asarray(indices), kind="stable")
    with open(dest, "wb") as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in order:
            data = encode_jpeg(frames[k], quality)
            info = tarfile.TarInfo(frame_name(indices[k]))
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))


def _decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def iter_frame_batches(frames_dir: str | Path, video_id: str, batch_size: int = 32
                       ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Stream a video's stored frames in order as ``(indices, uint8 (n, H, W, 3))`` batches.

    Only one batch is decoded at a time, so memory does not grow with the video's length.
    """
    path = tar_path(frames_dir, video_id)
    if not path.is_file():
        raise FramesError(f"{path}: no stored frames for video {video_id!r}; "
                                "re-run extract_frames or check its problems.csv")
    indices: list[int] = []
    frames: list[np.ndarray] = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(FRAME_SUFFIX):
                    continue
                fh = tar.extractfile(member)
                assert fh is not None
                indices.append(int(member.name[: -len(FRAME_SUFFIX)]))
                frames.append(_decode_jpeg(fh.read()))
                if len(frames) == batch_size:
                    yield indices, np.stack(frames)
                    indices, frames = [], []
    except (tarfile.TarError, OSError, ValueError) as e:
        raise FramesError(f"{path}: unreadable frame archive ({e}); re-run extract_frames") from None
    if frames:
        yield indices, np.stack(frames)


def read_frame_index(frames_dir: str | Path) -> pd.DataFrame:
    """The ``index.csv`` of a frames folder."""
    path = Path(frames_dir) / INDEX_FILE
    return read_stage_csv(path, "extract_frames", FramesError, keep_default_na=True,
                          dtype={"video_id": str})


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def extract_video(row: dict, params: FramesParams, out_dir: Path, base: Optional[Path] = None
                  ) -> tuple[list[dict], Optional[dict]]:
    """Extract one video into ``out_dir``; return (index rows, problem row or None).

    A relative ``row["path"]`` is read relative to ``base`` (default: the current directory).
    """
    vid, path = row["video_id"], resolve_path(row["path"], base)

    def problem(reason: str) -> tuple[list[dict], dict]:
        return [], {"video_id": vid, "path": row["path"], "stage": STAGE, "reason": reason}

    if not path.exists():
        return problem("missing file")
    if not path.is_file():
        return problem("not a file")
    if path.stat().st_size == 0:
        return problem("empty file (0 bytes)")
    try:
        info = video.probe(path)
    except video.VideoError as e:
        return problem(_reason(e, path))
    err = stream_errors(path)
    if err:
        return problem(f"damaged or truncated stream: {err}")
    want = choose_indices(params, info)
    try:
        got, frames = video.read_frames(path, want, info, max_side=params.max_side)
    except video.VideoError as e:
        return problem(f"decode failed: {_reason(e, path)}")
    if len(got) < len(want):
        return problem(f"truncated: decoded {len(got)} of {len(want)} sampled frames")
    write_frames_tar(tar_path(out_dir, vid), got, frames, params.jpeg_quality)
    h, w = int(frames.shape[1]), int(frames.shape[2])
    rows = [{"video_id": vid, "frame": int(i), "width": w, "height": h,
             "n_frames_video": int(info.n_frames), "fps": float(info.fps)} for i in got]
    return rows, None


def _reason(e: Exception, path: Path) -> str:
    """An error message without the (already listed) path prefix."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    prefix = f"{path}: "
    return _clean(msg[len(prefix):] if msg.startswith(prefix) else msg)


_ADDRESS = re.compile(r"\[([^\]@]*?) @ 0x[0-9a-fA-F]+\]")


def _clean(msg: str) -> str:
    """Drop ffmpeg's memory addresses ('[h264 @ 0x55...]' -> '[h264]') so reports are deterministic."""
    return _ADDRESS.sub(r"[\1]", msg)


def extract_task(task: tuple[dict, FramesParams, str, str]) -> tuple[list[dict], Optional[dict]]:
    """One executor task: :func:`extract_video` on ``(row, params, out_dir, base)``."""
    row, params, out_dir, base = task
    return extract_video(row, params, Path(out_dir), Path(base))


def run_extract_frames(params: Params, videos_csv: Path, out_dir: Path) -> dict:
    """Run the stage: frames of every video of ``videos_csv`` into ``out_dir`` (see module doc).

    Returns ``{"videos": extracted, "videos_total", "frames", "problems", "seconds", "workers"}``.
    """
    t0 = time.perf_counter()
    fp = params.frames
    videos = read_video_table(videos_csv)
    rows = videos.to_dict("records")
    index_rows: list[dict] = []
    problems: list[dict] = []
    base = os.getcwd()  # workers (a forkserver, other machines) do not share our working directory
    # The stage alone needs no torch in its workers; a process that has torch loaded (tests, a
    # notebook) will likely crop faces next and gets the forkserver crop_faces wants.
    preload = parallel.PREPROCESS_MODULES if "torch" in sys.modules else ("fakeproof.frames",)
    with atomic_path(out_dir, is_dir=True) as tmp, \
            parallel.executor("frames", fp.workers, fp.scheduler, tasks=len(rows),
                              preload=preload) as ex:
        # Results come back in table order, so outputs do not depend on timing or backend.
        tasks = ((row, fp, str(tmp.resolve()), base) for row in rows)
        for res_rows, prob in tqdm(ex.imap(extract_task, tasks), total=len(rows),
                                   desc="extract_frames", unit="video", disable=None):
            index_rows.extend(res_rows)
            if prob is not None:
                problems.append(prob)
                log.warning("extract_frames: skipped %s (%s): %s", prob["video_id"], prob["path"],
                            prob["reason"])
        index = pd.DataFrame(index_rows, columns=INDEX_COLUMNS)
        index = index.sort_values(["video_id", "frame"], kind="stable").reset_index(drop=True)
        write_csv(tmp / INDEX_FILE, index)
        write_csv(tmp / PROBLEMS_FILE, pd.DataFrame(problems, columns=PROBLEM_COLUMNS))
    n_ok = int(index["video_id"].nunique()) if len(index) else 0
    seconds = time.perf_counter() - t0
    stats = {"videos": n_ok, "videos_total": len(rows), "frames": int(len(index)),
             "problems": len(problems), "seconds": round(seconds, 2),
             "frames_per_s": round(len(index) / seconds, 2) if seconds > 0 else 0.0,
             "workers": ex.description}
    if problems:
        log.warning("extract_frames: %d of %d videos skipped; see %s", len(problems), len(rows),
                    Path(out_dir) / PROBLEMS_FILE)
    log.info("extract_frames: %d of %d videos, %d frames, %d problems; %.1f frames/s, %.1fs on %s",
             stats["videos"], stats["videos_total"], stats["frames"], stats["problems"],
             stats["frames_per_s"], stats["seconds"], ex.description)
    return stats
