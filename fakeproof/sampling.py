"""Whole videos, stratified by class and manipulation method: the attacked and selection samples.

Attacks are expensive, so evaluate (``eval.attack_videos``) and the adversarial checkpoint
selection (``adv.select_videos``) attack a sample of whole videos, never loose frames: every
frame of a chosen video comes along, so intervals can resample videos, and every stratum
(label x method) is represented when the count allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd


def video_strata(frames: pd.DataFrame) -> np.ndarray:
    """Per row, its stratum ``"label:method"`` (method empty when the table has none)."""
    method = frames["method"] if "method" in frames.columns else pd.Series("", index=frames.index)
    return (frames["label"].astype(str) + ":" + method.fillna("").astype(str)).to_numpy()


@dataclass
class Sample:
    """Whole test videos, stratified by class and method: positions in the dataset and rows."""

    index: np.ndarray
    frames: pd.DataFrame  # video_id, label, key (aligned with index)
    strata: dict[str, int]


def choose_sample(frames: pd.DataFrame, n_videos: Optional[int], seed: int) -> Sample:
    """Pick ``n_videos`` whole videos, allocated to strata (label, method) in proportion to their
    size (largest remainders; every stratum gets one when ``n_videos`` allows), seeded."""
    frames = frames.reset_index(drop=True)
    videos = (pd.DataFrame({"video_id": frames["video_id"], "label": frames["label"],
                            "stratum": video_strata(frames)})
              .drop_duplicates("video_id").sort_values("video_id", kind="stable"))
    total = len(videos)
    if n_videos is None or n_videos >= total:
        chosen = videos
    else:
        sizes = videos.groupby("stratum").size().sort_index()
        quota = sizes / total * n_videos
        alloc = np.floor(quota).astype(int)
        if n_videos >= len(sizes):
            alloc = alloc.clip(lower=1)
        rest = n_videos - int(alloc.sum())
        order = (quota - np.floor(quota)).sort_values(ascending=False, kind="stable").index
        for s in order:
            if rest <= 0:
                break
            if alloc[s] < sizes[s]:
                alloc[s] += 1
                rest -= 1
        while alloc.sum() > n_videos:  # the clip to 1 overshot: take from the largest strata
            alloc[alloc.idxmax()] -= 1
        rng = np.random.default_rng(seed)
        picks = []
        for s, k in alloc.items():
            ids = videos.loc[videos["stratum"] == s, "video_id"].to_numpy()
            picks.extend(rng.permutation(ids)[:int(k)].tolist())
        chosen = videos[videos["video_id"].isin(picks)]
    keep = frames["video_id"].isin(set(chosen["video_id"]))
    idx = np.flatnonzero(keep.to_numpy())
    strata = chosen.groupby("stratum").size().to_dict()
    cols = [c for c in ("video_id", "label", "key", "method") if c in frames.columns]
    return Sample(idx, frames.loc[keep, cols].reset_index(drop=True),
                  {str(k): int(v) for k, v in strata.items()})



__all__ = ["Sample", "choose_sample", "video_strata"]
