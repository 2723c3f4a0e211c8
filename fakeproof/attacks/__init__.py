"""Adversarial attacks on binary deepfake detectors, in the style of torchattacks.

One attack per module, one call signature::

    adv = attack(model, images, labels, *, eps, **options)

``images`` float (N, 3, H, W) in [0, 1]; ``labels`` 0 = real, 1 = fake; the model returns two
logits (N, 2) or one fake logit (N, 1) / (N,), attacked through the two-logit view ``[0, z]``.
Every attack stays inside the eps ball and [0, 1], returns ``images`` unchanged for ``eps=0``,
is deterministic for a seed (or a given :class:`torch.Generator`), and leaves the model's mode,
parameters, ``requires_grad`` flags and buffers as it found them (see :mod:`._base`).

========  ==================================  ========  =====================================
name      paper                               norm      cost per image
========  ==================================  ========  =====================================
fgsm      Goodfellow et al., ICLR 2015        L-inf     1 forward+backward
pgd       Madry et al., ICLR 2018             L-inf/L2  ``steps`` forward+backward per restart
apgd      Croce & Hein, ICML 2020 (APGD-CE)   L-inf/L2  ``steps + 1`` forward+backward
square    Andriushchenko et al., ECCV 2020    L-inf     at most ``queries`` forwards, no grads
========  ==================================  ========  =====================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor

from fakeproof.attacks._base import AttackError, model_guard, two_logits
from fakeproof.attacks.apgd import apgd
from fakeproof.attacks.fgsm import fgsm
from fakeproof.attacks.pgd import pgd
from fakeproof.attacks.square import square
from fakeproof.errors import registered

AttackFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Budget:
    """How hard the evaluation attacks try (resolved from ``eval.preset`` and explicit keys)."""

    pgd_steps: int
    pgd_restarts: int
    apgd_steps: int
    apgd_restarts: int
    square_queries: int
    pgd_alpha: Optional[float] = None  # None: 2.5 * eps / pgd_steps (pgd's own default)
    videos: int = 0  # whole test videos attacked, stratified by class and method; 0: every one

    @classmethod
    def pgd_only(cls, steps: int) -> "Budget":
        """A budget for PGD alone (``steps`` steps, one run): the selection attack of training
        and the web page's live check."""
        return cls(pgd_steps=steps, pgd_restarts=1, apgd_steps=1, apgd_restarts=1,
                   square_queries=1)


#: Named budgets, as AutoAttack's ``set_version``. ``quick`` is the demo and test budget: short
#: attacks on 15 whole test videos (the demo's three strata, real / face swap / self-blended, five
#: videos each, so each class has ``eval.min_videos`` videos and its intervals are estimable),
#: so the demo runs in minutes on 2 CPU cores; ``standard`` follows AutoAttack's
#: standard recipe for a two-class model (APGD-CE at 100 iterations, here with 5 restarts since
#: the targeted APGD-T and FAB-T need more than two classes; Square at 5,000 queries) plus PGD-50
#: with 3 restarts, on every test video. Publish only ``standard``.
PRESETS: dict[str, Budget] = {
    "quick": Budget(pgd_steps=10, pgd_restarts=1, apgd_steps=10, apgd_restarts=1,
                    square_queries=100, videos=15),
    "standard": Budget(pgd_steps=50, pgd_restarts=3, apgd_steps=100, apgd_restarts=5,
                       square_queries=5000, videos=0),
}


def _no_options(budget: Budget, seed: int) -> dict[str, Any]:
    return {}


def _pgd_options(budget: Budget, seed: int) -> dict[str, Any]:
    return {"alpha": budget.pgd_alpha, "steps": budget.pgd_steps, "restarts": budget.pgd_restarts,
            "random_start": True, "seed": seed}


def _apgd_options(budget: Budget, seed: int) -> dict[str, Any]:
    return {"steps": budget.apgd_steps, "restarts": budget.apgd_restarts, "seed": seed}


def _square_options(budget: Budget, seed: int) -> dict[str, Any]:
    # the whole budget on every face: its scores feed attacked AUCs and video scores
    return {"queries": budget.square_queries, "seed": seed, "early_stop": False}


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its function, whether it needs gradients, its paper, and how an
    evaluation budget and seed become its keyword options (each attack carries its own)."""

    name: str
    fn: AttackFn
    gradient_free: bool
    paper: str
    budget_options: Callable[[Budget, int], dict[str, Any]] = _no_options

    def options(self, budget: Budget, seed: int) -> dict[str, Any]:
        """Keyword options of ``fn`` (besides ``eps``) for an evaluation budget and seed: every
        attack runs its whole budget on every face (no early stop), so the scores it leaves are
        fit for AUCs and video-level numbers."""
        return self.budget_options(budget, seed)


ATTACKS: dict[str, AttackSpec] = {s.name: s for s in (
    AttackSpec("fgsm", fgsm, False, "Goodfellow et al., ICLR 2015"),
    AttackSpec("pgd", pgd, False, "Madry et al., ICLR 2018", _pgd_options),
    AttackSpec("apgd", apgd, False, "Croce & Hein, ICML 2020", _apgd_options),
    AttackSpec("square", square, True, "Andriushchenko et al., ECCV 2020", _square_options),
)}

#: Attacks that need no gradients (the check against gradient masking).
GRADIENT_FREE = frozenset(n for n, s in ATTACKS.items() if s.gradient_free)


def resolve_budget(preset: str, **explicit: Optional[Any]) -> Budget:
    """The budget of a named preset with every explicitly given (non-None) value on top."""
    if preset not in PRESETS:
        raise AttackError(f"eval.preset = {preset!r}: unknown; use one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    return Budget(**{k: (explicit[k] if explicit.get(k) is not None else getattr(base, k))
                     for k in base.__dataclass_fields__})


def check_attack_names(names: list[str], key: str = "eval.attacks") -> None:
    """Refuse unknown attack names with one line naming the params key."""
    for i, name in enumerate(names):
        if name not in ATTACKS:
            raise AttackError(f"params.yaml: {key}[{i}] = {name!r}: unknown attack; use one of "
                              f"{', '.join(ATTACKS)}")


def get_attack(name: str) -> AttackSpec:
    """The attack registered as ``name``; unknown names raise :class:`AttackError`."""
    return registered(ATTACKS, name, AttackError, f"attack {name!r} is not registered",
                      sorted(ATTACKS))


__all__ = ["ATTACKS", "GRADIENT_FREE", "PRESETS", "AttackError", "AttackFn", "AttackSpec", "Budget",
           "apgd", "check_attack_names", "fgsm", "get_attack", "model_guard", "pgd",
           "resolve_budget", "square", "two_logits"]
