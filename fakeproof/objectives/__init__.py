"""Adversarial training objectives, one per module, one call signature::

    loss, stats = objective(model, images, labels, *, eps, alpha, steps, weights, generator,
                            clean_share=..., beta=..., random_start=True, craft_model=None)

``images`` float (N, 3, H, W) in [0, 1]; ``labels`` 0 = real, 1 = fake; ``weights`` the per-class
weights [w_real, w_fake] (:func:`fakeproof.train.class_weights`): every term is a class-weighted
mean ``sum w[y] l / sum w[y]``, through the two-logit view of the single fake logit
(:func:`fakeproof.attacks.two_logits`), in float32. ``eps`` and ``alpha`` are L-inf pixel units;
``generator`` (a CPU :class:`torch.Generator`, advanced) draws the random starts. ``loss`` is a
scalar with a graph to backpropagate; ``stats`` are floats for the log.

Model mode and BatchNorm (tested):

- Adversarial examples are crafted against the current weights **in eval mode** (running
  BatchNorm statistics, no dropout) and float32 (autocast off inside; the loss forwards keep the
  caller's autocast) under :func:`fakeproof.attacks.model_guard`, by
  :func:`fakeproof.attacks.pgd`: crafting computes input gradients only (nothing lands in
  ``param.grad``) and leaves every module's ``training`` flag, every ``requires_grad`` flag and
  every buffer as it found them, so **crafting never changes BatchNorm running statistics**.
- The loss is then computed in the mode the caller set (train mode in training): each training
  forward updates BatchNorm running statistics once, as a plain step would: ``pgd``/``fgsm_rs``
  one forward (clean and adversarial images in one batch), ``trades``/``mart`` two (clean, then
  adversarial; one when ``eps = 0``).
- ``craft_model``: the module to craft against, when ``model`` is a wrapper (DDP's ``module``).

=========  ==================================  =================================  ==============
name       paper                               loss                               forward+backward
=========  ==================================  =================================  ==============
pgd        Madry et al., ICLR 2018             CE on a batch, 1 - clean_share     steps + 1
                                               of it PGD examples
fgsm_rs    Wong, Rice & Kolter, ICLR 2020      as pgd, one step of 1.25 eps       2
                                               from a random start
trades     Zhang et al., ICML 2019             CE(x) + beta KL(p(x) || p(x'))     steps + 2 (+1 fwd)
mart       Wang et al., ICLR 2020              BCE(x') + beta KL * (1 - p_y(x))   steps + 2
=========  ==================================  =================================  ==============

Options: ``clean_share`` is used by pgd and fgsm_rs, ``beta`` (``adv.beta``, whose default is
both papers' value) by trades and mart, ``alpha``/``steps`` by all but fgsm_rs (its step is 1.25 eps); each objective accepts
and ignores the others, so a training loop calls any of them the same way. Crafting steps cost
less than a training step (no weight gradients). ``eps = 0`` gives the clean loss.

Schedules: :func:`warmup_eps` / :func:`warmup_budget` (``adv.warmup_epochs``) and the fgsm_rs
guard :func:`catastrophic_overfit`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from torch import Tensor

from fakeproof.errors import registered
from fakeproof.objectives._common import ObjectiveError, craft_precision
from fakeproof.objectives.fgsm_rs import fgsm_rs_objective
from fakeproof.objectives.mart import mart_objective
from fakeproof.objectives.pgd import pgd_objective
from fakeproof.objectives.trades import trades_objective

Objective = Callable[..., tuple[Tensor, dict]]

#: ``adv.method`` -> objective (config.AdvParams.method lists the same names; a test checks).
OBJECTIVES: dict[str, Objective] = {
    "pgd": pgd_objective,
    "fgsm_rs": fgsm_rs_objective,
    "trades": trades_objective,
    "mart": mart_objective,
}

#: Catastrophic overfitting: val PGD accuracy falling by more than this between two epochs.
OVERFIT_DROP = 0.2


def get_objective(name: str) -> Objective:
    return registered(OBJECTIVES, name, ObjectiveError, f"adv.method = {name!r}: unknown")


def warmup_eps(ap: Any, epoch: float) -> float:
    """eps for (possibly fractional) ``epoch`` (0-based) under ``adv.warmup_epochs``: a linear
    ramp from 0 to ``adv.eps`` over the first ``warmup_epochs`` epochs, then ``adv.eps``.

    Pass ``epoch + step / steps_per_epoch`` for a per-step ramp (the usual practice); an integer
    epoch gives a staircase that starts at 0 (a clean first epoch).
    """
    w = int(getattr(ap, "warmup_epochs", 0) or 0)
    if w <= 0:
        return float(ap.eps)
    return float(ap.eps) * min(1.0, max(0.0, float(epoch)) / w)


def train_alpha(ap: Any) -> float:
    """``adv.alpha``, or the paper's step when it is null: ``1.25 * eps`` for fgsm_rs (Wong et
    al., ICLR 2020), ``2.5 * eps / steps`` for the PGD-based objectives (Madry et al., ICLR
    2018), which lets ``steps`` steps walk from any start point to the far side of the ball."""
    if getattr(ap, "alpha", None) is not None:
        return float(ap.alpha)
    if ap.method == "fgsm_rs":
        return 1.25 * float(ap.eps)
    return 2.5 * float(ap.eps) / max(int(ap.steps), 1)


def warmup_budget(ap: Any, epoch: float) -> tuple[float, float]:
    """``(eps, alpha)`` for ``epoch`` under the warm-up: alpha scales with eps, so the PGD steps
    keep walking the same multiple of the radius."""
    eps = warmup_eps(ap, epoch)
    full, alpha = float(ap.eps), train_alpha(ap)
    return eps, (alpha * eps / full if full > 0 else alpha)


def catastrophic_overfit(prev_val_pgd_acc: Optional[float], val_pgd_acc: Optional[float],
                         drop: float = OVERFIT_DROP) -> bool:
    """Did val PGD accuracy collapse between two epochs (catastrophic overfitting, Wong et al. 2020)?

    Rule (the authors' early stop): True when ``val_pgd_acc < prev_val_pgd_acc - drop`` with
    ``drop = 0.2`` (20 points of accuracy), or when the new value is not a finite number while
    the previous one was. No previous value (the first epoch) gives False. On True the caller
    keeps the last good epoch's weights, stops, and says so in the log and the metrics.
    """
    if prev_val_pgd_acc is None or not math.isfinite(float(prev_val_pgd_acc)):
        return False
    if val_pgd_acc is None or not math.isfinite(float(val_pgd_acc)):
        return True
    return float(val_pgd_acc) < float(prev_val_pgd_acc) - drop


__all__ = ["OBJECTIVES", "OVERFIT_DROP", "Objective", "ObjectiveError", "catastrophic_overfit",
           "craft_precision", "fgsm_rs_objective", "get_objective", "mart_objective",
           "pgd_objective", "trades_objective", "train_alpha", "warmup_budget", "warmup_eps"]
