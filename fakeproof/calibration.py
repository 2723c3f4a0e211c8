"""Calibrated scores: Platt scaling, expected calibration error, Brier score, reliability.

A detector that prints "P(fake) = 0.9" should be right about 90 % of the time it says so. Networks
trained with a class-balanced cross-entropy are mis-calibrated twice over: over-confident (a
scale) and shifted by the log of the class prior the weighting removed (an offset). **Platt
scaling** (Platt, "Probabilistic Outputs for Support Vector Machines", 1999) fits both,
``P(fake) = sigmoid(a z + b)``, on the validation split by minimising the log loss; a temperature
alone (Guo et al., ICML 2017) is the special case ``b = 0`` and cannot remove the offset. With
``a > 0`` the order of the scores is kept, so AUC, AP, EER and the ranking of videos are
unchanged. ``(a, b)`` is fitted on val (never test), stored in the checkpoint's recipe
(:mod:`fakeproof.recipe`) and applied wherever a probability is shown
(:class:`fakeproof.boundary.Boundary`).

Calibration is measured on ``P(fake)`` itself, the number the detector prints: faces are binned
by ``P(fake)`` into ``bins`` equal-width bins over [0, 1] (bin ``b`` holds ``b/B <= p < (b+1)/B``,
the last bin also ``p = 1``), and

- ECE = sum over bins of (faces in bin / faces) * |mean P(fake) in bin - share of fakes in bin|
  (Naeini et al., AAAI 2015; Guo et al. bin the top-label confidence instead, which for two
  classes folds P(fake) and 1 - P(fake) together; binning P(fake) keeps the reliability
  diagram readable as "of the faces scored p, a share p should be fake");
- Brier score = mean of (P(fake) - label)^2 (Brier, Monthly Weather Review 1950);
- the reliability table: per bin its range, count, mean P(fake), share of fakes and their gap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fakeproof.predict import as_logit_array, proba

ECE_BINS = 15


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1).astype(np.float64)
    if y.size != n or n == 0:
        raise ValueError(f"calibration: {n} scores and {y.size} labels; give one label per score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("calibration: labels must be 0 (real) or 1 (fake)")
    return y


def log_loss(logits: Any, labels: Any, a: float = 1.0, b: float = 0.0) -> float:
    """Mean negative log-likelihood of the labels under ``sigmoid(a logit + b)`` (computed from
    the logits, so a confident mistake costs its full, finite amount)."""
    z = as_logit_array(logits)
    y = _labels(labels, z.size)
    margin = (2.0 * y - 1.0) * (float(a) * z + float(b))
    return float(np.logaddexp(0.0, -margin).mean())


def fit_platt(logits: Any, labels: Any, max_iter: int = 100) -> tuple[float, float, bool]:
    """Platt scaling: ``(a, b, ok)`` with ``P(fake) = sigmoid(a z + b)`` fitted on val.

    Platt, "Probabilistic Outputs for Support Vector Machines", 1999: a one-feature logistic
    regression on the logit, with his smoothed targets ``(N+ + 1) / (N+ + 2)`` for fakes and
    ``1 / (N- + 2)`` for reals, so a perfectly separated val set still gives a finite slope.
    Unlike a temperature alone (``b = 0``), the intercept removes the log-prior offset that a
    class-balanced loss bakes into the logits. Solved by Newton's method in float64 (the loss is
    convex; steps are halved until it decreases). ``ok`` is False when the fit is degenerate
    (one class, constant logits, or a slope ``a <= 0``: scores unrelated or reversed); the caller
    then says so and keeps ``(1, 0)``.
    """
    z = as_logit_array(logits)
    y = _labels(labels, z.size)
    n_pos, n_neg = float(y.sum()), float(y.size - y.sum())
    if n_pos == 0 or n_neg == 0 or not np.isfinite(z).all() or float(z.std()) == 0.0:
        return 1.0, 0.0, False
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    X = np.stack([z, np.ones_like(z)], axis=1)

    def loss(w: np.ndarray) -> float:
        m = X @ w
        return float(np.mean(np.logaddexp(0.0, m) - t * m))

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -500, 500)))
        grad = X.T @ (p - t) / z.size
        hess = (X * (p * (1 - p))[:, None]).T @ X / z.size + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-10:
            cand = w - scale * step
            new = loss(cand)
            if new <= current:
                break
            scale /= 2
        if scale <= 1e-10 or current - new < 1e-15:
            w = cand if new <= current else w
            break
        w, current = cand, new
    a, b = float(w[0]), float(w[1])
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0.0:
        return 1.0, 0.0, False
    return a, b, True


def _bins(probs: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((probs * bins).astype(np.int64), bins - 1)


def reliability_table(probs: Any, labels: Any, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per equal-width bin of P(fake): ``bin, lo, hi, count, mean_prob, frac_fake, gap``
    (``mean_prob`` and ``frac_fake`` are NaN in an empty bin; ``gap = frac_fake - mean_prob``)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = _labels(labels, p.size)
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("calibration: probabilities must lie in [0, 1]")
    b = _bins(p, bins)
    count = np.bincount(b, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(b, weights=p, minlength=bins) / count
        frac_fake = np.bincount(b, weights=y, minlength=bins) / count
    edges = np.arange(bins + 1) / bins
    return pd.DataFrame({"bin": np.arange(bins), "lo": edges[:-1], "hi": edges[1:],
                         "count": count.astype(np.int64), "mean_prob": mean_prob,
                         "frac_fake": frac_fake, "gap": frac_fake - mean_prob})


def ece(probs: Any, labels: Any, bins: int = ECE_BINS) -> float:
    """Expected calibration error of P(fake) over ``bins`` equal-width bins (module docstring)."""
    t = reliability_table(probs, labels, bins)
    used = t["count"] > 0
    return float((t.loc[used, "count"] * t.loc[used, "gap"].abs()).sum() / t["count"].sum())


def brier(probs: Any, labels: Any) -> float:
    """Brier score: mean squared difference between P(fake) and the label (0 is perfect)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = _labels(labels, p.size)
    return float(np.mean((p - y) ** 2))


def calibration_report(logits: Any, labels: Any, a: float = 1.0, b: float = 0.0,
                       bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE, Brier score and log loss of ``sigmoid(a z + b)`` (Platt) and of ``sigmoid(z)``
    (uncalibrated)."""
    z = as_logit_array(logits)
    cal, raw = proba(float(a) * z + float(b)), proba(z)
    return {"platt_a": float(a), "platt_b": float(b), "bins": int(bins), "n": int(z.size),
            "ece": ece(cal, labels, bins), "ece_uncalibrated": ece(raw, labels, bins),
            "brier": brier(cal, labels), "brier_uncalibrated": brier(raw, labels),
            "log_loss": log_loss(z, labels, a, b), "log_loss_uncalibrated": log_loss(z, labels)}


def reliability_points(logits: Any, labels: Any, a: float = 1.0, b: float = 0.0,
                       bins: int = ECE_BINS) -> pd.DataFrame:
    """The reliability diagram's points: the non-empty bins of ``sigmoid(a z + b)`` with their
    mean P(fake), share of fakes and count, and ``ideal`` (= mean P(fake): the diagonal a
    calibrated detector lies on)."""
    t = reliability_table(proba(float(a) * as_logit_array(logits) + float(b)), labels, bins)
    t = t[t["count"] > 0].reset_index(drop=True)
    t["ideal"] = t["mean_prob"]
    return t[["bin", "lo", "hi", "count", "mean_prob", "frac_fake", "ideal", "gap"]]


__all__ = ["ECE_BINS", "brier", "calibration_report", "ece", "fit_platt", "log_loss",
           "reliability_points", "reliability_table"]
