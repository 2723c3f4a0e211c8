"""The attack suite on a small detector trained here, and against torchattacks on the same model.

The toy task: 16x16 images of smooth random colour fields with noise; fakes carry a blocky
texture (2x2 blocks of +/-0.04 per channel). A tiny CNN (with BatchNorm, so train mode matters)
learns it in a few seconds on one thread.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fakeproof.attacks import (ATTACKS, GRADIENT_FREE, AttackError, apgd, fgsm, get_attack, pgd,
                               square)
from fakeproof.attacks._base import input_grad, loss_per_sample

torchattacks = pytest.importorskip("torchattacks")

SIZE = 16
N_TEST = 256
ALL = sorted(ATTACKS)
# cheap settings for the per-attack property tests
CHEAP = {"fgsm": {}, "pgd": {"steps": 5}, "apgd": {"steps": 5}, "square": {"queries": 100}}


def make_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.rand(n, 3, 4, 4, generator=gen) * 0.6 + 0.2
    x = F.interpolate(base, size=SIZE, mode="bilinear", align_corners=False)
    x = x + 0.02 * torch.randn(n, 3, SIZE, SIZE, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    blocks = torch.randint(0, 2, (n, 3, 8, 8), generator=gen).float() * 2 - 1
    texture = F.interpolate(blocks, size=SIZE, mode="nearest")
    x = x + 0.04 * y.view(-1, 1, 1, 1).float() * texture
    return x.clamp(0, 1), y


class TinyDetector(nn.Module):
    """One fake logit (N, 1), like fakeproof.models."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Reshaped(nn.Module):
    """Wrap a single-logit detector to return (N,), [0, z] or [-z/2, z/2]."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x).reshape(-1)
        if self.kind == "flat":
            return z
        if self.kind == "zero":
            return torch.stack([torch.zeros_like(z), z], dim=1)
        return torch.stack([-z / 2, z / 2], dim=1)


class Counting(nn.Module):
    """Counts the images the wrapped model is called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images, self.calls = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        self.calls += 1
        return self.model(x)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def toy() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(eval-mode detector, test images, test labels); trained in about 3 s on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_toy()
    finally:
        torch.set_num_threads(threads)


def _train_toy() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(2048, gen)
    x_test, y_test = make_data(N_TEST, gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyDetector()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(12):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), 64):
            b = order[i:i + 64]
            loss = F.binary_cross_entropy_with_logits(model(x_train[b]).reshape(-1),
                                                      y_train[b].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, x_test, y_test


def accuracy(model: Callable, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        out = model(x)
    pred = out.argmax(1) if out.ndim == 2 and out.shape[1] == 2 else (out.reshape(-1) > 0).long()
    return float((pred == y).float().mean())


def test_toy_model_learns(toy) -> None:
    model, x, y = toy
    assert accuracy(model, x, y) >= 0.85


# --------------------------------------------------------------------------------------------
# against torchattacks
# --------------------------------------------------------------------------------------------
def _torchattacks(name: str, model: nn.Module, eps: float):
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=eps)
    if name == "pgd":
        return torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True)
    if name == "apgd":
        return torchattacks.APGD(model, eps=eps, steps=20, loss="ce", n_restarts=1, seed=0)
    return torchattacks.Square(model, eps=eps, n_queries=199, n_restarts=1, seed=0)


OURS = {
    "fgsm": lambda m, x, y, eps: fgsm(m, x, y, eps=eps),
    "pgd": lambda m, x, y, eps: pgd(m, x, y, eps=eps, alpha=eps / 4, steps=10, seed=0),
    "apgd": lambda m, x, y, eps: apgd(m, x, y, eps=eps, steps=20, seed=0),
    "square": lambda m, x, y, eps: square(m, x, y, eps=eps, queries=200, seed=0),
}
# two radii per attack where robust accuracy is in between on the toy model (it resists Square
# longer than the gradient attacks), and the absolute tolerance on robust accuracy
COMPARE = {"fgsm": ((2 / 255, 4 / 255), 0.01), "pgd": ((2 / 255, 4 / 255), 0.05),
           "apgd": ((2 / 255, 4 / 255), 0.05), "square": ((8 / 255, 16 / 255), 0.10)}


@pytest.mark.parametrize("name", ALL)
def test_robust_accuracy_matches_torchattacks(toy, name: str) -> None:
    model, x, y = toy
    radii, tol = COMPARE[name]
    clean = accuracy(model, x, y)
    # torchattacks applies F.cross_entropy to the logits; on a single-logit model seen as [0, z]
    # its input gradient vanishes once the margin passes about 17 (1 - p rounds to 0), so it gets
    # the numerically symmetric, mathematically equal view [-z/2, z/2].
    ta_model = Reshaped(model, "half").eval()
    for eps in radii:
        ours = accuracy(model, OURS[name](model, x, y, eps), y)
        with torch.random.fork_rng():  # torchattacks' APGD and Square seed the global RNG
            theirs = accuracy(model, _torchattacks(name, ta_model, eps)(x, y), y)
        assert abs(ours - theirs) <= tol, \
            f"{name} at eps {eps * 255:g}/255: ours {ours:.3f} vs torchattacks {theirs:.3f}"
    assert ours <= clean - 0.2, f"{name} barely lowers accuracy: {clean:.3f} -> {ours:.3f}"


def test_ce_gradient_survives_confident_logits() -> None:
    z = torch.tensor([40.0, -40.0, 25.0])
    y = torch.tensor([1, 0, 1])
    logits = torch.stack([torch.zeros_like(z), z], 1).requires_grad_(True)
    loss_per_sample(logits, y, "ce").sum().backward()
    assert (logits.grad.abs().sum(1) > 0).all()
    assert torch.allclose(loss_per_sample(logits.detach(), y, "ce"),
                          F.cross_entropy(logits.detach(), y, reduction="none"))
    # F.cross_entropy's input gradient is exactly zero here; ours is not, and PGD gets through
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 1))
    with torch.no_grad():
        model[1].weight.fill_(5.0)
        model[1].bias.fill_(-104.0)
    x = torch.full((2, 3, 4, 4), 0.6)  # z = 5 * 48 * 0.6 - 104 = 40: fake with margin 40
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        z = model(xg).reshape(-1)
        F.cross_entropy(torch.stack([torch.zeros_like(z), z], 1), torch.tensor([1, 1])).backward()
    assert float(xg.grad.abs().sum()) == 0.0
    grad, _, _ = input_grad(model, x, torch.tensor([1, 1]), "ce")
    assert grad.abs().sum() > 0
    adv = pgd(model, x, torch.tensor([1, 1]), eps=0.2, steps=10)
    assert accuracy(model, adv, torch.tensor([1, 1])) == 0.0


class Scaled(nn.Module):
    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


@pytest.mark.parametrize("name", ["pgd", "apgd", "square"])
def test_tiny_logits_do_not_blind_the_attacks(toy, name: str) -> None:
    # A detector whose logits are 1e-9 times the toy's decides exactly alike; CE rounds to log 2
    # there, so any rule that compares CE values would stall. Points are compared by the margin.
    model, x, y = toy
    x, y = x[:64], y[:64]
    kw = {"restarts": 2} if name == "pgd" else {}
    eps = 8 / 255 if name == "square" else 4 / 255
    ref = accuracy(model, _run(name, model, x, y, eps, **kw), y)
    tiny = accuracy(model, _run(name, Scaled(model, 1e-9), x, y, eps, **kw), y)
    assert accuracy(model, x, y) - tiny >= 0.2
    assert abs(tiny - ref) <= 3 / 64


# --------------------------------------------------------------------------------------------
# properties every attack has
# --------------------------------------------------------------------------------------------
def _run(name: str, model, x, y, eps: float, **kw) -> torch.Tensor:
    return get_attack(name).fn(model, x, y, eps=eps, **{**CHEAP[name], **kw})


@pytest.mark.parametrize("name", ALL)
def test_stays_in_ball_and_range_and_lowers_accuracy(toy, name: str) -> None:
    model, x, y = toy
    x, y = x[:96], y[:96]
    eps = 8 / 255
    adv = _run(name, model, x, y, eps)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert accuracy(model, adv, y) <= accuracy(model, x, y) - 0.2


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_l2_stays_in_l2_ball(toy, name: str) -> None:
    model, x, y = toy
    x, y = x[:96], y[:96]
    eps = 0.5
    adv = _run(name, model, x, y, eps, norm="l2")
    norms = (adv - x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= eps + 1e-5
    assert float(norms.max()) > 0.5 * eps  # it does move
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert accuracy(model, adv, y) <= accuracy(model, x, y) - 0.2


@pytest.mark.parametrize("name", ALL)
def test_eps_zero_returns_images_unchanged(toy, name: str) -> None:
    model, x, y = toy
    counted = Counting(model)
    adv = _run(name, counted, x[:8], y[:8], 0.0)
    assert torch.equal(adv, x[:8])
    assert adv.data_ptr() != x.data_ptr()
    assert counted.calls == 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_mode_params_and_buffers_untouched(toy, name: str, mode: str) -> None:
    model, x, y = toy
    model.train(mode == "train")
    model.net[3].weight.requires_grad_(False)  # a frozen layer stays frozen
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    try:
        _run(name, model, x[:32], y[:32], 4 / 255)
        assert [m.training for m in model.modules()] == flags
        for k, v in model.state_dict().items():  # parameters and BatchNorm running statistics
            assert torch.equal(v, state[k]), k
        assert all(p.grad is None for p in model.parameters())
        assert [p.requires_grad for p in model.parameters()] == [
            n != "net.3.weight" for n, _ in model.named_parameters()]
    finally:
        model.net[3].weight.requires_grad_(True)
        model.eval()


@pytest.mark.parametrize("name", ALL)
def test_single_and_two_logit_models_agree(toy, name: str) -> None:
    model, x, y = toy
    x, y = x[:32], y[:32]
    ref = _run(name, model, x, y, 4 / 255)  # (N, 1)
    for kind in ("flat", "zero"):  # (N,) and two logits [0, z]
        assert torch.equal(_run(name, Reshaped(model, kind), x, y, 4 / 255), ref), kind
    # float labels are accepted as well
    assert torch.equal(_run(name, model, x, y.float(), 4 / 255), ref)
    # two genuine logits [-z/2, z/2]: the same detector, the same attack up to rounding
    half = _run(name, Reshaped(model, "half"), x, y, 4 / 255)
    assert abs(accuracy(model, half, y) - accuracy(model, ref, y)) <= 2 / 32


@pytest.mark.parametrize("name", ALL)
def test_deterministic_given_seed(toy, name: str) -> None:
    model, x, y = toy
    x, y = x[:32], y[:32]
    first = _run(name, model, x, y, 4 / 255)
    assert torch.equal(first, _run(name, model, x, y, 4 / 255))
    if name in ("pgd", "apgd", "square"):
        other = _run(name, model, x, y, 4 / 255, seed=1)
        assert not torch.equal(first, other)
        gen = torch.Generator().manual_seed(0)
        assert torch.equal(first, _run(name, model, x, y, 4 / 255, generator=gen))
        # a given generator is advanced: a second call draws new numbers
        assert not torch.equal(first, _run(name, model, x, y, 4 / 255, generator=gen))


def test_attacks_run_under_deterministic_algorithms(toy) -> None:
    model, x, y = toy
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for name in ALL:
            adv = _run(name, model, x[:16], y[:16], 4 / 255, **({"restarts": 2}
                                                              if name in ("pgd", "apgd") else {}))
            assert adv.shape == x[:16].shape
    finally:
        torch.use_deterministic_algorithms(before)


def test_empty_batch_returns_empty(toy) -> None:
    model, x, y = toy
    for name in ALL:
        out = _run(name, model, x[:0], y[:0], 4 / 255)
        assert out.shape == (0, *x.shape[1:])


@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_restarts_never_weaker_per_sample(toy, name: str) -> None:
    model, x, y = toy
    x, y = x[:128], y[:128]
    eps = 2 / 255  # weak enough that restarts matter
    one = _run(name, model, x, y, eps, restarts=1)
    many = _run(name, model, x, y, eps, restarts=4)
    with torch.no_grad():
        z1, zn = model(one).reshape(-1), model(many).reshape(-1)
    sign = y.float() * 2 - 1  # margin of the two-logit view = z for fakes, -z for reals
    m1, mn = z1 * sign, zn * sign
    fooled1, fooledn = m1 <= 0, mn <= 0
    assert bool((fooledn | ~fooled1).all()), "a restart lost an image the single run fooled"
    still = ~fooledn
    assert bool((mn[still] <= m1[still] + 1e-5).all()), "restarts ended at a lower loss"
    assert int(fooledn.sum()) >= int(fooled1.sum()) > 0
    assert bool((mn < m1 - 1e-4).any()), "restarts never found a worse point"


def test_square_respects_query_budget_and_is_gradient_free(toy) -> None:
    model, x, y = toy
    counted = Counting(model)
    with torch.no_grad():  # no gradients needed at all
        adv = square(counted, x[:64], y[:64], eps=8 / 255, queries=25)
    assert counted.images <= 64 * 25
    assert counted.calls <= 25
    assert "square" in GRADIENT_FREE
    # best found: a larger budget never ends with more correct images
    more = square(model, x[:64], y[:64], eps=8 / 255, queries=100)
    assert accuracy(model, more, y[:64]) <= accuracy(model, adv, y[:64])


def test_fgsm_is_batch_independent(toy) -> None:
    model, x, y = toy
    whole = fgsm(model, x[:32], y[:32], eps=4 / 255)
    parts = torch.cat([fgsm(model, x[i:i + 8], y[i:i + 8], eps=4 / 255) for i in range(0, 32, 8)])
    assert torch.allclose(whole, parts, atol=1e-6)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_registry() -> None:
    assert set(ATTACKS) == {"fgsm", "pgd", "apgd", "square"}
    assert get_attack("pgd").fn is pgd
    with pytest.raises(AttackError, match="not registered; use one of apgd, fgsm, pgd, square"):
        get_attack("cw")


@pytest.mark.parametrize("case, match", [
    ("range", "values must lie in \\[0, 1\\]"),
    ("labels", "0 \\(real\\) or 1 \\(fake\\)"),
    ("length", "labels: expected shape"),
    ("eps", "eps: -0.1 is out of range"),
    ("output", "model output: shape \\(4, 3\\)"),
    ("norm", "norm: 'l1'"),
    ("steps", "steps: 0 must be"),
    ("restarts", "random_start"),
])
def test_bad_input_raises_one_line(toy, case: str, match: str) -> None:
    model, x, y = toy
    x, y = x[:4], y[:4]
    kw: dict = {"eps": 4 / 255}
    if case == "range":
        x = x * 2
    elif case == "labels":
        y = y + 2
    elif case == "length":
        y = y[:3]
    elif case == "eps":
        kw["eps"] = -0.1
    elif case == "output":
        model = nn.Sequential(model, nn.Linear(1, 3))
    elif case == "norm":
        kw["norm"] = "l1"
    elif case == "steps":
        kw["steps"] = 0
    elif case == "restarts":
        kw.update(restarts=2, random_start=False)
    with pytest.raises(AttackError, match=match) as info:
        pgd(model, x, y, **kw)
    assert "\n" not in str(info.value)


def test_square_without_early_stop_runs_its_whole_budget_and_goes_past_the_boundary() -> None:
    """Evaluation scores must come from full-budget attacks: with the paper's early stop a
    fooled face's margin sits just past 0; without it the search keeps lowering it."""
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8)

    def linear(x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - 0.5) @ w[:, None] * 0.2

    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = (linear(x).reshape(-1) > 0).long()
    stop = square(linear, x, y, eps=16 / 255, queries=200, seed=3)
    full = square(linear, x, y, eps=16 / 255, queries=200, seed=3, early_stop=False)
    sign = 2 * y.float() - 1
    m_stop = (linear(stop).reshape(-1) * sign)
    m_full = (linear(full).reshape(-1) * sign)
    fooled = m_stop <= 0
    assert fooled.any() and bool((m_full[fooled] < m_stop[fooled]).all())  # pushed further
    assert float(m_full.mean()) < float(m_stop.mean())
    assert float((full - x).abs().max()) <= 16 / 255 + 1e-6
