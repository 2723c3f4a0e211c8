"""``f3net``: F3-Net's frequency-aware decomposition (FAD) on an Xception backbone.

Qian, Yin, Sheng, Chen & Shao, "Thinking in Frequency: Face Forgery Detection by Mining
Frequency-aware Clues", ECCV 2020 (arXiv:2007.09355); 299 px, mean = std = 0.5.

Built here (from the paper and the authors' released FAD head):

- **FAD** (:class:`FAD`): the image's 2-D DCT (an orthonormal DCT-II, as matrix products
  ``D x D^T``), masked by four filters and brought back with the inverse DCT, giving 4 x 3 = 12
  channels. Each filter is a fixed binary band plus a learnable part squashed to (-1, 1)
  (``2 sigmoid(w) - 1``, ``w`` initialised N(0, 0.1)); the bands cut the frequency plane along
  ``i + j`` (index sum) at ``size / 2.82`` and ``size / 2`` (low: the lowest 1/16 of the spectrum,
  middle: up to 1/8, high: the rest, and an all-pass band). As in the authors' code the DC term
  ``i + j = 0`` lies outside every band (only the learnable part can pass it).
- **Backbone**: timm's ``legacy_xception`` with a 12-channel stem; ``pretrained: imagenet``
  loads ImageNet Xception and repeats its RGB stem filters over the 12 channels (scaled 3/12).

Not built: the LFS branch (local frequency statistics from a sliding-window DCT) and the MixBlock
cross-attention that fuses the two streams; this is the paper's FAD-only model (its ablation
"Xception + FAD"). Everything runs in torch inside ``forward``, so gradients reach the pixels
(a non-differentiable step would mask them from the gradient attacks). Inputs of another size
than 299 work: the DCT is built for the input's size, the bands scale with it and the learnable
filters are resampled bilinearly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fakeproof.models import ModelConfig, register_model, resize
from fakeproof.models._timm import timm_backbone
from fakeproof.models.xception import XCEPTION_CFG

SIZE = 299
#: (start, end] of each band in units of the index sum i + j, for a size x size spectrum.
BANDS = ((0.0, SIZE // 2.82), (SIZE // 2.82, SIZE // 2), (SIZE // 2, SIZE * 2), (0.0, SIZE * 2))

_DCT: dict[tuple, torch.Tensor] = {}


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n x n): ``D @ x`` transforms columns; ``D.T`` inverts."""
    key = (n, str(device), dtype)
    if key not in _DCT:
        k = torch.arange(n, dtype=torch.float64).view(-1, 1)
        i = torch.arange(n, dtype=torch.float64).view(1, -1)
        d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
        d[0] /= math.sqrt(2.0)
        _DCT[key] = d.to(device=device, dtype=dtype)
    return _DCT[key]


def band_masks(h: int, w: int, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The four fixed binary bands (4, h, w): ``start < i + j <= end`` at 299 px, scaled; cached."""
    key = ("bands", h, w, str(device), dtype)
    if key not in _DCT:
        i = torch.arange(h, dtype=torch.float64).view(-1, 1) * (SIZE / h)
        j = torch.arange(w, dtype=torch.float64).view(1, -1) * (SIZE / w)
        s = i + j
        _DCT[key] = torch.stack([((s > lo) & (s <= hi)) for lo, hi in BANDS]).to(device=device,
                                                                                 dtype=dtype)
    return _DCT[key]


class FAD(nn.Module):
    """Frequency-aware decomposition: (N, C, H, W) -> (N, 4C, H, W), band-passed images."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.learnable = nn.Parameter(torch.randn(len(BANDS), size, size) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        dh, dw = dct_matrix(h, x.device, x.dtype), dct_matrix(w, x.device, x.dtype)
        freq = dh @ x @ dw.t()  # (N, C, H, W) spectrum
        filters = band_masks(h, w, x.device, x.dtype) + (2 * torch.sigmoid(resize(
            self.learnable.to(x.dtype), h, w)) - 1)
        bands = [dh.t() @ (freq * f) @ dw for f in filters]
        return torch.cat(bands, dim=1)


class F3NetFAD(nn.Module):
    """FAD followed by a 12-channel Xception ending in one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.fad = FAD()
        self.xception = timm_backbone("legacy_xception", "fc", in_chans=3 * len(BANDS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xception(self.fad(x))


@register_model(ModelConfig("f3net", paper="Qian et al., ECCV 2020 (FAD + Xception)",
                            classifier="xception.fc", first_conv="conv1",
                            pretrained_prefix="xception.", **XCEPTION_CFG))
def f3net() -> nn.Module:
    return F3NetFAD()
