"""DeLong's test for the difference of two correlated ROC AUCs, by the fast midrank algorithm.

DeLong, DeLong & Clarke-Pearson, "Comparing the Areas under Two or More Correlated Receiver
Operating Characteristic Curves: A Nonparametric Approach", Biometrics 44(3), 1988: with ``m``
positives ``X_i`` and ``n`` negatives ``Y_j`` scored by model ``r``, and
``psi(x, y) = 1 if x > y, 1/2 if x == y, 0 otherwise``, the AUC is the Mann-Whitney statistic
``theta_r = (1 / mn) sum_ij psi(X_i, Y_j)``; its structural components are
``V10_r(X_i) = (1/n) sum_j psi(X_i, Y_j)`` and ``V01_r(Y_j) = (1/m) sum_i psi(X_i, Y_j)``; with
``S10`` and ``S01`` their sample covariance matrices over models (denominators ``m - 1`` and
``n - 1``), ``cov(theta) = S10 / m + S01 / n``. The difference of two AUCs is tested with
``z = (theta_b - theta_a) / sqrt(var_a + var_b - 2 cov_ab)`` against a standard normal.

Sun & Xu, "Fast Implementation of DeLong's Algorithm for Comparing the Areas Under Correlated
Receiver Operating Characteristic Curves", IEEE Signal Processing Letters 21(11), 2014: the
components come from midranks in ``O((m + n) log(m + n))`` instead of ``O(mn)``:
``V10(X_i) = (T_Z(X_i) - T_X(X_i)) / n`` and ``V01(Y_j) = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m``, where
``T_X``, ``T_Y`` and ``T_Z`` are the midranks within the positives, the negatives and all scores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` with ties given the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]  # exclusive
    ranks_sorted = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    out = np.empty(s.size, dtype=np.float64)
    out[order] = ranks_sorted
    return out


def delong_covariance(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` score vectors on the same samples.

    Args:
        labels: (n,) 1 = positive (fake), 0 = negative; both classes present.
        scores: (k, n) or (n,) scores, higher = more positive.

    Returns:
        ``(aucs (k,), cov (k, k))``.
    """
    y = np.asarray(labels).reshape(-1).astype(bool)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.size:
        raise ValueError(f"delong: {s.shape[1]} scores for {y.size} labels")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong: needs at least two positives and two negatives ({m}, {n})")
    k = s.shape[0]
    v10 = np.empty((k, m))
    v01 = np.empty((k, n))
    aucs = np.empty(k)
    for r in range(k):
        x, yy = s[r, y], s[r, ~y]
        tz = midrank(np.r_[x, yy])
        tx, ty = midrank(x), midrank(yy)
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(labels: Any, scores_a: Any, scores_b: Any) -> dict[str, float]:
    """DeLong's two-sided test of ``AUC(b) - AUC(a) = 0`` for two models scored on the same samples.

    Returns ``{auc_a, auc_b, diff, var, z, p}``; ``diff`` is ``auc_b - auc_a``. When the variance
    of the difference is zero (e.g. a model against itself) the difference is zero as well and
    ``z = 0``, ``p = 1``.
    """
    aucs, cov = delong_covariance(labels, np.vstack([np.asarray(scores_a, dtype=np.float64),
                                                     np.asarray(scores_b, dtype=np.float64)]))
    diff = float(aucs[1] - aucs[0])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
    else:
        z = diff / math.sqrt(var)
    p = math.erfc(abs(z) / math.sqrt(2.0))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": diff, "var": max(var, 0.0),
            "z": z, "p": p}
