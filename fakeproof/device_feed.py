"""The device feed (``train.decode: device``): crops reach ``train.device`` as compressed bytes
or uint8 and are decoded, scaled to [0, 1] and augmented there, batched.

Why: on a GPU the CPU-side loader was the bottleneck (issue 25: JPEG decoded and augmented in
the workers, float32 crops of 600 KB at 224 px pinned and copied). Here a worker reads a crop's
stored value and hands on either its JPEG bytes (``faces.encoding: jpeg``; a few tens of KB,
decoded in one batched ``torchvision.io.decode_jpeg(list, device=...)`` call: nvJPEG on CUDA,
libjpeg-turbo on the CPU) or, for PNG and raw stores (no GPU PNG decoder), the uint8 crop decoded
in the worker (a quarter of float32's bytes).

Augmentation keeps the CPU path's semantics and seeds: the worker draws every item's magnitudes
from ``item_rng(seed, epoch, index)`` with :func:`fakeproof.augment.draw_preset`, the draws the
CPU path makes in the same order, and the device applies them step by step in the preset's order
(each item's steps in its own order: items are independent). Per-pixel ops (flip, jitter, noise,
the final clip) run on the whole batch; ops whose size or kernel differ per item (resized crop,
blur, downscale) loop over the items that drew them; JPEG re-compression groups them by quality.
The Gaussian noise field is drawn in the worker (it is part of the item's stream: the draws after
it depend on it) and shipped with the batch, so noise is the CPU path's exactly.

What is exact. With ``device`` the CPU, the torch ops are the CPU path's own on the same float32
values and one intra-op thread (antialiased resizing rounds by thread count,
:mod:`fakeproof.augment`), so every op gives the CPU path's bits except jitter's mean grey, a
float32 mean that numpy sums pairwise and torch in its own order (a difference of an ulp or so of
the grey, which JPEG's 8-bit rounding can turn into one level in a rare pixel):
``tests/test_device_feed.py`` holds both. On CUDA, nvJPEG's decoder and encoder and the
convolutions round differently, so the test compares statistics there.

Decoding and augmenting run in the training process's main thread, on the device's stream,
before each step (:func:`images`, called by :func:`fakeproof.fit.fit`): kernels queue behind the
previous step's, but nvJPEG's host-side work and the per-item loops' launches are not overlapped
with the step (not measured: no GPU was at hand when this was written).

Self-Blended Images (``train.sbi`` != off) stay on the CPU path: blending needs landmarks, masks
and per-item warps that are not batched here; ``auto`` then picks ``cpu`` and ``device`` is
refused by the params loader (:mod:`fakeproof.config`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from fakeproof.augment import LUMA, PRESETS, draw_preset, item_rng, one_thread
from fakeproof.data import DataError, FaceDataset
from fakeproof.store import HEADER, decode_tensor, value_info

SCALE = np.float32(1.0 / 255.0)  # uint8 to [0, 1], as FaceDataset.__getitem__ scales


def resolve_decode(decode: str, sbi: str, device: torch.device) -> str:
    """``train.decode`` to ``cpu`` or ``device``: auto is device on CUDA unless SBI is on.
    (``device`` with SBI is refused by the params loader, and by :class:`PackedDataset`.)"""
    if decode == "auto":
        return "device" if device.type == "cuda" and sbi == "off" else "cpu"
    return decode


@dataclass
class Packed:
    """A batch before decoding: ``payload`` uint8 (B, 3, H, W) or a list of B JPEG byte tensors,
    the preset and each item's drawn steps (``[(op, magnitudes), ...]``)."""

    payload: Union[torch.Tensor, list]
    preset: str
    drawn: list

    def pin_memory(self) -> "Packed":  # DataLoader's pin_memory calls this
        pay = ([t.pin_memory() for t in self.payload] if isinstance(self.payload, list)
               else self.payload.pin_memory())
        return Packed(pay, self.preset, self.drawn)


class PackedDataset(Dataset):
    """``ds``'s items as ``(payload, label, index, drawn)``: payload the JPEG bytes (a 1-D uint8
    tensor) or the decoded uint8 crop (3, H, W); drawn the item's augmentation magnitudes."""

    def __init__(self, ds: FaceDataset) -> None:
        if ds.sbi != "off":
            raise DataError(f"train.sbi = {ds.sbi!r}: SBI runs on the CPU path only; use "
                            "train.decode: auto or cpu")
        self.ds = ds

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float, int, list]:
        index, ds = int(index), self.ds
        value = ds.stored_value(index)
        encoding, h, w = value_info(value)
        if encoding == "jpeg":
            payload = torch.frombuffer(bytearray(memoryview(value)[HEADER.size:]), dtype=torch.uint8)
        else:
            payload = decode_tensor(value)
        drawn = ([] if ds.augment == "none"
                 else draw_preset(ds.augment, item_rng(ds.seed, ds.epoch, index), h, w))
        return payload, float(ds.labels[index]), index, drawn


def collate_packed(preset: str):
    """The collate function of a :class:`PackedDataset` loader: ``(Packed, labels, index)``."""

    def collate(batch: list) -> tuple[Packed, torch.Tensor, torch.Tensor]:
        pays = [b[0] for b in batch]
        payload = pays if pays[0].ndim == 1 else torch.from_numpy(np.stack([p.numpy() for p in pays]))
        labels = torch.from_numpy(np.array([b[1] for b in batch], dtype=np.float32))
        index = torch.from_numpy(np.array([b[2] for b in batch], dtype=np.int64))
        return Packed(payload, preset, [b[3] for b in batch]), labels, index
    return collate


def decode_batch(packed: Packed, device: torch.device) -> torch.Tensor:
    """float32 (B, 3, H, W) in [0, 1] on ``device``: JPEG decoded there, uint8 copied there."""
    if isinstance(packed.payload, list):
        u8 = torch.stack(decode_jpeg(packed.payload, mode=ImageReadMode.RGB, device=device))
    else:
        u8 = packed.payload.to(device, non_blocking=True)
    return u8.to(torch.float32) * SCALE.item()


def images(packed: Packed, device: torch.device) -> torch.Tensor:
    """The batch decoded and augmented on ``device``: float32 (B, 3, H, W) in [0, 1]."""
    x = decode_batch(packed, device)
    if packed.preset == "none":
        return x
    # on the CPU one intra-op thread, as the CPU path (antialiased resizing rounds by count)
    with one_thread() if device.type == "cpu" else contextlib.nullcontext():
        for step in PRESETS[packed.preset]:
            rows = [(i, args) for i, steps in enumerate(packed.drawn)
                    for op, args in steps if op == step.op]
            if rows:
                x = DEVICE_OPS[step.op](x, [i for i, _ in rows], [a for _, a in rows])
    return x.clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Batched ops: (x (B, 3, H, W) float32 on the device, rows, each row's magnitudes) -> x
# ------------------------------------------------------------------------------------------------
def _flip(x: torch.Tensor, rows: list[int], args: list) -> torch.Tensor:
    idx = torch.tensor(rows, device=x.device)
    x[idx] = x[idx].flip(-1)
    return x


def _f32(values: list, device: torch.device) -> torch.Tensor:
    """(n, 1, 1, 1) float32 factors: each magnitude rounded to float32, as numpy's np.float32."""
    return torch.tensor(np.array(values, dtype=np.float32), device=device).view(-1, 1, 1, 1)


# BT.601 weights as float32 values: the product of two float32 numbers is exact in float64, so
# torch multiplying in either precision rounds as numpy's float32 multiply does
_L = [float(np.float32(v)) for v in LUMA]


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) luma of (n, 3, H, W), summed in the CPU path's order."""
    return (_L[0] * x[:, 0] + _L[1] * x[:, 1] + _L[2] * x[:, 2]).unsqueeze(1)


def _jitter(x: torch.Tensor, rows: list[int], args: list) -> torch.Tensor:
    """Contrast about each item's mean grey, brightness, saturation: the CPU path's float32
    arithmetic op for op (the mean excepted: see the module docstring)."""
    idx = torch.tensor(rows, device=x.device)
    sub = x[idx]
    grey = _luma(sub).mean(dim=(1, 2, 3), keepdim=True)
    out = (sub - grey) * _f32([a[1] for a in args], x.device) + grey
    out = out * _f32([a[0] for a in args], x.device)
    if args[0][2] is not None:  # the preset has saturation: every item drew it
        luma = _luma(out)
        out = (out - luma) * _f32([a[2] for a in args], x.device) + luma
    x[idx] = out.clamp_(0.0, 1.0)
    return x


def _per_item(fn):
    def op(x: torch.Tensor, rows: list[int], args: list) -> torch.Tensor:
        for i, a in zip(rows, args):
            x[i] = fn(x[i], *a)
        return x
    return op


def _resized_crop(img: torch.Tensor, top: int, left: int, ch: int, cw: int) -> torch.Tensor:
    out = TF.resized_crop(img, top, left, ch, cw, list(img.shape[1:]), antialias=True)
    return out.clamp_(0.0, 1.0)


def _blur(img: torch.Tensor, k: int, sigma: float) -> torch.Tensor:
    return TF.gaussian_blur(img, [k, k], [sigma, sigma])


def _downscale(img: torch.Tensor, sh: int, sw: int) -> torch.Tensor:
    small = TF.resize(img, [sh, sw], antialias=True)
    return TF.resize(small, list(img.shape[1:]), antialias=False).clamp_(0.0, 1.0)


def _noise(x: torch.Tensor, rows: list[int], args: list) -> torch.Tensor:
    idx = torch.tensor(rows, device=x.device)
    noise = torch.from_numpy(np.stack([a[1] for a in args])).to(x.device, non_blocking=True)
    x[idx] = (x[idx] + noise * _f32([a[0] for a in args], x.device)).clamp_(0.0, 1.0)
    return x


def _jpeg(x: torch.Tensor, rows: list[int], args: list) -> torch.Tensor:
    """Re-compression at each item's quality: on the CPU libjpeg per item (the CPU path's call),
    on CUDA one nvJPEG encode and decode per quality drawn."""
    u8 = (x[rows] * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    if x.device.type == "cpu":
        out = torch.stack([TF.jpeg(u8[j], a[0]) for j, a in enumerate(args)])
    else:
        out = torch.empty_like(u8)
        for q in sorted({a[0] for a in args}):
            js = [j for j, a in enumerate(args) if a[0] == q]
            enc = [e.cpu() for e in encode_jpeg([u8[j] for j in js], quality=q)]  # decode reads
            for j, img in zip(js, decode_jpeg(enc, mode=ImageReadMode.RGB, device=x.device)):
                out[j] = img
    x[rows] = out.to(torch.float32) * SCALE.item()
    return x


DEVICE_OPS = {"resized_crop": _per_item(_resized_crop), "flip": _flip, "jitter": _jitter,
              "gaussian_blur": _per_item(_blur), "downscale": _per_item(_downscale),
              "gaussian_noise": _noise, "jpeg": _jpeg}
