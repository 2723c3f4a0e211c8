"""ImageNet classifiers from torchvision, their last Linear replaced by a one-logit head.

- ``mobilenet_v3_small`` / ``mobilenet_v3_large``: Howard et al., "Searching for MobileNetV3",
  ICCV 2019 (arXiv:1905.02244); 224 px.
- ``resnet18`` / ``resnet50``: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
  (arXiv:1512.03385); 224 px.
- ``efficientnet_b0``: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks", ICML 2019 (arXiv:1905.11946); 224 px.

All take any input size (global pooling). ``pretrained: imagenet`` reads torchvision's weights
(BSD-3-Clause code; the weights follow ImageNet's non-commercial terms) from ``$TORCH_HOME``.
"""

from __future__ import annotations

import torchvision
from torch import nn

from fakeproof.models import ModelConfig, ModelError, register_model


def one_logit_head(net: nn.Module) -> nn.Module:
    """Swap a torchvision classifier's last Linear for a single-logit head."""
    for attr in ("classifier", "fc"):
        head = getattr(net, attr, None)
        if isinstance(head, nn.Linear):
            setattr(net, attr, nn.Sequential(nn.Dropout(0.2), nn.Linear(head.in_features, 1)))
            return net
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, 1)
            return net
    raise ModelError(f"{type(net).__name__}: no classifier/fc Linear head found to replace with a "
                     "one-logit head; register a builder that ends in nn.Linear(features, 1)")


_LICENSE = "BSD-3-Clause (torchvision); ImageNet-trained: the dataset's terms apply"


@register_model(ModelConfig("mobilenet_v3_small", paper="Howard et al., ICCV 2019",
                            weights="torchvision:MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                            license=_LICENSE, classifier="classifier", first_conv="features.0.0"))
def mobilenet_v3_small() -> nn.Module:
    return one_logit_head(torchvision.models.mobilenet_v3_small(weights=None))


@register_model(ModelConfig("mobilenet_v3_large", paper="Howard et al., ICCV 2019",
                            weights="torchvision:MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                            license=_LICENSE, classifier="classifier", first_conv="features.0.0"))
def mobilenet_v3_large() -> nn.Module:
    return one_logit_head(torchvision.models.mobilenet_v3_large(weights=None))


@register_model(ModelConfig("resnet18", paper="He et al., CVPR 2016",
                            weights="torchvision:ResNet18_Weights.IMAGENET1K_V1", license=_LICENSE,
                            classifier="fc", first_conv="conv1"))
def resnet18() -> nn.Module:
    return one_logit_head(torchvision.models.resnet18(weights=None))


@register_model(ModelConfig("resnet50", paper="He et al., CVPR 2016",
                            weights="torchvision:ResNet50_Weights.IMAGENET1K_V2", license=_LICENSE,
                            classifier="fc", first_conv="conv1"))
def resnet50() -> nn.Module:
    return one_logit_head(torchvision.models.resnet50(weights=None))


@register_model(ModelConfig("efficientnet_b0", paper="Tan & Le, ICML 2019",
                            weights="torchvision:EfficientNet_B0_Weights.IMAGENET1K_V1",
                            license=_LICENSE, classifier="classifier", first_conv="features.0.0"))
def efficientnet_b0() -> nn.Module:
    return one_logit_head(torchvision.models.efficientnet_b0(weights=None))
