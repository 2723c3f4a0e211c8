"""crop_faces with real MTCNN on real mp4 clips: detection, no-face frames, box reuse, crop policy."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakeproof.faces import (FACES_CSV_COLUMNS, Face, FaceCropper, crop_box, crop_face, crop_square,
                             detection_size, run_crop_faces)
from fakeproof.frames import FramesError, run_extract_frames
from fakeproof.store import DATA_FILE, FaceStore
from helpers_video import (face_clip_frames, iou, iter_video_frames, make_blank_clip,
                           make_face_clip, make_fake_clip, make_params, video_table)

N_FRAMES = 10
COUNT = 5


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """Clips -> extract_frames -> crop_faces, once for the module."""
    d = tmp_path_factory.mktemp("faces")
    known = {
        "real": make_face_clip(d / "real.mp4", "obama.jpg", size=128, n_frames=N_FRAMES),
        "fake": make_fake_clip(d / "fake.mp4", "obama.jpg", size=128, n_frames=N_FRAMES),
        "other": make_face_clip(d / "other.mp4", "obama2.jpg", size=112, n_frames=N_FRAMES),
    }
    make_blank_clip(d / "blank.mp4", size=96, n_frames=N_FRAMES)
    rows = [{"video_id": "real", "path": str(d / "real.mp4"), "group": "g"},
            {"video_id": "fake", "path": str(d / "fake.mp4"), "label": 1, "group": "g",
             "original": "real"},
            {"video_id": "other", "path": str(d / "other.mp4")},
            {"video_id": "blank", "path": str(d / "blank.mp4")}]
    csv = video_table(d / "videos.csv", rows)
    params = make_params(frames={"count": COUNT}, faces={"image_size": 64, "batch_size": 4})
    run_extract_frames(params, csv, d / "frames")
    stats = run_crop_faces(params, csv, d / "frames", d / "faces.lmdb", d / "faces.csv")
    faces = pd.read_csv(d / "faces.csv", keep_default_na=False)
    return {"dir": d, "csv": csv, "params": params, "stats": stats, "faces": faces, "known": known}


def test_faces_found_where_they_are(stage) -> None:
    faces = stage["faces"]
    assert list(faces.columns) == FACES_CSV_COLUMNS
    for vid in ("real", "other"):
        rows = faces[faces["video_id"] == vid]
        assert len(rows) == COUNT and (rows["box_source"] == "self").all()
        assert (rows["face"] == 0).all() and (rows["prob"] >= 0.9).all()
        for r in rows.itertuples():
            truth = stage["known"][vid][r.frame]
            assert iou(np.array([r.x1, r.y1, r.x2, r.y2]), truth) > 0.7, (vid, r.frame)
    assert faces["key"].tolist() == [f"{v}/{f:06d}/{j}" for v, f, j in
                                     zip(faces["video_id"], faces["frame"], faces["face"])]


def test_no_face_frames_are_counted_not_fatal(stage) -> None:
    s = stage["stats"]
    assert s["videos"] == 4 and s["frames"] == 4 * COUNT
    assert s["frames_no_face"] == COUNT and s["videos_no_face"] == 1
    assert "blank" not in set(stage["faces"]["video_id"])
    assert s["faces"] == 3 * COUNT == len(stage["faces"])


def test_fake_reuses_the_original_boxes(stage) -> None:
    faces = stage["faces"].set_index(["video_id", "frame"])
    fake = faces.loc["fake"]
    assert (fake["box_source"] == "original").all() and len(fake) == COUNT
    real = faces.loc["real"]
    cols = ["x1", "y1", "x2", "y2", "prob"]
    assert fake[cols].equals(real.loc[fake.index, cols])
    assert stage["stats"]["frames_reused"] == COUNT


def test_landmarks_are_stored_in_crop_pixels_beside_each_box(stage) -> None:
    from fakeproof.landmarks import LANDMARK_COLUMNS

    faces = stage["faces"].set_index(["video_id", "frame"])
    size = stage["params"].faces.image_size
    pts = faces[list(LANDMARK_COLUMNS)].to_numpy(float).reshape(-1, 5, 2)
    assert np.isfinite(pts).all() and (pts > 0).all() and (pts < size).all()
    # left eye left of the right eye, both eyes above the nose, the nose above the mouth corners
    assert (pts[:, 0, 0] < pts[:, 1, 0]).all()
    assert (pts[:, :2, 1].max(1) < pts[:, 2, 1]).all() and (pts[:, 2, 1] < pts[:, 3:, 1].min(1)).all()
    # a face cropped with its original's boxes carries the original's landmarks (same frame size)
    fake, real = faces.loc["fake"], faces.loc["real"]
    assert fake[list(LANDMARK_COLUMNS)].equals(real.loc[fake.index, list(LANDMARK_COLUMNS)])


def test_without_reuse_the_fake_is_detected_itself(stage, tmp_path) -> None:
    d = stage["dir"]
    params = make_params(frames={"count": COUNT},
                         faces={"image_size": 64, "reuse_original_boxes": False})
    csv = video_table(tmp_path / "videos.csv", [
        {"video_id": "real", "path": str(d / "real.mp4"), "group": "g"},
        {"video_id": "fake", "path": str(d / "fake.mp4"), "label": 1, "group": "g", "original": "real"}])
    stats = run_crop_faces(params, csv, d / "frames", tmp_path / "f.lmdb", tmp_path / "f.csv")
    fake = pd.read_csv(tmp_path / "f.csv").query("video_id == 'fake'")
    assert stats["frames_reused"] == 0 and (fake["box_source"] == "self").all() and len(fake) == COUNT
    for r in fake.itertuples():
        assert iou(np.array([r.x1, r.y1, r.x2, r.y2]), stage["known"]["fake"][r.frame]) > 0.6


def test_stored_crops_follow_the_policy(stage) -> None:
    d = stage["dir"]
    store = FaceStore(d / "faces.lmdb")
    assert os.listdir(d / "faces.lmdb") == [DATA_FILE]
    assert len(store) == len(stage["faces"])
    fp = stage["params"].faces
    for vid in ("real", "fake"):
        indices, frames = iter_video_frames(d / "frames", vid)
        rows = stage["faces"][stage["faces"]["video_id"] == vid]
        for r in rows.itertuples():
            frame = frames[indices.index(r.frame)]
            want = crop_face(frame, (r.x1, r.y1, r.x2, r.y2), fp.margin, fp.image_size)
            got = store.get(r.key)
            assert got.shape == (64, 64, 3) and np.array_equal(got, want)  # png: lossless
    # the fake's crop shows the same region as the real's, not the same pixels
    assert not np.array_equal(store.get("fake/000001/0"), store.get("real/000001/0"))


def test_outputs_are_deterministic(stage, tmp_path) -> None:
    d = stage["dir"]
    run_crop_faces(stage["params"], stage["csv"], d / "frames", tmp_path / "faces.lmdb",
                   tmp_path / "faces.csv")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    assert digest(tmp_path / "faces.csv") == digest(d / "faces.csv")
    assert digest(tmp_path / "faces.lmdb" / DATA_FILE) == digest(d / "faces.lmdb" / DATA_FILE)


def test_failure_leaves_previous_outputs(stage, tmp_path) -> None:
    (tmp_path / "faces.lmdb").mkdir()
    (tmp_path / "faces.lmdb" / DATA_FILE).write_bytes(b"old store")
    (tmp_path / "faces.csv").write_text("old csv\n")
    (tmp_path / "frames").mkdir()  # no index.csv: extract_frames never ran
    with pytest.raises(FramesError, match="index.csv"):
        run_crop_faces(stage["params"], stage["csv"], tmp_path / "frames", tmp_path / "faces.lmdb",
                       tmp_path / "faces.csv")
    assert (tmp_path / "faces.lmdb" / DATA_FILE).read_bytes() == b"old store"
    assert (tmp_path / "faces.csv").read_text() == "old csv\n"
    assert sorted(os.listdir(tmp_path)) == ["faces.csv", "faces.lmdb", "frames"]


def test_crop_box_policy_on_a_hand_made_box() -> None:
    # 40 x 30 box centred at (30, 35): longer side 40, margin 1/4 -> side 40 * 1.5 = 60
    assert crop_box((10, 20, 50, 50), 0.25) == (0, 5, 60)
    # default one third: side round(40 * 5 / 3) = 67; left = floor(30 - 33.5 + 0.5) = -3
    assert crop_box((10, 20, 50, 50), 1 / 3) == (-3, 2, 67)
    assert crop_box((10, 20, 50, 50), 0.0) == (10, 15, 40)  # square about the centre
    frame = np.arange(20 * 30 * 3, dtype=np.uint32).reshape(20, 30, 3).astype(np.uint8)
    inside = crop_square(frame, 5, 2, 10)
    assert np.array_equal(inside, frame[2:12, 5:15])
    corner = crop_square(frame, -4, -3, 10)  # past the top-left border: black padding
    assert (corner[:3] == 0).all() and (corner[:, :4] == 0).all()
    assert np.array_equal(corner[3:, 4:], frame[:7, :6])
    beyond = crop_square(frame, 25, 15, 10)  # past the bottom-right border
    assert np.array_equal(beyond[:5, :5], frame[15:, 25:]) and (beyond[5:] == 0).all()
    # no resize when the square already has the output size; bicubic resize otherwise
    assert np.array_equal(crop_face(frame, (5, 2, 15, 12), 0.0, 10), frame[2:12, 5:15])
    assert crop_face(frame, (5, 2, 15, 12), 0.5, 16).shape == (16, 16, 3)


def test_select_policy() -> None:
    cropper = FaceCropper(make_params(faces={"min_prob": 0.9}).faces)
    small = Face(0, 0, 10, 10, 0.99)
    big = Face(20, 20, 50, 50, 0.95)
    unsure = Face(0, 0, 90, 90, 0.5)
    assert cropper.select([small, unsure, big]) == [big]
    cropper_all = FaceCropper(make_params(faces={"select": "all", "min_prob": 0.9}).faces)
    assert cropper_all.select([small, unsure, big]) == [big, small]
    assert cropper.select([]) == []


def test_detection_downscale_maps_boxes_back() -> None:
    frames, truth = face_clip_frames("obama.jpg", size=128, n_frames=2)
    big = np.stack([np.asarray(Image.fromarray(f).resize((256, 256), Image.Resampling.BICUBIC))
                    for f in frames])
    assert detection_size(256, 256, 128) == (128, 128) and detection_size(100, 60, 128) == (100, 60)
    cropper = FaceCropper(make_params(faces={"detect_max_side": 128}).faces)
    found = cropper.detect(big)
    for faces, box in zip(found, truth):
        assert len(faces) == 1
        assert iou(np.array(faces[0].box), 2 * box) > 0.7


def test_no_face_clip_alone(tmp_path, caplog) -> None:
    make_blank_clip(tmp_path / "blank.mp4", size=96, n_frames=6)
    csv = video_table(tmp_path / "videos.csv", [{"video_id": "blank", "path": str(tmp_path / "blank.mp4")}])
    params = make_params(frames={"count": 3})
    run_extract_frames(params, csv, tmp_path / "frames")
    with caplog.at_level(logging.WARNING, logger="fakeproof.faces"):
        stats = run_crop_faces(params, csv, tmp_path / "frames", tmp_path / "f.lmdb", tmp_path / "f.csv")
    assert stats["faces"] == 0 and stats["frames_no_face"] == 3 and stats["videos_no_face"] == 1
    assert "3 of 3 frames had no face" in caplog.text and "blank" in caplog.text
    assert pd.read_csv(tmp_path / "f.csv").empty and len(FaceStore(tmp_path / "f.lmdb")) == 0
