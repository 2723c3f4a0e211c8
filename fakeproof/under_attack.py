"""The one way to score a model under attack: the attack suite, batch by batch, at the deployed
boundary, keeping per face the most adverse logit.

Every caller (evaluate, the ensemble stage and its transfer matrix, ``fakeproof compare``, the
adversarial checkpoint selection of training, the web page's live check) goes through
:func:`score_under_attack`. It expects the model behind its decision boundary
(:class:`fakeproof.boundary.Deployed`: logit 0 is the deployed decision), so every attack aims
at the boundary the model ships with and every number it yields is at that boundary.

- Faces come in batches ``(x, y, key)``; each attack's seed derives from (base seed, attack, eps,
  the batch's first key) (:func:`attack_seed`), so adding an eps, an attack or a model changes no
  other number.
- Every attack runs its whole budget on every face (:meth:`fakeproof.attacks.AttackSpec.options`:
  no early stop), so the logits it leaves are fit for AUCs and video-level aggregates.
- ``worst``: per face, the most adverse logit over clean and every attack (AutoAttack's
  per-sample robust flags, kept as scores): a face is robust only when it is right clean and
  under every attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from fakeproof.attacks import Budget, get_attack
from fakeproof.predict import as_logit_array
from fakeproof.runtime import named_seed

#: a batch of faces: images in [0, 1], labels (0 real, 1 fake), the key of its first face
Batch = tuple[torch.Tensor, torch.Tensor, str]


def eps_label(eps: float) -> str:
    """'8/255' for multiples of 1/255 (the field's convention), else a short fraction/decimal."""
    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    f = Fraction(eps).limit_denominator(1000)
    return f"{f.numerator}/{f.denominator}" if abs(float(f) - eps) < 1e-9 else f"{eps:.4g}"


def attack_seed(seed: int, attack: str, eps: float, first_key: str) -> int:
    """A seed keyed by what is attacked, not by list positions (63 bits of a SHA-256)."""
    return named_seed(seed, attack, eps_label(eps), first_key)


def worst_logits(labels: np.ndarray, candidates: Sequence[np.ndarray]) -> np.ndarray:
    """Per face, the most adverse logit among ``candidates``: the lowest for a fake, the highest
    for a real face."""
    stack = np.stack(list(candidates))
    return np.where(np.asarray(labels) == 1, stack.min(axis=0), stack.max(axis=0))


def dataset_batches(ds, index: np.ndarray, batch_size: int, keys: Sequence[str]
                    ) -> Iterator[Batch]:
    """Faces ``ds[index]`` in batches of ``batch_size`` with the key of each batch's first face
    (``keys`` aligned with ``index``)."""
    for start in range(0, len(index), batch_size):
        items = [ds[int(i)] for i in index[start:start + batch_size]]
        yield (torch.stack([it[0] for it in items]),
               torch.stack([torch.as_tensor(it[1]) for it in items]).long(), str(keys[start]))


@dataclass
class Attacked:
    """Decision logits (float64, one per face) clean, per attack and the per-face worst case;
    adversarial images kept for a gallery; logits of other models on this model's adversarial
    images (``transfer[scorer][attack]``)."""

    labels: np.ndarray
    clean: np.ndarray
    by_attack: dict[str, np.ndarray]
    worst: np.ndarray
    kept: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    transfer: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    transfer_clean: dict[str, np.ndarray] = field(default_factory=dict)


def score_under_attack(model: nn.Module, batches: Iterable[Batch], attacks: Sequence[str],
                       eps: float, budget: Budget, seed: int, *,
                       keep: Sequence[int] = (), keep_attacks: Sequence[str] = ("pgd",),
                       also_score: Optional[Mapping[str, nn.Module]] = None,
                       on_batch: Optional[Callable[[int], None]] = None) -> Attacked:
    """Run ``attacks`` at ``eps`` on every batch against ``model`` (a :class:`Deployed` model:
    its logit 0 is the decision boundary) and return its decision logits.

    Args:
        model: images in [0, 1] -> one decision logit per image; on the device images go to.
        batches: ``(images, labels, first_key)``; images move to the model's device.
        attacks: registered attack names (:data:`fakeproof.attacks.ATTACKS`).
        eps: L-inf radius; each attack's budget from ``budget``.
        seed: the base seed of :func:`attack_seed`.
        keep: positions (in the order faces arrive) whose adversarial images are returned for
            the attacks in ``keep_attacks``.
        also_score: other models (each behind its own boundary) that score this model's
            adversarial and clean images (the transfer of an attack).
        on_batch: called with the batch size after each batch (progress).
    """
    specs = [get_attack(a) for a in attacks]
    device = next(model.parameters()).device
    wanted = set(int(k) for k in keep)
    others = dict(also_score or {})
    labels, clean = [], []
    by_attack: dict[str, list[np.ndarray]] = {a: [] for a in attacks}
    kept: dict[str, list[torch.Tensor]] = {}
    transfer: dict[str, dict[str, list[np.ndarray]]] = {o: {a: [] for a in attacks} for o in others}
    transfer_clean: dict[str, list[np.ndarray]] = {o: [] for o in others}
    start = 0
    for x, y, key in batches:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            clean.append(as_logit_array(model(x)))
            for o, m in others.items():
                transfer_clean[o].append(as_logit_array(m(x)))
        labels.append(y.cpu().numpy())
        for spec in specs:
            adv = spec.fn(model, x, y, eps=eps, **spec.options(budget, attack_seed(
                seed, spec.name, eps, key)))
            with torch.no_grad():
                by_attack[spec.name].append(as_logit_array(model(adv)))
                for o, m in others.items():
                    transfer[o][spec.name].append(as_logit_array(m(adv)))
            if spec.name in keep_attacks:
                kept.setdefault(spec.name, []).extend(
                    adv[i - start].detach() for i in range(start, start + len(x)) if i in wanted)
        start += len(x)
        if on_batch is not None:
            on_batch(len(x))
    y_all = np.concatenate(labels) if labels else np.zeros(0, dtype=int)
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0))
    z_clean = cat(clean)
    z_attacks = {a: cat(v) for a, v in by_attack.items()}
    worst = worst_logits(y_all, [z_clean, *z_attacks.values()]) if len(y_all) else z_clean
    return Attacked(y_all, z_clean, z_attacks, worst, kept,
                    {o: {a: cat(v) for a, v in t.items()} for o, t in transfer.items()},
                    {o: cat(v) for o, v in transfer_clean.items()})


__all__ = ["Attacked", "Batch", "attack_seed", "dataset_batches", "eps_label",
           "score_under_attack", "worst_logits"]
