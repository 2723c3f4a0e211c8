"""``xception``: Xception, the FaceForensics++ baseline detector.

Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR 2017
(arXiv:1610.02357); as a face-forgery detector: Rössler et al., "FaceForensics++: Learning to
Detect Manipulated Facial Images", ICCV 2019 (arXiv:1901.08971), ImageNet-pretrained Xception
with a new head. Architecture from timm (``legacy_xception``, the port of the Keras/TF model that
FaceForensics++ used; timm is the field's maintained home for it); 299 px, mean = std = 0.5.
``pretrained: imagenet``: timm's ``legacy_xception.tf_in1k`` (Apache-2.0), cached in
``$TORCH_HOME/hub/checkpoints/xception-43020ad28.pth``. Any input of at least 32 px works (global
pooling); 299 is the pretraining size.
"""

from __future__ import annotations

from torch import nn

from fakeproof.models import ModelConfig, register_model
from fakeproof.models._timm import timm_backbone

XCEPTION_CFG = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=299,
                    weights="timm:legacy_xception.tf_in1k", license="Apache-2.0 (timm weights)")


@register_model(ModelConfig("xception", paper="Chollet, CVPR 2017; Rössler et al., ICCV 2019",
                            classifier="fc", first_conv="conv1", **XCEPTION_CFG))
def xception() -> nn.Module:
    return timm_backbone("legacy_xception", "fc")
