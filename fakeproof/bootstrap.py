"""Confidence intervals that respect how the data was sampled: whole videos are resampled.

Frames of one video are not independent samples (same face, same manipulation, same encoder), so
resampling frames would give intervals that are far too narrow. Every interval here comes from a
**stratified video bootstrap** (:func:`resample`): whole videos are drawn with
replacement *within each stratum* (by default each class; the caller may pass label + method),
so every draw keeps every stratum's number of videos and never loses a class. Everything is
vectorised over draws (weights instead of copies), seeded and computed in chunks of ``CHUNK``
draws so memory stays bounded on large test sets.

Intervals are **BCa** (bias-corrected and accelerated; Efron, "Better bootstrap confidence
intervals", JASA 82, 1987; DiCiccio & Efron, "Bootstrap confidence intervals", Statistical
Science 11, 1996), which is second-order accurate where the plain percentile interval is not
and matters with few videos (e.g. 9). Its acceleration comes from a leave-one-video-out
jackknife; its bias correction from the share of draws below the point estimate.

No interval reads as a certainty it does not have:

- below ``min_videos`` videos of either class the interval is *not estimable* (bounds None,
  with a ``reason``);
- when every draw gives the same value (every video wrong, AUC 1 in every draw, ...) the
  bootstrap has nothing to say about the spread, and an exact **Clopper-Pearson** interval
  (Clopper & Pearson, Biometrika 26, 1934) at the video count is reported instead;
- a paired difference is zero-width only when both models decide identically on every row.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import beta

N_BOOT = 1000
CHUNK = 200
BCA = "bca"
EXACT = "clopper-pearson (degenerate bootstrap)"
IDENTICAL = "degenerate: identical on every video"
NOT_ESTIMABLE = "not estimable"

Statistic = Callable[[np.ndarray], np.ndarray]  # weights (B, n) -> values (B,) or (B, k)


# --------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------
def _flat(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x).reshape(-1)
    if a.size == 0:
        raise ValueError(f"bootstrap: {name} is empty")
    return a


def _group_strata(inverse: np.ndarray, n_groups: int, strata: Any) -> np.ndarray:
    """Stratum id of each group; a group whose rows span several strata values gets the
    combination of them as its stratum (e.g. a video holding a real and a fake face)."""
    if strata is None:
        return np.zeros(n_groups, dtype=np.int64)
    st = np.asarray(strata).reshape(-1)
    if st.size != inverse.size:
        raise ValueError(f"bootstrap: {st.size} strata for {inverse.size} rows; give one per row")
    _, codes = np.unique(st, return_inverse=True)
    pairs = np.unique(np.stack([inverse, codes.reshape(-1)]), axis=1)  # sorted by group
    if pairs.shape[1] == n_groups:
        return pairs[1]
    combos: list[list[int]] = [[] for _ in range(n_groups)]
    for gi, c in pairs.T:
        combos[gi].append(int(c))
    keys = sorted({tuple(c) for c in combos})
    index = {k: i for i, k in enumerate(keys)}
    return np.array([index[tuple(c)] for c in combos], dtype=np.int64)


def _group_weights(gs: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n_groups) multiplicities: each stratum redraws its own groups, as many as it has."""
    g = gs.size
    counts = np.zeros(n_boot * g)
    offsets = (np.arange(n_boot) * g)[:, None]
    for s in np.unique(gs):
        members = np.flatnonzero(gs == s)
        picks = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        counts += np.bincount((offsets + picks).reshape(-1), minlength=n_boot * g)
    return counts.reshape(n_boot, g)


def _as_columns(values: Any) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v.reshape(v.shape[0], -1)


def resample(stat: Statistic, groups: Any, strata: Any, n_boot: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(point (k,), draws (n_boot, k), jackknife (n_groups, k))`` of a weighted statistic.

    ``stat`` maps row weights ``(B, n)`` to ``(B,)`` or ``(B, k)`` values; draws come from
    resamples of whole groups (videos) drawn with replacement within each stratum
    (``strata``: one value per row, constant within a group; None: one stratum; every draw keeps
    each stratum's number of groups, so no draw loses a class when the label is part of the
    stratum: the stratified bootstrap, Davison & Hinkley 1997, sec. 3.7), seeded with
    ``np.random.default_rng(seed)``, the jackknife leaves
    out one group at a time (both in chunks of ``CHUNK``).
    """
    g = _flat(groups, "groups")
    if int(n_boot) < 1:
        raise ValueError(f"bootstrap: n_boot must be at least 1, got {n_boot}")
    _, inverse = np.unique(g, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_groups = int(inverse.max()) + 1
    gs = _group_strata(inverse, n_groups, strata)
    rng = np.random.default_rng(seed)
    point = _as_columns(stat(np.ones((1, g.size))))[0]
    draws = [_as_columns(stat(_group_weights(gs, min(CHUNK, n_boot - s), rng)[:, inverse]))
             for s in range(0, n_boot, CHUNK)]
    jack = [_as_columns(stat((inverse[None, :] != np.arange(s, min(n_groups, s + CHUNK))[:, None])
                             .astype(np.float64)))
            for s in range(0, n_groups, CHUNK)]
    return point, np.concatenate(draws), np.concatenate(jack)


# --------------------------------------------------------------------------------------------
# weighted statistics
# --------------------------------------------------------------------------------------------
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


def _weighted_recalls(labels: np.ndarray, predicted_fake: np.ndarray, weights: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(recall of reals, recall of fakes) per row of ``weights``; nan where a class weighs 0."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    pred = np.asarray(predicted_fake).reshape(-1).astype(bool)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        tnr = (w * (~y & ~pred)).sum(axis=1) / (w * ~y).sum(axis=1)
        tpr = (w * (y & pred)).sum(axis=1) / (w * y).sum(axis=1)
    return tnr, tpr


def weighted_bacc(labels: np.ndarray, predicted_fake: np.ndarray, weights: np.ndarray
                  ) -> np.ndarray:
    """Balanced accuracy (mean of the class recalls) per row of ``weights``; nan where a class
    has zero weight."""
    tnr, tpr = _weighted_recalls(labels, predicted_fake, weights)
    return (tnr + tpr) / 2


def _ece_bins(probs: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bin of each P(fake), as :func:`fakeproof.calibration.ece` bins them."""
    return np.minimum((probs * bins).astype(np.int64), bins - 1)


def weighted_ece(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, bins: int
                 ) -> np.ndarray:
    """ECE of P(fake) over ``bins`` equal-width bins per row of ``weights`` (Naeini et al., AAAI
    2015; :func:`fakeproof.calibration.ece`): sum over bins of |fakes - sum of P(fake)| / total,
    which equals sum of (count / total) * |share of fakes - mean P(fake)|."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    onehot = np.zeros((p.size, bins))
    onehot[np.arange(p.size), _ece_bins(p, bins)] = 1.0
    gap = w @ (onehot * (y - p)[:, None])
    return np.abs(gap).sum(axis=1) / w.sum(axis=1)


# --------------------------------------------------------------------------------------------
# intervals
# --------------------------------------------------------------------------------------------
def _acceleration(jackknife: np.ndarray) -> float:
    """BCa acceleration from jackknife values (Efron 1987, eq. 6.6; DiCiccio & Efron 1996, 3.11)."""
    j = jackknife[np.isfinite(jackknife)]
    d = j.mean() - j if j.size else j
    ss = float((d ** 2).sum())
    return float((d ** 3).sum() / (6.0 * ss ** 1.5)) if ss > 0 else 0.0


def bca_interval(point: float, draws: Any, jackknife: Any, conf: float = 0.95
                 ) -> tuple[float, float]:
    """BCa bootstrap interval (Efron, "Better bootstrap confidence intervals", JASA 82, 1987;
    DiCiccio & Efron, "Bootstrap confidence intervals", Statistical Science 11, 1996).

    ``z0 = Phi^-1(share of finite draws below point, ties counted half)``, the acceleration
    ``a`` from the leave-one-group-out ``jackknife`` values, and the bounds are the draws'
    quantiles at ``Phi(z0 + (z0 + z) / (1 - a (z0 + z)))`` for ``z = Phi^-1((1 -+ conf) / 2)``.
    With ``z0 = a = 0`` it is the percentile interval. ``(nan, nan)`` without finite draws.
    """
    if not 0.0 < conf < 1.0:
        raise ValueError(f"bootstrap: conf must lie in (0, 1), got {conf}")
    d = np.asarray(draws, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0 or not np.isfinite(point):
        return float("nan"), float("nan")
    share = (np.sum(d < point) + 0.5 * np.sum(d == point)) / d.size
    z0 = float(ndtri(np.clip(share, 0.5 / d.size, 1.0 - 0.5 / d.size)))
    a = _acceleration(np.asarray(jackknife, dtype=np.float64).reshape(-1))
    zz = z0 + ndtri(np.array([(1.0 - conf) / 2, (1.0 + conf) / 2]))
    den = 1.0 - a * zz
    with np.errstate(divide="ignore", invalid="ignore"):
        adj = np.where(den > 0, z0 + zz / den, np.sign(zz) * np.inf)
    lo, hi = np.quantile(d, ndtr(adj))
    return float(lo), float(hi)


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of ``k`` successes in ``n`` (Clopper & Pearson, Biometrika 1934)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"bootstrap: Clopper-Pearson needs 0 <= k <= n and n >= 1, got {k}/{n}")
    alpha = 1.0 - conf
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _around(point: float, lo: float, hi: float) -> tuple[float, float]:
    return min(lo, point), max(hi, point)


def _exact_rate(rate: float, n: int, conf: float) -> tuple[float, float]:
    return _around(rate, *clopper_pearson(int(round(rate * n)), n, conf))


def exact_auc(auc: float, n_real: int, n_fake: int, conf: float = 0.95) -> tuple[float, float]:
    """Conservative AUC interval: Clopper-Pearson at ``n = min(n_real, n_fake)`` videos."""
    return _exact_rate(auc, min(n_real, n_fake), conf)


def exact_bacc(recall_real: float, recall_fake: float, n_real: int, n_fake: int,
               conf: float = 0.95) -> tuple[float, float]:
    """Conservative balanced-accuracy interval: the mean of each class recall's Clopper-Pearson
    bounds at its video count, each at level ``1 - (1 - conf) / 2`` (Bonferroni, two classes)."""
    c = 1.0 - (1.0 - conf) / 2
    (lr, hr), (lf, hf) = _exact_rate(recall_real, n_real, c), _exact_rate(recall_fake, n_fake, c)
    return _around((recall_real + recall_fake) / 2, (lr + lf) / 2, (hr + hf) / 2)


def is_degenerate(draws: Any) -> bool:
    """True when every finite draw has the same value (the bootstrap shows no spread)."""
    d = np.asarray(draws, dtype=np.float64).reshape(-1)
    d = d[np.isfinite(d)]
    return d.size > 0 and float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.abs(d).max()))


def interval(point: float, draws: np.ndarray, jackknife: np.ndarray, conf: float,
             exact: Callable[[], tuple[float, float]]) -> tuple[float, float, str]:
    """``(lo, hi, method)``: BCa, or ``exact()`` when the draws are degenerate."""
    if is_degenerate(draws):
        return (*exact(), EXACT)
    return (*bca_interval(point, draws, jackknife, conf), BCA)


# --------------------------------------------------------------------------------------------
# public intervals
# --------------------------------------------------------------------------------------------
def class_video_counts(labels: Any, videos: Any) -> tuple[int, int]:
    """(videos holding a real row, videos holding a fake row)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    g = np.asarray(videos).reshape(-1)
    return int(np.unique(g[~y]).size), int(np.unique(g[y]).size)


def _inputs(labels: Any, videos: Any, *others: tuple[Any, str]) -> tuple[np.ndarray, ...]:
    y = _flat(labels, "labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("bootstrap: labels must be 0 (real) or 1 (fake)")
    arrays = [y.astype(bool), _flat(videos, "videos")]
    arrays += [_flat(x, name) for x, name in others]
    if len({a.size for a in arrays}) != 1:
        raise ValueError("bootstrap: labels, videos and values must have one length "
                         f"(got {', '.join(str(a.size) for a in arrays)})")
    return tuple(arrays)


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    s = x.astype(np.float64)
    if np.isnan(s).any():
        raise ValueError(f"bootstrap: {name} contain NaN; drop those rows first")
    return s


def _estimable(y: np.ndarray, g: np.ndarray, min_videos: int, conf: float
               ) -> tuple[int, int, Optional[str]]:
    """(n_real videos, n_fake videos, reason it is not estimable or None)."""
    if not 0.0 < conf < 1.0:
        raise ValueError(f"bootstrap: conf must lie in (0, 1), got {conf}")
    if int(min_videos) < 1:
        raise ValueError(f"bootstrap: min_videos must be at least 1, got {min_videos}")
    n_real, n_fake = class_video_counts(y, g)
    if min(n_real, n_fake) < int(min_videos):
        return n_real, n_fake, f"{n_real} real / {n_fake} fake videos < {min_videos} per class"
    return n_real, n_fake, None


def _summary(methods: list[str]) -> str:
    return methods[0] if len(set(methods)) == 1 else "mixed: " + ", ".join(methods)


def _num(x: float) -> Optional[float]:
    return float(x) if np.isfinite(x) else None


def video_bootstrap(labels: Any, scores: Any, predicted_fake: Any, videos: Any, *,
                    strata: Any = None, n_boot: int = N_BOOT, seed: int = 0, conf: float = 0.95,
                    min_videos: int = 2) -> dict[str, Any]:
    """BCa intervals of AUC (ranked on ``scores``, ties 1/2) and balanced accuracy (of
    ``predicted_fake``), resampling whole ``videos`` within ``strata`` (default: the label).

    For video-level metrics pass one row per video. Returns ``auc_lo, auc_hi, bacc_lo, bacc_hi``
    (None when not estimable), ``n_groups, n_boot, estimable, reason, method, auc_method,
    bacc_method``. A degenerate bootstrap falls back to Clopper-Pearson at the video count
    (:func:`exact_auc`, :func:`exact_bacc`).
    """
    y, g, s, pred = _inputs(labels, videos, (scores, "scores"), (predicted_fake, "predictions"))
    s, pred = _scores(s, "scores"), pred.astype(bool)
    n_real, n_fake, reason = _estimable(y, g, min_videos, conf)
    out: dict[str, Any] = {"n_groups": int(np.unique(g).size), "n_boot": int(n_boot),
                           "estimable": reason is None, "reason": reason}
    if reason is not None:
        return {**out, "auc_lo": None, "auc_hi": None, "bacc_lo": None, "bacc_hi": None,
                "method": NOT_ESTIMABLE, "auc_method": NOT_ESTIMABLE,
                "bacc_method": NOT_ESTIMABLE}

    def stat(w: np.ndarray) -> np.ndarray:
        return np.stack([weighted_auc(y, s, w), weighted_bacc(y, pred, w)], axis=1)

    point, draws, jack = resample(stat, g, y if strata is None else strata, n_boot, seed)
    tnr, tpr = (float(r[0]) for r in _weighted_recalls(y, pred, np.ones((1, y.size))))
    auc = interval(point[0], draws[:, 0], jack[:, 0], conf,
                   lambda: exact_auc(point[0], n_real, n_fake, conf))
    bacc = interval(point[1], draws[:, 1], jack[:, 1], conf,
                    lambda: exact_bacc(tnr, tpr, n_real, n_fake, conf))
    return {**out, "auc_lo": _num(auc[0]), "auc_hi": _num(auc[1]), "bacc_lo": _num(bacc[0]),
            "bacc_hi": _num(bacc[1]), "method": _summary([auc[2], bacc[2]]),
            "auc_method": auc[2], "bacc_method": bacc[2]}


def _same_ranking(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` order (and tie) every pair of rows alike."""
    return bool(np.array_equal(np.unique(a, return_inverse=True)[1].reshape(-1),
                               np.unique(b, return_inverse=True)[1].reshape(-1)))


def _paired(point: float, draws: np.ndarray, jack: np.ndarray, conf: float, identical: bool,
            exact_a: Callable[[float], tuple[float, float]],
            exact_b: Callable[[float], tuple[float, float]]) -> tuple[float, float, str]:
    """Interval of a paired difference b - a: BCa; at the point when the two decide alike on
    every row; else, for degenerate draws, the Bonferroni difference of the two exact intervals."""
    if is_degenerate(draws) and identical:
        return point, point, IDENTICAL
    c = 1.0 - (1.0 - conf) / 2

    def exact() -> tuple[float, float]:
        (la, ha), (lb, hb) = exact_a(c), exact_b(c)
        return _around(point, max(-1.0, lb - ha), min(1.0, hb - la))

    return interval(point, draws, jack, conf, exact)


def paired_video_bootstrap(labels: Any, scores_a: Any, scores_b: Any, videos: Any, *,
                           strata: Any = None, pred_a: Any = None, pred_b: Any = None,
                           n_boot: int = N_BOOT, seed: int = 0, conf: float = 0.95,
                           min_videos: int = 2) -> dict[str, Any]:
    """BCa interval of AUC(b) - AUC(a) (and, with ``pred_a`` / ``pred_b``, of bacc(b) - bacc(a))
    with both models scored on the same resampled videos (stratified as in
    :func:`video_bootstrap`).

    Returns ``auc_diff, diff_lo, diff_hi`` (+ ``bacc_diff, bacc_diff_lo, bacc_diff_hi``),
    ``n_groups, n_boot, estimable, reason, method, auc_method`` (+ ``bacc_method``). Degenerate
    draws give a zero-width interval at the point only when the two decide identically on every
    row (method "degenerate: identical on every video"); otherwise the difference of the two
    Clopper-Pearson intervals, each at level ``1 - (1 - conf) / 2``.
    """
    y, g, a, b = _inputs(labels, videos, (scores_a, "scores_a"), (scores_b, "scores_b"))
    a, b = _scores(a, "scores_a"), _scores(b, "scores_b")
    with_bacc = pred_a is not None or pred_b is not None
    if with_bacc and (pred_a is None or pred_b is None):
        raise ValueError("paired_video_bootstrap: give both pred_a and pred_b, or neither")
    pa, pb = ((_inputs(labels, videos, (pred_a, "pred_a"), (pred_b, "pred_b"))[2:])
              if with_bacc else (np.zeros(y.size), np.zeros(y.size)))
    pa, pb = pa.astype(bool), pb.astype(bool)
    n_real, n_fake, reason = _estimable(y, g, min_videos, conf)
    ones = np.ones((1, y.size))
    auc_diff = float(weighted_auc(y, b, ones)[0] - weighted_auc(y, a, ones)[0])
    out: dict[str, Any] = {"auc_diff": _num(auc_diff), "n_groups": int(np.unique(g).size),
                           "n_boot": int(n_boot), "estimable": reason is None, "reason": reason}
    if with_bacc:
        out["bacc_diff"] = _num(float(weighted_bacc(y, pb, ones)[0] - weighted_bacc(y, pa, ones)[0]))
    if reason is not None:
        out.update(diff_lo=None, diff_hi=None, method=NOT_ESTIMABLE, auc_method=NOT_ESTIMABLE)
        if with_bacc:
            out.update(bacc_diff_lo=None, bacc_diff_hi=None, bacc_method=NOT_ESTIMABLE)
        return out

    def stat(w: np.ndarray) -> np.ndarray:
        cols = [weighted_auc(y, b, w) - weighted_auc(y, a, w)]
        if with_bacc:
            cols.append(weighted_bacc(y, pb, w) - weighted_bacc(y, pa, w))
        return np.stack(cols, axis=1)

    point, draws, jack = resample(stat, g, y if strata is None else strata, n_boot, seed)
    auc_at = [float(weighted_auc(y, x, ones)[0]) for x in (a, b)]
    auc = _paired(point[0], draws[:, 0], jack[:, 0], conf, _same_ranking(a, b),
                  lambda c: exact_auc(auc_at[0], n_real, n_fake, c),
                  lambda c: exact_auc(auc_at[1], n_real, n_fake, c))
    out.update(diff_lo=_num(auc[0]), diff_hi=_num(auc[1]), auc_method=auc[2])
    methods = [auc[2]]
    if with_bacc:
        rec = [[float(r[0]) for r in _weighted_recalls(y, p, ones)] for p in (pa, pb)]
        bacc = _paired(point[1], draws[:, 1], jack[:, 1], conf, bool(np.array_equal(pa, pb)),
                       lambda c: exact_bacc(*rec[0], n_real, n_fake, c),
                       lambda c: exact_bacc(*rec[1], n_real, n_fake, c))
        out.update(bacc_diff_lo=_num(bacc[0]), bacc_diff_hi=_num(bacc[1]), bacc_method=bacc[2])
        methods.append(bacc[2])
    out["method"] = _summary(methods)
    return out


def _exact_ece(p: np.ndarray, y: np.ndarray, g: np.ndarray, bins: int, conf: float,
               point: float) -> tuple[float, float]:
    """Conservative ECE interval for a degenerate bootstrap: per used bin, the Clopper-Pearson
    interval of its share of fakes at its video count (Bonferroni over the used bins); ECE's
    bounds are the count-weighted nearest and farthest distances of mean P(fake) to it."""
    b = _ece_bins(p, bins)
    used = np.unique(b)
    c = 1.0 - (1.0 - conf) / used.size
    lo = hi = 0.0
    for k in used:
        rows = b == k
        lo_k, hi_k = _exact_rate(float(y[rows].mean()), int(np.unique(g[rows]).size), c)
        m, share = float(p[rows].mean()), rows.sum() / p.size
        hi += share * max(abs(hi_k - m), abs(m - lo_k))
        lo += share * max(0.0, lo_k - m, m - hi_k)
    return _around(point, lo, min(hi, 1.0))


def ece_interval(probs: Any, labels: Any, videos: Any, *, strata: Any = None, bins: int = 15,
                 n_boot: int = N_BOOT, seed: int = 0, conf: float = 0.95,
                 min_videos: int = 2) -> dict[str, Any]:
    """ECE of P(fake) over ``bins`` equal-width bins (as :func:`fakeproof.calibration.ece`) with
    its BCa interval, resampling whole ``videos`` within ``strata`` (default: the label).

    Returns ``ece, ece_lo, ece_hi`` (bounds None when not estimable), ``n_groups, n_boot,
    estimable, reason, method``; a degenerate bootstrap falls back to :func:`_exact_ece`.
    """
    y, g, p = _inputs(labels, videos, (probs, "probs"))
    p = p.astype(np.float64)
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("ece_interval: probabilities must lie in [0, 1]")
    if int(bins) < 1:
        raise ValueError(f"ece_interval: bins must be at least 1, got {bins}")
    yf = y.astype(np.float64)
    point = float(weighted_ece(p, yf, np.ones((1, p.size)), bins)[0])
    n_real, n_fake, reason = _estimable(y, g, min_videos, conf)
    out: dict[str, Any] = {"ece": point, "n_groups": int(np.unique(g).size),
                           "n_boot": int(n_boot), "estimable": reason is None, "reason": reason}
    if reason is not None:
        return {**out, "ece_lo": None, "ece_hi": None, "method": NOT_ESTIMABLE}
    _, draws, jack = resample(lambda w: weighted_ece(p, yf, w, bins), g,
                              y if strata is None else strata, n_boot, seed)
    lo, hi, method = interval(point, draws[:, 0], jack[:, 0], conf,
                              lambda: _exact_ece(p, yf, g, bins, conf, point))
    return {**out, "ece_lo": _num(lo), "ece_hi": _num(hi), "method": method}


__all__ = ["BCA", "CHUNK", "EXACT", "IDENTICAL", "NOT_ESTIMABLE", "N_BOOT", "bca_interval",
           "class_video_counts", "clopper_pearson", "ece_interval", "exact_auc", "exact_bacc",
           "interval", "is_degenerate", "paired_video_bootstrap", "resample",
           "video_bootstrap", "weighted_auc", "weighted_bacc",
           "weighted_ece"]
