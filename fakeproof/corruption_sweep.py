"""The common-corruption sweep of the evaluate stage: every test video under every corruption and
severity of ``eval.corruptions`` x ``eval.corruption_severities``, scored by every model.

Each video's crops are corrupted **once** per (corruption, severity), as one sequence in frame
order (``h264`` encodes them as a clip), and the same corrupted crops go to every model, so the
models are compared on identical inputs and the corruption cost is paid once. Random corruptions
draw from a generator seeded by ``(eval.seed, corruption, video, severity)`` keyed by their names
(:func:`corruption_seed`), so adding a corruption, a severity or a video changes no other number.
A video that a corruption cannot process (ffmpeg failing to re-encode it) is skipped for that
(corruption, severity), logged and counted; its faces get no score there.

:func:`mean_auc_interval` gives the mean of AUC over every (corruption, severity) a 95 %
interval by resampling whole videos once per draw for all of them (the bootstrap of
:mod:`fakeproof.bootstrap`, shared across the cells so the interval is that of the mean).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fakeproof.bootstrap import (NOT_ESTIMABLE, class_video_counts, exact_auc, interval, resample,
                                 weighted_auc)
from fakeproof.corruptions import CorruptionError, get_corruption
from fakeproof.data import FaceDataset
from fakeproof.predict import as_logit_array
from fakeproof.runtime import named_seed

log = logging.getLogger(__name__)

Cell = tuple[str, int]  # (corruption, severity)


def corruption_seed(seed: int, corruption: str, video_id: str, severity: int) -> int:
    """A seed keyed by names, not list positions (63 bits of a SHA-256)."""
    return named_seed(seed, corruption, video_id, int(severity))


@dataclass
class Sweep:
    """Logits per cell and model (aligned with ``ds.frames`` rows; NaN where skipped), the
    videos skipped per cell, and seconds spent corrupting (per corruption) and scoring."""

    logits: dict[Cell, dict[str, np.ndarray]]
    skipped: dict[Cell, list[str]]
    corrupt_s: dict[str, float] = field(default_factory=dict)
    forward_s: float = 0.0
    n_faces: int = 0


def _video_chunks(frames: pd.DataFrame, batch_size: int) -> list[list[tuple[str, np.ndarray]]]:
    """Videos (id, row positions in frame order) grouped so a chunk holds about ``batch_size``
    faces (a longer video is a chunk of its own)."""
    groups = frames.groupby("video_id", sort=True).indices
    chunks, cur, n = [], [], 0
    for vid, pos in groups.items():
        pos = np.sort(pos)
        if cur and n + len(pos) > batch_size:
            chunks.append(cur)
            cur, n = [], 0
        cur.append((str(vid), pos))
        n += len(pos)
    if cur:
        chunks.append(cur)
    return chunks


@torch.no_grad()
def _score(model: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    """Logits in batches (the model is channels-last already: :func:`fakeproof.runtime.frozen_on`)."""
    device = next(model.parameters()).device
    return np.concatenate([as_logit_array(model(x[i:i + batch_size].to(device)))
                           for i in range(0, len(x), batch_size)])


def corrupted_logits(models: dict[str, nn.Module], ds: FaceDataset, corruptions: Sequence[str],
                     severities: Sequence[int], *, seed: int, batch_size: int) -> Sweep:
    """Score every model on every test face under every (corruption, severity)."""
    frames = ds.frames.reset_index(drop=True)
    n = len(frames)
    cells = [(c, int(s)) for c in corruptions for s in severities]
    sweep = Sweep({cell: {m: np.full(n, np.nan) for m in models} for cell in cells},
                  {cell: [] for cell in cells}, {c: 0.0 for c in corruptions}, 0.0, n)
    for m in models.values():
        m.eval()
    for chunk in tqdm(_video_chunks(frames, batch_size), desc="corruptions", leave=False,
                      disable=None):
        clean = {vid: torch.stack([ds[int(i)][0] for i in pos]) for vid, pos in chunk}
        for cell in cells:
            name, severity = cell
            fn = get_corruption(name)
            t0 = time.perf_counter()
            done, rows = [], []
            for vid, pos in chunk:
                gen = torch.Generator().manual_seed(corruption_seed(seed, name, vid, severity))
                try:
                    done.append(fn(clean[vid], severity=severity, generator=gen))
                except CorruptionError as e:
                    sweep.skipped[cell].append(vid)
                    log.warning("corruptions: video %s skipped under %s severity %d: %s", vid, name,
                                severity, e)
                    continue
                rows.append(pos)
            sweep.corrupt_s[name] += time.perf_counter() - t0
            if not done:
                continue
            x, idx = torch.cat(done), np.concatenate(rows)
            t0 = time.perf_counter()
            for m_name, model in models.items():
                sweep.logits[cell][m_name][idx] = _score(model, x, batch_size)
            sweep.forward_s += time.perf_counter() - t0
    skipped = sum(len(v) for v in sweep.skipped.values())
    log.info("corruptions: %d faces x %d cells x %d models; corrupting %.1fs, scoring %.1fs; "
             "%d (video, cell) pairs skipped", n, len(cells), len(models), sum(sweep.corrupt_s.values()),
             sweep.forward_s, skipped)
    return sweep


def mean_auc_interval(labels: np.ndarray, videos: np.ndarray, cell_logits: list[np.ndarray], *,
                      n_boot: int, seed: int, conf: float = 0.95, strata: np.ndarray | None = None
                      ) -> dict[str, float | int | str]:
    """The mean over cells of frame AUC and its BCa interval (:mod:`fakeproof.bootstrap`),
    resampling whole videos within ``strata`` (default: the label of each row) with the same draw
    for every cell, and the acceleration from a leave-one-video-out jackknife of the mean (rows
    whose logit is NaN, i.e. skipped, are left out). When every draw gives the same mean (e.g. a
    perfect and a useless cell) the interval is Clopper-Pearson at ``min(real, fake)`` videos.
    Returns ``auc, auc_lo, auc_hi, cells, n_boot, method`` (NaN bounds when no cell was scored
    or a class has no video)."""
    y = np.asarray(labels).reshape(-1).astype(bool)
    g = np.asarray(videos).reshape(-1)
    cell_logits = [z for z in cell_logits if np.isfinite(z).any()]  # a cell where every video failed
    out: dict[str, float | int | str] = {"auc": float("nan"), "auc_lo": float("nan"),
                                         "auc_hi": float("nan"), "cells": len(cell_logits),
                                         "n_boot": int(n_boot), "method": NOT_ESTIMABLE}
    n_real, n_fake = class_video_counts(y, g)
    if not cell_logits or min(n_real, n_fake) == 0:
        return out

    def stat(w: np.ndarray) -> np.ndarray:
        per_cell = [weighted_auc(y[ok], z[ok], w[:, ok])
                    for z, ok in ((z, np.isfinite(z)) for z in cell_logits)]
        with warnings.catch_warnings():  # a draw where a cell lost a class: NaN, left out
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(np.stack(per_cell), axis=0)

    point, draws, jack = resample(stat, g, y if strata is None else strata, n_boot, seed)
    auc = float(point[0])
    lo, hi, method = interval(auc, draws[:, 0], jack[:, 0], conf,
                              lambda: exact_auc(auc, n_real, n_fake, conf))
    out.update(auc=auc, auc_lo=float(lo), auc_hi=float(hi), method=method)
    return out


__all__ = ["Sweep", "corrupted_logits", "corruption_seed", "mean_auc_interval"]
