"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from fakeproof.metrics import (METRIC_KEYS, aggregate_videos, attack_success_rate,
                               binary_metrics, roc_points)


def _random_case(seed: int, n: int = 400, fake_share: float = 0.2):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < fake_share).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    p[:20] = np.round(p[:20], 1)  # ties
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_match_sklearn(seed: int, threshold: float) -> None:
    y, p = _random_case(seed)
    m = binary_metrics(y, p, threshold=threshold)
    pred = (p > threshold).astype(int)
    assert set(m) == set(METRIC_KEYS)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["ap"] == pytest.approx(skm.average_precision_score(y, p))
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["bacc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert (m["n"], m["n_fake"], m["n_real"]) == (len(y), y.sum(), len(y) - y.sum())
    # EER lies where FPR and FNR cross on sklearn's ROC
    fpr, tpr, _ = skm.roc_curve(y, p)
    fnr = 1 - tpr
    i = np.argmin(np.abs(fnr - fpr))
    assert abs(m["eer"] - (fpr[i] + fnr[i]) / 2) <= abs(fnr[i] - fpr[i]) / 2 + 1e-9


def test_hand_computed_table() -> None:
    # labels 0 0 1 1, probs .1 .6 .4 .9: predicted fake = {.6, .9}: tp 1, fp 1, fn 1, tn 1.
    # ROC (fpr, tpr): (0,0) (0,.5) (.5,.5) (.5,1) (1,1); FNR = FPR = .5 at (.5,.5).
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (fake, real) pairs ordered
    assert m["ap"] == pytest.approx((1.0 + 2 / 3) / 2)  # precision at recall .5 and 1
    assert m["eer"] == pytest.approx(0.5)
    assert m["acc"] == m["bacc"] == m["precision"] == m["recall"] == m["f1"] == pytest.approx(0.5)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_gives_nan_without_warnings(label: int) -> None:
    y = np.full(5, label)
    p = np.array([0.1, 0.4, 0.6, 0.7, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics(y, p)
        r = roc_points(y, p)
    assert math.isnan(m["auc"]) and math.isnan(m["ap"]) and math.isnan(m["eer"])
    assert r.empty and list(r.columns) == ["fpr", "tpr", "threshold"]
    correct = (p > 0.5) == (label == 1)
    assert m["acc"] == pytest.approx(correct.mean())
    assert m["bacc"] == pytest.approx(correct.mean())  # the one class present
    if label == 0:
        assert math.isnan(m["recall"])  # no fakes: recall undefined
        assert m["precision"] == 0.0  # 3 predicted fakes, none right
        assert m["n_fake"] == 0 and m["n_real"] == 5
    else:
        assert m["recall"] == pytest.approx(0.6) and m["precision"] == 1.0


def test_zero_division_matches_sklearn_nan_convention() -> None:
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])  # nothing predicted fake
    m = binary_metrics(y, p)
    assert math.isnan(m["precision"])
    assert math.isnan(skm.precision_score(y, p > 0.5, zero_division=np.nan))
    assert m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["f1"] == skm.f1_score(y, p > 0.5, zero_division=np.nan)


@pytest.mark.parametrize("bad, match", [
    (([0, 2], [0.1, 0.2]), "labels"),
    (([0, 1], [0.1, 1.2]), "probs"),
    (([0, 1], [0.1, np.nan]), "probs"),
    (([0, 1], [0.1]), "differ in length"),
    (([], []), "empty"),
])
def test_bad_input_raises(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        binary_metrics(*bad)


def test_bad_threshold_raises() -> None:
    with pytest.raises(ValueError, match="threshold"):
        binary_metrics([0, 1], [0.2, 0.8], threshold=1.5)


def _frames() -> pd.DataFrame:
    rows = [("a", 1, 0.9), ("a", 1, 0.5), ("a", 1, 0.1),
            ("b", 0, 0.2), ("b", 0, 0.4),
            ("c", 1, 0.7)]
    return pd.DataFrame(rows, columns=["video_id", "label", "prob"])


def test_aggregate_mean_and_max() -> None:
    df = _frames().sample(frac=1.0, random_state=0)  # order of frames must not matter
    mean = aggregate_videos(df, "mean")
    assert list(mean.columns) == ["video_id", "label", "prob", "n_frames"]
    assert mean["video_id"].tolist() == ["a", "b", "c"]
    assert mean["label"].tolist() == [1, 0, 1]
    assert mean["prob"].tolist() == pytest.approx([0.5, 0.3, 0.7])
    assert mean["n_frames"].tolist() == [3, 2, 1]
    assert aggregate_videos(df, "max")["prob"].tolist() == pytest.approx([0.9, 0.4, 0.7])


def test_aggregate_confident_rule() -> None:
    # 32 frames each (the DFDC setting): floor(32 / 2.5) = 12, so > 12 confident fakes are needed
    fake13 = [0.95] * 13 + [0.5] * 19          # 13 > 12 and 13 > 11 -> mean of the 0.95s
    fake12 = [0.95] * 12 + [0.5] * 20          # 12 is not > 12 -> plain mean
    real29 = [0.1] * 29 + [0.6] * 3            # 29 > 0.9 * 32 = 28.8 -> mean of the 0.1s
    real28 = [0.1] * 28 + [0.6] * 4            # 28 is not > 28.8 -> plain mean
    rows = [(vid, 1, p) for vid, ps in (("f13", fake13), ("f12", fake12)) for p in ps]
    rows += [(vid, 0, p) for vid, ps in (("r29", real29), ("r28", real28)) for p in ps]
    df = pd.DataFrame(rows, columns=["video_id", "label", "score"])
    out = aggregate_videos(df, "confident", prob_col="score").set_index("video_id")["prob"]
    assert out["f13"] == pytest.approx(0.95)
    assert out["f12"] == pytest.approx((12 * 0.95 + 20 * 0.5) / 32)
    assert out["r29"] == pytest.approx(0.1)
    assert out["r28"] == pytest.approx((28 * 0.1 + 4 * 0.6) / 32)
    # min_fakes lowers the bar for short frame counts
    short = pd.DataFrame({"video_id": ["s"] * 8, "label": [1] * 8, "prob": [0.9] * 4 + [0.3] * 4})
    assert aggregate_videos(short, "confident")["prob"].iloc[0] == pytest.approx(0.6)
    assert aggregate_videos(short, "confident", min_fakes=2)["prob"].iloc[0] == pytest.approx(0.9)


def test_aggregate_rejects_mixed_labels_and_missing_columns() -> None:
    df = _frames()
    df.loc[0, "label"] = 0
    with pytest.raises(ValueError, match="'a'"):
        aggregate_videos(df)
    with pytest.raises(ValueError, match="missing column"):
        aggregate_videos(_frames().drop(columns=["label"]))
    with pytest.raises(ValueError, match="how="):
        aggregate_videos(_frames(), how="median")  # type: ignore[arg-type]


def test_attack_success_rate() -> None:
    y = [0, 0, 1, 1, 1]
    clean = [0.1, 0.7, 0.8, 0.9, 0.2]   # correct: 0, 2, 3 (1 and 4 wrong already)
    adv = [0.6, 0.9, 0.3, 0.95, 0.1]    # flips 0 and 2; 3 holds
    assert attack_success_rate(y, clean, adv) == pytest.approx(2 / 3)
    assert attack_success_rate(y, clean, clean) == 0.0
    assert math.isnan(attack_success_rate([1, 0], [0.1, 0.9], [0.9, 0.1]))


def test_roc_points_match_sklearn() -> None:
    y, p = _random_case(3)
    r = roc_points(y, p)
    fpr, tpr, thr = skm.roc_curve(y, p)
    np.testing.assert_allclose(r["fpr"], fpr)
    np.testing.assert_allclose(r["tpr"], tpr)
    assert r["threshold"].iloc[0] == 1.0 and np.isfinite(r["threshold"]).all()
    np.testing.assert_allclose(r["threshold"].iloc[1:], thr[1:])
    assert skm.auc(r["fpr"], r["tpr"]) == pytest.approx(binary_metrics(y, p)["auc"])
