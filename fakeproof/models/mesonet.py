"""MesoNet: ``meso4`` and ``mesoinception4``.

Afchar, Nozick, Yamagishi & Echizen, "MesoNet: a Compact Facial Video Forgery Detection Network",
WIFS 2018 (arXiv:1809.00888). Input 256 x 256 in [0, 1] (the authors rescale pixels by 1/255 and
do not normalise further), fixed: the head flattens an 8 x 8 x 16 map, so the detector resizes
any other input to 256 inside ``forward``. Built from the paper and the authors' Keras code
(DariusAf/MesoNet): Keras' ``Conv2D(activation='relu')`` then ``BatchNormalization`` order,
``same`` padding, max pooling 2-2-2-4, then dropout 0.5, Dense(16), LeakyReLU(0.1), dropout 0.5,
Dense(1). No ImageNet weights exist for these (the authors' deepfake weights are Keras files).

- ``meso4``: four conv blocks (8, 8, 16, 16 filters; 3x3 then 5x5), about 28k parameters.
- ``mesoinception4``: the first two blocks are Inception modules (1x1; 1x1-3x3; 1x1-3x3 dilated 2;
  1x1-3x3 dilated 3) with (1, 4, 4, 2) and (2, 4, 4, 2) filters.
"""

from __future__ import annotations

import torch
from torch import nn

from fakeproof.models import ModelConfig, register_model

_PAPER = "Afchar et al., WIFS 2018"


def _conv_block(cin: int, cout: int, k: int, pool: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True),
                         nn.BatchNorm2d(cout), nn.MaxPool2d(pool))


class Inception(nn.Module):
    """MesoInception's module: four parallel branches concatenated (a + b + c + d channels)."""

    def __init__(self, cin: int, a: int, b: int, c: int, d: int) -> None:
        super().__init__()

        def branch(cout: int, dilation: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation),
                                 nn.ReLU(inplace=True))

        self.b1 = nn.Sequential(nn.Conv2d(cin, a, 1), nn.ReLU(inplace=True))
        self.b2 = branch(b, 1)
        self.b3 = branch(c, 2)
        self.b4 = branch(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 8 * 16, 16),
                         nn.LeakyReLU(0.1), nn.Dropout(0.5), nn.Linear(16, 1))


def _cfg(name: str) -> ModelConfig:
    return ModelConfig(name, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_size=256,
                       fixed_input_size=True, paper=_PAPER, classifier="classifier")


class Meso(nn.Module):
    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = _head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(_cfg("meso4"))
def meso4() -> nn.Module:
    return Meso(nn.Sequential(_conv_block(3, 8, 3, 2), _conv_block(8, 8, 5, 2),
                              _conv_block(8, 16, 5, 2), _conv_block(16, 16, 5, 4)))


@register_model(_cfg("mesoinception4"))
def mesoinception4() -> nn.Module:
    return Meso(nn.Sequential(
        Inception(3, 1, 4, 4, 2), nn.BatchNorm2d(11), nn.MaxPool2d(2),
        Inception(11, 2, 4, 4, 2), nn.BatchNorm2d(12), nn.MaxPool2d(2),
        _conv_block(12, 16, 5, 2), _conv_block(16, 16, 5, 4)))
