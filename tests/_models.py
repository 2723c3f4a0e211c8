"""Models for tests that need a detector whose outputs differ between inputs without training."""

from __future__ import annotations

import torch

from fakeproof.models import create_model


def spread_smallcnn(seed: int = 0, means: bool = False) -> torch.nn.Module:
    """An untrained smallcnn (eval mode) whose BatchNorm statistics are spread, so that inputs
    score apart: running variances drawn in [0.05, 0.2] (and running means in [-0.1, 0.1] with
    ``means``) after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    model = create_model("smallcnn")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.05, 0.2)
                if means:
                    m.running_mean.uniform_(-0.1, 0.1)
    return model.eval()
