"""Detection metrics for binary deepfake detectors (labels 0 = real, 1 = fake; scores = P(fake)).

- :func:`binary_metrics`: AUC, AP, EER, accuracy, balanced accuracy, precision, recall, F1 and the
  class counts. A frame is called fake when its probability is **above** the threshold
  (``prob > threshold``), which matches the attacks' rule (the fake logit beats the real one).
  Metrics that a sample cannot define are ``nan``, never an exception and never a warning: AUC,
  AP and EER need both classes; precision needs a predicted fake; recall needs a fake; F1 needs a
  fake or a predicted fake; balanced accuracy averages the recalls of the classes present.
- :func:`aggregate_videos`: frame probabilities to one score per video (mean, max, or the DFDC
  winner's confident-frame rule).
- :func:`attack_success_rate`: share of correctly classified samples that an attack flips.
- :func:`roc_points`: the ROC curve as a table for plots.

Imbalanced test sets (FF++ about 1:4, Celeb-DF about 1:9) make accuracy misleading: AUC and
balanced accuracy are the headline numbers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

METRIC_KEYS = ("auc", "ap", "eer", "acc", "bacc", "precision", "recall", "f1",
               "n", "n_fake", "n_real")


def _as_arrays(labels: Any, probs: Any, what: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and {what} ({p.size}) differ in length; pass one "
                         "score per label")
    if y.size == 0:
        raise ValueError("labels: empty; metrics need at least one sample")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: values must be 0 (real) or 1 (fake)")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError(f"{what}: values must be finite probabilities in [0, 1]")
    return y.astype(np.int64), p


def _as_scores(scores: Any, n: int) -> np.ndarray:
    r = np.asarray(scores, dtype=np.float64).reshape(-1)
    if r.size != n or not np.isfinite(r).all():
        raise ValueError(f"scores: expected {n} finite values (one per label), got {r.size}")
    return r


def _check_threshold(threshold: Any) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(threshold, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold: {threshold!r} must be a number in [0, 1]")
    return value


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _eer(y: np.ndarray, p: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    fnr = 1.0 - tpr
    d = fnr - fpr  # 1 at the first point (fpr 0, tpr 0), -1 at the last (fpr 1, tpr 1)
    i = int(np.argmax(d <= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def binary_metrics(labels: Any, probs: Any, threshold: float = 0.5,
                   scores: Any = None) -> dict[str, float]:
    """Threshold-free (AUC, AP, EER) and thresholded (acc, bacc, precision, recall, F1) metrics.

    Args:
        labels: 0 = real, 1 = fake.
        probs: P(fake) per sample, in [0, 1].
        threshold: a sample is predicted fake when ``prob > threshold``.
        scores: what AUC, AP and EER rank (default ``probs``). Pass the logits: a sigmoid in
            float32 ties every logit above about 17 at 1.0 (float64: above about 37).

    Returns:
        ``{auc, ap, eer, acc, bacc, precision, recall, f1, n, n_fake, n_real}`` as floats; see the
        module docstring for which are ``nan`` when a class is absent.
    """
    y, p = _as_arrays(labels, probs)
    threshold = _check_threshold(threshold)
    r = p if scores is None else _as_scores(scores, y.size)
    pred = p > threshold
    fake = y == 1
    tp = float(np.sum(pred & fake))
    fp = float(np.sum(pred & ~fake))
    fn = float(np.sum(~pred & fake))
    tn = float(np.sum(~pred & ~fake))
    n_fake, n_real = tp + fn, tn + fp
    both = n_fake > 0 and n_real > 0
    recalls = [r for r in (_ratio(tp, n_fake), _ratio(tn, n_real)) if not math.isnan(r)]
    return {
        "auc": float(roc_auc_score(y, r)) if both else math.nan,
        "ap": float(average_precision_score(y, r)) if both else math.nan,
        "eer": _eer(y, r) if both else math.nan,
        "acc": (tp + tn) / y.size,
        "bacc": float(np.mean(recalls)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, n_fake),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "n": float(y.size),
        "n_fake": n_fake,
        "n_real": n_real,
    }


def _confident(p: np.ndarray, fake_threshold: float, real_threshold: float, min_fakes: int
               ) -> float:
    n = p.size
    confident_fake = p[p > fake_threshold]
    if confident_fake.size > n // 2.5 and confident_fake.size > min_fakes:
        return float(confident_fake.mean())
    confident_real = p[p < real_threshold]
    if confident_real.size > 0.9 * n:
        return float(confident_real.mean())
    return float(p.mean())


def aggregate_videos(df: pd.DataFrame, how: Literal["mean", "max", "confident"] = "mean",
                     prob_col: str = "prob", *, fake_threshold: float = 0.8,
                     real_threshold: float = 0.2, min_fakes: int = 11) -> pd.DataFrame:
    """One score per video from its frames' probabilities.

    Args:
        df: one row per frame with columns ``video_id``, ``label`` (constant within a video) and
            ``prob_col``.
        how: ``'mean'`` (the field's default, DeepfakeBench's video AUC), ``'max'``, or
            ``'confident'``, the rule of the DFDC winner (selimsef/dfdc_deepfake_challenge,
            ``confident_strategy``; 32 frames per video there). For a video of ``n`` frames with
            probabilities ``p``: let ``F = {p > fake_threshold}``; if ``|F| > floor(n / 2.5)``
            (more than 40% of the frames) and ``|F| > min_fakes``, the score is ``mean(F)``;
            else let ``R = {p < real_threshold}``; if ``|R| > 0.9 n``, the score is ``mean(R)``;
            else it is ``mean(p)``. Videos with fewer frames than ``min_fakes + 1`` never take
            the first branch: lower ``min_fakes`` for short frame counts.
        prob_col: the probability column to aggregate.
        fake_threshold, real_threshold, min_fakes: the confident rule's constants (0.8, 0.2, 11
            as in the DFDC code).

    Returns:
        DataFrame ``(video_id, label, prob, n_frames)``, one row per video, sorted by video_id.
    """
    missing = [c for c in ("video_id", "label", prob_col) if c not in df.columns]
    if missing:
        raise ValueError(f"aggregate_videos: missing column(s) {', '.join(missing)}; expected "
                         f"video_id, label, {prob_col}")
    if how not in ("mean", "max", "confident"):
        raise ValueError(f"aggregate_videos: how={how!r}; use mean, max or confident")
    cols = ["video_id", "label", "prob", "n_frames"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                             zip(cols, ("object", "int64", "float64", "int64"))})
    _as_arrays(df["label"].to_numpy(), df[prob_col].to_numpy(), prob_col)
    groups = df.groupby("video_id", sort=True)
    n_labels = groups["label"].nunique()
    if (n_labels > 1).any():
        bad = n_labels[n_labels > 1].index[0]
        raise ValueError(f"aggregate_videos: video {bad!r} has frames with different labels; a "
                         "video has one label")
    if how == "mean":
        prob = groups[prob_col].mean()
    elif how == "max":
        prob = groups[prob_col].max()
    else:
        prob = groups[prob_col].apply(lambda s: _confident(
            s.to_numpy(dtype=np.float64), fake_threshold, real_threshold, min_fakes))
    out = pd.DataFrame({
        "video_id": prob.index.to_numpy(),
        "label": groups["label"].first().to_numpy().astype(np.int64),
        "prob": prob.to_numpy(dtype=np.float64),
        "n_frames": groups.size().to_numpy().astype(np.int64),
    })
    return out.reset_index(drop=True)


def attack_success_rate(labels: Any, clean_probs: Any, adv_probs: Any,
                        threshold: float = 0.5) -> float:
    """Share of the samples classified correctly when clean that the attack flips.

    A sample is correct when ``(prob > threshold) == label``. ``nan`` when no sample is correct
    clean (the rate is undefined, not zero).
    """
    threshold = _check_threshold(threshold)
    y, clean = _as_arrays(labels, clean_probs, "clean_probs")
    _, adv = _as_arrays(labels, adv_probs, "adv_probs")
    correct = (clean > threshold) == (y == 1)
    if not correct.any():
        return math.nan
    flipped = (adv > threshold) != (y == 1)
    return float(np.sum(correct & flipped) / np.sum(correct))


def roc_points(labels: Any, probs: Any) -> pd.DataFrame:
    """The ROC curve as ``DataFrame(fpr, tpr, threshold)`` for plots.

    The points of ``sklearn.metrics.roc_curve`` (collinear points dropped; a point's threshold
    counts ``prob >= threshold`` as fake, sklearn's convention). The first point (0, 0), which
    sklearn gives the threshold ``inf``, gets 1.0 so the table holds only finite numbers. With one
    class absent the curve is undefined and the frame is empty.
    """
    y, p = _as_arrays(labels, probs)
    if y.min() == y.max():
        return pd.DataFrame({"fpr": pd.Series(dtype="float64"), "tpr": pd.Series(dtype="float64"),
                             "threshold": pd.Series(dtype="float64")})
    fpr, tpr, thr = roc_curve(y, p)
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return pd.DataFrame({"fpr": fpr.astype(np.float64), "tpr": tpr.astype(np.float64),
                         "threshold": thr.astype(np.float64)})


def best_threshold(labels: Any, probs: Any) -> float:
    """The threshold on P(fake) that maximises balanced accuracy (``prob > threshold`` is fake).

    Candidates are the midpoints between consecutive distinct probabilities (and 0.5); ties go to
    the candidate nearest 0.5, so a separable val set keeps the natural boundary when it can.
    """
    y, p = _as_arrays(labels, probs)
    if y.min() == y.max():
        return 0.5
    u = np.unique(p)
    cands = np.unique(np.r_[0.5, (u[1:] + u[:-1]) / 2, max(u[0] - 1e-12, 0.0)])
    pred = p[None, :] > cands[:, None]
    fake = (y == 1)[None, :]
    tpr = (pred & fake).sum(axis=1) / fake.sum()
    tnr = (~pred & ~fake).sum(axis=1) / (~fake).sum()
    bacc = (tpr + tnr) / 2
    best = np.flatnonzero(bacc >= bacc.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def score_spread(logits: Any, threshold: float = 0.5, hair: float = 0.02) -> dict[str, float]:
    """How far a model's scores spread: the standard deviation of its logits and the share of
    P(fake) within ``hair`` of the threshold. A collapsed model (near-constant output) has a tiny
    logit spread and nearly every score at the threshold: attacks cannot move it far, which looks
    like robustness but is not."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))
    return {"logit_std": float(z.std()) if z.size else math.nan,
            "near_threshold_share": float(np.mean(np.abs(p - threshold) < hair)) if z.size else math.nan}
