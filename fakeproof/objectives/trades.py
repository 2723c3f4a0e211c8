"""``trades``: TRADES, the trade-off between clean accuracy and robustness.

Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between Robustness
and Accuracy", ICML 2019 (arXiv:1901.08573):

    loss = CE(f(x), y) + beta * KL(p(x) || p(x')),   x' = argmax_{|x' - x| <= eps} KL(p(x) || p(x'))

with beta = ``adv.beta`` (its default is the paper's CIFAR-10 choice; larger trades clean
accuracy for robustness). The inner maximisation is :func:`fakeproof.attacks.pgd` on the KL view of the model
(:class:`fakeproof.attacks._base.KLView`: the margin loss of ``[0, KL]`` is the KL), ``steps``
steps of ``alpha`` from a uniform random start in the ball (the authors start at
``x + 0.001 N(0, 1)``: at ``x' = x`` the KL has zero gradient, so some start off ``x`` is needed).
Both terms go through the two-logit view and are class-weighted means; as in the authors' code,
gradients flow through both p(x) and p(x') in the KL. ``clean_share`` is not used (the clean term
is part of the loss).

Cost per step: 1 forward (the clean reference) + ``steps`` forward+backward passes (crafting)
+ 2 forward+backward (clean and adversarial terms).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fakeproof.attacks import pgd
from fakeproof.attacks._base import KLView, kl_per_sample
from fakeproof.objectives._common import (accuracy, ce, crafting, logits2, prepare_kl,
                                          weighted_mean)

def trades_objective(model: nn.Module, images: Tensor, labels: Tensor, *, eps: float, alpha: float,
                     steps: int, weights: Tensor, generator: torch.Generator,
                     clean_share: float = 0.0, beta: float, random_start: bool = True,
                     craft_model: Optional[nn.Module] = None) -> tuple[Tensor, dict]:
    """TRADES loss on a batch; stats ``loss``, ``ce`` (clean), ``kl``, ``clean_acc``, ``adv_acc``.

    ``clean_share`` and ``random_start`` are not used (the start is always random). With
    ``eps = 0`` nothing is crafted and x' = x: the KL term is exactly 0 (one forward pass).
    """
    x, y, eps, w, beta, target = prepare_kl(model, images, labels, eps, weights, beta,
                                            clean_share, craft_model)
    adv = None
    if eps > 0:
        with crafting(target) as net:
            with torch.no_grad():
                ref = logits2(net, x)
            adv = pgd(KLView(net, ref), x, torch.zeros_like(y), eps=eps, alpha=alpha,
                      steps=steps, random_start=True, loss="margin", generator=generator).detach()
    clean = logits2(model, x)
    if adv is None:
        adv_logits, kl = clean, torch.zeros_like(y, dtype=clean.dtype)
    else:
        adv_logits = logits2(model, adv)
        kl = kl_per_sample(clean, adv_logits)
    ce_clean = weighted_mean(ce(clean, y), y, w)
    kl_mean = weighted_mean(kl, y, w)
    loss = ce_clean + beta * kl_mean
    return loss, {"loss": float(loss.detach()), "ce": float(ce_clean.detach()),
                  "kl": float(kl_mean.detach()), "clean_acc": accuracy(clean.detach(), y),
                  "adv_acc": accuracy(adv_logits.detach(), y)}
