"""FGSM: the fast gradient sign method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015
(arXiv:1412.6572). Norm: L-inf. One forward and one backward pass per image:

    x_adv = clip_[0,1](x + eps * sign(grad_x loss(f(x), y)))

Defaults: ``loss='ce'`` (cross-entropy of the two-logit view). Deterministic (no randomness).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from fakeproof.attacks._base import (Model, check_inputs, check_loss, clip_box, input_grad,
                                     linf_box, model_guard)

log = logging.getLogger(__name__)


def fgsm(model: Model, images: Tensor, labels: Tensor, *, eps: float, loss: str = "ce") -> Tensor:
    """One signed-gradient step of size ``eps`` (L-inf), clamped to [0, 1].

    Args:
        model: images in [0, 1] -> logits (N, 2) or a single fake logit (N, 1) / (N,); used in
            the train/eval mode the caller set, and left as it was.
        images: float (N, 3, H, W) in [0, 1].
        labels: 0 = real, 1 = fake, shape (N,), long or float.
        eps: L-inf radius in pixel units (e.g. 4/255); 0 (or an empty batch) returns a copy
            of ``images``.
        loss: ``'ce'`` or ``'margin'`` (see :func:`fakeproof.attacks._base.loss_per_sample`).

    Returns:
        Adversarial images, same shape and dtype, with ``max |x_adv - x| <= eps``.
    """
    x, y, eps = check_inputs(images, labels, eps, "linf")
    check_loss(loss)
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    with model_guard(model):
        grad, _, _ = input_grad(model, x, y, loss)
        with torch.no_grad():
            return clip_box(x + eps * grad.sign(), linf_box(x, eps))
