"""Shared pieces of the objectives: checks, class-weighted means, crafting in eval mode."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from fakeproof.attacks._base import check_eps, loss_per_sample, model_guard, two_logits
from fakeproof.errors import FakeproofError
from fakeproof.models.fold import folded_copy


class ObjectiveError(FakeproofError, ValueError):
    """Bad input to a training objective (one line naming the argument)."""


def check_weights(weights: Tensor) -> Tensor:
    """Per-class weights [w_real, w_fake], both finite and > 0."""
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.shape != (2,) or not bool(torch.isfinite(w).all()) or not bool((w > 0).all()):
        raise ObjectiveError(f"weights: expected two positive class weights [w_real, w_fake], got "
                             f"{w.tolist() if w.numel() <= 4 else tuple(w.shape)}")
    return w


def check_share(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ObjectiveError(f"{name}: {value!r} must lie in [0, 1]")
    return v


def check_beta(beta: float) -> float:
    b = float(beta)
    if not b >= 0.0 or b == float("inf"):
        raise ObjectiveError(f"beta: {beta!r} must be a finite number >= 0")
    return b


def prepare(images: Tensor, labels: Tensor, eps: float, weights: Tensor
            ) -> tuple[Tensor, Tensor, float, Tensor]:
    """(images, long labels, float eps, class weights on the images' device)."""
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ObjectiveError("images: expected a float tensor (N, C, H, W) in [0, 1]")
    y = torch.as_tensor(labels).reshape(-1).to(images.device).long()
    if y.shape[0] != images.shape[0]:
        raise ObjectiveError(f"labels: {y.shape[0]} for {images.shape[0]} images")
    return images, y, check_eps(eps), check_weights(weights).to(images.device)


def prepare_kl(model: nn.Module, images: Tensor, labels: Tensor, eps: float, weights: Tensor,
               beta: float, clean_share: float, craft_model: Optional[nn.Module]
               ) -> tuple[Tensor, Tensor, float, Tensor, float, nn.Module]:
    """What trades and mart check and prepare first: :func:`prepare`'s inputs, ``beta`` and
    ``clean_share`` checked, and the model examples are crafted on."""
    x, y, eps, w = prepare(images, labels, eps, weights)
    beta = check_beta(beta)
    check_share("clean_share", clean_share)
    return x, y, eps, w, beta, craft_target(model, craft_model)


def weighted_mean(values: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """``sum_i w[y_i] v_i / sum_i w[y_i]``: the class-weighted mean (train.class_weights)."""
    w = weights[labels].to(values.dtype)
    return (values * w).sum() / w.sum()


def ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy per sample of a two-logit view (= BCE of the single fake logit)."""
    return loss_per_sample(logits.float(), labels, "ce")


def logits2(model: nn.Module, images: Tensor) -> Tensor:
    """The model's two-logit view in float32 (AMP-safe losses)."""
    return two_logits(model, images).float()


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if labels.numel() else float("nan")


#: the autocast dtype crafting runs under (:func:`craft_precision`); None: float32
_CRAFT_DTYPE: contextvars.ContextVar[Optional[torch.dtype]] = contextvars.ContextVar(
    "craft_dtype", default=None)


@contextlib.contextmanager
def craft_precision(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Inside: :func:`crafting` runs under autocast to ``dtype`` (``adv.craft_precision: amp``,
    the training attack at the training forward's precision, about twice as fast on a GPU)
    instead of float32; None keeps float32. ``benchmarks/bench_train.py gpu`` prints the robust
    accuracy each reaches: bf16 rounds the logits, so the input gradient's sign can flip where
    the gradient is tiny; fp16 can underflow it (:mod:`fakeproof.runtime`)."""
    token = _CRAFT_DTYPE.set(dtype)
    try:
        yield
    finally:
        _CRAFT_DTYPE.reset(token)


@contextlib.contextmanager
def crafting(model: nn.Module) -> Iterator[nn.Module]:
    """Craft adversarial examples in eval mode and float32, leaving no trace on ``model``; yields
    the module to attack: a copy of ``model`` with its BatchNorm folded into the convolutions
    (:func:`fakeproof.models.fold.folded_copy`: the same function in eval mode, about a quarter
    cheaper per input-gradient step on the CPU).

    Inside: every module in eval mode (BatchNorm uses its running statistics, dropout is off, as
    in deployment), parameters without ``requires_grad`` (:func:`~fakeproof.attacks.model_guard`),
    autocast off (the input gradients' signs are taken in full precision even when the training
    forwards run under AMP; unless :func:`craft_precision` asks for autocast). On exit every
    module's own ``training`` flag, the ``requires_grad`` flags and every buffer are back as they
    were: crafting never updates BatchNorm running statistics.
    """
    param = next(model.parameters(), None)
    device = param.device.type if param is not None else "cpu"
    dtype = _CRAFT_DTYPE.get()
    cast = (torch.autocast(device_type=device, enabled=False) if dtype is None
            else torch.autocast(device_type=device, dtype=dtype))
    with model_guard(model), cast:
        model.eval()
        yield folded_copy(model)


def craft_target(model: nn.Module, craft_model: Optional[nn.Module]) -> nn.Module:
    """The module attacked while crafting: ``craft_model`` (e.g. the module inside a
    DistributedDataParallel wrapper) or the model itself."""
    return model if craft_model is None else craft_model
