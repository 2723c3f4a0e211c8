"""ffmpeg access: the binary, probing without ffprobe, decoding sampled frames, encoding clips.

The system ``ffmpeg`` on PATH is used when present, else the static binary that ships inside
``imageio-ffmpeg`` (which has no ffprobe, so probing parses ``ffmpeg -i`` and counts decoded
frames). Decoding goes through ffmpeg-python with ``cmd=``.

Videos are untrusted input (a downloaded archive, anyone's folder), and ffmpeg picks its demuxer
from the file's content, not its name: a playlist (HLS ``.m3u8``, an ``ffconcat`` script) renamed
``.mp4`` makes ffmpeg open the files or URLs it lists. Every ffmpeg call that reads a video
therefore passes :data:`INPUT_GUARD` before ``-i``: ``-protocol_whitelist file,pipe`` (no network,
no ``concat:``/``subfile:`` protocols) and ``-format_whitelist`` with single-file containers only
(:data:`ALLOWED_FORMATS`; the protocol list alone still lets an HLS playlist read local files),
and names the input ``file:<path>`` so that a path is never parsed as a protocol. Before ffmpeg
runs, :func:`check_not_playlist` also refuses files that start like a playlist (``#EXTM3U``,
``ffconcat``, a DASH ``<MPD``), so the message is the same whatever ffmpeg version is installed
(recent ones ignore HLS content in a file not named .m3u8; older ones follow it). A refused file
raises :class:`VideoError` with one line.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ffmpeg
import numpy as np
from fakeproof.errors import FakeproofError


class VideoError(FakeproofError, RuntimeError):
    """A video could not be probed or decoded (corrupt, truncated, not a video, refused)."""


#: ffmpeg demuxers allowed to read a video: containers that never open another file or URL
#: (``mov`` also covers mp4/m4a/3gp, ``matroska`` covers webm). Playlists and scripts (hls, dash,
#: concat), image sequences and devices are not listed, so ffmpeg refuses them.
#: Video file suffixes, the one list: the dataset sources list videos by them, and ``fakeproof
#: detect`` and the web page accept them (the content is checked by ffprobe either way).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                  ".3gp", ".ts", ".mts")
ALLOWED_FORMATS = ("mov", "matroska", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "mxf",
                   "h264", "hevc", "m4v")
#: Input options put before every ``-i`` that reads a video (see the module docstring).
INPUT_GUARD = ("-protocol_whitelist", "file,pipe", "-format_whitelist", ",".join(ALLOWED_FORMATS))
_REFUSED = re.compile(r"not on (?:the )?whitelist")


def local_input(path: str | Path) -> str:
    """The ffmpeg input name of a local file: ``file:<path>``, never read as a protocol URL."""
    return f"file:{path}"


def refusal(path: str | Path, stderr: str) -> VideoError | None:
    """The :class:`VideoError` for a file that :data:`INPUT_GUARD` made ffmpeg refuse, else None."""
    if not _REFUSED.search(stderr):
        return None
    return VideoError(f"{path}: refused: not a single-file video container (ffmpeg allows only "
                      f"{', '.join(ALLOWED_FORMATS)}; playlists such as HLS or ffconcat, which make "
                      "ffmpeg read other files or URLs, are not decoded)")


_PLAYLIST_MARKS = ((b"#EXTM3U", "an HLS playlist"), (b"#EXTINF", "an HLS playlist"),
                   (b"ffconcat", "an ffconcat script"))


def check_not_playlist(path: str | Path) -> None:
    """Raise :class:`VideoError` if ``path`` starts like a playlist, whatever its name."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as e:
        raise VideoError(f"{path}: cannot read it ({e.strerror})") from None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    what = next((w for mark, w in _PLAYLIST_MARKS if text.startswith(mark)), None)
    if what is None and text.startswith((b"<?xml", b"<MPD")) and b"<MPD" in head:
        what = "a DASH manifest"
    if what is not None:
        raise VideoError(f"{path}: refused: {what}, not a video (ffmpeg would read the files or "
                         "URLs it lists); nothing decoded")


def _guarded_input(path: str | Path):
    """``ffmpeg.input`` of a local video with :data:`INPUT_GUARD` as input options."""
    return ffmpeg.input(local_input(path), **{k.lstrip("-"): v for k, v in
                                              zip(INPUT_GUARD[::2], INPUT_GUARD[1::2])})


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: system ffmpeg, else imageio-ffmpeg's bundled one."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def passthrough_option() -> str:
    """The output option that keeps every decoded frame with its timestamp: ``fps_mode`` on
    ffmpeg >= 5.1, ``vsync`` before (Ubuntu 22.04's ffmpeg 4.4, older imageio-ffmpeg builds, which
    reject ``-fps_mode``); both take ``passthrough``. A version that does not parse (a git build,
    ``N-12345-g...``) is taken as new."""
    try:
        first = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True,
                               timeout=30).stdout.split("\n", 1)[0]
    except (OSError, subprocess.SubprocessError):
        return "fps_mode"
    m = re.search(r"version n?(\d+)\.(\d+)", first)
    return "vsync" if m and (int(m.group(1)), int(m.group(2))) < (5, 1) else "fps_mode"


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    n_frames: int


_STREAM = re.compile(r"Stream #\S+.*Video: .*?(\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)")


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and exact frame count of a video (counted by a fast null decode)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    check_not_playlist(path)
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "info", *INPUT_GUARD, "-i",
         local_input(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, text=True, errors="replace")
    err = proc.stderr
    refused = refusal(path, err)
    if refused is not None:
        raise refused
    m = _STREAM.search(err)
    if proc.returncode != 0 or not m:
        last = err.strip().splitlines()[-1] if err.strip() else "no output"
        raise VideoError(f"{path}: not a readable video ({last})")
    width, height = int(m.group(1)), int(m.group(2))
    fm = _FPS.search(err[m.start():])
    fps = float(fm.group(1)) if fm else 25.0
    counts = re.findall(r"frame=\s*(\d+)", err)
    n = int(counts[-1]) if counts else 0
    if n <= 0:
        raise VideoError(f"{path}: no decodable video frames")
    return VideoInfo(width, height, fps, n)


def read_frames(path: str | Path, indices: Sequence[int], info: VideoInfo | None = None,
                max_side: int | None = None) -> tuple[list[int], np.ndarray]:
    """Decode the frames at ``indices`` (sorted, unique) as RGB uint8 (N, H, W, 3).

    Uses ffmpeg's ``select`` filter so only the wanted frames leave the decoder. Frames larger than
    ``max_side`` are downscaled (aspect kept). Returns the indices actually decoded (a truncated
    file yields fewer) and the array.
    """
    info = info or probe(path)
    check_not_playlist(path)
    want = sorted(set(int(i) for i in indices if 0 <= int(i) < info.n_frames))
    if not want:
        raise VideoError(f"{path}: no frames to decode")
    w, h = info.width, info.height
    if max_side and max(w, h) > max_side:
        s = max_side / max(w, h)
        w, h = max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2)
    expr = "+".join(f"eq(n,{i})" for i in want)  # ffmpeg-python escapes the commas
    stream = _guarded_input(path).video.filter("select", expr)
    if (w, h) != (info.width, info.height):
        stream = stream.filter("scale", w, h, flags="area")
    try:
        out, err = (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", threads=1,
                                   **{passthrough_option(): "passthrough"})
            .global_args("-nostdin", "-hide_banner", "-v", "error")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True, quiet=True))
    except ffmpeg.Error as e:
        out, err = e.stdout or b"", e.stderr or b""
    frame_bytes = w * h * 3
    n = len(out) // frame_bytes
    if n == 0:
        refused = refusal(path, err.decode(errors="replace"))
        if refused is not None:
            raise refused
        raise VideoError(f"{path}: decoded no frames ({err.decode(errors='replace').strip()[:200]})")
    arr = np.frombuffer(out[: n * frame_bytes], np.uint8).reshape(n, h, w, 3)
    return want[:n], arr


def sample_indices(n_frames: int, fps: float, mode: str, count: int, rate: float,
                   max_frames: int) -> list[int]:
    """Frame indices to keep: ``count`` spaced evenly (centred in equal bins), or ``rate`` per second."""
    if n_frames <= 0:
        return []
    if mode == "count":
        k = min(count, n_frames)
        return sorted(set(int((i + 0.5) * n_frames / k) for i in range(k)))
    step = max(fps / rate, 1.0)
    idx = sorted(set(int(i * step) for i in range(int(n_frames / step) + 1) if int(i * step) < n_frames))
    return idx[:max_frames]


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 25, crf: int = 23) -> None:
    """Encode RGB uint8 frames (N, H, W, 3) as a deterministic h264 mp4 (libx264, 1 thread)."""
    n, h, w, _ = frames.shape
    proc = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps,
                     protocol_whitelist="pipe")
        .output(local_input(path), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset="medium",
                threads=1, movflags="+faststart", map_metadata=-1, fflags="+bitexact",
                **{"x264-params": "threads=1:lookahead-threads=1"})
        .global_args("-nostdin", "-hide_banner", "-v", "error", "-y")
        .run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True, quiet=True)
    )
    _, err = proc.communicate(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
    if proc.returncode != 0:
        raise VideoError(f"{path}: ffmpeg encode failed: {err.decode(errors='replace').strip()[:300]}")
