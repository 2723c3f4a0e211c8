"""The video-level split: whole groups per split, official hints honoured, ratios kept."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from fakeproof.config import SplitParams
from fakeproof.errors import FakeproofError
from fakeproof.splits import SplitError, assign_splits, check_no_leakage, run_split


def table(n_groups: int, per_group: int = 4, hints: dict[int, str] | None = None) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            rows.append({"video_id": f"g{g:03d}_{k}", "label": int(k > 1), "group": f"g{g:03d}",
                         "split_hint": (hints or {}).get(g, "")})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_group_spans_two_splits(seed) -> None:
    rng = np.random.default_rng(seed)
    df = table(40)
    df = df.sample(frac=1.0, random_state=seed)  # input order must not matter
    out = assign_splits(df, SplitParams(seed=seed))
    assert out.groupby("group")["split"].nunique().max() == 1
    counts = out["split"].value_counts(normalize=True)
    assert abs(counts["train"] - 0.6) <= 0.05 and abs(counts["test"] - 0.2) <= 0.05
    assert rng is not None


def test_deterministic_and_order_free() -> None:
    df = table(30)
    a = assign_splits(df, SplitParams(seed=3)).set_index("video_id")["split"]
    b = assign_splits(df.iloc[::-1], SplitParams(seed=3)).set_index("video_id")["split"]
    assert a.sort_index().equals(b.sort_index())
    c = assign_splits(df, SplitParams(seed=4)).set_index("video_id")["split"]
    assert not a.sort_index().equals(c.sort_index())


def test_official_hints_win_and_close_their_split() -> None:
    # Celeb-DF style: the official test list; train/val from the rest.
    hints = {g: "test" for g in range(5)}
    hints[5] = "exclude"
    df = table(30, hints=hints)
    out = assign_splits(df, SplitParams(seed=0))
    test_groups = set(out.loc[out["split"] == "test", "group"])
    assert test_groups == {f"g{g:03d}" for g in range(5)}
    assert "g005" not in set(out["group"])  # excluded by protocol
    assert set(out["split"]) == {"train", "val", "test"}
    share = out.loc[out["split"] != "test", "split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.75) < 0.06


def test_official_hints_ignored_when_disabled() -> None:
    df = table(30, hints={g: "test" for g in range(10)})
    out = assign_splits(df, SplitParams(seed=0, official=False))
    assert (out["split"] == "test").mean() < 0.3


def test_conflicting_hints_in_a_group_are_refused() -> None:
    df = table(10)
    df.loc[df["video_id"] == "g000_0", "split_hint"] = "train"
    df.loc[df["video_id"] == "g000_1", "split_hint"] = "test"
    with pytest.raises(SplitError, match="g000"):
        assign_splits(df, SplitParams())


def test_too_few_groups_is_a_clear_error() -> None:
    with pytest.raises(SplitError, match="would be empty"):
        assign_splits(table(2), SplitParams())


def test_leak_check_fires() -> None:
    df = pd.DataFrame({"group": ["a", "a", "b"], "split": ["train", "test", "val"]})
    with pytest.raises(SplitError, match="'a' spans 2 splits"):
        check_no_leakage(df)


def test_stage_drops_videos_without_faces(tmp_path) -> None:
    df = table(12)
    for c, v in (("path", "x.mp4"), ("method", "m"), ("source", "s"), ("original", "")):
        df[c] = v
    df.to_csv(tmp_path / "videos.csv", index=False)
    faces = pd.DataFrame({"video_id": [v for v in df["video_id"] if v != "g000_0" for _ in range(3)]})
    faces.to_csv(tmp_path / "faces.csv", index=False)
    stats = run_split(SplitParams(), tmp_path / "videos.csv", tmp_path / "faces.csv",
                      tmp_path / "splits.csv")
    out = pd.read_csv(tmp_path / "splits.csv")
    assert stats["dropped_no_faces"] == 1 and "g000_0" not in set(out["video_id"])
    assert list(out.columns) == ["video_id", "label", "split", "group", "method", "source", "n_faces"]
    assert (out["n_faces"] == 3).all()
    assert stats["train"] + stats["val"] + stats["test"] == len(out) == 47


def _stage_inputs(tmp_path, df: pd.DataFrame, faces_per_video: dict[str, int]) -> tuple:
    df = df.copy()
    for c, v in (("path", "x.mp4"), ("method", "m"), ("source", "s"), ("original", "")):
        df[c] = v
    df.to_csv(tmp_path / "videos.csv", index=False)
    faces = pd.DataFrame({"video_id": [v for v, n in faces_per_video.items() for _ in range(n)]},
                         dtype=str)
    faces.to_csv(tmp_path / "faces.csv", index=False)
    return tmp_path / "videos.csv", tmp_path / "faces.csv", tmp_path / "splits.csv"


@pytest.mark.parametrize("split, missing", [("val", "fake"), ("test", "real")])
def test_split_without_a_class_is_one_line(split, missing) -> None:
    # One class per group, placed by official hints: the named split gets the other class only.
    rows, other = [], {"fake": 0, "real": 1}[missing]
    for g, (hint, label) in enumerate([("train", 0), ("train", 1), (split, other), (split, other),
                                       ({"val": "test", "test": "val"}[split], 0),
                                       ({"val": "test", "test": "val"}[split], 1)]):
        rows += [{"video_id": f"g{g}_{k}", "label": label, "group": f"g{g}", "split_hint": hint}
                 for k in range(2)]
    with pytest.raises(SplitError) as e:
        assign_splits(pd.DataFrame(rows), SplitParams())
    have = {"fake": "4 real", "real": "4 fake"}[missing]
    assert str(e.value) == (f"split {split!r} has no {missing} videos (only {have}; groups are "
                            f"kept whole in one split): its AUC is undefined; add {missing} videos, "
                            f"try another split.seed, or change split.{split}")
    assert isinstance(e.value, FakeproofError)


def test_stage_counts_faceless_videos_per_class(tmp_path, caplog) -> None:
    df = table(12)  # labels: k 0, 1 real; k 2, 3 fake
    faces = {v: 2 for v in df["video_id"]}
    faces.update({"g000_0": 0, "g003_2": 0, "g004_3": 0})
    df.loc[df["group"] == "g005", "split_hint"] = "exclude"
    faces["g005_0"] = 0  # excluded by protocol: counted there, not as faceless
    with caplog.at_level(logging.WARNING, logger="fakeproof.splits"):
        stats = run_split(SplitParams(), *_stage_inputs(tmp_path, df, faces))
    assert (stats["dropped_no_faces"], stats["dropped_no_faces_real"],
            stats["dropped_no_faces_fake"], stats["excluded_by_protocol"]) == (3, 1, 2, 4)
    assert stats["videos"] == 48 - 3 - 4
    assert sum(c["real"] + c["fake"] for c in stats["classes"].values()) == stats["videos"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["split: 3 videos without a detected face dropped (1 real, 2 fake; e.g. g000_0, "
                     "g003_2, g004_3); see the crop_faces problems and faces.min_prob"]


def test_stage_errors_are_one_line(tmp_path) -> None:
    df = table(6)
    videos, faces, out = _stage_inputs(tmp_path, df, {})
    with pytest.raises(SplitError, match=r"faces.csv: no video has a detected face \(24 videos to "
                                         r"split\); check the crop_faces problems") as e:
        run_split(SplitParams(), videos, faces, out)
    assert "\n" not in str(e.value)
    faces.unlink()
    with pytest.raises(SplitError, match=r"faces.csv: not found; run the crop_faces stage first"):
        run_split(SplitParams(), videos, faces, out)
    with pytest.raises(SplitError, match=r"videos.csv: not found; run the download stage first"):
        run_split(SplitParams(), tmp_path / "nope" / "videos.csv", faces, out)
    faces.write_text("key,frame\n")
    with pytest.raises(SplitError, match=r"faces.csv: missing columns \['video_id'\]"):
        run_split(SplitParams(), videos, faces, out)
    assert not out.exists()
