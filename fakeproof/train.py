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
- Where and how (:mod:`fakeproof.runtime`): ``train.device``, ``train.amp`` (attacks always craft
  in float32), ``train.deterministic``, ``train.nproc`` (DistributedDataParallel, rank 0 scores,
  logs and writes). Every epoch reseeds its shuffle, dropout and attack starts from
  ``(seed, epoch)`` and ends with a resume state (:mod:`fakeproof.resume`): a killed stage re-run
  continues from its last completed epoch and ends with the same bytes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from fakeproof import resume as resume_mod
from fakeproof import runtime
from fakeproof.runtime import Runtime

from fakeproof.accumulate import accumulated_backward, micro_batches
from fakeproof.boundary import Boundary, Deployed, class_recalls, fit_boundary
from fakeproof.config import AdvParams, Params, TrainParams, as_dict
from fakeproof.data import DataPaths, FaceDataset, collate_faces, make_loader, train_options
from fakeproof.data import _worker_init as worker_init
from fakeproof.errors import TrainingError
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import binary_metrics
from fakeproof.models import (Detector, create_model, load_checkpoint, save_checkpoint,
                              set_backbone_frozen)
from fakeproof.objectives import catastrophic_overfit, get_objective, train_alpha, warmup_budget
from fakeproof.predict import logits_of, proba
from fakeproof.recipe import build_recipe
from fakeproof.sampling import choose_sample
from fakeproof.selection import SELECTION_RULE, Candidate, selection_score

log = logging.getLogger(__name__)

#: loss of one batch: (model to train, unwrapped model for crafting, images, labels, the epoch's
#: generator, class weights, progress in epochs: epoch + step / steps_per_epoch)
StepLoss = Callable[[nn.Module, nn.Module, torch.Tensor, torch.Tensor, torch.Generator, torch.Tensor,
                     float], torch.Tensor]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle, dropout and attack starts: every epoch can be replayed
    alone (what a resumed run needs), as ``DistributedSampler.set_epoch`` does for shuffles."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2 ** 63)


def class_weights(labels: np.ndarray, loss: str) -> torch.Tensor:
    """Per-class weights [w_real, w_fake]: inverse class share for ``balanced_bce``, ones otherwise."""
    if loss == "bce":
        return torch.ones(2)
    n = len(labels)
    n_fake = float(np.sum(labels == 1))
    n_real = n - n_fake
    if n_fake == 0 or n_real == 0:
        raise TrainingError("the training split holds only one class; both real and fake faces are "
                            "needed (check data/splits.csv and the split ratios)")
    return torch.tensor([n / (2 * n_real), n / (2 * n_fake)], dtype=torch.float32)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    w = weights.to(logits.device)[labels.long()]
    loss = nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.float(),
                                                         reduction="none")
    return (loss * w).sum() / w.sum()


def workers_for(tp: TrainParams, rt: Runtime) -> int:
    """``train.num_workers``; -1 (auto) = none on the CPU, where decoding PNG crops costs far less
    than a training step and workers would take cores from the step (benchmarks/bench_loader.py:
    decoding is 5.5x faster than mobilenet_v3_small training per core). On CUDA every core but
    one per process on this machine (LOCAL_WORLD_SIZE under torchrun), at most 16: there the
    loader is the bottleneck (H200, benchmarks/bench_train.py gpu: a bare bf16 loop trains
    mobilenet_v3_small at 224 at 10,006 img/s; the loader gives 3,050 img/s with 8 workers and
    3,145 with 15, so its ceiling is the main process receiving float32 batches, and the spare
    workers cost nothing while the GPU waits)."""
    if tp.num_workers >= 0:
        return tp.num_workers
    if rt.device.type == "cpu":
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(16, (os.cpu_count() or 2) // local - 1))


def train_loader(ds: FaceDataset, tp: TrainParams, rt: Runtime, seed: int, epoch: int
                 ) -> DataLoader:
    """The loader of one epoch: a shuffle seeded by (seed, epoch), split across processes by a
    DistributedSampler under DDP; pinned memory on CUDA. A fresh loader per epoch hands each
    worker the dataset's epoch (the augmentation stream), so workers are not kept alive across
    epochs; the LMDB store opens lazily inside each worker (fakeproof.store.FaceStore)."""
    ds.set_epoch(epoch)
    if rt.distributed:
        sampler = DistributedSampler(ds, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
    else:
        g = torch.Generator()
        g.manual_seed(epoch_seed(seed, epoch))
        sampler = RandomSampler(ds, generator=g)
    workers = workers_for(tp, rt)
    per_rank = max(1, tp.batch_size // rt.world_size)
    return DataLoader(ds, batch_size=per_rank * tp.grad_accum, sampler=sampler, num_workers=workers,
                      collate_fn=collate_faces, pin_memory=rt.device.type == "cuda",
                      worker_init_fn=worker_init if workers > 0 else None)


def _fit(model: Detector, train_ds: FaceDataset, tp: TrainParams, rt: Runtime, epochs: int,
         lr: float, seed: int, step_loss: StepLoss, score: Callable[[nn.Module], dict],
         tb_dir: Path, tag: str, resume: Optional[Path], fp: str,
         guard: Optional[Callable[[list[dict]], bool]] = None) -> tuple[dict, list[dict]]:
    """Train with per-epoch val scoring on rank 0; return the best epoch's val scores and curve.

    One loop for every precision and process count: autocast and a GradScaler that is a no-op
    unless fp16; DDP wraps the model once and the unwrapped module is kept for crafting attacks,
    scoring and saving. After every epoch rank 0 writes the resume state (:mod:`fakeproof.resume`).
    """
    from torch.utils.tensorboard import SummaryWriter

    weights = class_weights(train_ds.labels, tp.loss)
    module = model.to(rt.device)
    if rt.channels_last:
        module = module.to(memory_format=torch.channels_last)
    net: nn.Module = module
    if rt.distributed:
        net = nn.parallel.DistributedDataParallel(
            module, device_ids=[rt.device] if rt.device.type == "cuda" else None,
            find_unused_parameters=tp.freeze_epochs > 0)  # a frozen backbone gets no gradient
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=tp.weight_decay)
    per_rank = max(1, tp.batch_size // rt.world_size)
    steps_per_epoch = max(1, math.ceil(math.ceil(len(train_ds) / rt.world_size)
                                       / (per_rank * tp.grad_accum)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    scaler = rt.scaler()
    best: Optional[dict] = None
    best_state: Optional[dict] = None
    curve: list[dict] = []
    stale, start = 0, 0
    state = resume_mod.load_state(resume, fp)
    if state is not None:
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        best, best_state, curve, stale, start = (state["best"], state["best_state"], state["curve"],
                                                 state["stale"], state["epoch"])
        resume_mod.set_rng_states(state["rng"])
    writer = None
    if rt.main:
        tb_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(tb_dir))
    stop = state is not None and state.get("stopped", False)
    try:
        for epoch in range(start, epochs):
            if stop:
                break
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(seed, epoch))
            gen = torch.Generator().manual_seed(epoch_seed(seed + 1, epoch))
            loader = train_loader(train_ds, tp, rt, seed, epoch)
            if tp.freeze_epochs:
                set_backbone_frozen(module, epoch < tp.freeze_epochs)
            net.train()
            total = torch.zeros(2, dtype=torch.float64)
            for step, (x, y, _) in enumerate(tqdm(loader, desc=f"{tag} epoch {epoch + 1}/{epochs}",
                                                  leave=False, disable=None if rt.main else True)):
                x, y = rt.to_device(x), y.to(rt.device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                # train.grad_accum micro-batches per update (one when 1: the plain step, bit for bit)
                loss = accumulated_backward(
                    micro_batches(x, y, per_rank),
                    lambda xm, ym: step_loss(net, module, xm, ym, gen, weights,
                                             epoch + step / steps_per_epoch),
                    lambda ym: weights.to(ym.device)[ym.long()],
                    backward=lambda part: scaler.scale(part).backward(),
                    no_sync=net.no_sync if rt.distributed else None)
                if not torch.isfinite(loss):
                    raise TrainingError(f"{tag}: the loss became {float(loss.detach())} at epoch "
                                        f"{epoch + 1}, step {step + 1}; lower the learning rate "
                                        "(train.lr / adv.lr)")
                scaler.step(opt)
                scaler.update()
                sched.step()
                total += torch.tensor([float(loss.detach()) * len(y), len(y)], dtype=torch.float64)
            if rt.distributed:
                torch.distributed.all_reduce(total)
            improved = False
            if rt.main:
                scores = score(module)
                row = {"epoch": epoch + 1, "train_loss": float(total[0] / max(total[1], 1)),
                       **scores, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
                curve.append(row)
                for k, v in row.items():
                    if k not in ("epoch", "seconds") and isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(f"{tag}/{k}", v, epoch + 1)
                collapsed = guard is not None and guard(curve)
                improved = not collapsed and (best is None or scores["select"] > best["select"] + 1e-9)
                log.info("%s epoch %d/%d: loss %.4f, %s%s (%.1fs, %.0f img/s)", tag, epoch + 1,
                         epochs, row["train_loss"],
                         ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                         " *" if improved else "", row["seconds"],
                         float(total[1]) / max(row["seconds"], 1e-9))
                if improved:
                    best = {"epoch": epoch + 1, **scores}
                    best_state = _cpu_copy(module.state_dict())
                    stale = 0
                else:
                    stale += 1
                stop = stale >= tp.patience or collapsed
                if collapsed:
                    row["collapsed"] = True
                    log.warning("%s: catastrophic overfitting at epoch %d (val PGD accuracy "
                                "collapsed); keeping epoch %s and stopping", tag, epoch + 1,
                                best["epoch"] if best else "none")
                elif stop:
                    log.info("%s: early stop after %d epochs without val gain", tag, stale)
                resume_mod.save_state(resume, {
                    "fingerprint": fp, "epoch": epoch + 1, "model": module.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "best": best, "best_state": best_state,
                    "curve": curve, "stale": stale, "stopped": stop,
                    "rng": resume_mod.rng_states()}) if resume is not None else None
            improved, stop = runtime.broadcast_flags(rt, improved, stop)
    finally:
        if writer is not None:
            writer.close()
    if not rt.main:
        return {}, []
    assert best is not None and best_state is not None
    module.load_state_dict(best_state)
    module.to("cpu").to(memory_format=torch.contiguous_format)
    return best, curve


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


def _clean_loss(rt: Runtime) -> StepLoss:
    def step(net, module, x, y, gen, weights, progress):
        with rt.autocast():
            return weighted_bce(net(x), y, weights)
    return step


def run_pretrain(params: Params, paths: DataPaths, out_model: Path, out_metrics: Path,
                 out_curve: Path, tb_dir: Path, resume: Optional[Path] = None) -> dict:
    """The pretrain stage: clean training from scratch (or ImageNet weights) with val selection."""
    tp = params.train
    rt = runtime.setup(tp, tp.seed)
    t0 = time.perf_counter()
    train_ds, val_ds = _datasets(paths, tp.seed, tp.augment, train_options(params))
    model = create_model(params.model.name, params.model.pretrained, params.model.input_size)
    if rt.main:
        log.info("pretrain: %s on %d train / %d val faces (fake share %.2f), %d epochs",
                 params.model.name, len(train_ds), len(val_ds), float(train_ds.labels.mean()),
                 tp.epochs)
    fp = resume_mod.fingerprint({"stage": "pretrain", "model": as_dict(params.model),
                                 "train": as_dict(tp), "data": train_options(params)},
                                [paths.store, paths.faces_csv, paths.splits_csv])
    best, curve = _fit(model, train_ds, tp, rt, tp.epochs, tp.lr, tp.seed, _clean_loss(rt),
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
    write_json(out_metrics, metrics)
    write_csv(out_curve, pd.DataFrame(curve).drop(columns=["seconds", "select"]))
    resume_mod.clear(resume)
    runtime.teardown()
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
    from fakeproof.under_attack import dataset_batches, score_under_attack

    sample = choose_sample(val_ds.frames.reset_index(drop=True), videos or None, seed)
    was = model.training
    model.eval()
    try:
        deployed = Deployed(model, boundary)
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


def _objective_loss(rt: Runtime, ap: AdvParams) -> StepLoss:
    """The adversarial objective ``adv.method`` (:mod:`fakeproof.objectives`: pgd, fgsm_rs, trades,
    mart) with its eps ramped over ``adv.warmup_epochs``. Examples are crafted in float32 on the
    unwrapped model in eval mode (BatchNorm running statistics used, not updated); the loss runs
    under autocast with the model in train mode."""
    objective = get_objective(ap.method)

    def step(net, module, x, y, gen, weights, progress):
        eps, alpha = warmup_budget(ap, progress)
        with rt.autocast():
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
    rt = runtime.setup(tp, ap.seed)
    t0 = time.perf_counter()
    model, clean_meta = load_checkpoint(clean_model)
    train_ds, val_ds = _datasets(paths, ap.seed, tp.augment, train_options(params))
    clean_auc = _clean_val_auc(model, clean_meta, val_ds, tp.batch_size)
    if rt.main:
        log.info("adv_finetune: %s at eps %.5f (%.2f/255), alpha %.5f, %d steps, clean share %.2f, "
                 "beta %g, warm-up %d epochs, %d epochs on %d train faces; selection: %s with "
                 "val AUC floor 0.5 + %.2f x (%.4f - 0.5)", ap.method, ap.eps, ap.eps * 255,
                 train_alpha(ap), ap.steps, ap.clean_share, ap.beta, ap.warmup_epochs, ap.epochs,
                 len(train_ds), SELECTION_RULE, ap.select_auc_keep, clean_auc)
    fp = resume_mod.fingerprint({"stage": "adv_finetune", "adv": as_dict(ap), "train": as_dict(tp),
                                 "data": train_options(params)},
                                [clean_model, paths.store, paths.faces_csv, paths.splits_csv])
    best, curve = _fit(model, train_ds, tp, rt, ap.epochs, ap.lr, ap.seed, _objective_loss(rt, ap),
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
    write_json(out_metrics, metrics)
    write_csv(out_curve, pd.DataFrame(curve).drop(columns=["seconds", "select", "collapsed"],
                                                   errors="ignore"))
    resume_mod.clear(resume)
    runtime.teardown()
    log.info("adv_finetune: best epoch %d%s, val AUC %.4f, val PGD bacc %.4f, worst-class robust "
             "recall %.4f; %.1fs", best["epoch"], "" if qualified else " (NONE QUALIFIED)",
             best["val_auc"], best["val_pgd_bacc"], best["val_pgd_min_recall"],
             time.perf_counter() - t0)
    return metrics


def _clean_val_auc(model: nn.Module, meta: dict, val_ds: FaceDataset, batch_size: int) -> float:
    """The clean model's val AUC: the reference of the selection's AUC floor (measured here, on
    the same val faces, rather than trusted from the checkpoint)."""
    logits, labels = _val_logits(model, val_ds, batch_size, torch.device("cpu"))
    return float(binary_metrics(labels, proba(logits), scores=logits)["auc"])


def _canonical(meta: dict) -> dict:
    """Meta as fresh JSON-typed objects: pickle memoises shared objects (one float referenced
    twice is written once), so the same values could give different checkpoint bytes depending on
    how they were built; a resumed run must write the same bytes as an uninterrupted one."""
    return json.loads(json.dumps(meta, sort_keys=True))


def _cpu_copy(state: dict) -> dict:
    """A CPU copy of a state dict (tensors cloned; non-tensor entries such as a module's
    ``_extra_state`` deep-copied)."""
    import copy

    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state.items()}
