"""Building timm backbones with one logit (timm is imported only when such a model is built)."""

from __future__ import annotations

from typing import Any

from torch import nn


def timm_backbone(arch: str, classifier: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, num_classes=1)`` without weights, its new head re-initialised small.

    timm initialises an EfficientNet head uniform in +-1/sqrt(num_classes), i.e. +-1 for one
    output: over 1,792 features that starts the logits far from 0 (BCE near 9 on real faces).
    A normal(0, 0.01) head starts every detector near P(fake) = 0.5.
    """
    import timm

    net = timm.create_model(arch, pretrained=False, num_classes=1, **kwargs)
    head = net.get_submodule(classifier)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return net
