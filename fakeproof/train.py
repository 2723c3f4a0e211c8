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
- Determinism: seeded generators, ``torch.use_deterministic_algorithms(True)``, fixed thread count.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fakeproof.config import AdvParams, Params, TrainParams, as_dict
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.errors import TrainingError
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import best_threshold, binary_metrics
from fakeproof.models import Detector, create_model, load_checkpoint, save_checkpoint
from fakeproof.predict import as_logit_array, logits_of, proba
from fakeproof.recipe import build_recipe

log = logging.getLogger(__name__)


def setup_determinism(seed: int, threads: int) -> None:
    """Seed torch and fix threads and algorithms so a re-run gives the same weights."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=False)


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
    w = weights[labels.long()]
    loss = nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), labels.float(),
                                                         reduction="none")
    return (loss * w).sum() / w.sum()


def _fit(model: Detector, train_ds: FaceDataset, val_ds: FaceDataset, tp: TrainParams, epochs: int,
         lr: float, seed: int, make_batch: Callable[[nn.Module, torch.Tensor, torch.Tensor, int],
                                                    tuple[torch.Tensor, torch.Tensor]],
         score: Callable[[nn.Module], dict], tb_dir: Path, tag: str
         ) -> tuple[dict, list[dict]]:
    """Train with per-epoch val scoring; return the best epoch's val scores and the curve."""
    from torch.utils.tensorboard import SummaryWriter

    weights = class_weights(train_ds.labels, tp.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tp.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_ds) / tp.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    loader = make_loader(train_ds, tp.batch_size, shuffle=True, seed=seed, num_workers=tp.num_workers)
    best: Optional[dict] = None
    best_state: Optional[dict] = None
    curve: list[dict] = []
    stale = 0
    tb_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(tb_dir))
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            train_ds.set_epoch(epoch)
            model.train()
            total, seen = 0.0, 0
            for step, (x, y, _) in enumerate(tqdm(loader, desc=f"{tag} epoch {epoch + 1}/{epochs}",
                                                  leave=False, disable=None)):
                x, y = make_batch(model, x, y, epoch * steps_per_epoch + step)
                loss = weighted_bce(model(x), y, weights)
                if not torch.isfinite(loss):
                    raise TrainingError(f"{tag}: the loss became {float(loss.detach())} at epoch {epoch + 1}, "
                                        f"step {step + 1}; lower the learning rate (train.lr / adv.lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(y)
                seen += len(y)
            scores = score(model)
            row = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), **scores,
                   "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
            curve.append(row)
            for k, v in row.items():
                if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                    writer.add_scalar(f"{tag}/{k}", v, epoch + 1)
            improved = best is None or scores["select"] > best["select"] + 1e-9
            log.info("%s epoch %d/%d: loss %.4f, val %s%s (%.1fs)", tag, epoch + 1, epochs,
                     row["train_loss"], ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                     " *" if improved else "", row["seconds"])
            if improved:
                best = {"epoch": epoch + 1, **scores}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                stale = 0
            else:
                stale += 1
                if stale >= tp.patience:
                    log.info("%s: early stop after %d epochs without val gain", tag, stale)
                    break
    finally:
        writer.close()
    assert best is not None and best_state is not None
    model.load_state_dict(best_state)
    return best, curve


def _val_scores(model: nn.Module, val_ds: FaceDataset, batch_size: int) -> dict:
    logits, labels = logits_of(model, make_loader(val_ds, batch_size, shuffle=False), "val")
    m = binary_metrics(labels, proba(logits), scores=logits)
    return {"val_auc": m["auc"], "val_bacc": m["bacc"], "val_acc": m["acc"], "select": m["auc"]}


def _val_threshold(model: nn.Module, val_ds: FaceDataset, batch_size: int) -> float:
    """The decision threshold on P(fake) that maximises val balanced accuracy (stored in the
    checkpoint for ``fakeproof detect``; evaluate's attacks keep the model's own 0.5 boundary)."""
    logits, labels = logits_of(model, make_loader(val_ds, batch_size, shuffle=False), "val")
    return best_threshold(labels, proba(logits))


def _datasets(paths: DataPaths, seed: int, augment: bool) -> tuple[FaceDataset, FaceDataset]:
    train = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "train", augment=augment,
                        seed=seed)
    val = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "val")
    if len(train) == 0 or len(val) == 0:
        raise TrainingError(f"{paths.splits_csv}: train ({len(train)} faces) and val ({len(val)} "
                            "faces) must both hold faces; add data or change the split ratios")
    for name, ds in (("train", train), ("val", val)):
        if len(np.unique(ds.labels)) < 2:
            raise TrainingError(f"{paths.splits_csv}: the {name} split holds only one class; both "
                                "real and fake videos are needed there (add data or change split.*)")
    return train, val


def run_pretrain(params: Params, paths: DataPaths, out_model: Path, out_metrics: Path,
                 out_curve: Path, tb_dir: Path) -> dict:
    """The pretrain stage: clean training from scratch (or ImageNet weights) with val selection."""
    tp = params.train
    setup_determinism(tp.seed, tp.threads)
    t0 = time.perf_counter()
    train_ds, val_ds = _datasets(paths, tp.seed, tp.augment)
    model = create_model(params.model.name, params.model.pretrained)
    log.info("pretrain: %s on %d train / %d val faces (fake share %.2f), %d epochs",
             params.model.name, len(train_ds), len(val_ds), float(train_ds.labels.mean()), tp.epochs)
    best, curve = _fit(model, train_ds, val_ds, tp, tp.epochs, tp.lr, tp.seed,
                       make_batch=lambda m, x, y, step: (x, y),
                       score=lambda m: _val_scores(m, val_ds, tp.batch_size),
                       tb_dir=tb_dir, tag="pretrain")
    threshold = _val_threshold(model, val_ds, tp.batch_size)
    meta = {"stage": "pretrain", "best": best, "model": as_dict(params.model), "train": as_dict(tp),
            "image_size": int(train_ds[0][0].shape[-1]),
            "recipe": build_recipe(params, threshold=threshold)}
    save_checkpoint(out_model, model, meta)
    metrics = {"best_epoch": best["epoch"], "val_auc": best["val_auc"], "val_bacc": best["val_bacc"],
               "val_acc": best["val_acc"], "val_threshold": threshold, "epochs_run": len(curve),
               "train_faces": len(train_ds), "val_faces": len(val_ds)}
    seconds = time.perf_counter() - t0
    write_json(out_metrics, _round(metrics))
    write_csv(out_curve, pd.DataFrame(curve).drop(columns=["seconds", "select"]))
    log.info("pretrain: best epoch %d, val AUC %.4f, bacc %.4f; %.1fs", best["epoch"],
             best["val_auc"], best["val_bacc"], seconds)
    return metrics


def val_pgd(model: nn.Module, val_ds: FaceDataset, *, eps: float, steps: int, seed: int,
            batch_size: int, max_samples: int) -> dict:
    """Balanced accuracy (and accuracy) of ``model`` on val faces under L-inf PGD at ``eps``
    (``steps`` steps of 2.5 * eps / steps, random start from ``seed``), on a fixed val subset."""
    from fakeproof.attacks import pgd

    idx = np.sort(np.random.default_rng(seed).permutation(len(val_ds))[:max_samples])
    was = model.training
    model.eval()
    logits, labels = [], []
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, len(idx), batch_size):
        items = [val_ds[int(i)] for i in idx[start:start + batch_size]]
        x = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items]).long()
        adv = pgd(model, x, y, eps=eps, steps=steps, random_start=True, generator=gen)
        with torch.no_grad():
            logits.append(as_logit_array(model(adv)))
        labels.append(y.numpy())
    model.train(was)
    z, y = np.concatenate(logits), np.concatenate(labels)
    m = binary_metrics(y, proba(z), scores=z)
    return {"bacc": m["bacc"], "acc": m["acc"], "auc": m["auc"], "n": int(len(y))}


def _adv_val_scores(model: nn.Module, val_ds: FaceDataset, ap: AdvParams, batch_size: int) -> dict:
    """Val clean AUC/bacc and the balanced accuracy under the selection attack (PGD with
    ``adv.select_steps`` steps and seed ``adv.select_seed``, stronger than the training attack)."""
    clean = _val_scores(model, val_ds, batch_size)
    rob = val_pgd(model, val_ds, eps=ap.eps, steps=ap.select_steps, seed=ap.select_seed,
                  batch_size=batch_size, max_samples=ap.val_samples)
    return {**{k: v for k, v in clean.items() if k != "select"}, "val_pgd_bacc": rob["bacc"],
            "val_pgd_acc": rob["acc"], "select": (clean["val_bacc"] + rob["bacc"]) / 2}


def run_adv_finetune(params: Params, paths: DataPaths, clean_model: Path, out_model: Path,
                     out_metrics: Path, out_curve: Path, tb_dir: Path) -> dict:
    """The adv_finetune stage: PGD adversarial fine-tuning of ``models/clean.pt``."""
    from fakeproof.attacks import pgd

    tp, ap = params.train, params.adv
    setup_determinism(ap.seed, tp.threads)
    t0 = time.perf_counter()
    model, clean_meta = load_checkpoint(clean_model)
    train_ds, val_ds = _datasets(paths, ap.seed, tp.augment)
    gen = torch.Generator().manual_seed(ap.seed)

    def make_batch(m: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int):
        n_clean = int(round(ap.clean_share * len(y)))
        if n_clean >= len(y) or ap.eps == 0:
            return x, y
        m.eval()
        adv = pgd(m, x[n_clean:], y[n_clean:].long(), eps=ap.eps, alpha=ap.alpha, steps=ap.steps,
                  random_start=ap.random_start, generator=gen)
        m.train()
        return torch.cat([x[:n_clean], adv.detach()]), y

    log.info("adv_finetune: eps %.5f (%.2f/255), alpha %.5f, %d steps, clean share %.2f, %d epochs "
             "on %d train faces", ap.eps, ap.eps * 255, ap.alpha, ap.steps, ap.clean_share,
             ap.epochs, len(train_ds))
    best, curve = _fit(model, train_ds, val_ds, tp, ap.epochs, ap.lr, ap.seed, make_batch,
                       score=lambda m: _adv_val_scores(m, val_ds, ap, tp.batch_size),
                       tb_dir=tb_dir, tag="adv_finetune")
    threshold = _val_threshold(model, val_ds, tp.batch_size)
    meta = {"stage": "adv_finetune", "best": best, "adv": as_dict(ap), "from": str(clean_model),
            "clean_best": clean_meta.get("best"), "model": clean_meta.get("model"),
            "image_size": clean_meta.get("image_size"),
            "recipe": build_recipe(params, threshold=threshold)}
    save_checkpoint(out_model, model, meta)
    sweep = {}
    for eps in ap.val_eps:
        r = val_pgd(model, val_ds, eps=eps, steps=ap.select_steps, seed=ap.select_seed,
                    batch_size=tp.batch_size, max_samples=ap.val_samples)
        sweep[f"{round(eps * 255, 4):g}/255"] = {"pgd_bacc": r["bacc"], "pgd_acc": r["acc"]}
    log.info("adv_finetune: val PGD-%d sweep (choose adv.eps on this, never on test): %s",
             ap.select_steps, ", ".join(f"{k}: bacc {v['pgd_bacc']:.3f}" for k, v in sweep.items()))
    metrics = {"best_epoch": best["epoch"], "val_auc": best["val_auc"], "val_bacc": best["val_bacc"],
               "val_pgd_bacc": best["val_pgd_bacc"], "val_pgd_acc": best["val_pgd_acc"],
               "val_threshold": threshold, "eps": ap.eps, "epochs_run": len(curve),
               "select_attack": f"PGD-{ap.select_steps} seed {ap.select_seed}",
               "val_sweep": sweep}
    seconds = time.perf_counter() - t0
    write_json(out_metrics, _round(metrics))
    write_csv(out_curve, pd.DataFrame(curve).drop(columns=["seconds", "select"]))
    log.info("adv_finetune: best epoch %d, val AUC %.4f, val PGD bacc %.4f; %.1fs", best["epoch"],
             best["val_auc"], best["val_pgd_bacc"], seconds)
    return metrics


def _round(d: dict, nd: int = 6) -> dict:
    return {k: (round(v, nd) if isinstance(v, float) else v) for k, v in d.items()}
