"""Sanity checks of a robustness evaluation, each with the evidence that made it fire.

After Carlini et al., "On Evaluating Adversarial Robustness" (arXiv 1902.06705, 2019) and
AutoAttack's ``checks.py`` (Croce & Hein, ICML 2020). A check that *fires* points at a broken
evaluation or a broken model, never at a robust one. Every check is taken at the model's deployed
boundary (:mod:`fakeproof.boundary`). A fired ``fail`` check makes ``ok`` (and the headline's
``sanity_ok``) false; a fired ``warn`` check is reported and logged but leaves ``ok`` alone:

==========================  ===================================================================
check                       fires when
==========================  ===================================================================
eps0_differs_from_clean     accuracy at eps 0 is not exactly the clean accuracy of the sample
rises_with_eps              an attack's accuracy rises with eps by more than one face
pgd_weaker_than_fgsm        PGD leaves more faces correct than FGSM at some eps
apgd_weaker_than_pgd        APGD leaves more faces correct than PGD at some eps
gradient_masking            a gradient-free attack (Square) beats every gradient attack
above_chance_at_large_eps   (warn) robust balanced accuracy stays above 0.5 at eps >= 16/255, where
                            an L-inf attack usually wins on a natural-image detector
unbounded_attack_fails      PGD at eps 64/255 (an unbounded attack for pixel images: Carlini et
                            al. 2019, sec. 5.2) leaves more than 5 % of faces robust: the attack
                            or the model's gradients are broken, so no smaller eps number counts
collapsed                   the clean logits barely spread (std below 0.1x the first model's) or
                            90 % of P(fake) lie within 0.02 of the threshold: attacks cannot move
                            a near-constant output, which mimics robustness
one_class                   a class's clean recall at the deployed boundary is under 5 %: the
                            model calls (nearly) every face one class, which scores 0.5 balanced
                            accuracy under any attack
selection_failed            training found no adversarial fine-tuning epoch that qualified
                            (:mod:`fakeproof.selection`: val AUC floor, not one-class)
==========================  ===================================================================

Tolerance: one face (1/n) for comparisons between stochastic attacks; none for eps 0.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pandas as pd

from fakeproof.attacks import GRADIENT_FREE

LARGE_EPS = 16 / 255
UNBOUNDED_EPS = 64 / 255
UNBOUNDED_MAX_ACC = 0.05
COLLAPSE_STD_RATIO = 0.1
COLLAPSE_NEAR_SHARE = 0.9
ONE_CLASS_RECALL = 0.05


def _flag(fired: bool, evidence: Any, severity: str = "fail") -> dict[str, Any]:
    return {"fired": bool(fired), "evidence": evidence, "severity": severity}


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    return table.pivot_table(index="eps", columns="attack", values=value, sort=True)


def _weaker(m: pd.DataFrame, strong: str, weak: str, tol: float) -> dict[str, Any]:
    if strong not in m.columns or weak not in m.columns:
        return _flag(False, "not run")
    bad = {f"{e * 255:g}/255": {strong: float(r[strong]), weak: float(r[weak])}
           for e, r in m.iterrows() if r[strong] > r[weak] + tol}
    return _flag(bool(bad), bad or "none")


def sanity_flags(table: pd.DataFrame, clean_acc: float, n: int, spread: dict[str, float],
                 reference_std: Optional[float], attacks: list[str],
                 recalls: Optional[tuple[float, float]] = None,
                 unbounded_acc: Optional[float] = None,
                 selection: Optional[dict] = None) -> dict[str, Any]:
    """The checks above for one model's sweep table (columns model, attack, eps, acc, bacc; the
    per-face worst case as attack ``robust``). ``recalls``: clean (TPR, TNR) on the whole test
    split at the deployed boundary; ``unbounded_acc``: robust accuracy under PGD at
    :data:`UNBOUNDED_EPS`; ``selection``: the checkpoint's ``meta["selection"]`` (training)."""
    tol = 1.0 / max(n, 1) + 1e-9
    t = table[table["attack"].isin(attacks)]
    acc = _pivot(t, "acc") if len(t) else pd.DataFrame()
    flags: dict[str, Any] = {}
    zero = t[t["eps"] == 0]
    off = {str(r.attack): float(r.acc) for r in zero.itertuples() if abs(r.acc - clean_acc) > 1e-9}
    flags["eps0_differs_from_clean"] = _flag(bool(off), {"clean_acc": clean_acc, **off}
                                             if off else "none")
    rises = {}
    for attack, g in t.groupby("attack"):
        a = g.sort_values("eps")["acc"].to_numpy()
        if np.any(np.diff(a) > tol):
            rises[str(attack)] = [float(v) for v in a]
    flags["rises_with_eps"] = _flag(bool(rises), rises or "none")
    flags["pgd_weaker_than_fgsm"] = _weaker(acc, "pgd", "fgsm", tol)
    flags["apgd_weaker_than_pgd"] = _weaker(acc, "apgd", "pgd", tol)
    free = [a for a in attacks if a in GRADIENT_FREE]
    grads = [a for a in attacks if a not in GRADIENT_FREE]
    masking = {}
    if free and grads:
        for e, r in acc.iterrows():
            best_free = min(r[a] for a in free)
            best_grad = min(r[a] for a in grads)
            if e > 0 and best_free < best_grad - tol:
                masking[f"{e * 255:g}/255"] = {"gradient_free": float(best_free),
                                               "best_gradient": float(best_grad)}
    flags["gradient_masking"] = _flag(bool(masking), masking or ("none" if free else "not run"))
    rob = table[(table["attack"] == "robust") & (table["eps"] >= LARGE_EPS - 1e-12)]
    high = {f"{r.eps * 255:g}/255": float(r.bacc) for r in rob.itertuples() if r.bacc > 0.5 + tol}
    flags["above_chance_at_large_eps"] = _flag(
        bool(high), high or ("none" if len(rob) else "not run: add an eps >= 16/255 to eval.eps"),
        "warn")
    if unbounded_acc is None:
        flags["unbounded_attack_fails"] = _flag(False, "not run")
    else:
        flags["unbounded_attack_fails"] = _flag(
            unbounded_acc > UNBOUNDED_MAX_ACC,
            {"eps": f"{UNBOUNDED_EPS * 255:g}/255", "robust_acc": float(unbounded_acc),
             "max": UNBOUNDED_MAX_ACC})
    if recalls is None:
        flags["one_class"] = _flag(False, "not run")
    else:
        tpr, tnr = (float(v) for v in recalls)
        flags["one_class"] = _flag(min(tpr, tnr) < ONE_CLASS_RECALL,
                                   {"clean_tpr": tpr, "clean_tnr": tnr, "min": ONE_CLASS_RECALL})
    failed = isinstance(selection, dict) and selection.get("qualified") is False
    flags["selection_failed"] = _flag(failed, selection if failed else "none")
    std, near = spread["logit_std"], spread["near_threshold_share"]
    ratio = std / reference_std if reference_std else None
    collapsed = near >= COLLAPSE_NEAR_SHARE or (ratio is not None and ratio < COLLAPSE_STD_RATIO)
    flags["collapsed"] = _flag(collapsed, {"logit_std": std, "reference_logit_std": reference_std,
                                           "near_threshold_share": near})
    flags["ok"] = not any(v["fired"] and v["severity"] == "fail" for v in flags.values()
                          if isinstance(v, dict))
    return flags
