"""An ensemble of detectors as one detector: per-member resizing and a weighted average of logits.

:class:`Ensemble` is a :class:`~fakeproof.models.Detector` like any other: it takes one batch of
[0, 1] crops (N, 3, H, W) and returns one fake logit (N, 1). Inside its forward every member gets
the crops resized to the size of the crops it was trained on (:func:`fakeproof.models.resize`:
bilinear, antialiased when shrinking, differentiable; the identity when the size already fits)
and normalises them itself (each member's :class:`~fakeproof.models.Normalize` layer), maps its
logit through its own Platt calibration ``a_i z_i + b_i`` (Platt 1999; the identity when
uncalibrated), and the fused logit is the weighted average ``sum_i w_i (a_i z_i + b_i)`` with
weights on the simplex (Caruana et al., "Ensemble Selection from Libraries of Models", ICML 2004,
fit such weights on held-out data).

Everything is one differentiable graph, so an attack on the ensemble attacks the fused logit:
the honest threat model. Attacking members one at a time, or an ensemble behind a
non-differentiable vote, overstates robustness (Athalye et al., "Obfuscated Gradients Give a
False Sense of Security", ICML 2018; Tramèr et al., "On Adaptive Attacks to Adversarial Example
Defenses", NeurIPS 2020).

This module holds only what loading an ensemble checkpoint needs: it registers the checkpoint
``kind`` ``ensemble`` with :func:`fakeproof.models.register_checkpoint_kind`, so
``fakeproof.models.load_checkpoint`` builds ensembles without importing this module by name;
weight fitting and the DVC stage live in :mod:`fakeproof.ensemble`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from fakeproof.models import (Detector, ModelConfig, ModelError, contiguous_state, create_model,
                              register_checkpoint_kind, resize)

#: ``model`` and ``kind`` of an ensemble checkpoint; also the ensemble's recipe ``model``.
ENSEMBLE = "ensemble"
#: The ensemble's own normalisation is the identity: each member normalises its own input.
IDENTITY_MEAN = (0.0, 0.0, 0.0)
IDENTITY_STD = (1.0, 1.0, 1.0)


class Member(nn.Module):
    """One detector behind its own resize and Platt calibration: takes [0, 1] crops of any size
    and returns its calibrated logit ``a z + b``.

    ``input_size`` is the side of the crops the detector was trained on (its recipe's
    ``input_size``, i.e. ``faces.image_size``); a detector that resizes inside its own forward
    (``model.input_size``) still does so after this. ``(a, b)``: its recipe's ``platt_a``,
    ``platt_b`` (identity by default)."""

    def __init__(self, detector: Detector, input_size: int, a: float = 1.0, b: float = 0.0
                 ) -> None:
        super().__init__()
        if not (float(a) > 0 and math.isfinite(float(a)) and math.isfinite(float(b))):
            raise ModelError(f"member {detector.name}: Platt slope {a!r} must be > 0 and "
                             f"intercept {b!r} finite")
        self.detector = detector
        self.input_size = int(input_size)
        self.a, self.b = float(a), float(b)

    @property
    def name(self) -> str:
        return self.detector.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.detector(resize(x, self.input_size))
        return z if (self.a, self.b) == (1.0, 0.0) else z * self.a + self.b


class _Fusion(nn.Module):
    """The members and the weighted average of their calibrated logits. A member of weight 0
    is not run: it adds nothing to the logit or its gradient (a fit that gives one member all
    the weight costs one member's forward pass, not k)."""

    def __init__(self, members: Sequence[Member], weights: Sequence[float]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.as_tensor(list(weights), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        live = [i for i, w in enumerate(self.weights.tolist()) if w != 0.0] or [0]
        z = torch.cat([self.members[i](x).reshape(-1, 1) for i in live], dim=1)  # (N, live)
        return z @ self.weights[live].to(z).reshape(-1, 1)


class Ensemble(Detector):
    """A weighted average of member logits as one detector (see the module docstring).

    Args:
        members: the member detectors, each behind its :class:`Member` resize and calibration.
        names: one name per member (``clean``, ``robust``, ...), kept in the checkpoint.
        weights: one weight per member: non-negative, summing to 1 (checked).

    The ensemble's own decision boundary (Platt and threshold on the fused logit, fitted on val)
    is in its recipe, as for every checkpoint (:mod:`fakeproof.boundary`).
    """

    def __init__(self, members: Sequence[Member], names: Sequence[str], weights: Sequence[float]
                 ) -> None:
        members, names = list(members), [str(n) for n in names]
        w = [float(v) for v in weights]
        if not members or len(names) != len(members) or len(w) != len(members):
            raise ModelError(f"ensemble: {len(members)} members, {len(names)} names and {len(w)} "
                             "weights; give one name and one weight per member (at least one)")
        if len(set(names)) != len(names):
            raise ModelError(f"ensemble: member names {names} repeat; name each member once")
        if min(w) < 0 or abs(sum(w) - 1.0) > 1e-6:
            raise ModelError(f"ensemble: weights {w} must be non-negative and sum to 1")
        cfg = ModelConfig(ENSEMBLE, mean=IDENTITY_MEAN, std=IDENTITY_STD,
                          input_size=max(m.input_size for m in members),
                          paper="weighted logit average (Caruana et al., ICML 2004)")
        super().__init__(_Fusion(members, w), cfg)
        self.member_names = names

    @property
    def members(self) -> list[Member]:
        return list(self.backbone.members)

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.member_names, self.backbone.weights.tolist()))

    def config(self) -> dict[str, Any]:
        """What rebuilds this ensemble besides its state dict (JSON types only)."""
        return {"members": [{"name": n, "model": m.name, "input_size": m.input_size,
                             "platt_a": m.a, "platt_b": m.b}
                            for n, m in zip(self.member_names, self.members)],
                "weights": [float(v) for v in self.backbone.weights.tolist()]}


def save_ensemble(path: str | Path, ensemble: Ensemble, meta: dict[str, Any]) -> None:
    """Save an ensemble checkpoint atomically: ``kind: ensemble``, every member's name, model,
    input size and Platt calibration, the fusion weights, all weights in one state dict, and ``meta``
    (the inference recipe under ``meta["recipe"]``, as every fakeproof checkpoint has)."""
    from fakeproof.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"kind": ENSEMBLE, "model": ENSEMBLE, **ensemble.config(),
                    "state_dict": contiguous_state(ensemble), "meta": meta}, tmp)


def ensemble_from_checkpoint(ckpt: Mapping[str, Any]) -> Ensemble:
    """Rebuild an :class:`Ensemble` from a loaded checkpoint mapping (see :func:`save_ensemble`);
    raises on anything missing or mismatched (``load_checkpoint`` words the one-line error)."""
    members = [Member(create_model(str(m["model"])), int(m["input_size"]),
                      float(m["platt_a"]), float(m["platt_b"])) for m in ckpt["members"]]
    ens = Ensemble(members, [str(m["name"]) for m in ckpt["members"]],
                   [float(v) for v in ckpt["weights"]])
    ens.load_state_dict(ckpt["state_dict"])
    return ens.eval()


register_checkpoint_kind(ENSEMBLE, ensemble_from_checkpoint)
