"""The dataset sources on tiny fixture trees of real mp4 files (8 frames, 64x64, made with ffmpeg).

Every layout (FF++, Celeb-DF v2, DFDC, folder, CSV) is built in tmp_path with its split and list
files; the tests check labels, groups, split hints, originals, ids and the problems table, the
one-line errors, and that no group carries two different split hints (leakage at table level).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fakeproof.config import DataParams, DfdcParams, FFppParams
from fakeproof.sources import SourceError, build_video_table
from fakeproof.video import probe, write_mp4


@pytest.fixture(scope="session")
def tiny_mp4(tmp_path_factory) -> Path:
    """One real 8-frame 64x64 h264 clip (a moving gradient), copied into every fixture tree."""
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(x * 4 + 8 * t) % 256, (y * 4) % 256,
                                 np.full_like(x, 40 * t % 256)], -1) for t in range(8)])
    path = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    write_mp4(path, frames.astype(np.uint8), fps=8, crf=30)
    assert probe(path).n_frames == 8
    return path


def put(root: Path, rel: str, src: Path) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, p)
    return p


def table(params: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    res = build_video_table(params, Path("unused-raw-dir"))
    return res.videos.set_index("video_id", drop=False), res.problems


def assert_no_group_leak(df: pd.DataFrame) -> None:
    """No group carries two different split hints among the videos the split stage keeps
    (``exclude`` videos are dropped before splitting), and no hinted group has free members."""
    kept = df[df["split_hint"] != "exclude"]
    per = kept.groupby("group")["split_hint"].nunique()
    assert (per <= 1).all(), per[per > 1]
    assert df["video_id"].is_unique
    assert df["video_id"].str.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$").all()
    assert df["path"].map(lambda p: isinstance(p, str)).all()


# ------------------------------------------------------------------------------------------------
# FaceForensics++
# ------------------------------------------------------------------------------------------------

FFPP_METHODS = ["Deepfakes", "Face2Face", "FaceSwap"]


@pytest.fixture
def ffpp_root(tmp_path, tiny_mp4) -> Path:
    root = tmp_path / "ffpp"
    yt = "original_sequences/youtube/c23/videos"
    # Official pairs: train [071, 054], val [720, 672], test [953, 974] (974 absent on disk).
    for i in ("071", "054", "720", "953"):
        put(root, f"{yt}/{i}.mp4", tiny_mp4)
    (root / f"{yt}/672.mp4").write_text("not a video, just text named .mp4\n")
    (root / f"{yt}/readme.txt").write_text("ignored: not an mp4\n")
    put(root, f"{yt}/71.mp4", tiny_mp4)  # not an FF++ name
    df = "manipulated_sequences/Deepfakes/c23/videos"
    for name in ("071_054", "054_071", "720_672", "974_953", "071_720", "071_054_x"):
        put(root, f"{df}/{name}.mp4", tiny_mp4)
    put(root, "manipulated_sequences/Face2Face/c23/videos/071_054.mp4", tiny_mp4)
    put(root, "manipulated_sequences/Face2Face/c40/videos/071_054.mp4", tiny_mp4)  # other c
    put(root, "manipulated_sequences/NeuralTextures/c23/videos/071_054.mp4", tiny_mp4)  # not asked
    # DeepFakeDetection: actors 01-02 connected by a fake, 03 alone.
    act = "original_sequences/actors/c23/videos"
    for name in ("01__exit_phone_room", "02__kitchen_pan", "03__walking_outside"):
        put(root, f"{act}/{name}.mp4", tiny_mp4)
    put(root, "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4",
        tiny_mp4)
    return root


def ffpp_params(root, include_actors=False, compression="c23") -> DataParams:
    return DataParams(source="ffpp", root=str(root), ffpp=FFppParams(
        compression=compression, methods=list(FFPP_METHODS), include_actors=include_actors))


def test_ffpp_pairs_splits_and_originals(ffpp_root):
    df, problems = table(ffpp_params(ffpp_root))
    assert set(df.index) == {
        "ffpp_c23_real_071", "ffpp_c23_real_054", "ffpp_c23_real_720", "ffpp_c23_real_672",
        "ffpp_c23_real_953",
        "ffpp_c23_Deepfakes_071_054", "ffpp_c23_Deepfakes_054_071", "ffpp_c23_Deepfakes_720_672",
        "ffpp_c23_Deepfakes_974_953", "ffpp_c23_Deepfakes_071_720", "ffpp_c23_Face2Face_071_054"}
    r = df.loc
    assert r["ffpp_c23_real_071", "label"] == 0 and r["ffpp_c23_Deepfakes_071_054", "label"] == 1
    assert r["ffpp_c23_real_071", "method"] == "real"
    assert r["ffpp_c23_Face2Face_071_054", "method"] == "Face2Face"
    # One group per official pair, with the pair's split.
    for vid in ("ffpp_c23_real_071", "ffpp_c23_real_054", "ffpp_c23_Deepfakes_071_054",
                "ffpp_c23_Deepfakes_054_071", "ffpp_c23_Face2Face_071_054"):
        assert (r[vid, "group"], r[vid, "split_hint"]) == ("ffpp_pair_054_071", "train")
    assert (r["ffpp_c23_real_672", "group"], r["ffpp_c23_real_672", "split_hint"]) == (
        "ffpp_pair_672_720", "val")
    # A fake whose target original is absent is still placed by its pair.
    assert (r["ffpp_c23_Deepfakes_974_953", "group"], r["ffpp_c23_Deepfakes_974_953", "split_hint"],
            r["ffpp_c23_Deepfakes_974_953", "original"]) == ("ffpp_pair_953_974", "test", "")
    # original = the target real (TTT of TTT_SSS).
    assert r["ffpp_c23_Deepfakes_054_071", "original"] == "ffpp_c23_real_054"
    assert r["ffpp_c23_Face2Face_071_054", "original"] == "ffpp_c23_real_071"
    assert r["ffpp_c23_real_071", "original"] == ""
    # Ids from two different official pairs: excluded and reported.
    assert r["ffpp_c23_Deepfakes_071_720", "split_hint"] == "exclude"
    # The text file named .mp4 is listed (the extract stage reports undecodable files).
    assert r["ffpp_c23_real_672", "path"].endswith("original_sequences/youtube/c23/videos/672.mp4")
    reasons = " | ".join(problems["reason"])
    assert "FaceSwap" in reasons  # missing method folder
    assert any(p.endswith("71.mp4") for p in problems["path"])
    assert any(p.endswith("071_054_x.mp4") for p in problems["path"])
    assert "different official pairs" in reasons
    assert not any("NeuralTextures" in p for p in df["path"])
    assert_no_group_leak(df.reset_index(drop=True))


def test_ffpp_actors_grouped_by_connected_actors(ffpp_root):
    df, _ = table(ffpp_params(ffpp_root, include_actors=True))
    r = df.loc
    assert r["ffpp_c23_actors_01__exit_phone_room", "group"] == "ffpp_actors_01"
    assert r["ffpp_c23_actors_02__kitchen_pan", "group"] == "ffpp_actors_01"
    assert r["ffpp_c23_DeepFakeDetection_01_02__exit_phone_room__YVGY8LOK", "group"] == "ffpp_actors_01"
    assert r["ffpp_c23_actors_03__walking_outside", "group"] == "ffpp_actors_03"
    dfd = df[df["group"].str.startswith("ffpp_actors_")]
    assert set(dfd["split_hint"]) == {""} and set(dfd["original"]) == {""}
    assert r["ffpp_c23_DeepFakeDetection_01_02__exit_phone_room__YVGY8LOK", "label"] == 1
    assert_no_group_leak(df.reset_index(drop=True))


def test_ffpp_compression_selects_folder(ffpp_root):
    df, problems = table(ffpp_params(ffpp_root, compression="c40"))
    assert list(df.index) == ["ffpp_c40_Face2Face_071_054"]
    assert df.iloc[0]["split_hint"] == "train" and df.iloc[0]["original"] == ""
    assert any("youtube/c40" in p for p in problems["path"])


def test_ffpp_official_split_files_shipped():
    from fakeproof.sources.ffpp import official_pairs

    pairs = official_pairs()
    assert len(pairs) == 1000
    splits = pd.Series({i: s for i, (s, _) in pairs.items()})
    assert splits.value_counts().to_dict() == {"train": 720, "val": 140, "test": 140}
    assert pairs["071"] == ("train", "054_071") and pairs["953"] == ("test", "953_974")


# ------------------------------------------------------------------------------------------------
# Celeb-DF v2
# ------------------------------------------------------------------------------------------------

CELEB_FILES = [
    "Celeb-real/id0_0000", "Celeb-real/id0_0001", "Celeb-real/id1_0000", "Celeb-real/id2_0000",
    "Celeb-real/id3_0001", "Celeb-real/id7_0000",
    "Celeb-synthesis/id0_id1_0000", "Celeb-synthesis/id0_id2_0000", "Celeb-synthesis/id0_id1_0001",
    "Celeb-synthesis/id1_id0_0000", "Celeb-synthesis/id2_id3_0000", "Celeb-synthesis/id3_id2_0001",
    "Celeb-synthesis/id7_id8_0000",
    "YouTube-real/00000", "YouTube-real/00001", "YouTube-real/00002",
]
CELEB_LIST = ["1 Celeb-real/id0_0000.mp4", "0 Celeb-synthesis/id0_id1_0000.mp4",
              "1 YouTube-real/00000.mp4", "0 Celeb-synthesis/id9_id8_0000.mp4"]


@pytest.fixture
def celeb_root(tmp_path, tiny_mp4) -> Path:
    root = tmp_path / "Celeb-DF-v2"
    for rel in CELEB_FILES:
        put(root, rel + ".mp4", tiny_mp4)
    put(root, "Celeb-real/weird name.mp4", tiny_mp4)
    (root / "List_of_testing_videos.txt").write_text("\n".join(CELEB_LIST))
    return root


def celeb_params(root, exclude: str | None = None) -> DataParams:
    params = DataParams(source="celebdf", root=str(root))
    if exclude is None:
        return params
    if "celebdf" in {f.name for f in dataclasses.fields(DataParams)}:
        return dataclasses.replace(params, celebdf=dataclasses.replace(params.celebdf, exclude=exclude))
    object.__setattr__(params, "celebdf", SimpleNamespace(exclude=exclude))
    return params


def test_celebdf_clip_policy(celeb_root):
    df, problems = table(celeb_params(celeb_root))
    h = df["split_hint"]
    assert set(df.index[h == "test"]) == {"celebdf_real_id0_0000", "celebdf_fake_id0_id1_0000",
                                          "celebdf_yt_00000"}
    # Same source clip id0_0000 as a test video: excluded, grouped with the test clip.
    assert set(df.index[h == "exclude"]) == {"celebdf_fake_id0_id2_0000"}
    assert df.loc["celebdf_fake_id0_id2_0000", "group"] == "celebdf_clip_id0_0000"
    assert df.loc["celebdf_real_id0_0000", "group"] == "celebdf_clip_id0_0000"
    # The rest: free, grouped by identity components over target and donor (id0-id1 linked by
    # id0_id1_0001 and id1_id0_0000, id2-id3 by id2_id3_0000, id7-id8); YouTube clips alone.
    groups = df.loc[~h.isin(["test", "exclude"]), "group"]
    assert groups.to_dict() == {
        "celebdf_fake_id0_id1_0001": "celebdf_ids_id0", "celebdf_fake_id1_id0_0000": "celebdf_ids_id0",
        "celebdf_fake_id2_id3_0000": "celebdf_ids_id2", "celebdf_fake_id3_id2_0001": "celebdf_ids_id2",
        "celebdf_fake_id7_id8_0000": "celebdf_ids_id7", "celebdf_real_id0_0001": "celebdf_ids_id0",
        "celebdf_real_id1_0000": "celebdf_ids_id0", "celebdf_real_id2_0000": "celebdf_ids_id2",
        "celebdf_real_id3_0001": "celebdf_ids_id2", "celebdf_real_id7_0000": "celebdf_ids_id7",
        "celebdf_yt_00001": "celebdf_yt_00001", "celebdf_yt_00002": "celebdf_yt_00002"}
    assert set(h[~h.isin(["test", "exclude"])]) == {""}
    # Labels: 1 = fake (the list's 1 = real is inverted), from the folder.
    assert df.loc["celebdf_fake_id0_id1_0000", "label"] == 1
    assert df.loc["celebdf_real_id0_0000", "label"] == 0 and df.loc["celebdf_yt_00000", "label"] == 0
    # original: the target identity's real clip with the same number, when present.
    assert df.loc["celebdf_fake_id0_id1_0001", "original"] == "celebdf_real_id0_0001"
    assert df.loc["celebdf_fake_id3_id2_0001", "original"] == "celebdf_real_id3_0001"
    assert df.loc["celebdf_fake_id2_id3_0000", "original"] == "celebdf_real_id2_0000"
    assert df.loc["celebdf_fake_id7_id8_0000", "original"] == "celebdf_real_id7_0000"
    assert df.loc["celebdf_fake_id1_id0_0000", "original"] == "celebdf_real_id1_0000"
    assert df.loc["celebdf_real_id1_0000", "original"] == ""
    assert len(df) == len(CELEB_FILES)
    reasons = dict(zip(problems["path"].map(lambda p: Path(p).name), problems["reason"]))
    assert "not on disk" in reasons["id9_id8_0000.mp4"]
    assert "skipped" in reasons["weird name.mp4"]
    assert_no_group_leak(df.reset_index(drop=True))


def test_celebdf_train_val_groups_hold_target_and_donor(celeb_root, tiny_mp4):
    """Any identity of a train/val video, target or donor, lives in exactly one group: wherever
    the split stage puts the groups, no identity is in both train and val."""
    put(celeb_root, "Celeb-synthesis/id7_id3_0000.mp4", tiny_mp4)  # donor id3 joins id7 to id2-id3
    df, _ = table(celeb_params(celeb_root))
    free = df[df["split_hint"] == ""]
    owner: dict[str, str] = {}
    for vid, group in free["group"].items():
        for ident in (t for t in vid.split("_") if t.startswith("id")):
            assert owner.setdefault(ident, group) == group, (vid, ident)
    assert owner["id8"] == owner["id2"] == "celebdf_ids_id2"  # via id7_id3: donor of id7's fake
    assert df.loc["celebdf_fake_id7_id3_0000", "group"] == "celebdf_ids_id2"
    # Splitting those groups (the test groups closed by the list) keeps every identity in one split.
    from fakeproof.config import SplitParams
    from fakeproof.splits import assign_splits

    for seed in range(5):
        out = assign_splits(df[df["split_hint"] != "exclude"].reset_index(drop=True),
                            SplitParams(train=0.5, val=0.3, test=0.2, seed=seed))
        kept = out[out["split"] != "test"]
        split_of: dict[str, str] = {}
        for vid, split in zip(kept["video_id"], kept["split"]):
            for ident in (t for t in vid.split("_") if t.startswith("id")):
                assert split_of.setdefault(ident, split) == split, (seed, vid, ident)


def test_celebdf_identity_policy(celeb_root):
    df, _ = table(celeb_params(celeb_root, "identity"))
    h = df["split_hint"]
    # id0-id1-id2-id3 are connected to the test identities id0, id1: all non-test excluded.
    assert set(df.index[h == "exclude"]) == {
        "celebdf_real_id0_0001", "celebdf_real_id1_0000", "celebdf_real_id2_0000",
        "celebdf_real_id3_0001", "celebdf_fake_id0_id2_0000", "celebdf_fake_id0_id1_0001",
        "celebdf_fake_id1_id0_0000", "celebdf_fake_id2_id3_0000", "celebdf_fake_id3_id2_0001"}
    assert df.loc["celebdf_real_id3_0001", "group"] == "celebdf_ids_id0"
    # id7-id8 never meets a test identity: free.
    assert (df.loc["celebdf_real_id7_0000", "group"], df.loc["celebdf_real_id7_0000", "split_hint"]) \
        == ("celebdf_ids_id7", "")
    assert df.loc["celebdf_fake_id7_id8_0000", "group"] == "celebdf_ids_id7"
    assert (df.loc["celebdf_yt_00001", "split_hint"], df.loc["celebdf_yt_00000", "split_hint"]) == (
        "", "test")
    # No identity of a test video outside test (except excluded videos).
    test_ids = set()
    for vid in df.index[h == "test"]:
        test_ids |= {t for t in vid.split("_") if t.startswith("id")}
    kept = df[~h.isin(["test", "exclude"])]
    for vid in kept.index:
        assert not ({t for t in vid.split("_") if t.startswith("id")} & test_ids), vid
    assert_no_group_leak(df.reset_index(drop=True))


def test_celebdf_flipped_list_refused(celeb_root):
    (celeb_root / "List_of_testing_videos.txt").write_text(
        "0 YouTube-real/00000.mp4\n1 Celeb-synthesis/id0_id1_0000.mp4\n")
    with pytest.raises(SourceError, match=r"List_of_testing_videos.txt:1: .*flipped"):
        table(celeb_params(celeb_root))
    (celeb_root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n2 x.mp4\n")
    with pytest.raises(SourceError, match=r"List_of_testing_videos.txt:2: "):
        table(celeb_params(celeb_root))


def test_celebdf_falls_back_to_shipped_list(celeb_root, tiny_mp4, caplog):
    (celeb_root / "List_of_testing_videos.txt").unlink()
    put(celeb_root, "Celeb-real/id1_0007.mp4", tiny_mp4)  # on the official list
    with caplog.at_level(logging.INFO, logger="fakeproof.sources.celebdf"):
        df, problems = table(celeb_params(celeb_root))
    assert "fakeproof/assets/splits/celebdf/List_of_testing_videos.txt" in caplog.text
    from fakeproof.sources.celebdf import read_test_list

    official, _ = read_test_list(Path("no-such-root"))
    on_list = {rel for rel in [*CELEB_FILES, "Celeb-real/id1_0007"] if rel + ".mp4" in official}
    assert "Celeb-real/id1_0007" in on_list
    assert set(df.index[df["split_hint"] == "test"]) == set(df.index[df["path"].map(
        lambda p: Path(p).parent.name + "/" + Path(p).stem in on_list)])
    assert int(problems["reason"].str.contains("not on disk").sum()) == 518 - len(on_list)
    assert_no_group_leak(df.reset_index(drop=True))


def test_celebdf_shipped_list_facts():
    from fakeproof.sources.celebdf import read_test_list

    test, where = read_test_list(Path("no-such-root"))
    assert where.endswith("List_of_testing_videos.txt")
    labels = pd.Series(test)
    assert len(labels) == 518 and int(labels.sum()) == 340  # 340 fakes, 178 reals
    assert all(labels[k] == 1 for k in labels.index if k.startswith("Celeb-synthesis/"))


# ------------------------------------------------------------------------------------------------
# DFDC
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def dfdc_root(tmp_path, tiny_mp4) -> Path:
    root = tmp_path / "dfdc"
    meta0 = {"a.mp4": {"label": "REAL", "split": "train"},
             "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
             "c.mp4": {"label": "FAKE", "split": "train", "original": "x.mp4"},
             "d.mp4": {"label": "REAL", "split": "train"},
             "e.mp4": {"label": "FAKE", "split": "train"}}
    meta1 = {"x.mp4": {"label": "REAL", "split": "train"},
             "y.mp4": {"label": "FAKE", "split": "train", "original": "x.mp4"}}
    for part, meta, files in (("dfdc_train_part_0", meta0, "abcez"), ("dfdc_train_part_1", meta1, "xy")):
        (root / part).mkdir(parents=True)
        (root / part / "metadata.json").write_text(json.dumps(meta))
        for f in files:
            put(root, f"{part}/{f}.mp4", tiny_mp4)
    (root / "unrelated").mkdir()
    return root


def dfdc_params(root, parts=()) -> DataParams:
    return DataParams(source="dfdc", root=str(root), dfdc=DfdcParams(parts=list(parts)))


def test_dfdc_groups_fakes_with_originals_across_parts(dfdc_root):
    df, problems = table(dfdc_params(dfdc_root))
    assert list(df.index) == ["dfdc_a", "dfdc_b", "dfdc_c", "dfdc_e", "dfdc_x", "dfdc_y"]
    assert df["label"].to_dict() == {"dfdc_a": 0, "dfdc_b": 1, "dfdc_c": 1, "dfdc_e": 1,
                                     "dfdc_x": 0, "dfdc_y": 1}
    assert df["group"].to_dict() == {"dfdc_a": "dfdc_a", "dfdc_b": "dfdc_a", "dfdc_c": "dfdc_c",
                                     "dfdc_e": "dfdc_e", "dfdc_x": "dfdc_c", "dfdc_y": "dfdc_c"}
    assert df["original"].to_dict() == {"dfdc_a": "", "dfdc_b": "dfdc_a", "dfdc_c": "dfdc_x",
                                        "dfdc_e": "", "dfdc_x": "", "dfdc_y": "dfdc_x"}
    assert set(df["split_hint"]) == {""}
    reasons = dict(zip(problems["path"].map(lambda p: Path(p).name), problems["reason"]))
    assert "not on disk" in reasons["d.mp4"]
    assert "no label" in reasons["z.mp4"]
    assert "without \"original\"" in reasons["e.mp4"]
    assert_no_group_leak(df.reset_index(drop=True))


def test_dfdc_user_groups_merge_with_originals(dfdc_root, tmp_path, caplog):
    """data.dfdc.groups joins videos (by file name, stem or video_id) into the user's groups; it can
    merge default groups, never split a fake from its original."""
    groups = tmp_path / "actors.csv"
    groups.write_text("video,group\na.mp4,A\nb,B\ndfdc_x,B\ne.mp4,C\nnot_in_table.mp4,A\n")
    params = dataclasses.replace(dfdc_params(dfdc_root),
                                 dfdc=DfdcParams(groups=str(groups)))
    with caplog.at_level(logging.INFO, logger="fakeproof.sources.dfdc"):
        df, _ = table(params)
    # b (user group B) stays with its original a (A); x (B) brings c and y along: one group.
    assert df["group"].to_dict() == {"dfdc_a": "dfdc_a", "dfdc_b": "dfdc_a", "dfdc_c": "dfdc_a",
                                     "dfdc_e": "dfdc_e", "dfdc_x": "dfdc_a", "dfdc_y": "dfdc_a"}
    assert df["original"].to_dict()["dfdc_b"] == "dfdc_a"  # face-box reuse unchanged
    assert "3 user groups over 4 videos" in caplog.text
    assert "2 of 6 videos are not in" in caplog.text  # c and y: default grouping only
    assert "1 rows of" in caplog.text and "not_in_table.mp4" in caplog.text
    assert_no_group_leak(df.reset_index(drop=True))
    # The default (groups: null) is the fake-with-its-original grouping.
    assert table(dfdc_params(dfdc_root))[0]["group"].nunique() == 3


@pytest.mark.parametrize("text, match", [
    (None, r"^data.dfdc.groups = '.*missing.csv': no such file"),
    ("vid,grp\na.mp4,A\n", r"groups.csv:1: header 'vid,grp'; expected video,group"),
    ("video,group\na.mp4,A\na.mp4,B\n", r"groups.csv:3: a.mp4 is in group 'B' here and in 'A' "
                                           r"at line 2"),
    ("video,group\na.mp4\n", r"groups.csv:2: 1 columns; expected 2"),
    ("video,group\na.mp4, \n", r"groups.csv:2: empty video or group"),
])
def test_dfdc_user_groups_errors(dfdc_root, tmp_path, text, match):
    path = tmp_path / ("missing.csv" if text is None else "groups.csv")
    if text is not None:
        path.write_text(text)
    params = dataclasses.replace(dfdc_params(dfdc_root), dfdc=DfdcParams(groups=str(path)))
    with pytest.raises(SourceError, match=match) as e:
        table(params)
    assert "\n" not in str(e.value)


def test_dfdc_parts_selection_and_errors(dfdc_root):
    df, _ = table(dfdc_params(dfdc_root, ["dfdc_train_part_1"]))
    assert df["group"].to_dict() == {"dfdc_x": "dfdc_x", "dfdc_y": "dfdc_x"}
    df, _ = table(dfdc_params(dfdc_root, ["dfdc_train_part_0"]))
    assert df.loc["dfdc_c", "original"] == "" and df.loc["dfdc_c", "group"] == "dfdc_c"
    with pytest.raises(SourceError, match=r"data.dfdc.parts: 'dfdc_train_part_9'.*dfdc_train_part_0"):
        table(dfdc_params(dfdc_root, ["dfdc_train_part_9"]))
    meta = dfdc_root / "dfdc_train_part_1" / "metadata.json"
    meta.write_text('{"x.mp4": {"label": "REAL"},')
    with pytest.raises(SourceError, match=r"dfdc_train_part_1/metadata.json: not valid JSON"):
        table(dfdc_params(dfdc_root))
    meta.write_text('{"x.mp4": {"label": "real"}}')
    with pytest.raises(SourceError, match=r"metadata.json: entry 'x.mp4' needs"):
        table(dfdc_params(dfdc_root))


# ------------------------------------------------------------------------------------------------
# Generic folder and CSV
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def folder_root(tmp_path, tiny_mp4) -> Path:
    root = tmp_path / "mine"
    for rel in ("real/abc.mp4", "real/ab.mov", "real/grp1/a.mp4", "real/grp1/b.avi",
                "fake/abc_xyz.mp4", "fake/abcd_x.mkv", "fake/UPPER.MP4", "fake/grp1/a_swap.mp4",
                "fake/grp1/c.webm", "stray.mp4"):
        put(root, rel, tiny_mp4)
    (root / "real" / "notes.txt").write_text("ignored")
    (root / "real" / "text.mp4").write_text("a text file named .mp4")
    return root


def test_folder_groups_and_originals(folder_root):
    df, problems = table(DataParams(source="folder", root=str(folder_root)))
    assert df["group"].to_dict() == {
        "folder_fake_UPPER": "folder_fake_UPPER", "folder_fake_abc_xyz": "folder_abc",
        "folder_fake_abcd_x": "folder_fake_abcd_x", "folder_fake_grp1-a_swap": "folder_grp1",
        "folder_fake_grp1-c": "folder_grp1", "folder_real_ab": "folder_ab",
        "folder_real_abc": "folder_abc", "folder_real_grp1-a": "folder_grp1",
        "folder_real_grp1-b": "folder_grp1", "folder_real_text": "folder_text"}
    assert df.loc["folder_fake_abc_xyz", "original"] == "folder_real_abc"  # longest stem wins
    assert df.loc["folder_fake_grp1-a_swap", "original"] == "folder_real_grp1-a"
    assert df.loc["folder_fake_grp1-c", "original"] == ""
    assert df.loc["folder_fake_abcd_x", "original"] == ""
    assert df["label"].sum() == 5 and set(df["split_hint"]) == {""}
    assert df.loc["folder_real_text", "path"].endswith("real/text.mp4")  # listed, not decoded
    assert list(problems["path"].map(lambda p: Path(p).name)) == ["stray.mp4"]
    assert_no_group_leak(df.reset_index(drop=True))


def test_folder_needs_real_or_fake(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"data.root = .*no real/ or fake/"):
        table(DataParams(source="folder", root=str(tmp_path / "empty")))


@pytest.fixture
def csv_file(tmp_path, tiny_mp4) -> Path:
    vids = tmp_path / "data"
    for n in ("a", "b"):
        put(vids, f"vids/{n}.mp4", tiny_mp4)
    elsewhere = put(tmp_path, "elsewhere/c.mp4", tiny_mp4)
    f = vids / "list.csv"
    f.write_text("path,label,group\n"
                 "vids/a.mp4,0,g1\n"
                 "vids/b.mp4,FAKE,g1\n"
                 f"{elsewhere},real,\n"
                 "\n"
                 "vids/missing.mp4,1,g2\n")
    return f


def test_csv_source(csv_file):
    df, problems = table(DataParams(source="csv", root=str(csv_file)))
    vid_c = [v for v in df.index if v.endswith("elsewhere-c")]
    assert len(df) == 3 and len(vid_c) == 1
    assert df.loc["csv_vids-a", "group"] == df.loc["csv_vids-b", "group"] == "csv_g1"
    assert df.loc[vid_c[0], "group"] == vid_c[0]
    assert df["label"].to_dict() == {"csv_vids-a": 0, "csv_vids-b": 1, vid_c[0]: 0}
    assert df.loc["csv_vids-a", "path"] == str(csv_file.parent / "vids" / "a.mp4")
    assert Path(df.loc[vid_c[0], "path"]).is_absolute()
    assert list(problems["reason"]) == ["listed at list.csv:6 but not found; skipped"]
    assert_no_group_leak(df.reset_index(drop=True))


def test_csv_source_ignores_description_columns(csv_file):
    csv_file.write_text("path,label,group,what\nvids/a.mp4,0,g1,a talking head\n"
                        "vids/b.mp4,1,g1,its face swap\n")
    df, _ = table(DataParams(source="csv", root=str(csv_file)))
    assert df["label"].to_dict() == {"csv_vids-a": 0, "csv_vids-b": 1}
    assert set(df["group"]) == {"csv_g1"}


@pytest.mark.parametrize("text, match", [
    ("file,label\nvids/a.mp4,0\n", r"list.csv:1: header"),
    ("path,label\nvids/a.mp4,0\nvids/b.mp4,maybe\n", r"list.csv:3: label 'maybe'"),
    ("path,label\nvids/a.mp4,0,extra\n", r"list.csv:2: 3 columns"),
    ("path,label\nvids/a.mp4,0\nvids/a.mp4,1\n", r"list.csv:3: vids/a.mp4 is listed twice"),
])
def test_csv_errors_name_file_and_line(csv_file, text, match):
    csv_file.write_text(text)
    with pytest.raises(SourceError, match=match):
        table(DataParams(source="csv", root=str(csv_file)))


# ------------------------------------------------------------------------------------------------
# Every source
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["ffpp", "celebdf", "dfdc", "folder", "csv"])
def test_root_missing_or_unset(source, tmp_path):
    for root in (None, str(tmp_path / "nope")):
        with pytest.raises(SourceError, match=r"^data.root") as e:
            table(DataParams(source=source, root=root))
        assert "\n" not in str(e.value)
        if root:
            assert root in str(e.value)


@pytest.mark.parametrize("name", ["ffpp", "celebdf", "dfdc", "folder", "csv"])
def test_every_source_deterministic_and_leak_free(name, request):
    root = request.getfixturevalue({"ffpp": "ffpp_root", "celebdf": "celeb_root", "dfdc": "dfdc_root",
                                    "folder": "folder_root", "csv": "csv_file"}[name])
    params = ffpp_params(root, include_actors=True) if name == "ffpp" else DataParams(
        source=name, root=str(root))
    a, pa = table(params)
    b, pb = table(params)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pa, pb)
    assert list(a.index) == sorted(a.index)
    assert set(a["source"]) == {name}
    assert set(a.loc[a["label"] == 0, "method"]) == {"real"}
    assert_no_group_leak(a.reset_index(drop=True))
    # Every original names a real video of the table in the same group.
    fakes = a[a["original"] != ""]
    for vid, row in fakes.iterrows():
        assert a.loc[row["original"], "label"] == 0, vid
        assert a.loc[row["original"], "group"] == row["group"], vid
