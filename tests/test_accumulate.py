"""Gradient accumulation (train.grad_accum): N micro-batches of 4 give the gradients of one batch
of 4N under the class-weighted training loss, on a model without BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fakeproof.accumulate import accumulated_backward, micro_batches

WEIGHTS = torch.tensor([0.7, 1.9], dtype=torch.float64)  # [real, fake], as class_weights gives


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 1)).double()


def _per_item(model: nn.Module):
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y.double(),
                                                             reduction="none")
    return fn


def _weights(y: torch.Tensor) -> torch.Tensor:
    return WEIGHTS[y.long()]


def _batch_loss(model: nn.Module):
    """The training loss of one batch: the class-weighted mean (fakeproof.train.weighted_bce)."""
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (_per_item(model)(x, y) * _weights(y)).sum() / _weights(y).sum()
    return fn


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("n_micro, extra", [(3, 0), (4, 2)])
def test_n_micro_batches_of_4_give_the_gradients_of_one_batch_of_4n(n_micro: int, extra: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4 * n_micro + extra, 3, 8, 8, generator=g, dtype=torch.float64)
    # classes unevenly spread over the micro-batches: averaging per-micro-batch means would be wrong
    y = torch.tensor(([1, 1, 1, 1] + [0, 0, 0, 1] * (n_micro - 1) + [0] * extra)[: len(x)])
    model = _model()

    loss = _batch_loss(model)(x, y)  # one batch of 4N
    loss.backward()
    full = _grads(model)

    model.zero_grad(set_to_none=True)
    micro = micro_batches(x, y, 4)
    assert [len(b[1]) for b in micro] == [4] * n_micro + ([extra] if extra else [])
    total = accumulated_backward(micro, _batch_loss(model), _weights)
    accumulated = _grads(model)
    assert total.item() == pytest.approx(loss.item(), rel=1e-12)
    for a, b in zip(full, accumulated):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)

    model.zero_grad(set_to_none=True)  # the naive scaling (1/N per micro-batch) is not the same
    for xb, yb in micro:
        (_batch_loss(model)(xb, yb) / len(micro)).backward()
    assert not all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(full, _grads(model)))


def test_one_micro_batch_is_the_plain_loss_bit_for_bit() -> None:
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 1])
    model = _model()
    loss = _batch_loss(model)(x, y)
    loss.backward()
    full = _grads(model)
    model.zero_grad(set_to_none=True)
    calls = []
    total = accumulated_backward(micro_batches(x, y, 6), _batch_loss(model), _weights,
                                 backward=lambda l: (calls.append(1), l.backward()))
    assert calls == [1] and total.item() == loss.item()
    assert all(torch.equal(a, b) for a, b in zip(full, _grads(model)))
    with pytest.raises(ValueError):
        micro_batches(x, y, 0)


def test_no_sync_wraps_every_micro_batch_but_the_last() -> None:
    import contextlib

    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([0, 1] * 5)
    model = _model()
    events = []

    @contextlib.contextmanager
    def no_sync():
        events.append("no_sync")
        yield

    accumulated_backward(micro_batches(x, y, 4), _batch_loss(model), _weights,
                         backward=lambda l: (events.append("backward"), l.backward()), no_sync=no_sync)
    assert events == ["no_sync", "backward", "no_sync", "backward", "backward"]
