"""Adversarial training objectives: each lowers its own loss, crafts inside the eps ball and [0, 1]
in eval mode without touching BatchNorm statistics, gives the clean loss at eps 0, and is seeded."""

from __future__ import annotations

import copy
import typing
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fakeproof.attacks import pgd
from fakeproof.attacks._base import KLView, kl_per_sample, two_logits
from fakeproof.config import AdvParams
from fakeproof.objectives import (OBJECTIVES, ObjectiveError, catastrophic_overfit, get_objective,
                                  warmup_budget, warmup_eps)

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 3
WEIGHTS = torch.tensor([1.0, 3.0])
#: Training-mode forwards per call (the loss), as the package docstring promises.
TRAIN_FORWARDS = {"pgd": 1, "fgsm_rs": 1, "trades": 2, "mart": 2}


class Tiny(nn.Module):
    """conv-BN-ReLU, global mean, one logit: BatchNorm to watch, no dropout (deterministic)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = (torch.arange(n) % 2).long()
    x[y == 1, 0] = (x[y == 1, 0] * 0.5 + 0.5)  # fakes: a brighter red channel, learnable
    return x, y


def _model(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny().train()


def _call(name: str, model: nn.Module, x, y, seed: int = 0, eps: float = EPS, **kw):
    return OBJECTIVES[name](model, x, y, eps=eps, alpha=ALPHA, steps=STEPS, weights=WEIGHTS,
                            generator=torch.Generator().manual_seed(seed), clean_share=0.25,
                            beta=6.0, **kw)


def _weighted_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(model(x).reshape(-1), y.float(), reduction="none")
    w = WEIGHTS[y]
    return (loss * w).sum() / w.sum()


def test_objectives_are_the_params_methods() -> None:
    method = typing.get_type_hints(AdvParams)["method"]
    assert list(typing.get_args(method)) == list(OBJECTIVES)
    assert AdvParams().method == "pgd" and AdvParams().beta == 6.0
    with pytest.raises(ObjectiveError, match="adv.method = 'free': unknown; use one of pgd"):
        get_objective("free")


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_lowers_its_own_loss(name: str) -> None:
    x, y = _data()
    model = _model()
    before, _ = _call(name, model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(15):
        loss, stats = _call(name, model, x, y, seed=step + 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and set(stats) >= {"loss", "clean_acc", "adv_acc"}
    after, _ = _call(name, model, x, y)
    assert float(after.detach()) < 0.8 * float(before.detach()), (float(before), float(after))


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_crafting_is_in_eval_mode_in_the_ball_and_leaves_batchnorm_alone(name: str) -> None:
    x, y = _data()
    model = _model()
    model.fc.eval()  # a module the caller keeps in eval mode must stay there
    pristine = copy.deepcopy(model)
    seen: list[tuple[bool, torch.Tensor]] = []
    model.register_forward_pre_hook(lambda m, inp: seen.append((m.bn.training, inp[0].detach())))
    loss, _ = _call(name, model, x, y)
    assert all(p.grad is None for p in model.parameters())  # crafting wrote no param.grad
    assert model.training and model.bn.training and not model.fc.training
    assert all(p.requires_grad for p in model.parameters())

    train_inputs = [inp for training, inp in seen if training]
    crafting = [inp for training, inp in seen if not training]
    assert len(train_inputs) == TRAIN_FORWARDS[name] and crafting  # eval-mode crafting happened
    adv = train_inputs[-1]
    if name in ("pgd", "fgsm_rs"):
        n_clean = round(0.25 * len(y))
        assert torch.equal(adv[:n_clean], x[:n_clean])  # the clean share stays clean
        adv, ref = adv[n_clean:], x[n_clean:]
    else:
        assert torch.equal(train_inputs[0], x)
        ref = x
    assert float((adv - ref).abs().max()) <= EPS + 1e-6 and float((adv - ref).abs().max()) > EPS / 2
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1

    # BatchNorm running statistics: exactly those of the training forwards replayed on a copy.
    for inp in train_inputs:
        pristine(inp)
    for name_, buf in model.named_buffers():
        torch.testing.assert_close(buf, dict(pristine.named_buffers())[name_], msg=name_)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_eps_zero_gives_the_clean_loss(name: str) -> None:
    x, y = _data()
    model = _model()
    loss, stats = _call(name, model, x, y, eps=0.0)
    ref = _weighted_ce(_model(), x, y)  # class-weighted BCE on clean images, train mode
    factor = 2.0 if name == "mart" else 1.0  # MART's boosted CE is 2 CE for two classes
    torch.testing.assert_close(loss, factor * ref, rtol=1e-5, atol=1e-6)
    assert stats.get("kl", 0.0) == 0.0


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_same_seed_same_loss_other_seed_other_loss(name: str) -> None:
    x, y = _data()
    a, sa = _call(name, _model(), x, y, seed=5)
    b, sb = _call(name, _model(), x, y, seed=5)
    c, _ = _call(name, _model(), x, y, seed=6)
    assert torch.equal(a, b) and sa == sb
    assert not torch.equal(a, c)


def test_class_weights_reach_every_term() -> None:
    x, y = _data()
    for name in OBJECTIVES:
        base, _ = _call(name, _model(), x, y)
        other = OBJECTIVES[name](_model(), x, y, eps=EPS, alpha=ALPHA, steps=STEPS,
                                 weights=torch.tensor([3.0, 1.0]),
                                 generator=torch.Generator().manual_seed(0), clean_share=0.25,
                                 beta=6.0)[0]
        assert abs(float(base.detach()) - float(other.detach())) > 1e-4, name
    with pytest.raises(ObjectiveError, match="weights: expected two positive class weights"):
        _call_w(torch.tensor([1.0, 0.0]))


def _call_w(w: torch.Tensor):
    x, y = _data(4)
    return OBJECTIVES["pgd"](_model(), x, y, eps=EPS, alpha=ALPHA, steps=1, weights=w,
                             generator=torch.Generator())


def test_trades_inner_step_maximises_the_kl() -> None:
    x, y = _data()
    model = _model().eval()
    with torch.no_grad():
        ref = two_logits(model, x)
    view = KLView(model, ref)
    with torch.no_grad():  # the view's margin loss is the KL itself
        v = view(x.flip(0))
        torch.testing.assert_close(v[:, 1], kl_per_sample(ref, two_logits(model, x.flip(0))))
        assert torch.equal(v[:, 0], torch.zeros_like(v[:, 0]))
    gen = torch.Generator().manual_seed(0)
    adv = pgd(view, x, torch.zeros_like(y), eps=EPS, alpha=ALPHA, steps=10, loss="margin",
              generator=gen)
    rand = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS).clamp(0, 1)
    with torch.no_grad():
        kl_adv = kl_per_sample(ref, two_logits(model, adv)).mean()
        kl_rand = kl_per_sample(ref, two_logits(model, rand)).mean()
    assert float(kl_adv) > 5 * float(kl_rand) > 0


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_finite_under_cpu_autocast_with_float32_crafting(name: str) -> None:
    x, y = _data()
    model = _model()
    dtypes: list[tuple[bool, torch.dtype]] = []
    model.conv.register_forward_hook(lambda m, i, out: dtypes.append((m.training, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = _call(name, model, x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert {d for training, d in dtypes if not training} == {torch.float32}  # crafting
    assert {d for training, d in dtypes if training} == {torch.bfloat16}  # the loss forwards


def test_warmup_ramps_eps_and_alpha_linearly() -> None:
    ap = SimpleNamespace(eps=4 / 255, alpha=1 / 255, warmup_epochs=2)
    assert warmup_eps(ap, 0) == 0.0
    assert warmup_eps(ap, 1) == pytest.approx(2 / 255)
    assert warmup_eps(ap, 1.5) == pytest.approx(3 / 255)
    assert warmup_eps(ap, 2) == warmup_eps(ap, 9) == pytest.approx(4 / 255)
    assert warmup_budget(ap, 1) == pytest.approx((2 / 255, 0.5 / 255))
    assert warmup_eps(SimpleNamespace(eps=4 / 255, alpha=1 / 255, warmup_epochs=0), 0) == 4 / 255


def test_catastrophic_overfit_rule() -> None:
    assert not catastrophic_overfit(None, 0.1)  # first epoch: nothing to compare
    assert not catastrophic_overfit(0.6, 0.45)  # a 15-point dip is noise
    assert catastrophic_overfit(0.6, 0.35)  # 25 points: collapse
    assert catastrophic_overfit(0.6, float("nan"))
    assert not catastrophic_overfit(float("nan"), 0.2)
    assert not catastrophic_overfit(0.5, 0.9)


def test_craft_precision_sets_the_autocast_crafting_runs_under() -> None:
    """``adv.craft_precision``: float32 crafting by default (autocast off even inside the
    training forward's autocast); under ``craft_precision(dtype)`` crafting autocasts to it."""
    from fakeproof.objectives import craft_precision
    from fakeproof.objectives._common import crafting

    model = torch.nn.Linear(2, 1)
    seen = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with crafting(model):
            seen.append(torch.is_autocast_enabled("cpu"))
        with craft_precision(torch.bfloat16), crafting(model):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        with craft_precision(None), crafting(model):
            seen.append(torch.is_autocast_enabled("cpu"))
    assert seen == [False, (True, torch.bfloat16), False]
