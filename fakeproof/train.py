"""Clean pretraining and PGD adversarial fine-tuning, with model selection on val only.

- Loss: ``balanced_bce`` weighs each class by the inverse of its share of training frames, so a
  1:4 (FF++) or 1:9 (Celeb-DF) imbalance does not reward predicting the majority; ``bce`` is plain.
- Selection: after every epoch the model is scored on the **val** split (frame AUC for pretraining;
  for fine-tuning the mean of clean and PGD balanced accuracy at ``adv.eps``, with a PGD stronger
  than the training one: ``adv.select_steps`` steps and its own seed ``adv.select_seed``); the best
  epoch is kept and training stops after ``train.patience`` epochs without gain. The test split is
  never read here: only the evaluate stage touches it, once.
- After fine-tuning, the chosen model is attacked on val at every ``adv.val_eps`` (metrics
  ``val_sweep`` in ``metrics/finetune.json``): choose the training eps on that, never on test.
- Each checkpoint stores the decision threshold that maximises val balanced accuracy and the
  inference recipe (:mod:`fakeproof.recipe`), so ``fakeproof detect`` needs no params.yaml.
- A non-finite loss stops training with one line naming the epoch and step.
- Adversarial fine-tuning (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018): starts from ``models/clean.pt``; in every batch a share ``adv.clean_share``
  stays clean and the rest is replaced by L-inf PGD examples (``adv.eps``, ``adv.alpha``,
  ``adv.steps``, random start) crafted against the current weights in eval mode (BatchNorm running
  statistics are used while attacking and left untouched by it).
- Where and how (:mod:`fakeproof.runtime`): ``train.device``, ``train.amp`` (attacks craft in
  float32; the training attack under train.amp's autocast with ``adv.craft_precision: amp``),
  ``train.deterministic``, ``train.nproc`` (DistributedDataParallel, rank 0 scores, logs and
  writes). Every epoch reseeds its shuffle, dropout and attack starts from
  ``(seed, epoch)`` and ends with a resume state (:mod:`fakeproof.resume`): a killed stage re-run
  continues from its last completed epoch and ends with the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from fakeproof import resume as resume_mod
from fakeproof import runtime
from fakeproof.boundary import Boundary, Deployed, class_recalls, fit_boundary
from fakeproof.config import AdvParams, Params, TrainParams, as_dict
from fakeproof.data import DataPaths, FaceDataset, make_loader, train_options
from fakeproof.errors import TrainingError
from fakeproof.fit import StepLoss, fit, weighted_bce
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import binary_metrics
from fakeproof.models import create_model, load_checkpoint, save_checkpoint
from fakeproof.objectives import (catastrophic_overfit, craft_precision, get_objective, train_alpha,
                                  warmup_budget)
from fakeproof.predict import logits_of, proba
from fakeproof.recipe import build_recipe
from fakeproof.sampling import choose_sample
from fakeproof.selection import SELECTION_RULE, Candidate, selection_score

log = logging.getLogger(__name__)

def _val_logits(model: nn.Module, val_ds: FaceDataset, batch_size: int, device: torch.device
                ) -> tuple[np.ndarray, np.ndarray]:
    return logits_of(model, make_loader(val_ds, batch_size, shuffle=False), "val", device)


def _val_scores(model: nn.Module, val_ds: FaceDataset, batch_size: int,
                device: torch.device = torch.device("cpu"), calibrate: bool = True) -> dict:
    """Val AUC (the pretrain selection) and balanced accuracy and accuracy at the boundary this
    epoch would ship with (Platt and threshold fitted on val, :func:`fit_boundary`), never at
    P(fake) = 0.5, where a class-balanced model may call every face one class."""
    logits, labels = _val_logits(model, val_ds, batch_size, device)
    boundary, _ = fit_boundary(logits, labels, calibrate)
    m = binary_metrics(labels, boundary.p_fake(logits), boundary.threshold, scores=logits)
    return {"val_auc": m["auc"], "val_bacc": m["bacc"], "val_acc": m["acc"], "select": m["auc"]}


def _boundary(model: nn.Module, val_ds: FaceDataset, batch_size: int, calibrate: bool,
              device: torch.device = torch.device("cpu")) -> tuple[Boundary, bool]:
    """The deployed decision boundary, fitted on val: Platt scaling (Platt 1999; identity when
    ``eval.calibrate`` is off or the fit is degenerate) and the threshold on the calibrated
    P(fake) that maximises val balanced accuracy (:func:`fakeproof.boundary.fit_boundary`).
    Stored in the checkpoint's recipe; evaluate attacks and scores the model at it."""
    logits, labels = _val_logits(model, val_ds, batch_size, device)
    boundary, ok = fit_boundary(logits, labels, calibrate)
    if not ok:
        log.warning("Platt scaling is degenerate on val (constant or reversed scores); keeping "
                    "a = 1, b = 0 with the val threshold %.4f", boundary.threshold)
    return boundary, ok


def _datasets(paths: DataPaths, seed: int, augment: bool, options: Optional[dict] = None
              ) -> tuple[FaceDataset, FaceDataset]:
    """Train and val datasets; ``options``: the training-only ones (:func:`train_options`:
    ``train.sbi``, ``frames.train_count``), which val never gets."""
    train = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "train", augment=augment,
                        seed=seed, **(options or {}))
    val = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "val")
    if len(train) == 0 or len(val) == 0:
        raise TrainingError(f"{paths.splits_csv}: train ({len(train)} faces) and val ({len(val)} "
                            "faces) must both hold faces; add data or change the split ratios")
    for name, ds in (("train", train), ("val", val)):
        if len(np.unique(ds.labels)) < 2:
            raise TrainingError(f"{paths.splits_csv}: the {name} split holds only one class; both "
                                "real and fake videos are needed there (add data or change split.*)")
    return train, val


def _start(tp: TrainParams, seed: int, paths: DataPaths, clean_model: Optional[Path] = None,
           options: Optional[dict] = None
           ) -> tuple[runtime.Runtime, float, FaceDataset, FaceDataset, Optional[tuple]]:
    """What both training stages begin with: the runtime (:func:`fakeproof.runtime.setup`), the
    start time, the checkpoint to start from (``clean_model``; loaded first, so that its absence
    is the error named), and the train and val datasets (``options``: :func:`_datasets`)."""
    rt = runtime.setup(tp, seed)
    t0 = time.perf_counter()
    loaded = load_checkpoint(clean_model) if clean_model is not None else None
    train_ds, val_ds = _datasets(paths, seed, tp.augment, options)
    return rt, t0, train_ds, val_ds, loaded


def _finish(out_metrics: Path, metrics: dict, out_curve: Path, curve: list[dict],
            resume: Optional[Path]) -> None:
    """What both training stages end with on rank 0, after the checkpoint: the metrics and the
    curve (without its bookkeeping columns) written, the resume state cleared, the runtime torn
    down."""
    write_json(out_metrics, metrics)
    write_csv(out_curve, pd.DataFrame(curve).drop(columns=["seconds", "select", "collapsed"],
                                                   errors="ignore"))
    resume_mod.clear(resume)
    runtime.teardown()


def _clean_loss(rt: runtime.Runtime) -> StepLoss:
    def step(net, module, x, y, gen, weights, progress):
        with rt.autocast():
            return weighted_bce(net(x), y, weights)
    return step


def run_pretrain(params: Params, paths: DataPaths, out_model: Path, out_metrics: Path,
                 out_curve: Path, tb_dir: Path, resume: Optional[Path] = None) -> dict:
    """The pretrain stage: clean training from scratch (or ImageNet weights) with val selection."""
    tp = params.train
    rt, t0, train_ds, val_ds, _ = _start(tp, tp.seed, paths, options=train_options(params))
    model = create_model(params.model.name, params.model.pretrained, params.model.input_size)
    if rt.main:
        log.info("pretrain: %s on %d train / %d val faces (fake share %.2f), %d epochs",
                 params.model.name, len(train_ds), len(val_ds), float(train_ds.labels.mean()),
                 tp.epochs)
    fp = resume_mod.fingerprint({"stage": "pretrain", "model": as_dict(params.model),
                                 "train": as_dict(tp), "data": train_options(params)},
                                [paths.store, paths.faces_csv, paths.splits_csv])
    best, curve = fit(model, train_ds, tp, rt, tp.epochs, tp.lr, tp.seed, _clean_loss(rt),
                       score=lambda m: _val_scores(m, val_ds, tp.batch_size, rt.device,
                                                   params.eval.calibrate),
                       tb_dir=tb_dir, tag="pretrain", resume=resume, fp=fp)
    if not rt.main:
        runtime.teardown()
        return {}
    boundary, platt_ok = _boundary(model, val_ds, tp.batch_size, params.eval.calibrate)
    meta = {"stage": "pretrain", "best": best, "model": as_dict(params.model), "train": as_dict(tp),
            "image_size": int(train_ds[0][0].shape[-1]),
            "recipe": build_recipe(params, boundary)}
    save_checkpoint(out_model, model, _canonical(meta))
    metrics = {"best_epoch": best["epoch"], "val_auc": best["val_auc"], "val_bacc": best["val_bacc"],
               "val_acc": best["val_acc"], "val_threshold": boundary.threshold,
               "platt_a": boundary.a, "platt_b": boundary.b, "platt_ok": platt_ok,
               "epochs_run": len(curve),
               "train_faces": len(train_ds), "val_faces": len(val_ds)}
    _finish(out_metrics, metrics, out_curve, curve, resume)
    log.info("pretrain: best epoch %d, val AUC %.4f, bacc %.4f; %.1fs", best["epoch"],
             best["val_auc"], best["val_bacc"], time.perf_counter() - t0)
    return metrics


def val_attacked(model: nn.Module, val_ds: FaceDataset, boundary: Boundary, *, eps: float,
                 steps: int, seed: int, batch_size: int, videos: Optional[int],
                 device: torch.device = torch.device("cpu")) -> dict:
    """``model`` at ``boundary`` under L-inf PGD at ``eps`` (``steps`` steps of 2.5 * eps /
    steps, random start; seeds from ``seed`` per batch) on whole val videos stratified by class
    and method (``videos``; None: every val video), through the one attack-scoring function
    (:func:`fakeproof.under_attack.score_under_attack`). Returns the per-face worst case over
    clean and PGD: ``tpr``, ``tnr``, their minimum ``min_recall`` (the worst-class robust
    recall), ``bacc``, ``acc`` and ``n``."""
    from fakeproof.attacks import Budget
    from fakeproof.models.fold import folded_copy
    from fakeproof.under_attack import dataset_batches, score_under_attack

    sample = choose_sample(val_ds.frames.reset_index(drop=True), videos or None, seed)
    was = model.training
    model.eval()
    try:
        deployed = Deployed(folded_copy(model), boundary)  # BatchNorm folded (eval mode)
        res = score_under_attack(deployed, dataset_batches(val_ds, sample.index, batch_size,
                                                           sample.frames["key"].tolist()),
                                 ["pgd"], eps, Budget.pgd_only(steps), seed)
    finally:
        model.train(was)
    y = res.labels
    tpr, tnr = class_recalls(y, res.worst)
    return {"tpr": tpr, "tnr": tnr, "min_recall": min(tpr, tnr), "bacc": (tpr + tnr) / 2,
            "acc": float(np.mean((res.worst > 0) == (y == 1))), "n": int(len(y)),
            "videos": int(sample.frames["video_id"].nunique())}


def _adv_val_scores(model: nn.Module, val_ds: FaceDataset, ap: AdvParams, batch_size: int,
                    device: torch.device, calibrate: bool, clean_val_auc: float) -> dict:
    """One fine-tuning epoch on val: its own boundary (Platt and threshold fitted on val, as the
    checkpoint would ship), clean AUC and balanced accuracy at it, and the selection attack
    (PGD with ``adv.select_steps`` steps and seed ``adv.select_seed``, stronger than the
    training attack) aimed at that boundary; ``select`` ranks epochs by the rule of
    :mod:`fakeproof.selection`."""
    logits, labels = _val_logits(model, val_ds, batch_size, device)
    boundary, _ = fit_boundary(logits, labels, calibrate)
    clean = binary_metrics(labels, boundary.p_fake(logits), boundary.threshold, scores=logits)
    rob = val_attacked(model, val_ds, boundary, eps=ap.eps, steps=ap.select_steps,
                       seed=ap.select_seed, batch_size=batch_size, videos=ap.select_videos,
                       device=device)
    clean_tpr, clean_tnr = class_recalls(labels, boundary.decision(logits))
    cand = Candidate(val_auc=clean["auc"], clean_tpr=clean_tpr, clean_tnr=clean_tnr,
                     robust_tpr=rob["tpr"], robust_tnr=rob["tnr"])
    score, qualified = selection_score(cand, clean_val_auc, ap.select_auc_keep)
    return {"val_auc": clean["auc"], "val_bacc": clean["bacc"], "val_acc": clean["acc"],
            "val_pgd_bacc": rob["bacc"], "val_pgd_acc": rob["acc"],
            "val_pgd_min_recall": rob["min_recall"], "qualified": float(qualified),
            "select": score}


def _objective_loss(rt: runtime.Runtime, ap: AdvParams) -> StepLoss:
    """The adversarial objective ``adv.method`` (:mod:`fakeproof.objectives`: pgd, fgsm_rs, trades,
    mart) with its eps ramped over ``adv.warmup_epochs``. Examples are crafted in float32 (under
    ``train.amp``'s autocast with ``adv.craft_precision: amp``) on the unwrapped model in eval
    mode (BatchNorm running statistics used, not updated); the loss runs under autocast with
    the model in train mode."""
    objective = get_objective(ap.method)

    def step(net, module, x, y, gen, weights, progress):
        eps, alpha = warmup_budget(ap, progress)
        with rt.autocast(), craft_precision(rt.amp_dtype if ap.craft_precision == "amp" else None):
            loss, _ = objective(net, x, y.long(), eps=eps, alpha=alpha, steps=ap.steps,
                                weights=weights.to(x.device), generator=gen,
                                clean_share=ap.clean_share, beta=ap.beta,
                                random_start=ap.random_start, craft_model=module)
        return loss
    return step


def _fgsm_rs_guard(curve: list[dict]) -> bool:
    """Wong et al.'s guard for FGSM training, on balanced accuracy (plain accuracy rewards a
    model that calls everything the majority class): val PGD balanced accuracy collapsing
    between epochs means catastrophic overfitting; the epoch is not kept and training stops."""
    if len(curve) < 2:
        return False
    return catastrophic_overfit(curve[-2]["val_pgd_bacc"], curve[-1]["val_pgd_bacc"])


def run_adv_finetune(params: Params, paths: DataPaths, clean_model: Path, out_model: Path,
                     out_metrics: Path, out_curve: Path, tb_dir: Path,
                     resume: Optional[Path] = None) -> dict:
    """The adv_finetune stage: adversarial fine-tuning of ``models/clean.pt`` (``adv.method``),
    the checkpoint chosen by the rule of :mod:`fakeproof.selection`."""
    tp, ap = params.train, params.adv
    rt, t0, train_ds, val_ds, (model, clean_meta) = _start(tp, ap.seed, paths, clean_model,
                                                           train_options(params))
    clean_auc = _clean_val_auc(model, val_ds, tp.batch_size)
    if rt.main:
        log.info("adv_finetune: %s at eps %.5f (%.2f/255), alpha %.5f, %d steps, clean share %.2f, "
                 "beta %g, warm-up %d epochs, %d epochs on %d train faces; selection: %s with "
                 "val AUC floor 0.5 + %.2f x (%.4f - 0.5)", ap.method, ap.eps, ap.eps * 255,
                 train_alpha(ap), ap.steps, ap.clean_share, ap.beta, ap.warmup_epochs, ap.epochs,
                 len(train_ds), SELECTION_RULE, ap.select_auc_keep, clean_auc)
    fp = resume_mod.fingerprint({"stage": "adv_finetune", "adv": as_dict(ap), "train": as_dict(tp),
                                 "data": train_options(params)},
                                [clean_model, paths.store, paths.faces_csv, paths.splits_csv])
    best, curve = fit(model, train_ds, tp, rt, ap.epochs, ap.lr, ap.seed, _objective_loss(rt, ap),
                       score=lambda m: _adv_val_scores(m, val_ds, ap, tp.batch_size, rt.device,
                                                       params.eval.calibrate, clean_auc),
                       tb_dir=tb_dir, tag="adv_finetune", resume=resume, fp=fp,
                       guard=_fgsm_rs_guard if ap.method == "fgsm_rs" else None)
    if not rt.main:
        runtime.teardown()
        return {}
    boundary, platt_ok = _boundary(model, val_ds, tp.batch_size, params.eval.calibrate)
    qualified = bool(best.get("qualified"))
    selection = {"rule": SELECTION_RULE, "qualified": qualified,
                 "auc_floor": 0.5 + ap.select_auc_keep * (clean_auc - 0.5),
                 "clean_val_auc": clean_auc,
                 "attack": f"PGD-{ap.select_steps} seed {ap.select_seed} at the epoch's boundary"}
    if not qualified:
        log.warning("adv_finetune: no epoch qualified (val AUC under the floor %.4f in every "
                    "epoch); keeping epoch %d by robust worst-class recall, and evaluate's sanity "
                    "flags it (selection_failed)", selection["auc_floor"], best["epoch"])
    meta = {"stage": "adv_finetune", "best": best, "adv": as_dict(ap), "from": str(clean_model),
            "clean_best": clean_meta.get("best"), "model": clean_meta.get("model"),
            "image_size": clean_meta.get("image_size"), "selection": selection,
            "recipe": build_recipe(params, boundary)}
    save_checkpoint(out_model, model, _canonical(meta))
    sweep = {}
    for eps in ap.val_eps:
        r = val_attacked(model, val_ds, boundary, eps=eps, steps=ap.select_steps,
                         seed=ap.select_seed, batch_size=tp.batch_size, videos=ap.select_videos)
        sweep[f"{round(eps * 255, 4):g}/255"] = {"pgd_bacc": r["bacc"], "pgd_acc": r["acc"],
                                                 "pgd_min_recall": r["min_recall"]}
    log.info("adv_finetune: val PGD-%d sweep at the deployed boundary (choose adv.eps on this, "
             "never on test): %s", ap.select_steps,
             ", ".join(f"{k}: bacc {v['pgd_bacc']:.3f}" for k, v in sweep.items()))
    metrics = {"best_epoch": best["epoch"], "val_auc": best["val_auc"], "val_bacc": best["val_bacc"],
               "val_pgd_bacc": best["val_pgd_bacc"], "val_pgd_acc": best["val_pgd_acc"],
               "val_pgd_min_recall": best["val_pgd_min_recall"],
               "val_threshold": boundary.threshold, "platt_a": boundary.a, "platt_b": boundary.b,
               "platt_ok": platt_ok, "eps": ap.eps, "alpha": train_alpha(ap),
               "epochs_run": len(curve), "selection": selection, "method": ap.method,
               "catastrophic_overfit_epoch": next((r["epoch"] for r in curve if r.get("collapsed")),
                                                  None),
               "val_sweep": sweep}
    _finish(out_metrics, metrics, out_curve, curve, resume)
    log.info("adv_finetune: best epoch %d%s, val AUC %.4f, val PGD bacc %.4f, worst-class robust "
             "recall %.4f; %.1fs", best["epoch"], "" if qualified else " (NONE QUALIFIED)",
             best["val_auc"], best["val_pgd_bacc"], best["val_pgd_min_recall"],
             time.perf_counter() - t0)
    return metrics


def _clean_val_auc(model: nn.Module, val_ds: FaceDataset, batch_size: int) -> float:
    """The clean model's val AUC: the reference of the selection's AUC floor (measured here, on
    the same val faces, rather than trusted from the checkpoint)."""
    logits, labels = _val_logits(model, val_ds, batch_size, torch.device("cpu"))
    return float(binary_metrics(labels, proba(logits), scores=logits)["auc"])


def _canonical(meta: dict) -> dict:
    """Meta as fresh JSON-typed objects: pickle memoises shared objects (one float referenced
    twice is written once), so the same values could give different checkpoint bytes depending on
    how they were built; a resumed run must write the same bytes as an uninterrupted one."""
    return json.loads(json.dumps(meta, sort_keys=True))
