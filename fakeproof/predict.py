"""Model outputs to numbers: the one place where logits become P(fake).

Every consumer (training's val scoring, evaluate, detect, the web page) goes through these two
functions, so a probability means the same everywhere and CUDA tensors never reach ``.numpy()``.

- :func:`logits_of` runs a model over a loader and returns its fake logits (float64, on the CPU).
  Rank-based metrics (AUC, AP, EER) rank on logits: a float32 sigmoid ties every logit above about
  17 at exactly 1.0, which would turn a confident model's AUC into a coin toss among the ties.
- :func:`proba` turns logits (a tensor on any device, or an array) into P(fake) in float64
  (calibration and the decision boundary: :mod:`fakeproof.boundary`).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm


def as_logit_array(logits: Any) -> np.ndarray:
    """A float64 numpy vector of fake logits from a tensor on any device or an array-like."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to("cpu", torch.float64).reshape(-1).numpy()
    return np.asarray(logits, dtype=np.float64).reshape(-1)


def proba(logits: Any) -> np.ndarray:
    """P(fake) = sigmoid(logit) in float64, for a tensor on any device or an array."""
    z = as_logit_array(logits)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


@torch.no_grad()
def logits_of(model: nn.Module, loader: Iterable, desc: str = "predict",
              device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Fake logits (float64) and labels (int) over a loader of ``(images, labels, index)``
    batches, in the loader's order, with the model in eval mode (its mode is restored after)."""
    was = model.training
    model.eval()
    logits, labels = [], []
    try:
        for x, y, _ in tqdm(loader, desc=desc, leave=False, disable=None):
            logits.append(as_logit_array(model(x.to(device, non_blocking=True))))
            labels.append(np.asarray(y, dtype=np.float64).reshape(-1))
    finally:
        model.train(was)
    if not logits:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(logits), np.concatenate(labels).astype(int)
