"""Untrusted media stays contained: ffmpeg reads one local file per video, nothing else.

ffmpeg picks its demuxer from a file's content: a playlist (ffconcat script, HLS ``.m3u8``) given
as a video makes it open the files or URLs the playlist lists. Two layers, each tested alone:
``fakeproof.video`` refuses files that start like a playlist before running ffmpeg, and every
ffmpeg read (``fakeproof.video``, ``fakeproof.frames``) passes ``-protocol_whitelist file,pipe``
and a ``-format_whitelist`` of single-file containers. The playlists here point at a real local
clip made in the test (and at a local HTTP server that counts requests); unguarded ffmpeg decodes
that clip through them, the guarded calls refuse them with one line and decode nothing.
"""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fakeproof import frames, video
from fakeproof.config import FramesParams
from fakeproof.errors import FakeproofError
from fakeproof.video import VideoError, VideoInfo, probe, read_frames, write_mp4

N_FRAMES = 12


class _Counter(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        self.server.requests.append(self.path)
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A real 12-frame h264 clip: what the playlists try to make ffmpeg read."""
    y, x = np.mgrid[0:64, 0:64]
    arr = np.stack([np.stack([(x * 4 + 9 * t) % 256, (y * 4) % 256, np.full_like(x, 20 * t)], -1)
                    for t in range(N_FRAMES)]).astype(np.uint8)
    path = tmp_path_factory.mktemp("media") / "victim.mp4"
    write_mp4(path, arr, fps=12)
    return path


def _hls(segment: str) -> str:
    return ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n"
            f"{segment}\n#EXT-X-ENDLIST\n")


def playlists(clip: Path, base_url: str) -> dict[str, Path]:
    folder = clip.parent
    files = {
        "ffconcat.mp4": f"ffconcat version 1.0\nfile {clip.name}\n",
        "hls_local.mp4": _hls(clip.name),
        "hls_absolute.mp4": _hls(f"file:{clip}"),
        "hls_local.m3u8": _hls(clip.name),  # a CSV source may list any file name
        "hls_url.m3u8": _hls(f"{base_url}/secret.ts"),
        "hls_url.mp4": _hls(f"{base_url}/secret.ts"),
    }
    out = {}
    for name, text in files.items():
        (folder / name).write_text(text)
        out[name] = folder / name
    return out


def _ffmpeg_frames(path: Path, guard: tuple[str, ...] = ()) -> tuple[int, str]:
    """Frames ffmpeg decodes from ``path`` (with the input options ``guard``), and its stderr."""
    src = video.local_input(path) if guard else str(path)
    proc = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-nostdin", *guard, "-i", src,
                           "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                          capture_output=True)
    return len(proc.stdout) // (64 * 64 * 3), proc.stderr.decode(errors="replace")


def test_guard_lets_a_real_clip_through(clip):
    info = probe(clip)
    assert (info.width, info.height, info.n_frames) == (64, 64, N_FRAMES)
    got, arr = read_frames(clip, [0, 5, 11], info)
    assert got == [0, 5, 11] and arr.shape == (3, 64, 64, 3)
    assert frames.stream_errors(clip) == ""


def test_playlists_are_refused_with_one_line(clip, http_server, tmp_path):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    lists = playlists(clip, base)
    # Without the guard, this ffmpeg really follows the concat script and the local HLS playlist
    # to the clip (newer ffmpeg already ignores HLS content in a file named .mp4; older ones not).
    assert _ffmpeg_frames(lists["ffconcat.mp4"])[0] == N_FRAMES
    assert _ffmpeg_frames(lists["hls_local.m3u8"])[0] == N_FRAMES
    http_server.requests.clear()
    fake_info = VideoInfo(64, 64, 12.0, N_FRAMES)  # as if a probe had been fooled
    for name, path in lists.items():
        kind = "an ffconcat script" if name.startswith("ffconcat") else "an HLS playlist"
        for call in (lambda: probe(path), lambda: read_frames(path, range(N_FRAMES), fake_info)):
            with pytest.raises(VideoError) as e:
                call()
            assert isinstance(e.value, FakeproofError)
            assert str(e.value) == (f"{path}: refused: {kind}, not a video (ffmpeg would read the "
                                    "files or URLs it lists); nothing decoded")
    assert http_server.requests == []  # no URL was ever opened


def test_ffmpeg_whitelists_refuse_playlists_on_their_own(clip, http_server):
    """The second layer alone (no content check first): the ffmpeg options decode the real clip
    and nothing through any playlist, and open no URL."""
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    lists = playlists(clip, base)
    assert _ffmpeg_frames(clip, video.INPUT_GUARD)[0] == N_FRAMES
    # -protocol_whitelist alone is not enough: HLS still reads a local file through "file".
    n, _ = _ffmpeg_frames(lists["hls_local.m3u8"], ("-protocol_whitelist", "file,pipe"))
    assert n == N_FRAMES
    for name, path in lists.items():
        n, err = _ffmpeg_frames(path, video.INPUT_GUARD)
        assert n == 0, name
        if name.endswith(".m3u8") or name.startswith("ffconcat"):  # detected, then refused
            assert "not on whitelist" in err, (name, err)
            assert str(video.refusal(path, err)).startswith(
                f"{path}: refused: not a single-file video container"), name
        assert frames.stream_errors(path) != "", name  # the extract stage's stream check
    assert http_server.requests == []


def test_extract_stage_reports_a_playlist_and_writes_nothing(clip, http_server, tmp_path):
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    evil = playlists(clip, base)["ffconcat.mp4"]
    out = tmp_path / "frames"
    out.mkdir()
    rows, problem = frames.extract_video({"video_id": "evil", "path": str(evil)},
                                         FramesParams(count=4), out)
    assert rows == [] and list(out.iterdir()) == []
    assert problem["video_id"] == "evil"
    assert problem["reason"] == ("refused: an ffconcat script, not a video (ffmpeg would read the "
                                 "files or URLs it lists); nothing decoded")
    # The clip the playlist names extracts normally.
    rows, problem = frames.extract_video({"video_id": "ok", "path": str(clip)},
                                         FramesParams(count=4), out)
    assert problem is None and len(rows) == 4
