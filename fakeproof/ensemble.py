"""The ensemble stage: fuse checkpoints into one detector, fit its weights on val, attack it whole.

1. **Members**: the checkpoints the stage gets with ``--member NAME=PATH`` (dvc.yaml passes the
   clean and robust models and declares each as a dep); ``ensemble.members`` picks some of them
   by name (empty: every one). Each member keeps its own preprocessing: the input size and
   temperature of its inference recipe (:mod:`fakeproof.recipe`); normalisation is a layer of
   each member (:mod:`fakeproof.fusion`).
2. **Weights** on the simplex, fitted on **val** (:func:`fit_weights`): ``ensemble.fit: logloss``
   minimises the val log loss of the fused logit ``sum_i w_i z_i`` (the convex stacking problem
   of Breiman, "Stacked Regressions", Machine Learning 1996, with the weights kept non-negative
   and summing to one, as in Caruana et al., ICML 2004); ``equal`` gives 1/k each. The decision
   threshold maximises val balanced accuracy, as training chooses a member's.
3. **Test**: every member's and the ensemble's clean frame- and video-level metrics with
   video-resampled 95 % intervals; the ensemble through the evaluate stage's own sweep
   (:func:`fakeproof.evaluate.evaluate_model`: every ``eval.attacks`` at every ``eval.eps`` with
   the ``eval.preset`` budget, per-face robust accuracy, sanity flags), attacking the fused logit
   end to end; and a **transfer** matrix: PGD at ``eval.headline_eps`` crafted on each member and
   on the ensemble, scored by every member and the ensemble (frame accuracy). White-box numbers
   are the diagonal; the rows of the members show how far attacks on one model carry to the
   others (Tramèr et al., "Ensemble Adversarial Training", ICLR 2018).

Outputs: ``models/ensemble.pt`` (loads with :func:`fakeproof.models.load_checkpoint`, so
``fakeproof detect`` and ``fakeproof evaluate`` take it like any checkpoint), the detail JSON, a
small headline JSON (``{"ens": ...}`` with the five keys of :func:`fakeproof.evaluate.headline`:
clean AUC with its interval and balanced accuracy, robust balanced accuracy at
``eval.headline_eps`` with its interval; the short key keeps ``dvc exp show`` narrow; the sanity
flags are in the detail) and the robust-accuracy-vs-eps table.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from fakeproof.attacks import check_attack_names, get_attack
from fakeproof.config import EvalParams, Params, as_dict
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.errors import FakeproofError
from fakeproof.evaluate import (ROBUST, Sample, attack_seed, eps_label, eval_budget, evaluate_model,
                                headline, level_metrics)
from fakeproof.fusion import (ENSEMBLE, IDENTITY_MEAN, IDENTITY_STD, Ensemble, Member, resize,
                              save_ensemble)
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import best_threshold, score_spread
from fakeproof.models import load_checkpoint
from fakeproof.predict import as_logit_array, logits_of, proba
from fakeproof.recipe import build_recipe, read_recipe
from fakeproof.runtime import frozen_on, resolve_device

__all__ = ["Ensemble", "EnsembleError", "Member", "fit_weights", "load_member", "log_loss",
           "resize", "run_ensemble", "select_members", "transfer_matrix"]

log = logging.getLogger(__name__)
HEADLINE_KEY = "ens"  # the ensemble's key in its headline file (dvc exp show: ens.auc, ...)


class EnsembleError(FakeproofError, ValueError):
    """The ensemble cannot be built: unknown members, a split without both classes ..."""


# --------------------------------------------------------------------------------------------
# members and weights
# --------------------------------------------------------------------------------------------
def load_member(path: str | Path) -> tuple[Member, dict[str, Any]]:
    """A checkpoint as an ensemble member: its detector behind its recipe's input size and
    temperature; returns the member and the recipe. Errors name the file."""
    model, meta = load_checkpoint(path)
    if isinstance(model, Ensemble):
        raise EnsembleError(f"{path}: is itself an ensemble; give its members as members instead")
    recipe = read_recipe(meta, str(path))
    return Member(model, int(recipe["input_size"]), float(recipe["temperature"])), recipe


def select_members(available: Mapping[str, Path], wanted: Sequence[str]) -> dict[str, Path]:
    """The members ``ensemble.members`` names (by name, or by a path given with ``--member``);
    all of ``available`` when it is empty. Only ``--member`` checkpoints can be chosen: dvc.yaml
    declares each of them as a dep of the stage, so a changed member re-runs it."""
    if not available:
        raise EnsembleError("ensemble: no --member NAME=PATH given; dvc.yaml passes the members")
    if not wanted:
        return dict(available)
    by_path = {str(Path(p)): n for n, p in available.items()}
    out: dict[str, Path] = {}
    for i, entry in enumerate(wanted):
        name = entry if entry in available else by_path.get(str(Path(entry)))
        if name is None:
            raise EnsembleError(f"ensemble.members[{i}] = {entry!r}: not a member of the ensemble "
                                f"stage (have {', '.join(available)}); add `--member NAME=PATH` to "
                                "its cmd and PATH to its deps in dvc.yaml")
        if name in out:
            raise EnsembleError(f"ensemble.members[{i}] = {entry!r}: {name} is listed twice")
        out[name] = available[name]
    return out


def log_loss(logits: Any, labels: Any) -> float:
    """Mean binary cross-entropy of fake logits against labels (numerically stable)."""
    z = as_logit_array(logits)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_weights(member_val_logits: Any, labels: Any, method: str = "logloss") -> np.ndarray:
    """Fusion weights on the simplex (non-negative, summing to one), one per member.

    Args:
        member_val_logits: (n, k) val logits, one column per member (tempered as fused), or a
            list of k vectors.
        labels: (n,) 0 = real, 1 = fake.
        method: ``logloss``: the weights minimising the mean log loss of ``logits @ w`` (a convex
            problem, solved by L-BFGS over a softmax parametrisation in float64); the result is
            compared with equal weights and with every single member (the simplex's vertices,
            which a softmax reaches only in the limit), and the best is kept, so the fitted
            ensemble's val log loss is never above its best member's. ``equal``: 1/k each.
    """
    if isinstance(member_val_logits, (list, tuple)):
        z = np.stack([as_logit_array(v) for v in member_val_logits], axis=1)
    else:
        z = np.asarray(member_val_logits, dtype=np.float64)
        z = z[:, None] if z.ndim == 1 else z
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    n, k = z.shape
    if n != y.size or n == 0 or k == 0:
        raise EnsembleError(f"fit_weights: {n} x {k} logits for {y.size} labels; give one row per "
                            "val face and one column per member")
    equal = np.full(k, 1.0 / k)
    if method == "equal" or k == 1:
        return equal
    if method != "logloss":
        raise EnsembleError(f"ensemble.fit = {method!r}: use logloss or equal")
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    theta = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(zt @ torch.softmax(theta, 0), yt)
        loss.backward()
        return loss

    opt.step(closure)
    fitted = torch.softmax(theta.detach(), 0).numpy()
    candidates = [fitted / fitted.sum(), equal, *np.eye(k)]
    losses = [log_loss(z @ w, y) for w in candidates]
    return np.asarray(candidates[int(np.argmin(losses))], dtype=np.float64)


def ensemble_recipe(params: Params, threshold: float, first_member: str) -> dict[str, Any]:
    """The ensemble's inference recipe: the frame sampling and crop policy of the data it was
    fitted on (``frames.*``, ``faces.*``, ``eval.video_agg``), identity normalisation (each
    member normalises itself), the val-chosen threshold. ``first_member`` (a registered model
    name) only stands in for ``model.name``, which the ensemble does not read."""
    recipe = build_recipe(replace(params, model=replace(params.model, name=first_member)),
                          threshold=threshold)
    recipe.update({"model": ENSEMBLE, "mean": list(IDENTITY_MEAN), "std": list(IDENTITY_STD)})
    return recipe


# --------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------
def _batches(ds: FaceDataset, sample: Sample, batch_size: int):
    for start in range(0, len(sample.index), batch_size):
        items = [ds[int(i)] for i in sample.index[start:start + batch_size]]
        yield (start, torch.stack([it[0] for it in items]),
               torch.stack([torch.as_tensor(it[1]) for it in items]).long())


def transfer_matrix(models: Mapping[str, nn.Module], ds: FaceDataset, sample: Sample,
                    ep: EvalParams, eps: float) -> tuple[dict[str, dict[str, float]],
                                                         dict[str, float]]:
    """``(transfer, clean)``: ``transfer[src][dst]`` is the frame accuracy of ``dst`` on PGD
    examples crafted on ``src`` (eps ``eps``, the evaluate budget and seeds, so the diagonal is
    the white-box PGD accuracy evaluate reports); ``clean[dst]`` its accuracy on the clean
    sample."""
    spec = get_attack("pgd")
    budget = eval_budget(ep)
    names = list(models)
    correct = {s: dict.fromkeys(names, 0) for s in names}
    clean = dict.fromkeys(names, 0)
    n = 0
    device = next(next(iter(models.values())).parameters()).device
    for start, x, y in _batches(ds, sample, ep.batch_size):
        seed = attack_seed(ep.seed, "pgd", eps, str(sample.frames["key"].iloc[start]))
        yn = y.numpy()
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            for dst, m in models.items():
                clean[dst] += int(((proba(m(x)) > 0.5) == yn).sum())
        for src, m in models.items():
            adv = spec.fn(m, x, y, eps=eps, **spec.options(budget, seed))
            with torch.no_grad():
                for dst, d in models.items():
                    correct[src][dst] += int(((proba(d(adv)) > 0.5) == yn).sum())
        n += len(y)
    n = max(n, 1)
    return ({s: {d: c / n for d, c in row.items()} for s, row in correct.items()},
            {d: c / n for d, c in clean.items()})


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _split(paths: DataPaths, split: str, why: str) -> FaceDataset:
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, split)
    if len(ds) == 0 or len(np.unique(ds.labels)) < 2:
        raise EnsembleError(f"{paths.splits_csv}: the {split} split needs real and fake faces "
                            f"({why}); add data or change split.*")
    return ds


def _wide_acc(table: pd.DataFrame) -> pd.DataFrame:
    t = table.assign(series=table["model"] + "_" + table["attack"])
    w = t.pivot_table(index="eps", columns="series", values="acc", sort=True).reset_index()
    w.columns.name = None
    w.insert(1, "eps_255", (w["eps"] * 255).round(4))
    return w


def run_ensemble(params: Params, paths: DataPaths, members: Mapping[str, Path], out_model: Path,
                 out_metrics: Path, out_headline: Path, plots_dir: Optional[Path] = None
                 ) -> dict[str, Any]:
    """The ensemble stage (see the module docstring); returns the headline numbers."""
    ep, enp = params.eval, params.ensemble
    check_attack_names(list(ep.attacks))
    chosen = select_members(members, list(enp.members))
    torch.manual_seed(ep.seed)
    torch.set_num_threads(params.train.threads)
    device = resolve_device(params.train.device)  # attacks craft in float32 on this device
    t0 = time.perf_counter()
    loaded = {name: load_member(path) for name, path in chosen.items()}
    for member, _ in loaded.values():
        frozen_on(member, device)
    names = list(loaded)
    val_ds = _split(paths, "val", "the fusion weights and threshold are fitted on val")
    test_ds = _split(paths, "test", "AUC and balanced accuracy need both")

    def scores(ds: FaceDataset, what: str) -> dict[str, np.ndarray]:
        loader = make_loader(ds, ep.batch_size, shuffle=False)
        return {n: logits_of(loaded[n][0], loader, f"{n} {what}", device)[0] for n in names}

    val = scores(val_ds, "val")
    z_val = np.stack([val[n] for n in names], axis=1)
    weights = fit_weights(z_val, val_ds.labels, enp.fit)
    ens = Ensemble([loaded[n][0] for n in names], names, weights).to(device).eval()
    for p in ens.parameters():
        p.requires_grad_(False)
    fused_val = z_val @ weights
    threshold = best_threshold(val_ds.labels, proba(fused_val))
    val_loss = {n: log_loss(val[n], val_ds.labels) for n in names}
    val_loss[ENSEMBLE] = log_loss(fused_val, val_ds.labels)
    save_ensemble(out_model, ens, {
        "recipe": ensemble_recipe(params, threshold, loaded[names[0]][0].name),
        "members": {n: str(chosen[n]) for n in names}, "fit": enp.fit,
        "val_logloss": val_loss, "val_threshold": threshold})
    log.info("ensemble: %s fitted on %d val faces (%s): weights %s, val log loss %.4f (best "
             "member %.4f)", ", ".join(names), len(val_ds), enp.fit,
             ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)), val_loss[ENSEMBLE],
             min(val_loss[n] for n in names))

    frames = test_ds.frames.reset_index(drop=True)
    test = scores(test_ds, "test")
    member_out = {n: {"checkpoint": str(chosen[n]), "weight": float(w),
                      "input_size": loaded[n][0].input_size,
                      "temperature": loaded[n][0].temperature, "val_logloss": val_loss[n],
                      "test_clean": level_metrics(frames, test[n], ep.video_agg, ep.bootstrap,
                                                  ep.seed)}
                  for n, w in zip(names, weights)}
    ref = score_spread(test[names[0]])["logit_std"]
    res = evaluate_model(ENSEMBLE, ens, test_ds, ep, reference_spread=ref, keep=0)
    sample = res["sample"]
    transfer, transfer_clean = transfer_matrix({**{n: loaded[n][0] for n in names}, ENSEMBLE: ens},
                                               test_ds, sample, ep, ep.headline_eps)

    head = headline(res, ep)
    detail = {
        "weights": dict(zip(names, (float(w) for w in weights))), "fit": enp.fit,
        "threshold": threshold, "temperature": ens.temperature, "members": member_out,
        "ensemble": {"val_logloss": val_loss[ENSEMBLE], "test_clean": res["test_clean"],
                     "sample_clean": res["sample_clean"], "attacks": res["attacks"],
                     ROBUST: res["robust"], "sanity": res["sanity"], "spread": res["spread"]},
        "transfer": transfer, "transfer_clean": transfer_clean,
        "transfer_eps": eps_label(ep.headline_eps), "transfer_attack": "pgd",
        "test_faces": res["n_frames"], "test_videos": res["n_videos"],
        "sample": {"videos": int(sample.frames["video_id"].nunique()),
                   "faces": int(len(sample.index)), "strata": sample.strata},
        "budget": res["budget"],
        "params": {"ensemble": as_dict(enp),
                   "eval": {k: v for k, v in as_dict(ep).items() if k != "cross"}},
    }
    write_json(out_metrics, detail)
    write_json(out_headline, {HEADLINE_KEY: head}, digits=4)
    if plots_dir is not None:
        write_csv(Path(plots_dir) / "robust_acc.csv", _wide_acc(res["table"]))
    log.info("ensemble: test AUC %.4f (members %s); robust bacc at %s %.4f; sanity %s; %.1fs",
             head["auc"], ", ".join(f"{n} {member_out[n]['test_clean']['frame']['auc']:.4f}"
                                    for n in names),
             eps_label(ep.headline_eps), head.get("adv_bacc", float("nan")),
             "ok" if res["sanity"]["ok"] else "FLAGGED", time.perf_counter() - t0)
    return {"members": len(names), "test_auc": head["auc"],
            "robust_bacc": head.get("adv_bacc"), "val_logloss": val_loss[ENSEMBLE],
            "weights": detail["weights"]}
