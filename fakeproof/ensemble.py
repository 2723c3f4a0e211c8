"""The ensemble stage: fuse checkpoints into one detector, fit its weights on val, attack it whole.

1. **Members**: the checkpoints the stage gets with ``--member NAME=PATH`` (dvc.yaml passes the
   clean and robust models and declares each as a dep); ``ensemble.members`` picks some of them
   by name (empty: every one). Each member keeps its own preprocessing: the input size and Platt
   calibration of its inference recipe (:mod:`fakeproof.recipe`); normalisation is a layer of
   each member (:mod:`fakeproof.models.fusion`).
2. **Weights** on the simplex, fitted on **val** (:func:`fit_weights`): ``ensemble.fit: robust``
   (default) minimises the val log loss of the fused logit ``sum_i w_i (a_i z_i + b_i)`` over
   clean val faces *and* PGD examples of them crafted on the ensemble itself
   (:func:`fit_robust_weights`), so the fit rewards members that stay right under attack;
   ``logloss`` uses clean val faces only (the convex stacking problem of Breiman, "Stacked
   Regressions", Machine Learning 1996, with the weights kept non-negative and summing to one,
   as in Caruana et al., ICML 2004), which puts the weight on whichever member is best
   calibrated clean, robust or not; ``equal`` gives 1/k each. The ensemble's own boundary (Platt
   and threshold maximising val balanced accuracy) is fitted on val, as training fits a
   member's.
3. **Test**: every member's and the ensemble's clean frame- and video-level metrics at their
   deployed boundaries, with stratified video-resampled 95 % intervals; the ensemble through the
   evaluate stage's own sweep (:func:`fakeproof.evaluate.evaluate_model`: every ``eval.attacks``
   at every ``eval.eps`` with the ``eval.preset`` budget, per-face robust accuracy, sanity
   flags), attacking the fused logit end to end at its boundary; paired differences between the
   ensemble and each member; and a **transfer** matrix: PGD at ``eval.headline_eps`` crafted on
   each member and on the ensemble, scored by every member and the ensemble (frame accuracy at
   each one's boundary). White-box numbers are the diagonal; the rows of the members show how
   far attacks on one model carry to the others (Tramèr et al., "Ensemble Adversarial
   Training", ICLR 2018).

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

from fakeproof.attacks import check_attack_names
from fakeproof.boundary import Boundary, Deployed, fit_boundary
from fakeproof.calibration import log_loss
from fakeproof.config import EvalParams, Params, as_dict
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.errors import FakeproofError
from fakeproof.evaluate import (ROBUST, Scored, attack_sample, eval_budget, evaluate_model,
                                headline, model_pairs, wide_by_eps)
from fakeproof.intervals import level_metrics
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import score_spread
from fakeproof.models import load_checkpoint
from fakeproof.models.fold import folded_copy
from fakeproof.models.fusion import (ENSEMBLE, IDENTITY_MEAN, IDENTITY_STD, Ensemble, Member,
                                     save_ensemble)
from fakeproof.predict import as_logit_array, logits_of
from fakeproof.recipe import Recipe, build_recipe, read_recipe
from fakeproof.runtime import frozen_on, resolve_device
from fakeproof.sampling import Sample
from fakeproof.face_scores import (TRANSFER_ATTACK, Crafted, file_sha256, fused_decision, read_logits,
                                transfer_table)
from fakeproof.under_attack import dataset_batches, eps_label, score_under_attack

__all__ = ["Ensemble", "EnsembleError", "Member", "fit_weights", "load_member", "members_crafted",
           "run_ensemble", "select_members", "with_ensemble_scores"]

log = logging.getLogger(__name__)
HEADLINE_KEY = "ens"  # the ensemble's key in its headline file (dvc exp show: ens.auc, ...)


class EnsembleError(FakeproofError, ValueError):
    """The ensemble cannot be built: unknown members, a split without both classes ..."""


# --------------------------------------------------------------------------------------------
# members and weights
# --------------------------------------------------------------------------------------------
def load_member(path: str | Path) -> tuple[Member, Recipe]:
    """A checkpoint as an ensemble member: its detector behind its recipe's input size and Platt
    calibration (its output is the calibrated logit); returns the member and the recipe. Errors
    name the file."""
    model, meta = load_checkpoint(path)
    if isinstance(model, Ensemble):
        raise EnsembleError(f"{path}: is itself an ensemble; give its members as members instead")
    recipe = read_recipe(meta, str(path))
    return Member(model, recipe.input_size, recipe.platt_a, recipe.platt_b), recipe


def member_boundary(recipe: Recipe) -> Boundary:
    """A member's deployed boundary on its calibrated logit: its own threshold (the calibration
    is inside :class:`Member` already)."""
    return Boundary(1.0, 0.0, recipe.threshold)


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
            ensemble's val log loss is never above its best member's. ``robust`` solves the same
            problem on the rows it is given (:func:`fit_robust_weights` passes clean and
            adversarial val rows). ``equal``: 1/k each.
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
    if method not in ("logloss", "robust"):
        raise EnsembleError(f"ensemble.fit = {method!r}: use logloss, robust or equal")
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


def fit_robust_weights(members: Mapping[str, Member], z_val: np.ndarray, val_ds: FaceDataset,
                       ep: EvalParams, rounds: int = 2) -> tuple[np.ndarray, dict[str, Any]]:
    """``ensemble.fit: robust``: weights minimising the val log loss of clean **and adversarial**
    val faces, the adversarial ones crafted on the ensemble itself (PGD at
    ``eval.headline_eps`` with the evaluate budget, aimed at the ensemble's own val boundary),
    so the fit rewards members that stay right under attack on the fused model.

    The attack depends on the weights, so crafting and fitting alternate ``rounds`` times from
    the clean fit, and the adversarial faces of **every** round are kept (each round's attack
    aims at the previous round's weights; the fit must hold against all of them, as a double
    oracle does). Without that memory the alternation oscillates: on the demo, round 2's faces,
    crafted on an ensemble that gave the clean member no weight, did not attack it, and a refit
    on them alone gave it weight again. Clean and adversarial rows weigh the same in the loss.
    Returns the weights and, per round, the clean and (mean) adversarial val log loss before
    and after that round's fit."""
    names = list(members)
    scorers = {n: folded_copy(m) for n, m in members.items()}  # forward passes only
    y = val_ds.labels.astype(float)
    weights = fit_weights(z_val, y, "logloss")
    history = []
    frames = val_ds.frames.reset_index(drop=True)
    index = np.arange(len(val_ds))
    adv_rows: list[np.ndarray] = []
    for r in range(rounds):
        ens = folded_copy(frozen_on(Ensemble([members[n] for n in names], names, weights),
                                    next(members[names[0]].parameters()).device))
        boundary, _ = fit_boundary(z_val @ weights, y)
        res = score_under_attack(Deployed(ens, boundary),
                                 dataset_batches(val_ds, index, ep.batch_size,
                                                 frames["key"].tolist()),
                                 ["pgd"], ep.headline_eps, eval_budget(ep), ep.seed + 1 + r,
                                 also_score=scorers)
        adv_rows.append(np.stack([res.transfer[n]["pgd"] for n in names], axis=1))
        z_adv = np.vstack(adv_rows)
        y_adv = np.tile(y, len(adv_rows))

        def losses(w: np.ndarray) -> dict[str, float]:
            return {"clean": log_loss(z_val @ w, y), "adv": log_loss(z_adv @ w, y_adv)}

        before = losses(weights)
        weights = fit_weights(np.vstack([np.tile(z_val, (len(adv_rows), 1)), z_adv]),
                              np.r_[y_adv, y_adv], "robust")
        history.append({"round": r + 1, "before": before, "after": losses(weights),
                        "weights": dict(zip(names, map(float, weights)))})
    return weights, {"rounds": history, "attack": f"pgd at {eps_label(ep.headline_eps)}",
                     "adversarial_rows": int(sum(len(a) for a in adv_rows))}


def ensemble_recipe(params: Params, boundary: Boundary, first_member: str) -> dict[str, Any]:
    """The ensemble's inference recipe: the frame sampling and crop policy of the data it was
    fitted on (``frames.*``, ``faces.*``, ``eval.video_agg``), identity normalisation (each
    member normalises itself), the boundary fitted on val. ``first_member`` (a registered model
    name) only stands in for ``model.name``, which the ensemble does not read."""
    recipe = build_recipe(replace(params, model=replace(params.model, name=first_member)),
                          boundary)
    recipe.update({"model": ENSEMBLE, "mean": list(IDENTITY_MEAN), "std": list(IDENTITY_STD)})
    return recipe


# --------------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------------
def members_crafted(deployed: Mapping[str, Deployed], ds: FaceDataset, sample: Sample,
                    ep: EvalParams, sources: Optional[Sequence[str]] = None) -> dict[str, Crafted]:
    """PGD at ``eval.headline_eps`` crafted on each of ``sources`` (default: every model; aimed
    at its boundary with the evaluate budget and seeds, so each is the PGD evaluate ran) and
    scored by every other model: only when evaluate's ``logits.csv`` does not hold them for
    these checkpoints (or ``eval.attacks`` has no PGD)."""
    keys = sample.frames["key"].tolist()
    out = {}
    for src in sources or list(deployed):
        m = deployed[src]
        others = {d: o for d, o in deployed.items() if d != src}
        res = score_under_attack(m, dataset_batches(ds, sample.index, ep.batch_size, keys),
                                 [TRANSFER_ATTACK], ep.headline_eps, eval_budget(ep), ep.seed,
                                 also_score=others)
        out[src] = Crafted(res.by_attack[TRANSFER_ATTACK],
                           {d: res.transfer[d][TRANSFER_ATTACK] for d in others})
    return out


def with_ensemble_scores(crafted: Mapping[str, Crafted], offsets: Mapping[str, float],
                         weights: Mapping[str, float], boundary: Boundary) -> dict[str, Crafted]:
    """Each member's PGD examples scored by the ensemble too, from the members' scores of them
    (:func:`fakeproof.face_scores.fused_decision`: the fused logit is their weighted sum)."""
    return {src: Crafted(c.own, {**c.scored, ENSEMBLE: fused_decision(
        {d: c.by(src, d) for d in weights}, offsets, weights, boundary)})
        for src, c in crafted.items()}


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def _split(paths: DataPaths, split: str, why: str) -> FaceDataset:
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, split)
    if len(ds) == 0 or len(np.unique(ds.labels)) < 2:
        raise EnsembleError(f"{paths.splits_csv}: the {split} split needs real and fake faces "
                            f"({why}); add data or change split.*")
    return ds


def _member_reports(names: Sequence[str], weights: np.ndarray, chosen: Mapping[str, Path],
                    deployed: Mapping[str, Deployed], test: Mapping[str, np.ndarray],
                    val_loss: Mapping[str, float], frames: pd.DataFrame, ep: EvalParams
                    ) -> dict[str, dict[str, Any]]:
    """Per member: checkpoint, fusion weight, input size, calibration, threshold, val log loss
    and its own clean test metrics at its own boundary."""
    out = {}
    for n, w in zip(names, weights):
        member, boundary = deployed[n].model, deployed[n].boundary
        out[n] = {"checkpoint": str(chosen[n]), "weight": float(w),
                  "input_size": member.input_size, "platt_a": member.a, "platt_b": member.b,
                  "threshold": boundary.threshold, "val_logloss": val_loss[n],
                  "test_clean": level_metrics(frames, boundary.decision(test[n]), boundary,
                                              ep.video_agg, ep.bootstrap, ep.seed, ep.min_videos)}
    return out


def _fit_and_save(params: Params, members_: Mapping[str, Member], val: Mapping[str, np.ndarray],
                  val_ds: FaceDataset, chosen: Mapping[str, Path], device: torch.device,
                  out_model: Path) -> tuple[np.ndarray, dict, Ensemble, Boundary, bool, dict]:
    """Fit the fusion weights (``ensemble.fit``) and the boundary on val, save the ensemble;
    returns weights, the fit's log, the ensemble, its boundary, whether Platt scaling held, and
    the val log loss per member and of the ensemble."""
    ep, enp = params.eval, params.ensemble
    names = list(members_)
    z_val = np.stack([val[n] for n in names], axis=1)
    fit_log: dict[str, Any] = {}
    if enp.fit == "robust":
        weights, fit_log = fit_robust_weights(members_, z_val, val_ds, ep)
    else:
        weights = fit_weights(z_val, val_ds.labels, enp.fit)
    ens = frozen_on(Ensemble([members_[n] for n in names], names, weights), device)
    fused_val = z_val @ weights
    boundary, platt_ok = fit_boundary(fused_val, val_ds.labels)
    val_loss = {n: log_loss(val[n], val_ds.labels) for n in names}
    val_loss[ENSEMBLE] = log_loss(fused_val, val_ds.labels)
    save_ensemble(out_model, ens, {
        "recipe": ensemble_recipe(params, boundary, members_[names[0]].name),
        "members": {n: str(chosen[n]) for n in names}, "fit": enp.fit,
        "val_logloss": val_loss, "val_threshold": boundary.threshold})
    log.info("ensemble: %s fitted on %d val faces (%s): weights %s, val log loss %.4f (best "
             "member %.4f)", ", ".join(names), len(val_ds), enp.fit,
             ", ".join(f"{n}={w:.3f}" for n, w in zip(names, weights)), val_loss[ENSEMBLE],
             min(val_loss[n] for n in names))
    return weights, fit_log, ens, boundary, platt_ok, val_loss


def _members_measured(evaluated: Optional[Path], chosen: Mapping[str, Path],
                      deployed: Mapping[str, Deployed], test_ds: FaceDataset, ep: EvalParams,
                      score_test: Any) -> tuple[dict[str, np.ndarray], dict[str, Crafted]]:
    """The members' calibrated test logits and their PGD examples at the headline eps: from
    evaluate's ``logits.csv`` when it measured these very checkpoints on these faces
    (:func:`fakeproof.face_scores.read_logits`), else measured here."""
    frames = test_ds.frames.reset_index(drop=True)
    sample = attack_sample(frames, ep)  # evaluate_model's
    names = list(deployed)
    size = int(test_ds[0][0].shape[-1])  # evaluate feeds crops as stored; a Member resizes them
    resized = [n for n in names if deployed[n].model.input_size != size]
    if resized and evaluated is not None:
        log.info("ensemble: member(s) %s resize the %d px test crops (recipe input size), which "
                 "evaluate does not; measuring them here", ", ".join(resized), size)
    ev = None if resized else read_logits(
        evaluated, {n: file_sha256(chosen[n]) for n in names}, frames["key"].tolist(),
        sample.frames["key"].tolist(), eps_label(ep.headline_eps))
    if ev is None:
        return score_test(), members_crafted(deployed, test_ds, sample, ep)
    log.info("ensemble: the members' clean test logits and their PGD examples at %s scored by "
             "every member: from %s (evaluate measured these checkpoints)",
             eps_label(ep.headline_eps), evaluated)
    return ({n: ev.clean[n] + deployed[n].boundary.offset for n in names}, ev.crafted)


def _result_detail(res: Any) -> dict[str, Any]:
    """The ensemble's part of the detail file from its :class:`fakeproof.evaluate.ModelResult`."""
    return {"test_clean": res.test_clean, "sample_clean": res.sample_clean, "attacks": res.attacks,
            ROBUST: res.robust, "clean_to_attacked": res.clean_to_attacked,
            "unbounded": res.unbounded, "sanity": res.sanity, "spread": res.spread}


def run_ensemble(params: Params, paths: DataPaths, members: Mapping[str, Path], out_model: Path,
                 out_metrics: Path, out_headline: Path, plots_dir: Optional[Path] = None,
                 evaluated: Optional[Path] = None) -> dict[str, Any]:
    """The ensemble stage (see the module docstring); returns the headline numbers.
    ``evaluated``: evaluate's ``logits.csv`` (what it measured of the members is not redone)."""
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
    members_ = {n: loaded[n][0] for n in names}
    weights, fit_log, ens, boundary, platt_ok, val_loss = _fit_and_save(
        params, members_, val, val_ds, chosen, device, out_model)

    frames = test_ds.frames.reset_index(drop=True)
    deployed = {n: Deployed(folded_copy(members_[n]), member_boundary(loaded[n][1])) for n in names}
    test, crafted = _members_measured(evaluated, chosen, deployed, test_ds, ep,
                                      lambda: scores(test_ds, "test"))
    crafted = with_ensemble_scores(crafted, {n: deployed[n].boundary.offset for n in names},
                                   dict(zip(names, map(float, weights))), boundary)
    deployed[ENSEMBLE] = Deployed(folded_copy(ens), boundary)  # scored and attacked, not saved
    member_out = _member_reports(names, weights, chosen, deployed, test, val_loss, frames, ep)
    ref = score_spread(deployed[names[0]].boundary.decision(test[names[0]]))["logit_std"]
    res = evaluate_model(ENSEMBLE, deployed[ENSEMBLE], test_ds, ep, reference_spread=ref, keep=0,
                         also_score={n: deployed[n] for n in names})
    sample = res.sample
    crafted[ENSEMBLE] = res.crafted or members_crafted(deployed, test_ds, sample, ep,
                                                       [ENSEMBLE])[ENSEMBLE]
    clean = {n: deployed[n].boundary.decision(test[n])[sample.index] for n in names}
    transfer, transfer_clean = transfer_table(
        crafted, {**clean, ENSEMBLE: res.clean_logits[sample.index]},
        sample.frames["label"].to_numpy())
    lab = eps_label(ep.headline_eps)
    as_results = {n: Scored(deployed[n].boundary.decision(test[n]), sample, {lab: crafted[n].own})
                  for n in names}
    as_results[ENSEMBLE] = Scored(res.clean_logits, sample, {lab: crafted[ENSEMBLE].own})
    pairs = model_pairs(as_results, frames, ep)

    head = headline(res, ep)
    detail = {
        "weights": dict(zip(names, (float(w) for w in weights))), "fit": enp.fit,
        "fit_log": fit_log, "boundary": boundary.to_recipe(), "platt_ok": platt_ok,
        "members": member_out,
        "ensemble": {"val_logloss": val_loss[ENSEMBLE], **_result_detail(res)},
        "pairs": pairs, "pairs_note": f"robust@{lab} here is white-box PGD of each model alone "
                                      "(members are attacked with the full suite by evaluate)",
        "transfer": transfer, "transfer_clean": transfer_clean,
        "transfer_eps": lab, "transfer_attack": "pgd",
        "test_faces": res.n_frames, "test_videos": res.n_videos,
        "sample": res.detail()["sample"], "budget": res.budget,
        "params": {"ensemble": as_dict(enp),
                   "eval": {k: v for k, v in as_dict(ep).items() if k != "cross"}},
    }
    write_json(out_metrics, detail)
    write_json(out_headline, {HEADLINE_KEY: head}, digits=4)
    if plots_dir is not None:
        write_csv(Path(plots_dir) / "robust_acc.csv", wide_by_eps(res.table, "acc"))
    log.info("ensemble: test AUC %.4f (members %s); robust bacc at %s %.4f; sanity %s; %.1fs",
             head["auc"], ", ".join(f"{n} {member_out[n]['test_clean']['frame']['auc']:.4f}"
                                    for n in names), lab, head.get("adv_bacc", float("nan")),
             "ok" if res.sanity["ok"] else "FLAGGED", time.perf_counter() - t0)
    return {"members": len(names), "test_auc": head["auc"],
            "robust_bacc": head.get("adv_bacc"), "val_logloss": val_loss[ENSEMBLE],
            "weights": detail["weights"]}
