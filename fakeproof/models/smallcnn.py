"""``smallcnn``: four conv-BN-ReLU-pool blocks, global pooling and a one-logit head.

A fast from-scratch baseline for CPU runs, in the spirit of MesoNet (Afchar et al., "MesoNet: a
Compact Facial Video Forgery Detection Network", WIFS 2018, arXiv:1809.00888): few parameters
(about 100k), any input size (global average pooling); 128 px by default.
"""

from __future__ import annotations

from torch import nn

from fakeproof.models import ModelConfig, register_model


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True), nn.MaxPool2d(2)]


@register_model(ModelConfig("smallcnn", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=128,
                            paper="a 4-block CNN baseline (cf. MesoNet, Afchar et al., WIFS 2018)",
                            classifier="18"))
def smallcnn() -> nn.Module:
    return nn.Sequential(*_block(3, 16), *_block(16, 32), *_block(32, 64), *_block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Sequential(nn.Dropout(0.2), nn.Linear(128, 1)))
