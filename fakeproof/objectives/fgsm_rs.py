"""``fgsm_rs``: fast adversarial training, FGSM with a random start.

Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020
(arXiv:2001.03994): start uniformly in the L-inf ball, take one signed-gradient step of
``1.25 * eps`` (their recommended step), project back into the ball and [0, 1], and minimise the
cross-entropy there. Crafted as PGD with one step from a random start (:func:`fakeproof.attacks.
pgd` with ``steps=1``, which is exactly this), so it shares PGD's conventions and generator.

The step follows eps (``step * eps``), so an eps warm-up scales it too; ``alpha`` and ``steps``
are not used. A share ``clean_share`` of the batch stays clean as in :mod:`.pgd` (0 = the paper).
Wong et al. guard against catastrophic overfitting (PGD accuracy collapsing within an epoch) by
early stopping: see :func:`fakeproof.objectives.catastrophic_overfit`.

Cost per step: 1 forward+backward (crafting) + 1 forward+backward (the update), about 2x a clean
step.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fakeproof.objectives.pgd import pgd_objective

STEP = 1.25  # Wong et al.'s step, in units of eps


def fgsm_rs_objective(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float,
                      alpha: Optional[float] = None, steps: int = 1, weights: Tensor,
                      generator: torch.Generator, clean_share: float = 0.0, beta: float = 0.0,
                      random_start: bool = True, craft_model: Optional[nn.Module] = None,
                      step: float = STEP) -> tuple[Tensor, dict]:
    """Class-weighted CE on FGSM-RS examples (one step of ``step * eps`` from a random start).

    ``alpha``, ``steps``, ``beta`` and ``random_start`` are not used (always a random start:
    without it FGSM training overfits catastrophically, Wong et al. Sec. 4). Stats as
    :func:`~fakeproof.objectives.pgd.pgd_objective`.
    """
    return pgd_objective(model, images, labels, eps=eps, alpha=step * float(eps), steps=1,
                         weights=weights, generator=generator, clean_share=clean_share, beta=beta,
                         random_start=True, craft_model=craft_model)
