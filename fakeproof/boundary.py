"""A checkpoint's decision boundary, as part of the model that is scored and attacked.

A deployed detector does not decide at ``logit = 0``: it maps its logit ``z`` to a calibrated
``P(fake) = sigmoid(a z + b)`` (Platt scaling fitted on val,
:func:`fakeproof.calibration.fit_platt`)
and calls a face fake when that probability is above the val-chosen threshold ``t``
(:func:`fakeproof.metrics.best_threshold`). Both are stored in the checkpoint's recipe
(:mod:`fakeproof.recipe`) and used by ``fakeproof detect`` and the web page.

So every number about a deployed model is taken at that boundary, and every attack aims at it:
:class:`Deployed` wraps a detector so that its output is the **decision logit**
``d = a z + b - logit(t)``: ``d > 0`` exactly when the deployed detector says fake. The attacks of
:mod:`fakeproof.attacks` (which count a face as fooled when the sign of its logit flips) then
aim at the deployed boundary with no change, and ``d`` ranks faces exactly as ``z`` does
(``a > 0``), so AUCs are unchanged. The calibrated probability is ``sigmoid(d + logit(t))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fakeproof.predict import as_logit_array, proba

#: thresholds closer than this to 0 or 1 are clipped before their logit is taken
_EDGE = 1e-9


def logit(p: float) -> float:
    p = min(max(float(p), _EDGE), 1.0 - _EDGE)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class Boundary:
    """Platt calibration ``(a, b)`` and the decision threshold ``threshold`` on the calibrated
    P(fake). ``Boundary()`` is the raw model at 0.5 (``a = 1``, ``b = 0``)."""

    a: float = 1.0
    b: float = 0.0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a) and self.a > 0 and math.isfinite(self.b)):
            raise ValueError(f"boundary: Platt slope {self.a!r} must be > 0 and intercept "
                             f"{self.b!r} finite")
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"boundary: threshold {self.threshold!r} must lie in [0, 1]")

    @property
    def offset(self) -> float:
        """``logit(threshold)``: the calibrated logit the decision is taken at."""
        return logit(self.threshold)

    def decision(self, logits: Any) -> np.ndarray:
        """Decision logits ``a z + b - logit(t)`` (float64): > 0 is a fake at this boundary."""
        return self.a * as_logit_array(logits) + self.b - self.offset

    def p_fake(self, logits: Any) -> np.ndarray:
        """The calibrated P(fake) = ``sigmoid(a z + b)`` of raw logits."""
        return proba(self.a * as_logit_array(logits) + self.b)

    def p_from_decision(self, decision: Any) -> np.ndarray:
        """The calibrated P(fake) of decision logits (:meth:`decision`'s output)."""
        return proba(as_logit_array(decision) + self.offset)

    def to_recipe(self) -> dict[str, float]:
        return {"platt_a": float(self.a), "platt_b": float(self.b),
                "threshold": float(self.threshold)}


class Deployed(nn.Module):
    """A detector behind its deployed boundary: outputs decision logits ``a z + b - logit(t)``.

    Attacks and metrics see the model as it ships; the wrapped detector is ``.model``."""

    def __init__(self, model: nn.Module, boundary: Boundary) -> None:
        super().__init__()
        self.model = model
        self.boundary = boundary
        self.scale = float(boundary.a)
        self.shift = float(boundary.b - boundary.offset)

    @property
    def name(self) -> str:
        return str(getattr(self.model, "name", type(self.model).__name__))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        if self.scale == 1.0 and self.shift == 0.0:
            return z
        return z * self.scale + self.shift


def class_recalls(labels: Any, decision: Any) -> tuple[float, float]:
    """``(TPR, TNR)`` of decision logits at their boundary (``> 0`` is fake); NaN for a class
    that is absent."""
    y = np.asarray(labels).reshape(-1) == 1
    fake = as_logit_array(decision) > 0
    tpr = float(np.mean(fake[y])) if y.any() else float("nan")
    tnr = float(np.mean(~fake[~y])) if (~y).any() else float("nan")
    return tpr, tnr


def fit_boundary(logits: Any, labels: Any, calibrate: bool = True) -> tuple[Boundary, bool]:
    """The boundary fitted on val: Platt ``(a, b)`` (identity when ``calibrate`` is False or the
    fit is degenerate) and the threshold on the calibrated P(fake) that maximises val balanced
    accuracy. Returns ``(boundary, platt_ok)``."""
    from fakeproof.calibration import fit_platt
    from fakeproof.metrics import best_threshold

    a, b, ok = fit_platt(logits, labels) if calibrate else (1.0, 0.0, True)
    p = proba(a * as_logit_array(logits) + b)
    return Boundary(a, b, best_threshold(labels, p)), ok


__all__ = ["Boundary", "Deployed", "class_recalls", "fit_boundary", "logit"]
