"""Calibrated scores: temperature scaling, expected calibration error, Brier score, reliability.

A detector that prints "P(fake) = 0.9" should be right about 90 % of the time it says so. Networks
trained with cross-entropy are usually over-confident; **temperature scaling** (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017) divides every logit by one scalar ``T > 0``
fitted on the validation split by minimising the log loss, ``P(fake) = sigmoid(z / T)``. Dividing by
a positive constant keeps the order of the scores, so AUC, AP, EER and the ranking of videos are
unchanged; only the probabilities move. ``T`` is fitted on val (never test), stored in the
checkpoint's recipe and applied by :func:`fakeproof.predict.proba` wherever a probability is shown.

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
T_RANGE = (0.05, 20.0)  # temperatures searched; a fit at a bound is reported as that bound


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels).reshape(-1).astype(np.float64)
    if y.size != n or n == 0:
        raise ValueError(f"calibration: {n} scores and {y.size} labels; give one label per score")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("calibration: labels must be 0 (real) or 1 (fake)")
    return y


def log_loss(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under ``sigmoid(logit / temperature)``
    (computed from the logits, so a confident mistake costs its full, finite amount)."""
    z = as_logit_array(logits)
    y = _labels(labels, z.size)
    margin = (2.0 * y - 1.0) * z / float(temperature)
    return float(np.logaddexp(0.0, -margin).mean())


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature ``T`` in [0.05, 20] that minimises the log loss of ``sigmoid(z / T)``.

    The loss is convex in ``a = 1 / T`` (a logistic regression through the origin on one
    feature), so its derivative in ``a`` is increasing: bisection on it (in log ``a``) finds
    the minimum to float precision. When the minimum lies beyond a bound (val perfectly
    separated: ``T`` -> 0; scores unrelated to the labels: ``T`` -> infinity), the bound is
    returned. Fit on val only.
    """
    z = as_logit_array(logits)
    y = _labels(labels, z.size)
    sz = (2.0 * y - 1.0) * z  # the signed margin at T = 1

    def slope(a: float) -> float:  # d/da mean(log(1 + exp(-a * sz)))
        m = a * sz
        return float(np.mean(-sz * np.exp(-np.logaddexp(0.0, m))))  # -sz * sigmoid(-m)

    lo, hi = math.log(1.0 / T_RANGE[1]), math.log(1.0 / T_RANGE[0])  # log a
    if slope(math.exp(lo)) >= 0.0:
        return T_RANGE[1]
    if slope(math.exp(hi)) <= 0.0:
        return T_RANGE[0]
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if slope(math.exp(mid)) < 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return float(1.0 / math.exp(0.5 * (lo + hi)))


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


def calibration_report(logits: Any, labels: Any, temperature: float = 1.0,
                       bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE, Brier score and log loss with ``temperature`` and without it (``T = 1``)."""
    z = as_logit_array(logits)
    cal, raw = proba(z, temperature), proba(z)
    return {"temperature": float(temperature), "bins": int(bins), "n": int(z.size),
            "ece": ece(cal, labels, bins), "ece_uncalibrated": ece(raw, labels, bins),
            "brier": brier(cal, labels), "brier_uncalibrated": brier(raw, labels),
            "log_loss": log_loss(z, labels, temperature), "log_loss_uncalibrated": log_loss(z, labels)}


def reliability_points(logits: Any, labels: Any, temperature: float = 1.0,
                       bins: int = ECE_BINS) -> pd.DataFrame:
    """The reliability diagram's points: the non-empty bins of ``sigmoid(logit / temperature)``
    with their mean P(fake), share of fakes and count, and ``ideal`` (= mean P(fake): the
    diagonal a calibrated detector lies on)."""
    t = reliability_table(proba(logits, temperature), labels, bins)
    t = t[t["count"] > 0].reset_index(drop=True)
    t["ideal"] = t["mean_prob"]
    return t[["bin", "lo", "hi", "count", "mean_prob", "frac_fake", "ideal", "gap"]]


def checkpoint_temperature(meta: Any, calibrate: bool = True) -> float:
    """The logit temperature in a checkpoint's recipe (``meta["recipe"]["temperature"]``, fitted
    on val by training); 1.0 when there is none, when it is not a positive finite number, or when
    ``calibrate`` (``eval.calibrate``) is false."""
    recipe = meta.get("recipe") if isinstance(meta, dict) else None
    t = recipe.get("temperature") if isinstance(recipe, dict) else None
    if not calibrate or isinstance(t, bool) or not isinstance(t, (int, float)):
        return 1.0
    return float(t) if math.isfinite(t) and t > 0 else 1.0


__all__ = ["ECE_BINS", "brier", "calibration_report", "checkpoint_temperature", "ece",
           "fit_temperature", "log_loss", "reliability_points", "reliability_table"]
