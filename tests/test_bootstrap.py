"""Video-resampled (stratified, BCa) bootstrap intervals and logit ranking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from fakeproof.bootstrap import (BCA, EXACT, IDENTICAL, NOT_ESTIMABLE, bca_interval, ece_interval,
                                 paired_video_bootstrap, resample,
                                 video_bootstrap, weighted_auc)
from fakeproof.calibration import ece
from fakeproof.metrics import binary_metrics, best_threshold
from fakeproof.predict import proba


def _videos(n_videos: int, frames: int, seed: int, separation: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_videos) % 2, frames)
    video_effect = np.repeat(rng.normal(0, 1, n_videos), frames)
    scores = separation * labels + video_effect + rng.normal(0, 0.3, labels.size)
    videos = np.repeat([f"v{i:03d}" for i in range(n_videos)], frames)
    return labels, scores, videos


def test_weighted_auc_equals_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60).astype(float)  # many ties
    w = rng.integers(0, 4, (3, 60)).astype(float)
    got = weighted_auc(y, s, w)
    for row, g in zip(w, got):
        assert g == pytest.approx(roc_auc_score(y, s, sample_weight=row))


def test_interval_covers_the_estimate_and_shrinks_with_more_videos() -> None:
    widths = []
    for n in (12, 200):
        y, s, v = _videos(n, 8, seed=n)
        point = binary_metrics(y, proba(s), scores=s)["auc"]
        ci = video_bootstrap(y, s, s > 0.5, v, n_boot=500, seed=0)
        assert ci["auc_lo"] <= point <= ci["auc_hi"]
        assert ci["n_groups"] == n
        widths.append(ci["auc_hi"] - ci["auc_lo"])
    assert widths[1] < widths[0] / 2


def test_resampling_videos_is_wider_than_resampling_frames() -> None:
    """Frames of one video share its random effect: a frame bootstrap would be too narrow."""
    y, s, v = _videos(20, 16, seed=3)
    by_video = video_bootstrap(y, s, s > 0.5, v, n_boot=500, seed=0)
    by_frame = video_bootstrap(y, s, s > 0.5, np.arange(y.size), n_boot=500, seed=0)
    assert (by_video["auc_hi"] - by_video["auc_lo"]) > 1.5 * (by_frame["auc_hi"] - by_frame["auc_lo"])


def test_a_model_that_ignores_its_input_gets_auc_one_half_inside_its_interval() -> None:
    y, _, v = _videos(20, 4, seed=1)
    const = np.zeros(y.size)
    assert binary_metrics(y, proba(const), scores=const)["auc"] == 0.5
    ci = video_bootstrap(y, const, const > 0, v, n_boot=200, seed=0)
    assert ci["auc_lo"] <= 0.5 <= ci["auc_hi"]
    assert ci["bacc_lo"] <= 0.5 <= ci["bacc_hi"]


def test_seeded() -> None:
    y, s, v = _videos(10, 4, seed=2)
    assert video_bootstrap(y, s, s > 0, v, seed=7) == video_bootstrap(y, s, s > 0, v, seed=7)
    assert video_bootstrap(y, s, s > 0, v, seed=7) != video_bootstrap(y, s, s > 0, v, seed=8)
    p = 1 / (1 + np.exp(-s))
    assert ece_interval(p, y, v, seed=3) == ece_interval(p, y, v, seed=3)
    assert (paired_video_bootstrap(y, s, -s, v, seed=3)
            == paired_video_bootstrap(y, s, -s, v, seed=3))


def test_logits_40_and_41_rank_correctly() -> None:
    logits = np.array([40.0, 41.0])
    labels = np.array([0, 1])
    assert binary_metrics(labels, proba(logits), scores=logits)["auc"] == 1.0
    # the float32 sigmoid ties them (the bug this guards against)
    import torch

    p32 = torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).numpy()
    assert p32[0] == p32[1] and binary_metrics(labels, p32)["auc"] == 0.5


def test_paired_difference_of_a_model_with_itself_is_zero() -> None:
    y, s, v = _videos(16, 4, seed=4)
    ci = paired_video_bootstrap(y, s, s, v, pred_a=s > 0.5, pred_b=s > 0.5, n_boot=200, seed=0)
    assert ci["auc_diff"] == 0.0 and ci["diff_lo"] == 0.0 and ci["diff_hi"] == 0.0
    assert ci["bacc_diff"] == ci["bacc_diff_lo"] == ci["bacc_diff_hi"] == 0.0
    assert ci["method"] == IDENTICAL and ci["estimable"]
    # a monotone transform ranks alike: still identical for AUC
    assert paired_video_bootstrap(y, s, 3 * s + 1, v, n_boot=200)["auc_method"] == IDENTICAL


def test_paired_degenerate_but_different_models_get_a_nonzero_interval() -> None:
    """Both perfect (AUC 1 in every draw) with different scores: the difference is 0 in every
    draw, but that is no proof they are equal; the interval is exact and wide."""
    y = np.repeat([0, 1], 5)
    a, b = y + 0.1 * np.arange(10), 2.0 * y - 0.05 * np.arange(10)
    ci = paired_video_bootstrap(y, a, b, np.arange(10), n_boot=200)
    assert ci["auc_diff"] == 0.0 and ci["method"] == EXACT
    assert ci["diff_lo"] < 0.0 < ci["diff_hi"]


def test_paired_bacc_difference_has_the_right_sign() -> None:
    y = np.repeat([0, 1], 10)
    truth = y.astype(bool)
    weak = truth.copy()
    weak[[0, 1, 2, 10, 11, 12]] ^= True  # six of twenty wrong: bacc 0.7
    rng = np.random.default_rng(0)
    s = rng.normal(size=20)
    ci = paired_video_bootstrap(y, s, s, np.arange(20), pred_a=weak, pred_b=truth, n_boot=500)
    assert ci["bacc_diff"] == pytest.approx(0.3)
    assert 0.0 < ci["bacc_diff_lo"] <= 0.3 <= ci["bacc_diff_hi"]
    flipped = paired_video_bootstrap(y, s, s, np.arange(20), pred_a=truth, pred_b=weak, n_boot=500)
    assert flipped["bacc_diff"] == pytest.approx(-0.3) and flipped["bacc_diff_hi"] < 0.0
    with pytest.raises(ValueError, match="pred_a and pred_b"):
        paired_video_bootstrap(y, s, s, np.arange(20), pred_a=weak)


def test_every_stratified_draw_keeps_each_strata_count_of_groups() -> None:
    groups = np.repeat(np.arange(12), [1, 2, 3] * 4)  # 12 videos of 1 to 3 frames
    labels = np.repeat(np.arange(12) % 2, [1, 2, 3] * 4)
    strata = np.array([f"{lab}:{'ab'[int(v < 8)]}" for lab, v in zip(labels, groups)])
    w = resample(lambda w: w, groups, strata, 300, seed=0)[1]  # the draws' weights
    assert w.shape == (300, groups.size)
    # weights are per video: every frame of a video has its video's multiplicity
    first = np.unique(groups, return_index=True)[1]
    assert np.array_equal(w, w[:, first][:, groups])
    per_video = w[:, first]
    video_stratum = strata[first]
    for st in np.unique(video_stratum):
        members = video_stratum == st
        assert (per_video[:, members].sum(axis=1) == members.sum()).all()
    assert per_video.std(axis=0).min() > 0  # videos really are resampled
    # without strata only the total is kept, and some draws lose a class
    w1 = resample(lambda w: w, groups, None, 300, seed=0)[1][:, first]
    assert (w1.sum(axis=1) == 12).all()
    assert ((w1[:, np.arange(12) % 2 == 1].sum(axis=1) == 0).any()
            or (w1[:, np.arange(12) % 2 == 1].sum(axis=1) != 6).any())


def test_bca_covers_a_known_auc_better_than_the_percentile_interval() -> None:
    """300 data sets of 10 real and 10 fake videos, true AUC = Phi(1.5 / sqrt 2) = 0.856."""
    d, n_sets = 1.5, 300
    true_auc = norm.cdf(d / np.sqrt(2))
    y = np.repeat([0, 1], 10)
    bca = pct = 0
    for i in range(n_sets):
        s = np.random.default_rng(1000 + i).normal(size=20) + d * y
        point, draws, jack = resample(lambda w: weighted_auc(y, s, w), np.arange(20), y, 1000, i)
        lo, hi = bca_interval(point[0], draws[:, 0], jack[:, 0])
        bca += lo <= true_auc <= hi
        plo, phi = np.percentile(draws[:, 0], [2.5, 97.5])
        pct += plo <= true_auc <= phi
    assert bca / n_sets >= 0.9
    assert bca > pct  # the percentile interval under-covers at this n


def test_bca_is_the_percentile_interval_when_unbiased_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    half = rng.normal(size=500)
    draws = np.concatenate([half, -half]) + 0.3  # symmetric about the point: z0 = 0
    jack = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # symmetric: acceleration 0
    lo, hi = bca_interval(0.3, draws, jack, conf=0.9)
    assert (lo, hi) == tuple(np.percentile(draws, [5.0, 95.0]))
    # skewed jackknife values or a biased point move the interval
    assert bca_interval(0.3, draws, np.array([0.0, 0.0, 0.0, 3.0])) != bca_interval(0.3, draws, jack)
    assert bca_interval(0.5, draws, jack)[0] > bca_interval(0.3, draws, jack)[0]


def test_below_min_videos_the_interval_is_not_estimable() -> None:
    y = np.repeat([0, 1], [3, 2])
    s = np.arange(5.0)
    ci = video_bootstrap(y, s, s > 2, np.arange(5), min_videos=5)
    assert ci["estimable"] is False and ci["method"] == NOT_ESTIMABLE
    assert ci["auc_lo"] is ci["auc_hi"] is ci["bacc_lo"] is ci["bacc_hi"] is None
    assert ci["reason"] == "3 real / 2 fake videos < 5 per class"
    ok = video_bootstrap(y, s, s > 2, np.arange(5), min_videos=2)
    assert ok["estimable"] is True and ok["reason"] is None and ok["auc_lo"] is not None
    paired = paired_video_bootstrap(y, s, -s, np.arange(5), min_videos=3)
    assert paired["diff_lo"] is None and paired["auc_diff"] == -1.0 and not paired["estimable"]
    e = ece_interval(s / 4, y, np.arange(5), min_videos=3)
    assert e["ece_lo"] is None and e["ece"] > 0 and e["reason"].startswith("3 real / 2 fake")


def test_all_wrong_on_nine_videos_gives_a_nonzero_clopper_pearson_interval() -> None:
    y = np.repeat([0, 1], [5, 4])
    s = np.random.default_rng(0).normal(size=9)
    wrong = y == 0  # every real called fake, every fake called real
    ci = video_bootstrap(y, s, wrong, np.arange(9), n_boot=300)
    assert ci["bacc_method"] == EXACT and ci["auc_method"] == BCA
    assert ci["bacc_lo"] == 0.0 and 0.0 < ci["bacc_hi"] < 1.0
    # the mean of the classes' upper 98.75 % Clopper-Pearson bounds at k = 0: 1 - 0.0125^(1/n)
    assert ci["bacc_hi"] == pytest.approx((2 - 0.0125 ** (1 / 5) - 0.0125 ** (1 / 4)) / 2)
    perfect = video_bootstrap(y, 2.0 * y, y == 1, np.arange(9), n_boot=300)  # AUC 1 in every draw
    assert perfect["auc_method"] == EXACT and perfect["method"] == EXACT
    assert perfect["auc_hi"] == 1.0 and perfect["auc_lo"] == pytest.approx(0.025 ** (1 / 4))


def test_ece_interval_contains_the_point_ece() -> None:
    y, s, v = _videos(30, 6, seed=5, separation=2.0)
    p = 1 / (1 + np.exp(-s))
    ci = ece_interval(p, y, v, n_boot=300, seed=0)
    assert ci["ece"] == pytest.approx(ece(p, y))
    assert ci["method"] == BCA and ci["estimable"]
    assert 0.0 <= ci["ece_lo"] < ci["ece"] < ci["ece_hi"] <= 1.0
    # perfect, confident and right: ECE 0 in every draw, yet not a certainty
    exact = ece_interval(y.astype(float), y, v, n_boot=100)
    assert exact["ece"] == 0.0 and exact["method"] == EXACT
    assert exact["ece_lo"] == 0.0 < exact["ece_hi"]


def test_best_threshold_maximises_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.75, 0.8, 0.9])
    t = best_threshold(y, p)
    assert 0.7 <= t < 0.75
    assert best_threshold([0, 1], [0.2, 0.9]) == 0.5  # separable: keeps the natural boundary
