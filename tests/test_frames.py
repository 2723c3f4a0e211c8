"""extract_frames on real mp4 files: indices, stored bytes, problems, atomic output."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakeproof import video
from fakeproof.frames import (FramesError, INDEX_COLUMNS, iter_frame_batches,
                              run_extract_frames)
from helpers_video import (iter_video_frames, make_blank_clip, make_face_clip, make_params,
                           video_table)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    make_face_clip(d / "face.mp4", "obama.jpg", size=128, n_frames=10, fps=10)
    make_face_clip(d / "face2.mp4", "obama2.jpg", size=112, n_frames=12, fps=10)
    make_blank_clip(d / "blank.mp4", size=96, n_frames=8, fps=10)
    good = (d / "face.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(good[: len(good) * 2 // 3])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n")
    return d


def good_rows(clips: Path) -> list[dict]:
    return [{"video_id": "face", "path": str(clips / "face.mp4")},
            {"video_id": "face2", "path": str(clips / "face2.mp4"), "label": 1, "original": "face"},
            {"video_id": "blank", "path": str(clips / "blank.mp4")}]


def bad_rows(clips: Path) -> list[dict]:
    return [{"video_id": "truncated", "path": str(clips / "truncated.mp4")},
            {"video_id": "empty", "path": str(clips / "empty.mp4")},
            {"video_id": "text", "path": str(clips / "text.mp4")},
            {"video_id": "missing", "path": str(clips / "nowhere" / "missing.mp4")}]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_count_mode_indices_and_frames(clips, tmp_path) -> None:
    csv = video_table(tmp_path / "videos.csv", good_rows(clips))
    out = tmp_path / "frames"
    stats = run_extract_frames(make_params(frames={"count": 4}), csv, out)
    assert stats["videos"] == 3 and stats["problems"] == 0 and stats["frames"] == 12
    assert sorted(os.listdir(out)) == ["blank.tar", "face.tar", "face2.tar", "index.csv", "problems.csv"]
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == INDEX_COLUMNS
    face = index[index["video_id"] == "face"]
    # 4 evenly spaced of 10: centres of 4 equal bins
    assert face["frame"].tolist() == [1, 3, 6, 8]
    assert index[index["video_id"] == "face2"]["frame"].tolist() == [1, 4, 7, 10]
    assert face[["width", "height", "n_frames_video"]].drop_duplicates().values.tolist() == [[128, 128, 10]]
    assert face["fps"].unique().tolist() == [10.0]

    idx, frames = iter_video_frames(out, "face")
    assert idx == [1, 3, 6, 8] and frames.shape == (4, 128, 128, 3) and frames.dtype == np.uint8
    ref_idx, ref = video.read_frames(clips / "face.mp4", idx)
    assert ref_idx == idx
    # the stored JPEGs are the decoded frames (quality 95): close, and each the right frame
    err = np.abs(frames.astype(int) - ref.astype(int)).mean(axis=(1, 2, 3))
    assert (err < 3).all()
    assert np.abs(frames[0].astype(int) - ref[1].astype(int)).mean() > 3 * err[0]

    batches = list(iter_frame_batches(out, "face", batch_size=3))
    assert [b[0] for b in batches] == [[1, 3, 6], [8]]

    with tarfile.open(out / "face.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["000001.jpg", "000003.jpg", "000006.jpg", "000008.jpg"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        with Image.open(io.BytesIO(tar.extractfile(members[0]).read())) as im:
            assert im.format == "JPEG" and "exif" not in im.info


def test_fps_mode_and_max_side(clips, tmp_path) -> None:
    csv = video_table(tmp_path / "videos.csv", good_rows(clips)[:2])
    out = tmp_path / "frames"
    run_extract_frames(make_params(frames={"mode": "fps", "fps": 5.0, "max_frames": 3, "max_side": 64}),
                       csv, out)
    index = pd.read_csv(out / "index.csv")
    assert index[index["video_id"] == "face"]["frame"].tolist() == [0, 2, 4]
    assert index[["width", "height"]].drop_duplicates().values.tolist() == [[64, 64]]
    _, frames = iter_video_frames(out, "face2")
    assert frames.shape == (3, 64, 64, 3)


def test_bytes_are_deterministic(clips, tmp_path) -> None:
    csv = video_table(tmp_path / "videos.csv", good_rows(clips) + bad_rows(clips))
    params = make_params(frames={"count": 5})
    run_extract_frames(params, csv, tmp_path / "a")
    run_extract_frames(params, csv, tmp_path / "b")
    da, db = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert len(da) == 5 and da == db


def test_problems_are_reported_and_good_videos_extract(clips, tmp_path, caplog) -> None:
    csv = video_table(tmp_path / "videos.csv", bad_rows(clips) + good_rows(clips))
    out = tmp_path / "frames"
    with caplog.at_level(logging.WARNING, logger="fakeproof.frames"):
        stats = run_extract_frames(make_params(frames={"count": 4}), csv, out)
    assert stats["videos"] == 3 and stats["problems"] == 4 and stats["videos_total"] == 7
    problems = pd.read_csv(out / "problems.csv", keep_default_na=False).set_index("video_id")
    assert list(problems.columns) == ["path", "stage", "reason"]
    assert sorted(problems.index) == ["empty", "missing", "text", "truncated"]
    assert set(problems["stage"]) == {"extract_frames"}
    assert problems.loc["missing", "reason"] == "missing file"
    assert "0 bytes" in problems.loc["empty", "reason"]
    assert "not a readable video" in problems.loc["text", "reason"]
    assert "truncated" in problems.loc["truncated", "reason"]
    assert "0x" not in "".join(problems["reason"])  # no memory addresses: deterministic reports
    assert sorted(p.name for p in out.glob("*.tar")) == ["blank.tar", "face.tar", "face2.tar"]
    assert "4 of 7 videos skipped" in caplog.text


@pytest.mark.parametrize("content", ["missing", b"\x00\xff\xfe garbage \x00", "video_id,path\nx,y\n"])
def test_existing_out_dir_kept_when_stage_fails(tmp_path, content) -> None:
    out = tmp_path / "frames"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    csv = tmp_path / "videos.csv"
    if content != "missing":
        csv.write_bytes(content) if isinstance(content, bytes) else csv.write_text(content)
    with pytest.raises(FramesError, match="videos.csv"):
        run_extract_frames(make_params(), csv, out)
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "previous run"
    assert sorted(os.listdir(tmp_path)) == sorted(["frames"] + (["videos.csv"] if content != "missing" else []))
