"""Gradient accumulation (``train.grad_accum: N``): the update of a batch N times larger, in N
forward/backward passes of one micro-batch each, for GPUs whose memory holds only a micro-batch.

The training loss is a weighted mean, ``sum_i w_i l_i / sum_i w_i`` (``balanced_bce`` weighs each
class by the inverse of its share; plain ``bce`` has ``w_i = 1``). Scaling each micro-batch's
mean by ``1 / N`` is exact only when every micro-batch carries the same total weight; here each
micro-batch's mean is scaled by its share of the **whole** batch's total weight, known before any
forward pass because the weights depend on the labels alone. The summed gradients then equal
those of the loss over the concatenated batch, up to float rounding, for any class mix and a short
last micro-batch. What accumulation cannot reproduce: BatchNorm statistics (each micro-batch
normalises by its own mean and variance, and running statistics are updated N times).

:func:`micro_batches` cuts one large batch into micro-batches; :func:`accumulated_backward` runs
forward and backward over them. Both are pure with respect to the optimiser: the caller zeroes
gradients before and steps after, exactly once per large batch.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional, Sequence

import torch
from torch import Tensor


def micro_batches(images: Tensor, labels: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    """``(images, labels)`` cut along the batch dimension into pieces of at most ``size`` items
    (views, no copies; the last piece may be shorter)."""
    if size < 1:
        raise ValueError(f"micro-batch size must be >= 1, got {size}")
    return list(zip(torch.split(images, size), torch.split(labels, size)))


def accumulated_backward(batches: Sequence[tuple[Tensor, Tensor]],
                         batch_loss: Callable[[Tensor, Tensor], Tensor],
                         item_weights: Callable[[Tensor], Tensor],
                         backward: Callable[[Tensor], None] = Tensor.backward,
                         no_sync: Optional[Callable[[], ContextManager]] = None) -> Tensor:
    """Accumulate into ``.grad`` the gradients of ``sum w_i l_i / sum w_i`` over every item of
    ``batches``, one micro-batch's graph at a time; return that loss (detached).

    Args:
        batches: ``(images, labels)`` micro-batches (e.g. from :func:`micro_batches`).
        batch_loss: ``(images, labels) -> loss``, the training loss of one micro-batch as the loop
            computes it for a whole batch: the weighted mean ``sum w_i l_i / sum w_i`` (runs the
            model, under autocast for AMP; may craft adversarial examples first). Each micro-batch's
            mean is rescaled by its share of the total weight, which makes the sum exact.
        item_weights: ``labels -> (B,)`` the per-item weights of that mean (labels only, so the
            total is known before the first forward pass).
        backward: how to backpropagate one micro-batch's share, e.g.
            ``lambda loss: scaler.scale(loss).backward()`` for fp16 AMP.
        no_sync: under DDP, ``ddp_model.no_sync``: gradients are all-reduced once, on the last
            micro-batch, not after each one.
    """
    if not batches:
        raise ValueError("accumulated_backward: no micro-batches")
    shares = [item_weights(y).sum() for _, y in batches]
    total_weight = sum(shares)
    loss = None
    for k, ((x, y), w) in enumerate(zip(batches, shares)):
        last = k == len(batches) - 1
        with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
            share = batch_loss(x, y) * (w / total_weight)
            backward(share)
        loss = share.detach() if loss is None else loss + share.detach()
    return loss


__all__ = ["accumulated_backward", "micro_batches"]
