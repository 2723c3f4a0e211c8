"""Leakage-proof, video-level train/val/test split.

Every video carries a ``group`` (a fake and the real clip(s) it was made from share one: FF++ pairs,
DFDC originals, Celeb-DF source clips or identity components, demo clip pairs). Whole groups are assigned to a
split, so no frame, video, source clip or identity of a test video is seen in training.

Official splits win where they exist (``split_hint`` set by the source, ``split.official: true``):
a split that receives official members is closed, and the remaining ("free") groups are shared
among the other splits by their ratios (Celeb-DF: the official test list, train/val from the rest).
Free groups are shuffled with ``split.seed`` and each goes to the open split furthest below its
target share of videos, which keeps the ratios within one group of the target.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fakeproof.config import SplitParams
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["video_id", "label", "split", "group", "method", "source", "n_faces"]


class SplitError(FakeproofError, RuntimeError):
    """The split cannot be made without leakage or leaves a split empty (one-line message)."""


def assign_splits(videos: pd.DataFrame, params: SplitParams) -> pd.DataFrame:
    """Assign each video a split, whole groups at a time.

    ``videos`` needs columns video_id, label, group and optionally split_hint. Videos whose hint is
    ``exclude`` are dropped (the caller reports them). Raises :class:`SplitError` when a group
    carries two different official hints or a split would be empty.
    """
    df = videos.copy()
    if "split_hint" not in df:
        df["split_hint"] = ""
    df["split_hint"] = df["split_hint"].fillna("").astype(str)
    df = df[df["split_hint"] != "exclude"]
    if df.empty:
        raise SplitError("no videos to split; check data/raw/videos.csv and the faces stage report")

    hints = df[df["split_hint"] != ""] if params.official else df.iloc[0:0]
    per_group = hints.groupby("group")["split_hint"].unique()
    clash = per_group[per_group.map(len) > 1]
    if len(clash):
        g = clash.index[0]
        raise SplitError(f"group {g!r} has official hints {sorted(clash.iloc[0])}: the source "
                         "metadata would leak a group across splits; fix the source's grouping")
    group_split: dict[str, str] = {g: s[0] for g, s in per_group.items()}

    ratios = {"train": params.train, "val": params.val, "test": params.test}
    closed = set(group_split.values())
    open_splits = [s for s in SPLITS if s not in closed and ratios[s] > 0]
    sizes = df.groupby("group").size()
    free = sorted(g for g in sizes.index if g not in group_split)
    if free and not open_splits:
        if closed:
            # Every split has official members: share the rest by the configured ratios.
            open_splits = [s for s in SPLITS if ratios[s] > 0]
        else:
            raise SplitError("split ratios are all zero; set split.train/val/test")
    rng = np.random.default_rng(params.seed)
    order = [free[i] for i in rng.permutation(len(free))]
    total_open = sum(ratios[s] for s in open_splits) or 1.0
    n_free = int(sizes[free].sum()) if free else 0
    target = {s: ratios[s] / total_open * n_free for s in open_splits}
    filled = {s: 0 for s in open_splits}
    for g in order:
        s = max(open_splits, key=lambda k: (target[k] - filled[k], -open_splits.index(k)))
        group_split[g] = s
        filled[s] += int(sizes[g])

    df["split"] = df["group"].map(group_split)
    empty = [s for s in SPLITS if ratios[s] > 0 and not (df["split"] == s).any()]
    if empty:
        raise SplitError(f"split {empty[0]!r} would be empty ({df['group'].nunique()} groups for "
                         f"{len(SPLITS)} splits); add data or change split.{empty[0]}")
    check_no_leakage(df)
    return df


def check_no_leakage(df: pd.DataFrame) -> None:
    """Raise :class:`SplitError` if any group spans two splits."""
    spans = df.groupby("group")["split"].nunique()
    bad = spans[spans > 1]
    if len(bad):
        raise SplitError(f"group {bad.index[0]!r} spans {int(bad.iloc[0])} splits: leakage")


def run_split(params: SplitParams, videos_csv, faces_csv, out_csv) -> dict:
    """The split stage: read the video table and face index, write ``splits.csv``."""
    from fakeproof.io import write_csv

    t0 = time.perf_counter()
    videos = pd.read_csv(videos_csv, dtype={"split_hint": str, "group": str, "video_id": str},
                         keep_default_na=False)
    faces = pd.read_csv(faces_csv, usecols=["video_id"], dtype={"video_id": str})
    n_faces = faces.groupby("video_id").size()
    videos["n_faces"] = videos["video_id"].map(n_faces).fillna(0).astype(int)
    no_faces = int((videos["n_faces"] == 0).sum())
    excluded = int((videos["split_hint"] == "exclude").sum())
    usable = videos[videos["n_faces"] > 0]
    out = assign_splits(usable, params)
    out = out[SPLIT_COLUMNS].sort_values("video_id", kind="stable").reset_index(drop=True)
    write_csv(out_csv, out)
    counts = {s: int((out["split"] == s).sum()) for s in SPLITS}
    stats = {
        "videos": int(len(out)), "groups": int(out["group"].nunique()),
        "excluded_by_protocol": excluded, "dropped_no_faces": no_faces, **counts,
        "fake_share": {s: round(float(out.loc[out["split"] == s, "label"].mean()), 4)
                       for s in SPLITS if counts[s]},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("split: %d videos in %d groups -> train %d / val %d / test %d videos; %d excluded by "
             "protocol, %d without faces; %.2fs", stats["videos"], stats["groups"], counts["train"],
             counts["val"], counts["test"], excluded, no_faces, stats["seconds"])
    return stats
