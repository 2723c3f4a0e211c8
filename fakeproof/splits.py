"""Leakage-proof, video-level train/val/test split.

Every video carries a ``group`` (a fake and the real clip(s) it was made from share one: FF++ pairs,
DFDC originals, Celeb-DF source clips or identity components, demo clip pairs). Whole groups are assigned to a
split, so no frame, video, source clip or identity of a test video is seen in training.

Official splits win where they exist (``split_hint`` set by the source, ``split.official: true``):
a split that receives official members is closed, and the remaining ("free") groups are shared
among the other splits by their ratios (Celeb-DF: the official test list, train/val from the rest).
Free groups are shuffled with ``split.seed`` and each goes to the open split furthest below its
target share of videos, which keeps the ratios within one group of the target.

Refused with one line (:class:`SplitError`), never a traceback or a silent bad split: a split
that would be empty, a val or test split that would lack a class (no real or no fake video: its
AUC is undefined and model selection on val would be blind), a group spanning two splits, no
video with a face.
Videos without a detected face are dropped and counted in the stage's stats
(``dropped_no_faces``, per class), as are those the source's protocol excludes.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from fakeproof.config import SplitParams
from fakeproof.errors import FakeproofError
from fakeproof.io import read_stage_csv

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")  # splits that must hold both classes (their AUC is computed)
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
    check_classes(df, [s for s in EVAL_SPLITS if ratios[s] > 0 or (df["split"] == s).any()])
    return df


def check_classes(df: pd.DataFrame, splits: list[str] | tuple[str, ...] = EVAL_SPLITS) -> None:
    """Raise :class:`SplitError` if one of ``splits`` lacks real or fake videos.

    Val and test by default: their AUC needs both classes. A one-class train split is reported by
    the training stage (it may be intended, e.g. with a pretrained detector and train ratio 0).
    """
    for s in splits:
        labels = df.loc[df["split"] == s, "label"].astype(int)
        n_fake = int(labels.sum())
        n_real = int(len(labels) - n_fake)
        if n_fake and n_real:
            continue
        missing, have = ("fake", f"{n_real} real") if not n_fake else ("real", f"{n_fake} fake")
        raise SplitError(f"split {s!r} has no {missing} videos (only {have}; groups are kept whole "
                         f"in one split): its AUC is undefined; add {missing} videos, try another "
                         f"split.seed, or change split.{s}")


def check_no_leakage(df: pd.DataFrame) -> None:
    """Raise :class:`SplitError` if any group spans two splits."""
    spans = df.groupby("group")["split"].nunique()
    bad = spans[spans > 1]
    if len(bad):
        raise SplitError(f"group {bad.index[0]!r} spans {int(bad.iloc[0])} splits: leakage")


def _read_csv(path, stage: str, columns: list[str], **kw) -> pd.DataFrame:
    return read_stage_csv(path, stage, SplitError, columns, **kw)


def run_split(params: SplitParams, videos_csv, faces_csv, out_csv) -> dict:
    """The split stage: read the video table and face index, write ``splits.csv``."""
    from fakeproof.io import write_csv

    t0 = time.perf_counter()
    videos = _read_csv(videos_csv, "download", ["video_id", "label", "group", "method", "source",
                                            "split_hint"],
                   dtype={"split_hint": str, "group": str, "video_id": str})
    faces = _read_csv(faces_csv, "crop_faces", ["video_id"], usecols=lambda c: c == "video_id",
                  dtype={"video_id": str})
    videos["label"] = pd.to_numeric(videos["label"], errors="coerce")
    if videos["label"].isna().any() or not videos["label"].isin([0, 1]).all():
        raise SplitError(f"{videos_csv}: label must be 0 or 1; run the download stage again")
    videos["label"] = videos["label"].astype(int)
    n_faces = faces.groupby("video_id").size()
    videos["n_faces"] = videos["video_id"].map(n_faces).fillna(0).astype(int)
    is_excluded = videos["split_hint"] == "exclude"
    excluded = int(is_excluded.sum())
    faceless = videos[(videos["n_faces"] == 0) & ~is_excluded]
    no_faces = int(len(faceless))
    no_faces_fake = int(faceless["label"].sum())
    if no_faces:
        log.warning("split: %d videos without a detected face dropped (%d real, %d fake; e.g. %s); "
                    "see the crop_faces problems and faces.min_prob", no_faces,
                    no_faces - no_faces_fake, no_faces_fake,
                    ", ".join(faceless["video_id"].head(3)))
    usable = videos[videos["n_faces"] > 0]
    if usable[usable["split_hint"] != "exclude"].empty and len(videos) > excluded:
        raise SplitError(f"{faces_csv}: no video has a detected face ({len(videos) - excluded} "
                         "videos to split); check the crop_faces problems and faces.min_prob")
    out = assign_splits(usable, params)
    out = out[SPLIT_COLUMNS].sort_values("video_id", kind="stable").reset_index(drop=True)
    write_csv(out_csv, out)
    counts = {s: int((out["split"] == s).sum()) for s in SPLITS}
    stats = {
        "videos": int(len(out)), "groups": int(out["group"].nunique()),
        "excluded_by_protocol": excluded, "dropped_no_faces": no_faces,
        "dropped_no_faces_real": no_faces - no_faces_fake, "dropped_no_faces_fake": no_faces_fake,
        **counts,
        "fake_share": {s: round(float(out.loc[out["split"] == s, "label"].mean()), 4)
                       for s in SPLITS if counts[s]},
        "classes": {s: {"real": int(((out["split"] == s) & (out["label"] == 0)).sum()),
                        "fake": int(((out["split"] == s) & (out["label"] == 1)).sum())}
                    for s in SPLITS},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    log.info("split: %d videos in %d groups -> train %d / val %d / test %d videos; %d excluded by "
             "protocol, %d without faces; %.2fs", stats["videos"], stats["groups"], counts["train"],
             counts["val"], counts["test"], excluded, no_faces, stats["seconds"])
    return stats
