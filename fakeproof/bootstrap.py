"""Confidence intervals that respect how the data was sampled: whole videos are resampled.

Frames of one video are not independent samples (same face, same manipulation, same encoder), so
resampling frames would give intervals that are far too narrow. :func:`video_bootstrap` draws
videos with replacement (every frame of a drawn video comes along, as many times as the video was
drawn), recomputes AUC and balanced accuracy on each draw, and reports the 2.5th and 97.5th
percentiles (the percentile bootstrap; Efron & Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13). Draws that lose a class leave AUC undefined and are skipped. Everything is
vectorised over draws (weights instead of copies), seeded, and computed in chunks so memory stays
bounded on large test sets.

:func:`paired_video_bootstrap` resamples the same videos for two score vectors at once, for the
interval of a difference (A/B comparison).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

N_BOOT = 1000
CHUNK = 200


def _draw_weights(groups: np.ndarray, n_boot: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, int]:
    """Per-row multiplicities (n_boot, n) of a resample of whole groups with replacement."""
    _, inverse = np.unique(groups, return_inverse=True)
    g = int(inverse.max()) + 1 if inverse.size else 0
    draws = rng.integers(0, g, size=(n_boot, g))
    counts = np.zeros((n_boot, g), dtype=np.float64)
    np.add.at(counts, (np.repeat(np.arange(n_boot), g), draws.reshape(-1)), 1.0)
    return counts[:, inverse], g


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties count one half) for each row of ``weights`` (B, n); nan where a
    class has zero weight."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(s, kind="mergesort")
    s, y, w = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    p_tot, n_tot = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (p_tot * n_tot)
    auc[(p_tot == 0) | (n_tot == 0)] = np.nan
    return auc


def weighted_bacc(labels: np.ndarray, predicted_fake: np.ndarray, weights: np.ndarray
                  ) -> np.ndarray:
    """Balanced accuracy (mean of the class recalls) per row of ``weights``; nan where a class
    has zero weight (the interval then skips that draw, as AUC does)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    pred = np.asarray(predicted_fake).reshape(-1).astype(bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    p_tot, n_tot = (w * y).sum(axis=1), (w * ~y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (w * (y & pred)).sum(axis=1) / p_tot
        tnr = (w * (~y & ~pred)).sum(axis=1) / n_tot
    out = (tpr + tnr) / 2
    out[(p_tot == 0) | (n_tot == 0)] = np.nan
    return out


def _percentiles(values: np.ndarray, conf: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [100 * (1 - conf) / 2, 100 * (1 + conf) / 2])
    return float(lo), float(hi)


def video_bootstrap(labels: Any, scores: Any, predicted_fake: Any, videos: Any, *,
                    n_boot: int = N_BOOT, seed: int = 0, conf: float = 0.95
                    ) -> dict[str, float]:
    """95 % percentile intervals of AUC (ranked on ``scores``) and balanced accuracy (of
    ``predicted_fake``), resampling whole ``videos``.

    For video-level metrics pass one row per video (each its own group). Returns
    ``{auc_lo, auc_hi, bacc_lo, bacc_hi, n_groups, n_boot}``.
    """
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    pred = np.asarray(predicted_fake).reshape(-1)
    g = np.asarray(videos).reshape(-1)
    if not (y.size == s.size == pred.size == g.size) or y.size == 0:
        raise ValueError("video_bootstrap: labels, scores, predictions and videos must be "
                         "non-empty and of one length")
    rng = np.random.default_rng(seed)
    aucs, baccs = [], []
    n_groups = 0
    for start in range(0, n_boot, CHUNK):
        w, n_groups = _draw_weights(g, min(CHUNK, n_boot - start), rng)
        aucs.append(weighted_auc(y, s, w))
        baccs.append(weighted_bacc(y, pred, w))
    auc_lo, auc_hi = _percentiles(np.concatenate(aucs), conf)
    bacc_lo, bacc_hi = _percentiles(np.concatenate(baccs), conf)
    return {"auc_lo": auc_lo, "auc_hi": auc_hi, "bacc_lo": bacc_lo, "bacc_hi": bacc_hi,
            "n_groups": n_groups, "n_boot": n_boot}


def paired_video_bootstrap(labels: Any, scores_a: Any, scores_b: Any, videos: Any, *,
                           n_boot: int = N_BOOT, seed: int = 0, conf: float = 0.95,
                           ) -> dict[str, Optional[float]]:
    """Interval of AUC(b) - AUC(a) with both models scored on the same resampled videos."""
    y = np.asarray(labels).reshape(-1)
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    g = np.asarray(videos).reshape(-1)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, CHUNK):
        w, _ = _draw_weights(g, min(CHUNK, n_boot - start), rng)
        diffs.append(weighted_auc(y, b, w) - weighted_auc(y, a, w))
    lo, hi = _percentiles(np.concatenate(diffs), conf)
    return {"diff_lo": lo, "diff_hi": hi, "n_boot": n_boot}
