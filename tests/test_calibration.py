"""Calibration (fakeproof/calibration.py): temperature scaling keeps AUC, lowers val log loss at
the fitted temperature, and ECE, Brier score and the reliability table match hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from fakeproof.calibration import (brier, calibration_report, checkpoint_temperature, ece,
                                   fit_temperature, log_loss, reliability_points, reliability_table)
from fakeproof.metrics import binary_metrics
from fakeproof.predict import proba

# six faces: P(fake) and labels, worked by hand below
P = np.array([0.1, 0.1, 0.3, 0.7, 0.9, 0.9])
Y = np.array([0, 1, 0, 1, 1, 1])


def _overconfident(n: int = 4000, true_t: float = 3.0, seed: int = 0):
    """Logits whose labels follow sigmoid(z / true_t): a model over-confident by true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, n)
    y = (rng.random(n) < proba(z, true_t)).astype(int)
    return z, y


def test_ece_and_brier_match_a_hand_worked_example() -> None:
    # 15 bins of width 1/15: 0.1 -> bin 1, 0.3 -> bin 4, 0.7 -> bin 10, 0.9 -> bin 13
    # |gap| per bin: 0.1 vs 1/2 fakes = 0.4 (2 faces); 0.3 vs 0 = 0.3; 0.7 vs 1 = 0.3; 0.9 vs 1 = 0.1 (2)
    # ECE = (2 * 0.4 + 0.3 + 0.3 + 2 * 0.1) / 6 = 1.6 / 6
    assert ece(P, Y) == pytest.approx(1.6 / 6, abs=1e-12)
    assert ece(P, Y, bins=15) == ece(P, Y)
    # 10 bins: the same grouping here
    assert ece(P, Y, bins=10) == pytest.approx(1.6 / 6, abs=1e-12)
    # Brier = (0.01 + 0.81 + 0.09 + 0.09 + 0.01 + 0.01) / 6
    assert brier(P, Y) == pytest.approx(1.02 / 6, abs=1e-12)
    t = reliability_table(P, Y)
    used = t[t["count"] > 0]
    assert used["bin"].tolist() == [1, 4, 10, 13] and used["count"].tolist() == [2, 1, 1, 2]
    assert used["frac_fake"].tolist() == [0.5, 0.0, 1.0, 1.0]
    assert np.allclose(used["gap"], [0.4, -0.3, 0.3, 0.1])
    assert t["count"].sum() == 6 and len(t) == 15
    # edges: 0 in the first bin, 1 in the last; a perfectly calibrated all-or-nothing is 0
    assert reliability_table([0.0, 1.0], [0, 1])["count"].tolist()[::14] == [1, 1]
    assert ece([0.0, 1.0, 1.0], [0, 1, 1]) == 0.0 and brier([0.0, 1.0], [0, 1]) == 0.0


def test_temperature_scaling_never_changes_auc() -> None:
    z, y = _overconfident()
    base = binary_metrics(y, proba(z), scores=z)["auc"]
    for t in (0.05, 0.5, 2.0, 20.0):
        assert binary_metrics(y, proba(z, t), scores=z / t)["auc"] == base
    for t in (0.7, 3.0, 10.0):  # probabilities that do not saturate rank the same way too
        assert binary_metrics(y, proba(z, t))["auc"] == pytest.approx(base, abs=1e-12)


def test_fitted_temperature_lowers_val_log_loss_and_is_the_minimum() -> None:
    z, y = _overconfident(true_t=3.0)
    t = fit_temperature(z, y)
    assert 2.5 < t < 3.6  # recovers the planted over-confidence
    assert log_loss(z, y, t) < log_loss(z, y) - 0.05
    for other in (t * 0.97, t * 1.03, 1.0):
        assert log_loss(z, y, t) <= log_loss(z, y, other)
    rep = calibration_report(z, y, t)
    assert rep["temperature"] == t and rep["ece"] < rep["ece_uncalibrated"]
    assert rep["log_loss"] < rep["log_loss_uncalibrated"]
    # an under-confident model is sharpened (T < 1)
    z2, y2 = z / 3.0, (np.random.default_rng(1).random(z.size) < proba(z)).astype(int)
    assert fit_temperature(z2, y2) < 0.5


def test_fit_temperature_edge_cases() -> None:
    assert fit_temperature([-3.0, -1.0, 2.0, 5.0], [0, 0, 1, 1]) == 0.05  # separated: bound
    with pytest.raises(ValueError, match="labels must be 0"):
        fit_temperature([0.0, 1.0], [0, 2])
    with pytest.raises(ValueError, match="one label per score"):
        fit_temperature([0.0, 1.0], [0])


def test_checkpoint_temperature_and_reliability_points() -> None:
    assert checkpoint_temperature({"recipe": {"temperature": 2.5}}, True) == 2.5
    assert checkpoint_temperature({"recipe": {"temperature": 2.5}}, False) == 1.0
    for meta in ({}, {"recipe": {}}, {"recipe": {"temperature": -1.0}}, {"recipe": {"temperature": True}},
                 {"recipe": {"temperature": float("nan")}}, None):
        assert checkpoint_temperature(meta, True) == 1.0
    logits = np.log(P / (1 - P))
    pts = reliability_points(logits, Y)
    assert pts["count"].tolist() == [2, 1, 1, 2]
    assert np.allclose(pts["ideal"], pts["mean_prob"]) and np.allclose(pts["mean_prob"], [0.1, 0.3, 0.7, 0.9])
