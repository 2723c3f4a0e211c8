"""PGD: projected gradient descent with random start and restarts.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018 (arXiv:1706.06083). Norms: L-inf (signed-gradient steps) and L2
(normalised-gradient steps). Each run costs ``steps`` forward+backward passes per image; with
``restarts > 1`` each run adds one forward pass to score its end point, and restarts after the
first attack only the images not yet fooled.

Defaults: ``steps=10``, ``alpha=None`` meaning ``2.5 * eps / steps`` (Madry et al.'s rule: the
steps can walk 2.5 times the radius, so the ball's boundary is reachable from any start),
``random_start=True`` (uniform in the L-inf cube; for L2 a random direction with a radius uniform
in [0, eps]), ``restarts=1``, ``loss='ce'``.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor

from fakeproof.attacks._base import (AttackError, Model, check_inputs, check_int, check_loss,
                                     clip_box, input_grad, linf_box, make_generator,
                                     margin, model_guard, normalize_l2, project, random_point,
                                     two_logits, worst_over_restarts)

log = logging.getLogger(__name__)


def _run(model: Model, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, norm: str,
         start: bool, loss: str, gen: torch.Generator) -> Tensor:
    x_adv = random_point(x, eps, norm, gen) if start else x.clone()
    box = linf_box(x, eps) if norm == "linf" else None
    for _ in range(steps):
        grad, _, _ = input_grad(model, x_adv, y, loss)
        with torch.no_grad():
            if box is not None:
                x_adv = clip_box(x_adv + alpha * grad.sign(), box)
            else:
                x_adv = project(x_adv + alpha * normalize_l2(grad), x, eps, norm)
    return x_adv


def pgd(model: Model, images: Tensor, labels: Tensor, *, eps: float, alpha: Optional[float] = None,
        steps: int = 10, norm: str = "linf", random_start: bool = True, restarts: int = 1,
        loss: str = "ce", seed: Optional[int] = 0, generator: Optional[torch.Generator] = None
        ) -> Tensor:
    """Untargeted PGD (Madry et al. 2018), L-inf or L2.

    Args:
        model: images in [0, 1] -> logits (N, 2) or a single fake logit (N, 1) / (N,); used in
            the train/eval mode the caller set, and left as it was.
        images: float (N, 3, H, W) in [0, 1].
        labels: 0 = real, 1 = fake, shape (N,).
        eps: radius of the ball in pixel units (L-inf: e.g. 4/255; L2: e.g. 0.5); 0 (or an empty
            batch) returns a copy of ``images``.
        alpha: step size; ``None`` = ``2.5 * eps / steps``.
        steps: gradient steps per run.
        norm: ``'linf'`` or ``'l2'``.
        random_start: start each run at a random point of the ball (required for restarts > 1).
        restarts: independent runs; per image the first run that fools the model wins, else the
            run with the highest final loss (compared by ``-margin``, which orders points as CE
            does for two classes, in full precision). The first run is the single run of the
            same seed, so restarts are never weaker than one run, image by image.
        loss: ``'ce'`` or ``'margin'``.
        seed: seeds a fresh CPU generator when ``generator`` is None.
        generator: a :class:`torch.Generator` to draw the random starts from (advanced).

    Returns:
        Adversarial images inside the ball and [0, 1] after every step.
    """
    x, y, eps = check_inputs(images, labels, eps, norm)
    check_int("steps", steps)
    check_int("restarts", restarts)
    check_loss(loss)
    if restarts > 1 and not random_start:
        raise AttackError("restarts: > 1 repeats the same run without random_start; "
                          "set random_start=True or restarts=1")
    if alpha is None:
        alpha = 2.5 * eps / steps
    try:
        step = float(alpha)
    except (TypeError, ValueError):
        step = math.nan
    if isinstance(alpha, bool) or not math.isfinite(step) or step < 0:
        raise AttackError(f"alpha: {alpha!r} must be a finite step size >= 0")
    alpha = step
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    gen = make_generator(seed, generator)
    with model_guard(model):
        if restarts == 1:
            return _run(model, x, y, eps, alpha, steps, norm, random_start, loss, gen)

        def run(idx: Tensor) -> tuple[Tensor, Tensor]:
            adv = _run(model, x[idx], y[idx], eps, alpha, steps, norm, True, loss, gen)
            with torch.no_grad():
                return adv, -margin(two_logits(model, adv), y[idx])

        return worst_over_restarts(x, restarts, run, "pgd")
