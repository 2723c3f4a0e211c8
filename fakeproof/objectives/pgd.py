"""``pgd``: PGD adversarial training.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018 (arXiv:1706.06083): minimise the cross-entropy on L-inf PGD examples crafted
against the current weights. As fakeproof trained before the objectives existed: a share
``clean_share`` of the batch (its first images) stays clean, the rest is replaced by PGD examples
(``steps`` steps of ``alpha``, random start in the ball), and the loss is the class-weighted
cross-entropy of the two-logit view over the mixed batch, in one forward pass.

Cost per step: ``steps`` forward+backward passes (crafting, on the adversarial share) + one
forward+backward (the update). ``clean_share: 0`` is Madry et al.'s all-adversarial recipe.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fakeproof.attacks import pgd
from fakeproof.objectives._common import (accuracy, ce, check_beta, check_share, craft_target,
                                          crafting, logits2, prepare, weighted_mean)


def pgd_objective(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, alpha: float,
                  steps: int, weights: Tensor, generator: torch.Generator, clean_share: float = 0.0,
                  beta: float = 0.0, random_start: bool = True,
                  craft_model: Optional[nn.Module] = None) -> tuple[Tensor, dict]:
    """Class-weighted CE on a batch whose last ``1 - clean_share`` share is PGD examples.

    ``beta`` is not used (the signature is shared by every objective). Returns ``(loss, stats)``
    with stats ``loss``, ``clean_acc`` and ``adv_acc`` (training accuracies of the two shares,
    NaN when a share is empty), ``adv_share``.
    """
    x, y, eps, w = prepare(images, labels, eps, weights)
    check_beta(beta)
    n_clean = int(round(check_share("clean_share", clean_share) * len(y)))
    if n_clean < len(y) and eps > 0:
        with crafting(craft_target(model, craft_model)) as net:
            adv = pgd(net, x[n_clean:], y[n_clean:], eps=eps,
                      alpha=alpha, steps=steps, random_start=random_start, generator=generator)
        x = torch.cat([x[:n_clean], adv.detach()])
    else:
        n_clean = len(y)
    logits = logits2(model, x)
    loss = weighted_mean(ce(logits, y), y, w)
    z = logits.detach()
    stats = {"loss": float(loss.detach()), "clean_acc": accuracy(z[:n_clean], y[:n_clean]),
             "adv_acc": accuracy(z[n_clean:], y[n_clean:]), "adv_share": 1 - n_clean / len(y)}
    return loss, stats
