"""Calibration (fakeproof/calibration.py): Platt scaling keeps AUC, recovers a planted scale and
offset (which a temperature alone cannot), says when a fit is degenerate, and ECE, Brier score
and the reliability table match hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest

from fakeproof.calibration import (brier, calibration_report, ece, fit_platt, log_loss,
                                   reliability_points, reliability_table)
from fakeproof.metrics import binary_metrics
from fakeproof.predict import proba

# six faces: P(fake) and labels, worked by hand below
P = np.array([0.1, 0.1, 0.3, 0.7, 0.9, 0.9])
Y = np.array([0, 1, 0, 1, 1, 1])


def _miscalibrated(n: int = 4000, scale: float = 1 / 3, shift: float = 0.0, seed: int = 0):
    """Logits whose labels follow sigmoid(scale * z + shift)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 4.0, n)
    y = (rng.random(n) < proba(scale * z + shift)).astype(int)
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


def test_platt_scaling_never_changes_auc() -> None:
    z, y = _miscalibrated()
    base = binary_metrics(y, proba(z), scores=z)["auc"]
    a, b, ok = fit_platt(z, y)
    assert ok and binary_metrics(y, proba(a * z + b), scores=a * z + b)["auc"] == base


def test_platt_recovers_a_planted_scale_and_offset_and_lowers_log_loss() -> None:
    """Labels follow sigmoid(z / 3 - 1.5): over-confident by 3 and shifted by the log prior a
    class-balanced loss bakes in. Platt finds both; a temperature alone (b = 0) cannot."""
    z, y = _miscalibrated(scale=1 / 3, shift=-1.5)
    a, b, ok = fit_platt(z, y)
    assert ok and 0.28 < a < 0.39 and -1.8 < b < -1.2
    assert log_loss(z, y, a, b) < log_loss(z, y) - 0.05
    for da, db in ((0.02, 0), (-0.02, 0), (0, 0.1), (0, -0.1)):  # a (near) minimum
        assert log_loss(z, y, a, b) <= log_loss(z, y, a + da, b + db) + 1e-4
    best_temperature_only = min(log_loss(z, y, s) for s in np.linspace(0.05, 2, 400))
    assert log_loss(z, y, a, b) < best_temperature_only - 0.01
    rep = calibration_report(z, y, a, b)
    assert rep["platt_a"] == a and rep["platt_b"] == b and rep["ece"] < rep["ece_uncalibrated"]
    assert rep["log_loss"] < rep["log_loss_uncalibrated"]


def test_platt_edge_cases_are_degenerate_not_clipped() -> None:
    a, b, ok = fit_platt([-3.0, -1.0, 2.0, 5.0], [0, 0, 1, 1])  # separated: Platt's targets keep a finite
    assert ok and 0 < a < 50 and np.isfinite(b)
    assert fit_platt([1.0, 1.0, 1.0], [0, 1, 1]) == (1.0, 0.0, False)  # constant scores
    assert fit_platt([0.0, 1.0], [1, 1]) == (1.0, 0.0, False)  # one class
    assert fit_platt([3.0, 2.0, -2.0, -3.0], [0, 0, 1, 1])[2] is False  # reversed: a <= 0
    with pytest.raises(ValueError, match="labels must be 0"):
        fit_platt([0.0, 1.0], [0, 2])
    with pytest.raises(ValueError, match="one label per score"):
        fit_platt([0.0, 1.0], [0])


def test_reliability_points() -> None:
    logits = np.log(P / (1 - P))
    pts = reliability_points(logits, Y)
    assert pts["count"].tolist() == [2, 1, 1, 2]
    assert np.allclose(pts["ideal"], pts["mean_prob"]) and np.allclose(pts["mean_prob"], [0.1, 0.3, 0.7, 0.9])
    shifted = reliability_points(logits - 1.0, Y, 1.0, 1.0)  # a z + b undoes the shift
    assert np.allclose(shifted["mean_prob"], pts["mean_prob"])
