"""Square Attack: score-based, gradient-free random search (L-inf).

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (arXiv:1912.00049). Norm: L-inf. It reads only the model's
logits (no gradients), so it is the check against gradient masking: a model that looks robust to
PGD but not to Square is obfuscating its gradients.

Algorithm (untargeted, margin loss ``logit_y - logit_other``, minimised):

- start from vertical stripes: every column of every channel gets ``+eps`` or ``-eps``
  (one query);
- each iteration, for every image not yet fooled independently: pick a square window of side
  ``s = round(sqrt(p * H * W))`` (at least 1, at most min(H, W)) at a uniformly random position,
  and set the perturbation inside it to ``+eps`` or ``-eps`` per channel (re-drawn, without a
  query, while the proposal would not change the image); keep the proposal if it lowers the
  margin (one query);
- ``p`` follows the paper's schedule, rescaled to the budget: ``p_init`` halves after
  10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 iterations;
- an image stops being queried once fooled (margin <= 0), as in the paper: the fastest way to
  a robust-accuracy number. With ``early_stop=False`` every image keeps being queried for the
  whole budget and keeps lowering its margin past the boundary: its final score is then as
  adverse as the search could make it, which attacked AUCs and video-level scores need (with an
  early stop the scores sit just past the boundary and AUCs built from them are optimistic).

``queries`` is the budget per image counting every model evaluation, the stripe start included
(at most ``queries`` forward passes per image, fewer for images fooled early). Defaults:
``queries=300`` (params ``eval.square_queries``; AutoAttack uses 5000), ``p_init=0.8``.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import Tensor

from fakeproof.attacks._base import (AttackError, Model, check_inputs, check_int, clip_box,
                                     linf_box, make_generator, margin, model_guard, random_signs,
                                     two_logits, uniform)

log = logging.getLogger(__name__)

_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_MAX_REDRAWS = 16


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Share of the image covered by the square at iteration ``it`` of ``n_iters``."""
    scaled = int(it / max(n_iters, 1) * 10000)
    halvings = sum(scaled > b for b in _SCHEDULE)
    return p_init / 2 ** halvings


def _windows(n: int, h: int, w: int, s: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """(n, 1, h, w) masks of one s x s square per image at a uniformly random position."""
    top = (uniform((n,), gen, like) * (h - s + 1)).long().clamp_(max=h - s)
    left = (uniform((n,), gen, like) * (w - s + 1)).long().clamp_(max=w - s)
    rows = torch.arange(h, device=like.device)
    cols = torch.arange(w, device=like.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(like.dtype)


def square(model: Model, images: Tensor, labels: Tensor, *, eps: float, queries: int = 300,
           p_init: float = 0.8, seed: Optional[int] = 0,
           generator: Optional[torch.Generator] = None, early_stop: bool = True) -> Tensor:
    """Untargeted L-inf Square Attack (Andriushchenko et al. 2020) with a per-image query budget.

    Args:
        model: images in [0, 1] -> logits (N, 2) or a single fake logit (N, 1) / (N,); only
            forward passes, under ``torch.no_grad``; used in the mode the caller set.
        images: float (N, 3, H, W) in [0, 1].
        labels: 0 = real, 1 = fake, shape (N,).
        eps: L-inf radius in pixel units; 0 (or an empty batch) returns a copy of
            ``images``.
        queries: model evaluations per image, the start included (>= 1).
        p_init: initial share of the image a square covers, in (0, 1].
        seed: seeds a fresh CPU generator when ``generator`` is None.
        generator: a :class:`torch.Generator` to draw from (advanced).
        early_stop: stop querying an image once it is fooled (the paper); False runs the whole
            budget on every image (for scores, not only decisions).

    Returns:
        The best adversarial images found (lowest margin; with ``early_stop`` the first that
        fooled the model).
    """
    x, y, eps = check_inputs(images, labels, eps, "linf")
    check_int("queries", queries)
    if isinstance(p_init, bool) or not (0.0 < float(p_init) <= 1.0):
        raise AttackError(f"p_init: {p_init!r} must lie in (0, 1]")
    if eps == 0 or x.shape[0] == 0:
        return x.clone()
    gen = make_generator(seed, generator)
    n, c, h, w = x.shape
    n_iters = queries - 1
    with model_guard(model), torch.no_grad():
        box = linf_box(x, eps)
        x_best = clip_box(x + eps * random_signs((n, c, 1, w), gen, x), box)
        margin_best = margin(two_logits(model, x_best), y)
        used = torch.ones(n, dtype=torch.long, device=x.device)
        for it in range(n_iters):
            active = ((margin_best > 0) if early_stop
                      else torch.ones_like(margin_best, dtype=torch.bool)).nonzero().flatten()
            if active.numel() == 0:
                break
            m = active.numel()
            everyone = m == n  # skip the gathers while no image is fooled yet
            xb = x_best if everyone else x_best[active]
            box_a = box if everyone else (box[0][active], box[1][active])
            p = p_selection(float(p_init), it, n_iters)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            mask = _windows(m, h, w, s, gen, x)
            signs = random_signs((m, c, 1, 1), gen, x)
            x_new = clip_box(xb + mask * (2 * eps) * signs, box_a)
            same = (x_new == xb).flatten(1).all(dim=1)
            for _ in range(_MAX_REDRAWS):
                if not bool(same.any()):
                    break
                redo = same.nonzero().flatten()
                signs[redo] = random_signs((redo.numel(), c, 1, 1), gen, x)
                x_new[redo] = clip_box(xb[redo] + mask[redo] * (2 * eps) * signs[redo],
                                       (box_a[0][redo], box_a[1][redo]))
                same = (x_new == xb).flatten(1).all(dim=1)
            new_margin = margin(two_logits(model, x_new), y if everyone else y[active])
            used[active] += 1
            better = new_margin < margin_best[active]
            rows = active[better]
            x_best[rows] = x_new[better]
            margin_best[rows] = new_margin[better]
        fooled = int((margin_best <= 0).sum())
        log.debug("square: %d/%d images fooled, mean %.1f queries per image", fooled, n,
                  float(used.float().mean()))
        return x_best
