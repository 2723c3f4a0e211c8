"""Video-resampled bootstrap intervals and logit ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fakeproof.bootstrap import paired_video_bootstrap, video_bootstrap, weighted_auc
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
    ci = paired_video_bootstrap(y, s, s, v, n_boot=200, seed=0)
    assert ci["diff_lo"] == 0.0 and ci["diff_hi"] == 0.0


def test_best_threshold_maximises_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.75, 0.8, 0.9])
    t = best_threshold(y, p)
    assert 0.7 <= t < 0.75
    assert best_threshold([0, 1], [0.2, 0.9]) == 0.5  # separable: keeps the natural boundary
