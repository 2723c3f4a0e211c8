"""Fold eval-mode BatchNorm into the convolution before it, for scoring and attacking.

A frozen detector in eval mode computes ``BN(conv(x)) = gamma (conv(x) - mu) / sqrt(var + e) +
beta``: an affine map per channel that can be folded into the convolution's weights and bias
once (Ioffe & Szegedy, "Batch Normalization", ICML 2015, section 3.2: at inference the transform
is a fixed linear map; :func:`torch.nn.utils.fusion.fuse_conv_bn_eval` does the arithmetic). The
folded model computes the same function up to float rounding and skips one full pass over every
activation map forward and backward: on the CPU, 15 % of a smallcnn forward and about a quarter
of an input-gradient step (benchmarks/bench_attacks.py).

Only ``Conv2d`` directly followed by a plain ``BatchNorm2d`` inside one ``nn.Sequential`` is
folded (smallcnn's blocks, torchvision's ``Conv2dNormActivation``, the stems of most CNNs); any
other layout is left as it is. The folded model has another state dict (no BatchNorm entries):
it is for scoring and attacking, never for saving; :func:`folded_copy` leaves the original alone.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that follows a ``Conv2d`` in an ``nn.Sequential`` into
    that conv, in place (the BatchNorm becomes ``nn.Identity``); returns ``model``. A module in
    training mode is refused: its BatchNorm normalises by batch statistics, which do not fold."""
    if model.training:
        raise ValueError("fold_batchnorm: the model is in training mode; call .eval() first "
                         "(only running statistics fold into a convolution)")
    channels_last = any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                        and not p.is_contiguous() for p in model.parameters())
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d
                    and bn.track_running_stats and bn.running_mean is not None):
                fused = fuse_conv_bn_eval(conv, bn)
                for p in fused.parameters():
                    p.requires_grad_(conv.weight.requires_grad)
                if channels_last:
                    fused = fused.to(memory_format=torch.channels_last)
                seq._modules[a], seq._modules[b] = fused, nn.Identity()
    return model


def folded_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (in eval mode) with :func:`fold_batchnorm` applied."""
    return fold_batchnorm(copy.deepcopy(model).eval())


__all__ = ["fold_batchnorm", "folded_copy"]
