"""Metrics at a deployed boundary, with intervals that mean what they say, and paired differences.

- :func:`level_metrics`: frame- and video-level metrics of decision logits
  (:mod:`fakeproof.boundary`: ``d > 0`` is a fake at the deployed boundary; a video's score is
  the aggregate of its frames' calibrated P(fake), compared with the checkpoint's threshold, as
  ``fakeproof detect`` decides),
  each with a 95 % BCa interval that resamples whole videos within strata of label and
  manipulation method (:func:`fakeproof.bootstrap.video_bootstrap`); below ``eval.min_videos``
  videos of a class the interval is "not estimable", never zero width.
- :func:`paired_difference`: two sets of logits on the same faces (a model clean and attacked,
  or two models): the difference of AUC and of balanced accuracy with paired bootstrap
  intervals (the same resampled videos for both) and DeLong's test of the AUC difference. Claims
  that one number beats another come from these, never from overlapping intervals.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from fakeproof.bootstrap import (class_video_counts, clopper_pearson, interval,
                                 paired_video_bootstrap, resample, video_bootstrap)
from fakeproof.boundary import Boundary
from fakeproof.delong import delong_test
from fakeproof.metrics import aggregate_videos, binary_metrics
from fakeproof.predict import proba
from fakeproof.sampling import video_strata

_BOUNDS = ("auc_lo", "auc_hi", "bacc_lo", "bacc_hi")


def _ci(target: dict, ci: dict) -> None:
    target.update({k: ci[k] for k in _BOUNDS})
    target["ci_method"] = {"auc": ci.get("auc_method", ci.get("method")),
                           "bacc": ci.get("bacc_method", ci.get("method"))}
    if not ci.get("estimable", True):
        target["ci_note"] = ci.get("reason")


def level_metrics(frames: pd.DataFrame, decision: np.ndarray, boundary: Boundary, how: str,
                  n_boot: int = 0, seed: int = 0, min_videos: int = 2) -> dict[str, dict]:
    """Frame- and video-level metrics of decision logits at ``boundary`` (frame AUC ranked on
    the logits; video score the ``how`` aggregate of the frames' calibrated P(fake), fake when
    above ``boundary.threshold``), with stratified video-resampled 95 % intervals when
    ``n_boot`` > 0. ``frames`` holds ``video_id``, ``label`` and, if known, ``method``."""
    d = np.asarray(decision, dtype=np.float64).reshape(-1)
    df = frames[["video_id", "label"]].reset_index(drop=True).copy()
    df["prob"] = boundary.p_from_decision(d)
    strata = video_strata(frames.reset_index(drop=True))
    video = aggregate_videos(df, how=how)
    by_video = dict(zip(df["video_id"], strata))
    y = df["label"].to_numpy()
    frame = binary_metrics(y, proba(d), scores=d)
    vy, vp = video["label"].to_numpy(), video["prob"].to_numpy()
    vid = binary_metrics(vy, vp, threshold=boundary.threshold)
    if n_boot:
        _ci(frame, video_bootstrap(y, d, d > 0, df["video_id"].to_numpy(), strata=strata,
                                   n_boot=n_boot, seed=seed, min_videos=min_videos))
        vids = video["video_id"].to_numpy()
        _ci(vid, video_bootstrap(vy, vp, vp > boundary.threshold, vids,
                                 strata=np.array([by_video[v] for v in vids]), n_boot=n_boot,
                                 seed=seed, min_videos=min_videos))
    return {"frame": frame, "video": vid}


def paired_difference(frames: pd.DataFrame, a: np.ndarray, b: np.ndarray, *, n_boot: int,
                      seed: int, min_videos: int = 2) -> dict[str, Any]:
    """B minus A on the same faces, frame level at each one's deployed boundary (decision logits:
    ``> 0`` is fake): ``auc_a``, ``auc_b``, ``auc_diff`` with its paired 95 % interval and
    DeLong's p (faces as the unit: DeLong does not know videos, the bootstrap does), ``bacc_a``,
    ``bacc_b``, ``bacc_diff`` with its paired interval; whole videos resampled within strata.
    ``significant``: the bacc interval excludes 0 (None when not estimable)."""
    y = frames["label"].to_numpy().astype(int)
    za, zb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ma = binary_metrics(y, proba(za), scores=za)
    mb = binary_metrics(y, proba(zb), scores=zb)
    ci = paired_video_bootstrap(y, za, zb, frames["video_id"].to_numpy(),
                                strata=video_strata(frames.reset_index(drop=True)),
                                pred_a=za > 0, pred_b=zb > 0, n_boot=n_boot, seed=seed,
                                min_videos=min_videos)
    dl = delong_test(y, za, zb) if len(np.unique(y)) == 2 else {"p": float("nan")}
    lo, hi = ci.get("bacc_diff_lo"), ci.get("bacc_diff_hi")
    significant: Optional[bool] = None
    if lo is not None and hi is not None:
        significant = bool(lo > 0 or hi < 0)
    return {"auc_a": ma["auc"], "auc_b": mb["auc"], "auc_diff": mb["auc"] - ma["auc"],
            "auc_diff_lo": ci.get("diff_lo"), "auc_diff_hi": ci.get("diff_hi"),
            "delong_p": dl["p"], "bacc_a": ma["bacc"], "bacc_b": mb["bacc"],
            "bacc_diff": mb["bacc"] - ma["bacc"], "bacc_diff_lo": lo, "bacc_diff_hi": hi,
            "significant": significant, "estimable": ci.get("estimable", True),
            "ci_method": ci.get("method"), "ci_note": ci.get("reason"),
            "faces": int(len(y)), "videos": int(frames["video_id"].nunique())}


def accuracy_interval(frames: pd.DataFrame, correct: np.ndarray, *, n_boot: int, seed: int,
                      min_videos: int = 2) -> dict[str, Any]:
    """Accuracy (share of ``correct`` faces) with a 95 % BCa interval over whole videos resampled
    within label x method strata; exact Clopper-Pearson at the video count where the bootstrap is
    degenerate; ``acc_lo``/``acc_hi`` None (not estimable) below ``min_videos`` per class."""
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    videos = frames["video_id"].to_numpy()
    acc = float(c.mean()) if c.size else float("nan")
    n_real, n_fake = class_video_counts(frames["label"].to_numpy(), videos)
    reason = (f"{n_real} real / {n_fake} fake videos < {min_videos} per class"
              if min(n_real, n_fake) < min_videos else None)
    if reason is not None or not n_boot:
        return {"acc": acc, "acc_lo": None, "acc_hi": None, "ci_note": reason}

    def stat(w: np.ndarray) -> np.ndarray:
        return (w @ c) / w.sum(axis=1)

    point, draws, jack = resample(stat, videos, video_strata(frames.reset_index(drop=True)),
                                  n_boot, seed)
    n_videos = int(pd.unique(videos).size)
    lo, hi, method = interval(point[0], draws[:, 0], jack[:, 0], 0.95,
                              lambda: clopper_pearson(round(acc * n_videos), n_videos))
    return {"acc": acc, "acc_lo": float(lo), "acc_hi": float(hi), "ci_method": method}


def interval_text(lo: Optional[float], hi: Optional[float]) -> str:
    """A 95 % interval as one short string, ``"0.728-1.000"``; ``"n/e"`` when it is not
    estimable (too few videos per class): one column in ``dvc exp show`` instead of two."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/e"
    return f"{lo:.3f}-{hi:.3f}"


__all__ = ["accuracy_interval", "interval_text", "level_metrics", "paired_difference"]
