"""APGD: auto-PGD, the step-size-free PGD of AutoAttack (here APGD-CE).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv:2003.01690; reference code fra31/auto-attack).
Norms: L-inf and L2. One run costs ``steps + 1`` forward+backward passes per image (the start
point is evaluated too); restarts after the first attack only the images not yet fooled.

Algorithm 1 of the paper, as in the authors' code:

- start at a random point of the ball (L-inf: uniform noise rescaled so its largest entry is
  ``eps``; L2: a Gaussian direction of length ``eps``), step size ``eta = 2 * eps`` per image;
- ``z = P(x_k + eta * s(grad))`` with ``s = sign`` (L-inf) or ``grad / ||grad||_2`` (L2), then
  the momentum step ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`` with ``a = 0.75``
  (``a = 1`` on the first step);
- checkpoints after ``p_j * steps`` iterations with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (in iterations: the first gap is
  ``max(int(0.22 steps), 1)``, each gap shrinks by ``max(int(0.03 steps), 1)`` down to
  ``max(int(0.06 steps), 1)``);
- at a checkpoint, per image, the step size is halved and the iterate restarts from the best
  point found so far if (1) the loss increased in at most ``rho`` of the steps since the last
  checkpoint, or (2) the step size was not halved at the last checkpoint and the best loss has not
  improved since it.

The result per image is the highest-loss point found. With two classes the loss (CE or margin)
is an increasing function of ``-margin`` (``ce = softplus(-margin)``), so points are compared by
``-margin``: the same order, but in full float precision (CE rounds to log 2 for margins below
about 1e-7, which would blind the step-size rule near the decision boundary), and the best
point fools the model whenever any iterate did. The loss only shapes the gradient.

Defaults: ``steps=20``, ``norm='linf'``, ``loss='ce'``, ``rho=0.75``, ``restarts=1``.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import Tensor

from fakeproof.attacks._base import (AttackError, Model, check_inputs, check_int, check_loss,
                                     clip_box, input_grad, linf_box, make_generator,
                                     margin, model_guard, normal, normalize_l2, project, uniform,
                                     worst_over_restarts)

log = logging.getLogger(__name__)


def _start(x: Tensor, eps: float, norm: str, gen: torch.Generator) -> Tensor:
    dims = (1,) * (x.ndim - 1)
    if norm == "linf":
        t = uniform(tuple(x.shape), gen, x) * 2 - 1
        t = t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *dims)
    else:
        t = normalize_l2(normal(tuple(x.shape), gen, x))
    return (x + eps * t).clamp_(0.0, 1.0)


def _run(model: Model, x: Tensor, y: Tensor, eps: float, steps: int, norm: str, loss: str,
         rho: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One APGD run: (highest-loss point, its score ``-margin``) per image."""
    n = x.shape[0]
    gap = max(int(0.22 * steps), 1)
    gap_min = max(int(0.06 * steps), 1)
    gap_decr = max(int(0.03 * steps), 1)

    x_adv = _start(x, eps, norm, gen)
    grad, _, logits = input_grad(model, x_adv, y, loss)
    score = -margin(logits, y)
    x_best, grad_best, score_best = x_adv.clone(), grad.clone(), score.clone()
    eta = torch.full((n,) + (1,) * (x.ndim - 1), 2.0 * eps, device=x.device, dtype=x.dtype)
    x_prev = x_adv
    box = linf_box(x, eps) if norm == "linf" else None
    trace = [score]  # trace[k] = score at iterate k
    since_check = 0
    score_best_at_check = score_best.clone()
    halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)

    for i in range(steps):
        with torch.no_grad():
            a = 0.75 if i > 0 else 1.0
            momentum = x_adv - x_prev
            x_prev = x_adv
            if box is not None:
                z = clip_box(x_adv + eta * grad.sign(), box)
                x_adv = clip_box(x_adv + a * (z - x_adv) + (1 - a) * momentum, box)
            else:
                z = project(x_adv + eta * normalize_l2(grad), x, eps, norm)
                x_adv = project(x_adv + a * (z - x_adv) + (1 - a) * momentum, x, eps, norm)

        grad, _, logits = input_grad(model, x_adv, y, loss)

        with torch.no_grad():
            score = -margin(logits, y)
            trace.append(score)
            better = score > score_best
            x_best[better] = x_adv[better]
            grad_best[better] = grad[better]
            score_best = torch.where(better, score, score_best)

            since_check += 1
            if since_check == gap:
                window = torch.stack(trace[-(gap + 1):])
                increases = (window[1:] > window[:-1]).sum(dim=0)
                oscillating = increases <= rho * gap
                stalled = ~halved_at_check & (score_best_at_check >= score_best)
                halve = oscillating | stalled
                halved_at_check = halve
                score_best_at_check = score_best.clone()
                if bool(halve.any()):
                    eta[halve] /= 2.0
                    x_adv[halve] = x_best[halve]
                    grad[halve] = grad_best[halve]
                since_check = 0
                gap = max(gap - gap_decr, gap_min)
    return x_best, score_best


def apgd(model: Model, images: Tensor, labels: Tensor, *, eps: float, steps: int = 20,
         norm: str = "linf", loss: str = "ce", rho: float = 0.75, restarts: int = 1,
         seed: Optional[int] = 0, generator: Optional[torch.Generator] = None) -> Tensor:
    """Untargeted APGD (Croce & Hein 2020); ``loss='ce'`` is APGD-CE.

    Args:
        model: images in [0, 1] -> logits (N, 2) or a single fake logit (N, 1) / (N,); used in
            the train/eval mode the caller set, and left as it was.
        images: float (N, 3, H, W) in [0, 1].
        labels: 0 = real, 1 = fake, shape (N,).
        eps: radius in pixel units (L-inf e.g. 4/255; L2 e.g. 0.5); 0 (or an empty batch)
            returns a copy of ``images``.
        steps: iterations per run (the paper uses 100 in AutoAttack; 20 is a cheap default).
        norm: ``'linf'`` or ``'l2'``.
        loss: ``'ce'`` or ``'margin'`` (DLR, the paper's other loss, needs three classes).
        rho: oscillation threshold of the step-size rule (share of steps that must raise the loss).
        restarts: independent random starts; per image the first that fools the model wins, else
            the highest loss. The first run is the single run of the same seed.
        seed: seeds a fresh CPU generator when ``generator`` is None.
        generator: a :class:`torch.Generator` to draw the random starts from (advanced).

    Returns:
        Adversarial images inside the ball and [0, 1].
    """
    x, y, eps = check_inputs(images, labels, eps, norm)
    check_int("steps", steps)
    check_int("restarts", restarts)
    check_loss(loss)
    if isinstance(rho, bool) or not (0.0 <= float(rho) <= 1.0):
        raise AttackError(f"rho: {rho!r} must lie in [0, 1]")
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    gen = make_generator(seed, generator)
    with model_guard(model):
        def run(idx: Tensor) -> tuple[Tensor, Tensor]:
            return _run(model, x[idx], y[idx], eps, steps, norm, loss, float(rho), gen)

        return worst_over_restarts(x, restarts, run, "apgd")
