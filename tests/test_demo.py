"""The embedded demo dataset: table contract, decodable clips, determinism, real manipulations."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fakeproof.config import DataParams, DemoParams
from fakeproof.demo import (CLIP_KINDS, detect_faces, face_swap, load_photos, pair_schedule, plan,
                            render_real, self_blend, umeyama)
from fakeproof.demo.clips import DemoAssetError, Photo
from fakeproof.demo.landmarks import Face, face_outline
from fakeproof.sources import VIDEO_COLUMNS, build_video_table
from fakeproof.video import probe, read_frames

TINY = DemoParams(groups=3, frames=6, fps=12, size=128, crf=23)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The tiny demo generated twice: once with an absolute raw dir, once with a relative one."""
    a = tmp_path_factory.mktemp("demo_a") / "raw"
    res_a = build_video_table(DataParams(source="demo", seed=0, demo=TINY), a)
    b_root = tmp_path_factory.mktemp("demo_b")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(b_root)
        res_b = build_video_table(DataParams(source="demo", seed=0, demo=TINY), Path("raw"))
    return a, res_a.videos, b_root / "raw", res_b.videos


def _frames(path: str | Path) -> np.ndarray:
    info = probe(path)
    return read_frames(path, range(info.n_frames), info)[1]


def _box_masks(box: np.ndarray, shape: tuple[int, int], pad: float = 0.25
               ) -> tuple[np.ndarray, np.ndarray]:
    """Inside the face box, and outside the box grown by ``pad`` of its size on each side."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    x0, y0, x1, y1 = box
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    bw, bh = x1 - x0, y1 - y0
    near = ((xs >= x0 - pad * bw) & (xs < x1 + pad * bw)
            & (ys >= y0 - pad * bh) & (ys < y1 + pad * bh))
    return inside, ~near


def test_photos_are_packaged_with_faces():
    photos = load_photos()
    assert [p.name for p in photos] == ["astronaut", "biden", "obama", "obama2", "obama3"]
    assert {p.identity for p in photos} == {"astronaut", "biden", "obama"}
    for p in photos:
        assert max(p.image.shape[:2]) <= 640
        assert p.face.prob > 0.99
        assert p.face.height > 100


def test_table_contract(demo):
    raw, df, _, _ = demo
    assert list(df.columns) == VIDEO_COLUMNS
    assert len(df) == TINY.groups * len(CLIP_KINDS)
    assert set(df["source"]) == {"demo"} and set(df["split_hint"]) == {""}
    assert (df["label"] == (df["method"] != "real").astype(int)).all()
    assert df["method"].value_counts().to_dict() == {"real": 6, "faceswap": 6, "sbi": 6}
    assert sorted(df["group"].unique()) == ["g000", "g001", "g002"]
    for _, grp in df.groupby("group"):
        assert grp["method"].value_counts().to_dict() == {"real": 2, "faceswap": 2, "sbi": 2}
    by_id = df.set_index("video_id")
    for _, row in df.iterrows():
        assert row["path"] == str(raw / "videos" / f"{row['video_id']}.mp4")
        assert Path(row["path"]).is_file()
        if row["label"] == 1:
            orig = by_id.loc[row["original"]]
            assert orig["method"] == "real" and orig["group"] == row["group"]
            assert row["original"].endswith(row["video_id"][-2:])  # _a fakes target real_a
        else:
            assert row["original"] == ""


def test_groups_pair_different_people_and_use_every_photo():
    photos = load_photos()
    ident = {p.name: p.identity for p in photos}
    specs = plan(15, photos)
    assert len(specs) == 90
    reals = [s for s in specs if s.method == "real"]
    for a, b in zip(reals[::2], reals[1::2]):
        assert a.group == b.group and ident[a.photo] != ident[b.photo]
    first = {s.photo for s in specs[: 3 * len(CLIP_KINDS)]}
    assert first == {p.name for p in photos}
    uses = np.bincount(np.ravel(pair_schedule(photos, 15)), minlength=len(photos))
    assert uses.max() - uses.min() <= 4


def test_regenerating_fewer_groups_removes_their_stale_clips(tmp_path):
    from fakeproof.demo import generate

    small = DemoParams(groups=3, frames=4, fps=12, size=96, crf=30)
    generate(DemoParams(groups=4, frames=4, fps=12, size=96, crf=30), 0, tmp_path, progress=False)
    other = tmp_path / "videos" / "notes.mp4"
    other.write_bytes(b"not ours")
    first = {p.name: _sha(p) for p in (tmp_path / "videos").glob("g00[0-2]_*.mp4")}
    df = generate(small, 0, tmp_path, progress=False)
    names = {p.name for p in (tmp_path / "videos").iterdir()}
    assert names == {f"{v}.mp4" for v in df["video_id"]} | {"notes.mp4"}
    # a group's clips do not depend on how many groups there are
    assert {p.name: _sha(p) for p in (tmp_path / "videos").glob("g00[0-2]_*.mp4")} == first


def test_relative_raw_dir_gives_relative_paths(demo):
    _, _, _, df_rel = demo
    assert df_rel["path"].str.startswith("raw/videos/").all()


def test_every_clip_decodes(demo):
    _, df, _, _ = demo
    for path in df["path"]:
        info = probe(path)
        assert (info.width, info.height, info.n_frames) == (TINY.size, TINY.size, TINY.frames)
        assert info.fps == pytest.approx(TINY.fps)
        idx, arr = read_frames(path, [0, TINY.frames - 1], info)
        assert idx == [0, TINY.frames - 1] and arr.shape == (2, TINY.size, TINY.size, 3)
        assert arr.std() > 10  # real picture content, not a flat frame


def test_generation_is_deterministic(demo):
    raw_a, df_a, raw_b, df_b = demo
    files_a = sorted(p.name for p in (raw_a / "videos").iterdir())
    files_b = sorted(p.name for p in (raw_b / "videos").iterdir())
    assert files_a == files_b and len(files_a) == len(df_a)
    for name in files_a:
        assert _sha(raw_a / "videos" / name) == _sha(raw_b / "videos" / name), name
    cols = [c for c in VIDEO_COLUMNS if c != "path"]
    assert df_a[cols].equals(df_b[cols])


def test_clips_of_one_photo_differ():
    photo = load_photos()[2]
    a = render_real(photo, 4, 12, 128, np.random.default_rng(1))
    b = render_real(photo, 4, 12, 128, np.random.default_rng(2))
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() > 5
    # and the camera moves within a clip
    assert np.abs(a.frames[0].astype(int) - a.frames[-1].astype(int)).mean() > 3


def test_fakes_differ_from_originals_inside_the_face(demo):
    _, df, _, _ = demo
    by_id = df.set_index("video_id")
    for _, row in df[df["label"] == 1].iterrows():
        fake = _frames(row["path"]).astype(np.float64)
        orig_frames = _frames(by_id.loc[row["original"], "path"])
        face = max(detect_faces(orig_frames[0]), key=lambda f: f.prob)
        inside, outside = _box_masks(face.box, orig_frames.shape[1:3])
        diff = np.abs(fake - orig_frames.astype(np.float64)).mean(-1)
        d_in, d_out = diff[:, inside].mean(), diff[:, outside].mean()
        # Outside the face only the h264 re-encode differs (about 2 levels of sensor noise).
        assert d_in - d_out > 5.0, (row["video_id"], d_in, d_out)
        assert d_in > 3 * d_out, (row["video_id"], d_in, d_out)


def test_mtcnn_finds_the_face_in_real_and_fake_frames(demo):
    _, df, _, _ = demo
    by_id = df.set_index("video_id")
    for vid in ("g001_real_b", "g001_faceswap_b", "g002_sbi_a"):
        frames = _frames(by_id.loc[vid, "path"])
        for i in (0, TINY.frames // 2, TINY.frames - 1):
            faces = detect_faces(frames[i])
            assert faces and faces[0].prob > 0.9, (vid, i)
            h = faces[0].box[3] - faces[0].box[1]
            assert 0.25 * TINY.size < h < 0.85 * TINY.size, (vid, i, h)


def test_manipulations_touch_only_the_face_region():
    photos = {p.name: p for p in load_photos()}
    a = render_real(photos["obama"], 3, 12, 160, np.random.default_rng(3))
    b = render_real(photos["biden"], 3, 12, 160, np.random.default_rng(4))
    fakes = (face_swap(a, b, np.random.default_rng(5)), self_blend(a, np.random.default_rng(6)))
    for frames in fakes:
        assert frames.shape == a.frames.shape and frames.dtype == np.uint8
        for i in range(3):
            changed = np.abs(frames[i].astype(int) - a.frames[i].astype(int)).max(-1) > 0
            poly = face_outline(a.points[i], "full")
            lo, hi = poly.min(0), poly.max(0)
            span = hi - lo
            ys, xs = np.nonzero(changed)
            assert len(xs) > 200
            assert xs.min() >= lo[0] - 0.3 * span[0] and xs.max() <= hi[0] + 0.3 * span[0]
            assert ys.min() >= lo[1] - 0.3 * span[1] and ys.max() <= hi[1] + 0.3 * span[1]


def test_landmarks_follow_the_camera():
    photo = load_photos()[1]
    clip = render_real(photo, 3, 12, 192, np.random.default_rng(7))
    for i in range(3):
        face = max(detect_faces(clip.frames[i]), key=lambda f: f.prob)
        err = np.linalg.norm(face.points - clip.points[i], axis=1).max()
        assert err < 0.06 * (face.box[3] - face.box[1]), (i, err)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ r.T + t
    m = umeyama(src, dst)
    np.testing.assert_allclose(m[:, :2], s * r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-7)


def test_photo_too_tight_around_the_face_is_a_clear_error():
    img = np.full((100, 100, 3), 128, np.uint8)
    face = Face(np.array([0.0, 0.0, 100.0, 100.0]),
                np.array([[30, 40], [70, 40], [50, 55], [35, 75], [65, 75]], float), 1.0)
    with pytest.raises(DemoAssetError, match="tight.png: photo too small around the face"):
        render_real(Photo("tight.png", "x", img, face), 4, 12, 128, np.random.default_rng(0))
