"""The training loop shared by the pretrain and adv_finetune stages (:mod:`fakeproof.train`).

:func:`fit` trains with per-epoch val scoring and is made of its steps: prepare (model on the
device, optimiser, schedule), restore (the resume state of an interrupted run,
:mod:`fakeproof.resume`), one epoch of updates, and after the epoch (score on val, keep the best,
decide to stop, save the resume state). Every epoch reseeds its shuffle, dropout and attack starts
from ``(seed, epoch)`` (:func:`epoch_seed`), so a resumed run ends with the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from fakeproof import device_feed
from fakeproof import resume as resume_mod
from fakeproof import runtime
from fakeproof.accumulate import accumulated_backward, micro_batches
from fakeproof.config import TrainParams
from fakeproof.data import FaceDataset, Prefetched, collate_faces
from fakeproof.data import _worker_init as worker_init
from fakeproof.errors import TrainingError
from fakeproof.models import Detector, set_backbone_frozen
from fakeproof.runtime import Runtime

log = logging.getLogger(__name__)

#: batches loaded ahead by a background thread when the loader has no workers (the CPU
#: default; :class:`fakeproof.data.Prefetched`) and a core is free for it (:func:`prefetch_depth`)
PREFETCH_DEPTH = 2

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
    than a training step and workers would take cores from the step (benchmarks/bench_loader.py).
    On CUDA every core but one per process on this machine (LOCAL_WORLD_SIZE under torchrun), at
    most 16: there the loader is the bottleneck, and spare workers cost nothing while the GPU
    waits (benchmarks/bench_train.py gpu; the measured numbers are in README's benchmarks)."""
    if tp.num_workers >= 0:
        return tp.num_workers
    if rt.device.type == "cpu":
        return 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, min(16, (os.cpu_count() or 2) // local - 1))


def prefetch_depth() -> int:
    """:data:`PREFETCH_DEPTH` when this process may run on more cores than the step's intra-op
    threads (``train.threads``), else 0 (batches load between steps, as before the thread). A
    loading thread pays only with a free core: on 2 cores and 2 threads it takes cycles from the
    step's parallel regions, which then wait for their slowest thread, and measured slower than
    loading inline (``benchmarks/bench_train.py``, the ``prefetch ratio`` column)."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return PREFETCH_DEPTH if cores > torch.get_num_threads() else 0


def train_loader(ds: FaceDataset, tp: TrainParams, rt: Runtime, seed: int, epoch: int
                 ) -> DataLoader:
    """The loader of one epoch: a shuffle seeded by (seed, epoch), split across processes by a
    DistributedSampler under DDP; pinned memory on CUDA. A fresh loader per epoch hands each
    worker the dataset's epoch (the augmentation stream), so workers are not kept alive across
    epochs; the LMDB store opens lazily inside each worker (fakeproof.store.FaceStore). With
    ``train.decode`` resolving to device, items are crops still packed (JPEG bytes or uint8) with
    their drawn augmentation, decoded and augmented on the device (:mod:`fakeproof.device_feed`)."""
    ds.set_epoch(epoch)
    packed = device_feed.resolve_decode(tp.decode, ds.sbi, rt.device) == "device"
    data = device_feed.PackedDataset(ds) if packed else ds
    if rt.distributed:
        sampler = DistributedSampler(data, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                     seed=seed)
        sampler.set_epoch(epoch)
    else:
        g = torch.Generator()
        g.manual_seed(epoch_seed(seed, epoch))
        sampler = RandomSampler(data, generator=g)
    workers = workers_for(tp, rt)
    per_rank = max(1, tp.batch_size // rt.world_size)
    collate = device_feed.collate_packed(ds.augment) if packed else collate_faces
    return DataLoader(data, batch_size=per_rank * tp.grad_accum, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=rt.device.type == "cuda",
                      worker_init_fn=worker_init if workers > 0 else None)


@dataclass
class _Run:
    """The state of one training run that the epoch steps share: the model (``module``, and
    ``net``: the DDP wrapper under DDP, else the module), optimiser, schedule and scaler, and the
    selection's bookkeeping (best epoch, its weights, the curve, epochs without gain)."""

    module: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    weights: torch.Tensor
    per_rank: int
    steps_per_epoch: int
    best: Optional[dict] = None
    best_state: Optional[dict] = None
    curve: list[dict] = field(default_factory=list)
    stale: int = 0
    start: int = 0
    stop: bool = False


def _prepare(model: Detector, train_ds: FaceDataset, tp: TrainParams, rt: Runtime, epochs: int,
             lr: float) -> _Run:
    """Model on the device (channels-last, DDP-wrapped under DDP), AdamW, one-cycle schedule."""
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
    return _Run(module, net, opt, sched, rt.scaler(), weights, per_rank, steps_per_epoch)


def _restore(run: _Run, resume: Optional[Path], fp: str) -> None:
    """Continue from the resume state of an interrupted run, if there is one for this run."""
    state = resume_mod.load_state(resume, fp)
    if state is None:
        return
    run.module.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.best, run.best_state, run.curve, run.stale, run.start = (
        state["best"], state["best_state"], state["curve"], state["stale"], state["epoch"])
    resume_mod.set_rng_states(state["rng"])
    run.stop = state.get("stopped", False)


def _train_epoch(run: _Run, train_ds: FaceDataset, tp: TrainParams, rt: Runtime, epoch: int,
                 epochs: int, seed: int, step_loss: StepLoss, tag: str) -> torch.Tensor:
    """One epoch of updates; returns the summed loss and the number of faces (all ranks)."""
    torch.manual_seed(epoch_seed(seed, epoch))
    gen = torch.Generator().manual_seed(epoch_seed(seed + 1, epoch))
    loader = train_loader(train_ds, tp, rt, seed, epoch)
    if tp.freeze_epochs:
        set_backbone_frozen(run.module, epoch < tp.freeze_epochs)
    run.net.train()
    total = torch.zeros(2, dtype=torch.float64)
    # no workers (the CPU default): one thread loads the next batches while this one steps
    ahead = Prefetched(loader, prefetch_depth()) if loader.num_workers == 0 else None
    with ahead or contextlib.nullcontext(loader) as batches:
        _steps(run, batches, rt, epoch, epochs, step_loss, gen, total, tag)
    if rt.distributed:
        torch.distributed.all_reduce(total)
    return total


def _steps(run: _Run, batches: Iterable, rt: Runtime, epoch: int, epochs: int,
           step_loss: StepLoss, gen: torch.Generator, total: torch.Tensor, tag: str) -> None:
    """The updates of one epoch over ``batches``; adds (summed loss, faces) to ``total``."""
    for step, (x, y, _) in enumerate(tqdm(batches, desc=f"{tag} epoch {epoch + 1}/{epochs}",
                                          leave=False, disable=None if rt.main else True)):
        if isinstance(x, device_feed.Packed):  # train.decode: device
            x = device_feed.images(x, rt.device)
        x, y = rt.to_device(x), y.to(rt.device, non_blocking=True)
        run.opt.zero_grad(set_to_none=True)
        # train.grad_accum micro-batches per update (one when 1: the plain step, bit for bit)
        loss = accumulated_backward(
            micro_batches(x, y, run.per_rank),
            lambda xm, ym: step_loss(run.net, run.module, xm, ym, gen, run.weights,
                                     epoch + step / run.steps_per_epoch),
            lambda ym: run.weights.to(ym.device)[ym.long()],
            backward=lambda part: run.scaler.scale(part).backward(),
            no_sync=run.net.no_sync if rt.distributed else None)
        if not torch.isfinite(loss):
            raise TrainingError(f"{tag}: the loss became {float(loss.detach())} at epoch "
                                f"{epoch + 1}, step {step + 1}; lower the learning rate "
                                "(train.lr / adv.lr)")
        run.scaler.step(run.opt)
        run.scaler.update()
        run.sched.step()
        total += torch.tensor([float(loss.detach()) * len(y), len(y)], dtype=torch.float64)


def _after_epoch(run: _Run, epoch: int, epochs: int, total: torch.Tensor, seconds: float,
                 score: Callable[[nn.Module], dict], guard: Optional[Callable[[list[dict]], bool]],
                 patience: int, writer: Any, tag: str) -> bool:
    """Rank 0 after an epoch: score it on val, log it, keep it if it is the best so far, decide
    whether to stop. Returns whether it improved."""
    scores = score(run.module)
    row = {"epoch": epoch + 1, "train_loss": float(total[0] / max(total[1], 1)),
           **scores, "lr": run.sched.get_last_lr()[0], "seconds": seconds}
    run.curve.append(row)
    for k, v in row.items():
        if k not in ("epoch", "seconds") and isinstance(v, float) and math.isfinite(v):
            writer.add_scalar(f"{tag}/{k}", v, epoch + 1)
    collapsed = guard is not None and guard(run.curve)
    improved = not collapsed and (run.best is None or scores["select"] > run.best["select"] + 1e-9)
    log.info("%s epoch %d/%d: loss %.4f, %s%s (%.1fs, %.0f img/s)", tag, epoch + 1,
             epochs, row["train_loss"],
             ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
             " *" if improved else "", row["seconds"],
             float(total[1]) / max(row["seconds"], 1e-9))
    if improved:
        run.best = {"epoch": epoch + 1, **scores}
        run.best_state = _cpu_copy(run.module.state_dict())
        run.stale = 0
    else:
        run.stale += 1
    run.stop = run.stale >= patience or collapsed
    if collapsed:
        row["collapsed"] = True
        log.warning("%s: catastrophic overfitting at epoch %d (val PGD accuracy "
                    "collapsed); keeping epoch %s and stopping", tag, epoch + 1,
                    run.best["epoch"] if run.best else "none")
    elif run.stop:
        log.info("%s: early stop after %d epochs without val gain", tag, run.stale)
    return improved


def _save_state(run: _Run, resume: Optional[Path], fp: str, epoch: int) -> None:
    """The resume state after ``epoch`` (rank 0; nothing without a resume path)."""
    if resume is None:
        return
    resume_mod.save_state(resume, {
        "fingerprint": fp, "epoch": epoch + 1, "model": run.module.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "scaler": run.scaler.state_dict(), "best": run.best, "best_state": run.best_state,
        "curve": run.curve, "stale": run.stale, "stopped": run.stop,
        "rng": resume_mod.rng_states()})


def fit(model: Detector, train_ds: FaceDataset, tp: TrainParams, rt: Runtime, epochs: int,
        lr: float, seed: int, step_loss: StepLoss, score: Callable[[nn.Module], dict],
        tb_dir: Path, tag: str, resume: Optional[Path], fp: str,
        guard: Optional[Callable[[list[dict]], bool]] = None) -> tuple[dict, list[dict]]:
    """Train with per-epoch val scoring on rank 0; return the best epoch's val scores and curve.

    One loop for every precision and process count: autocast and a GradScaler that is a no-op
    unless fp16; DDP wraps the model once and the unwrapped module is kept for crafting attacks,
    scoring and saving. After every epoch rank 0 writes the resume state (:mod:`fakeproof.resume`).
    """
    from torch.utils.tensorboard import SummaryWriter

    run = _prepare(model, train_ds, tp, rt, epochs, lr)
    _restore(run, resume, fp)
    writer = None
    if rt.main:
        tb_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(tb_dir))
    try:
        for epoch in range(run.start, epochs):
            if run.stop:
                break
            t0 = time.perf_counter()
            total = _train_epoch(run, train_ds, tp, rt, epoch, epochs, seed, step_loss, tag)
            improved = False
            if rt.main:
                improved = _after_epoch(run, epoch, epochs, total, time.perf_counter() - t0, score,
                                        guard, tp.patience, writer, tag)
                _save_state(run, resume, fp, epoch)
            improved, run.stop = runtime.broadcast_flags(rt, improved, run.stop)
    finally:
        if writer is not None:
            writer.close()
    if not rt.main:
        return {}, []
    assert run.best is not None and run.best_state is not None
    run.module.load_state_dict(run.best_state)
    run.module.to("cpu").to(memory_format=torch.contiguous_format)
    return run.best, run.curve


def _cpu_copy(state: dict) -> dict:
    """A CPU copy of a state dict (tensors cloned; non-tensor entries such as a module's
    ``_extra_state`` deep-copied)."""
    import copy

    return {k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
            for k, v in state.items()}
