"""Shared pieces of the attacks: input checks, the two-logit view, losses, projections, RNG, guard.

Conventions (every attack in :mod:`fakeproof.attacks` follows them):

- ``images`` are float tensors in [0, 1] of shape (N, 3, H, W); ``labels`` are 0 = real, 1 = fake
  (a long or float tensor of shape (N,)). Normalisation is a layer inside the model, so ``eps``,
  step sizes and clamps are in pixel units.
- The model returns two logits (N, 2) (index 1 = fake) or a single fake logit (N, 1) or (N,).
  A single logit ``z`` is attacked through the equivalent two-logit view ``[0, z]``:
  ``softmax([0, z])[1] = sigmoid(z)``, so cross-entropy on the view is exactly the binary
  cross-entropy of the detector and multi-class attack recipes apply unchanged.
- A sample counts as *fooled* when its margin ``logit_y - logit_other`` is ``<= 0``
  (the convention of fra31/auto-attack).
- Attacks run the model in whatever train/eval mode the caller set (use eval mode to attack the
  deployed detector); :func:`model_guard` makes sure they leave no trace on it: the per-module
  ``training`` flags, the parameters' ``requires_grad`` flags and every buffer (BatchNorm running
  statistics, which a model in train mode would update) are restored, and no gradient is ever
  accumulated into ``param.grad`` (only gradients with respect to the input are computed).
- Randomness comes only from a :class:`torch.Generator` (``generator=`` if given, which is then
  advanced, else a fresh CPU generator seeded with ``seed``); random tensors are drawn on the CPU
  and moved to the images' device, so a seed gives the same start points on any device.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, Iterator, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from fakeproof.errors import FakeproofError

_log = logging.getLogger("fakeproof.attacks")

Norm = Literal["linf", "l2"]
LossName = Literal["ce", "margin"]
Model = Callable[[Tensor], Tensor]

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")


class AttackError(FakeproofError, ValueError):
    """Bad input to an attack (images, labels, eps, an option or the model's output); one line."""


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def check_inputs(images: Tensor, labels: Tensor, eps: float, norm: str = "linf"
                 ) -> tuple[Tensor, Tensor, float]:
    """Validate and normalise ``(images, labels, eps)``; return (images, long labels, float eps)."""
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise AttackError(f"images: expected a float tensor (N, C, H, W) in [0, 1], got {shape}")
    lo, hi = (float(images.min()), float(images.max())) if images.numel() else (0.0, 1.0)
    if not (lo >= 0.0 and hi <= 1.0):
        raise AttackError(f"images: values must lie in [0, 1] (got min {lo!r}, max {hi!r}); "
                          "attacks work in pixel space, so normalise inside the model")
    if not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise AttackError(f"labels: expected shape ({images.shape[0]},) to match the images, "
                          f"got {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise AttackError("labels: values must be 0 (real) or 1 (fake)")
    labels = labels.to(device=images.device).long()
    eps = check_eps(eps, norm)
    return images.detach(), labels, eps


def check_eps(eps: float, norm: str = "linf") -> float:
    if norm not in NORMS:
        raise AttackError(f"norm: {norm!r} is not supported; use one of {', '.join(NORMS)}")
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise AttackError(f"eps: {eps!r} is not a number; use a float such as 4/255") from None
    if not math.isfinite(value) or value < 0 or (norm == "linf" and value > 1):
        allowed = "[0, 1]" if norm == "linf" else "[0, inf)"
        raise AttackError(f"eps: {eps!r} is out of range; use a finite value in {allowed}")
    return value


def check_int(name: str, value: int, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise AttackError(f"{name}: {value!r} must be an integer >= {lo}")
    return value


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise AttackError(f"loss: {loss!r} is not supported; use one of {', '.join(LOSSES)} "
                          "(DLR needs at least three classes)")
    return loss


# --------------------------------------------------------------------------------------------
# the two-logit view and losses
# --------------------------------------------------------------------------------------------
def two_logits(model: Model, images: Tensor) -> Tensor:
    """The model's output as two logits (N, 2): (N, 2) as is, a single fake logit z as [0, z]."""
    out = model(images)
    if not isinstance(out, Tensor):
        raise AttackError(f"model output: expected a tensor of logits, got {type(out).__name__}")
    n = images.shape[0]
    if out.shape in ((n,), (n, 1)):
        z = out.reshape(n)
        return torch.stack([torch.zeros_like(z), z], dim=1)
    if out.shape == (n, 2):
        return out
    raise AttackError(f"model output: shape {tuple(out.shape)} for {n} images; expected (N, 2) "
                      "logits or a single fake logit (N, 1) / (N,)")


def margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``logit_y - logit_other`` per sample: > 0 correct, <= 0 fooled."""
    true = logits.gather(1, labels[:, None])[:, 0]
    other = logits.gather(1, (1 - labels)[:, None])[:, 0]
    return true - other


def loss_per_sample(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """The loss an untargeted attack maximises, per sample.

    ``ce``: cross-entropy of the two-logit view (binary cross-entropy of a single-logit model),
    computed as ``softplus(logit_other - logit_y)``, which equals ``F.cross_entropy`` for two
    classes but keeps its gradient for confident samples: ``F.cross_entropy``'s backward forms
    ``softmax - onehot``, and ``1 - p_y`` rounds to 0 in float32 once the margin exceeds about
    17, so the input gradient of a single-logit model seen as ``[0, z]`` vanishes there;
    ``softplus``'s gradient ``sigmoid(-margin)`` stays nonzero up to a margin of about 100.
    ``margin``: ``logit_other - logit_y`` (C&W's margin), which never saturates. With two classes
    ``ce`` is an increasing function of ``margin``, so both rank points alike.
    """
    m = margin(logits, labels)
    return F.softplus(-m) if loss == "ce" else -m


def kl_per_sample(ref_logits: Tensor, logits: Tensor) -> Tensor:
    """``KL(p_ref || p)`` per sample between two two-logit views (softmax distributions).

    TRADES' and MART's robustness term (ref = clean, p = adversarial). Computed from
    log-softmaxes, so it stays finite and >= 0 for confident predictions.
    """
    log_ref = F.log_softmax(ref_logits, dim=1)
    return (log_ref.exp() * (log_ref - F.log_softmax(logits, dim=1))).sum(dim=1)


class KLView(nn.Module):
    """The two-logit view ``[0, KL(p_ref || p(x))]`` of a model, for attacks maximising the KL.

    With label 0 (real) and ``loss='margin'``, an attack's loss ``logit_other - logit_y`` is the
    KL itself, so :func:`~fakeproof.attacks.pgd` with this view solves TRADES' inner problem
    (maximise ``KL(p(x) || p(x'))`` in the ball) with the same loop, projections and generator as
    every other attack. ``ref_logits`` (N, 2) are detached; the view sees the samples in order.
    """

    def __init__(self, model: Model, ref_logits: Tensor) -> None:
        super().__init__()
        self.model = model
        self.ref_logits = ref_logits.detach()

    def forward(self, images: Tensor) -> Tensor:
        kl = kl_per_sample(self.ref_logits.to(images.device), two_logits(self.model, images).float())
        return torch.stack([torch.zeros_like(kl), kl], dim=1)


def input_grad(model: Model, images: Tensor, labels: Tensor, loss: str
               ) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: (d loss / d images, loss per sample, logits), detached.

    Only the gradient with respect to the images is computed (``torch.autograd.grad``), so
    nothing is written into ``param.grad``. Autocast is off here whatever encloses the call: an
    fp16 input gradient underflows for confident samples and would silently weaken the attack.
    """
    with torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
        x = images.detach().requires_grad_(True)
        logits = two_logits(model, x)
        values = loss_per_sample(logits, labels, loss)
        grad, = torch.autograd.grad(values.sum(), x)
    return grad.detach(), values.detach(), logits.detach()


# --------------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------------
def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Nearest point of the L-inf ball of radius ``eps`` around ``x``, clamped to [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def linf_box(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-pixel bounds ``(max(x - eps, 0), min(x + eps, 1))`` of the L-inf ball inside [0, 1]."""
    return (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)


def clip_box(x_adv: Tensor, box: tuple[Tensor, Tensor]) -> Tensor:
    """:func:`project_linf` with precomputed bounds (bit-identical: both clip to the same box)."""
    return torch.min(torch.max(x_adv, box[0]), box[1])


def project_l2(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Scale ``x_adv - x`` into the L2 ball of radius ``eps``, then clamp to [0, 1].

    Clamping moves every pixel towards ``x`` (which lies in [0, 1]), so it never leaves the ball.
    """
    delta = x_adv - x
    factor = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (x + delta * factor).clamp_(0.0, 1.0)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    return project_linf(x_adv, x, eps) if norm == "linf" else project_l2(x_adv, x, eps)


def normalize_l2(t: Tensor) -> Tensor:
    """``t / ||t||_2`` per sample (zero stays zero)."""
    return t / _flat_norm(t).clamp_min(1e-12)


# --------------------------------------------------------------------------------------------
# randomness
# --------------------------------------------------------------------------------------------
def make_generator(seed: Optional[int], generator: Optional[torch.Generator]) -> torch.Generator:
    """``generator`` if given (it is advanced), else a fresh CPU generator seeded with ``seed``."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise AttackError("generator: expected a torch.Generator, got "
                              f"{type(generator).__name__}")
        return generator
    if seed is None:
        seed = 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AttackError(f"seed: {seed!r} must be an integer >= 0")
    return torch.Generator(device="cpu").manual_seed(seed)


def _to(t: Tensor, like: Tensor) -> Tensor:
    return t.to(device=like.device, dtype=like.dtype)


def uniform(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Uniform [0, 1) drawn on the generator's device, returned on ``like``'s device and dtype."""
    return _to(torch.rand(shape, generator=gen, device=gen.device), like)


def normal(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    return _to(torch.randn(shape, generator=gen, device=gen.device), like)


def random_signs(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Independent +1/-1 with probability 1/2 each."""
    return _to(torch.randint(0, 2, shape, generator=gen, device=gen.device) * 2 - 1, like)


def random_point(x: Tensor, eps: float, norm: str, gen: torch.Generator) -> Tensor:
    """A random point of the ball, clamped to [0, 1].

    L-inf: uniform in the cube (Madry et al. 2018). L2: a uniformly random direction scaled to a
    radius drawn uniformly from [0, eps] (as torchattacks' PGDL2).
    """
    if norm == "linf":
        delta = (uniform(tuple(x.shape), gen, x) * 2 - 1) * eps
    else:
        direction = normalize_l2(normal(tuple(x.shape), gen, x))
        radius = uniform((x.shape[0],), gen, x).view(-1, *([1] * (x.ndim - 1)))
        delta = direction * radius * eps
    return project(x + delta, x, eps, norm)


# --------------------------------------------------------------------------------------------
# the model guard
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def model_guard(model: Model) -> Iterator[None]:
    """Run an attack without leaving a trace on ``model``.

    The model is used in the mode the caller set. Inside the block the parameters do not require
    gradients (so backward passes compute only the input gradient, and nothing is accumulated in
    ``param.grad``); on exit the ``requires_grad`` flags, every module's ``training`` flag and,
    if any module is in training mode, every buffer (BatchNorm running statistics) are restored.
    Plain callables that are not :class:`torch.nn.Module` pass through untouched.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    buffers: list[tuple[Tensor, Tensor]] = []
    if any(training for _, training in modes):
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for p, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in params:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def keep_worst(best: Tensor, best_score: Tensor, fooled: Tensor, idx: Tensor, cand: Tensor,
               cand_score: Tensor, cand_fooled: Tensor) -> None:
    """Merge a restart's results for the samples ``idx`` into the running worst case, in place.

    Per sample, the first restart that fools the model wins; among restarts that never fool it,
    the one with the highest score (``-margin``). ``idx`` must hold only samples not yet fooled.
    """
    take = cand_fooled | (cand_score > best_score[idx])
    rows = idx[take]
    best[rows] = cand[take]
    best_score[rows] = cand_score[take].to(best_score.dtype)
    fooled[rows] = cand_fooled[take]


def worst_over_restarts(x: Tensor, restarts: int,
                        run: Callable[[Tensor], tuple[Tensor, Tensor]], name: str) -> Tensor:
    """Run ``run(idx) -> (adv, score)`` for each restart on the samples not yet fooled and keep
    the worst case per sample (:func:`keep_worst`; a sample counts as fooled when score >= 0)."""
    best = x.clone()
    best_score = torch.full((x.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r in range(restarts):
        idx = (~fooled).nonzero().flatten()
        if idx.numel() == 0:
            break
        adv, score = run(idx)
        keep_worst(best, best_score, fooled, idx, adv, score, score >= 0)
        _log.debug("%s restart %d: %d/%d images fooled", name, r, int(fooled.sum()), x.shape[0])
    return best
