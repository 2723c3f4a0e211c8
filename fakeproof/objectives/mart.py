"""``mart``: misclassification-aware adversarial training.

Wang, Zou, Yi, Bailey, Ma & Gu, "Improving Adversarial Robustness Requires Revisiting
Misclassified Examples", ICLR 2020 (openreview rklOg6EFwS):

    loss = BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x))   (beta: ``adv.beta``)

where x' are PGD (cross-entropy) examples and the boosted cross-entropy
``BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k)`` also pushes down the strongest wrong class.
For two classes ``max_{k != y} p_k = 1 - p_y``, so BCE is exactly twice the cross-entropy; it is
computed that way (stable for confident samples). The KL is weighted by ``1 - p_y`` on the clean
image, so misclassified samples count more. Both terms are class-weighted means through the
two-logit view; as in the authors' code, gradients flow through the clean and the adversarial
probabilities. ``clean_share`` is not used.

Cost per step: ``steps`` forward+backward passes (crafting) + 2 forward+backward (clean and
adversarial terms).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fakeproof.attacks import pgd
from fakeproof.attacks._base import kl_per_sample
from fakeproof.objectives._common import (accuracy, ce, crafting, logits2, prepare_kl,
                                          weighted_mean)

def mart_objective(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, alpha: float,
                   steps: int, weights: Tensor, generator: torch.Generator,
                   clean_share: float = 0.0, beta: float, random_start: bool = True,
                   craft_model: Optional[nn.Module] = None) -> tuple[Tensor, dict]:
    """MART loss on a batch; stats ``loss``, ``bce`` (adversarial), ``kl`` (weighted),
    ``clean_acc``, ``adv_acc``. With ``eps = 0``, x' = x: loss = 2 CE(x) (one forward pass).
    """
    x, y, eps, w, beta, target = prepare_kl(model, images, labels, eps, weights, beta,
                                            clean_share, craft_model)
    adv = None
    if eps > 0:
        with crafting(target) as net:
            adv = pgd(net, x, y, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                      generator=generator).detach()
    clean = logits2(model, x)
    adv_logits = clean if adv is None else logits2(model, adv)
    bce = 2 * ce(adv_logits, y)  # -log p_y - log(1 - p_other), p_other = 1 - p_y for two classes
    p_true = torch.softmax(clean, dim=1).gather(1, y[:, None])[:, 0]
    kl = kl_per_sample(clean, adv_logits) * (1 - p_true) if adv is not None \
        else torch.zeros_like(p_true)
    bce_mean = weighted_mean(bce, y, w)
    kl_mean = weighted_mean(kl, y, w)
    loss = bce_mean + beta * kl_mean
    return loss, {"loss": float(loss.detach()), "bce": float(bce_mean.detach()),
                  "kl": float(kl_mean.detach()), "clean_acc": accuracy(clean.detach(), y),
                  "adv_acc": accuracy(adv_logits.detach(), y)}
