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

from typing import Callable

from torch import Tensor

from fakeproof.attacks._base import AttackError, model_guard, two_logits
from fakeproof.attacks.apgd import apgd
from fakeproof.attacks.fgsm import fgsm
from fakeproof.attacks.pgd import pgd
from fakeproof.attacks.square import square

AttackFn = Callable[..., Tensor]

ATTACKS: dict[str, AttackFn] = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd, "square": square}

#: Attacks that need no gradients (the check against gradient masking).
GRADIENT_FREE = frozenset({"square"})


def get_attack(name: str) -> AttackFn:
    """The attack function registered as ``name``; unknown names raise :class:`AttackError`."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise AttackError(f"attack {name!r} is not registered; use one of "
                          f"{', '.join(sorted(ATTACKS))}") from None


__all__ = ["ATTACKS", "GRADIENT_FREE", "AttackError", "AttackFn", "apgd", "fgsm", "get_attack",
           "model_guard", "pgd", "square", "two_logits"]
