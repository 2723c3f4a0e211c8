"""The device feed (``train.decode: device``, fakeproof/device_feed.py) against the CPU path,
through the real LMDB store (JPEG and PNG crops): with the device the CPU, every op but jitter's
mean grey gives the CPU path's bits, whole presets agree to an ulp, training through ``fit``
gives the same weights where the ops are exact; on CUDA (``gpu`` tests) the statistics agree.
Also the params that choose it. (That the split of drawing from applying in fakeproof/augment.py
left the CPU path's output byte for byte as it was was checked when the split landed; ``light``,
the demo's preset, stays held to the pre-preset code by tests/test_augment.py.)"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from _params import default_params_raw
from _tinydata import build_store, tiny_params
from fakeproof.augment import APPLY, DRAW, PRESETS, augment_image, draw_preset, item_rng, one_thread
from fakeproof.config import ParamsError, params_from_dict
from fakeproof.data import DataError, FaceDataset
from fakeproof.device_feed import (DEVICE_OPS, PackedDataset, collate_packed, images,
                                   resolve_decode)
from fakeproof.fit import fit, train_loader, weighted_bce
from fakeproof.models import create_model
from fakeproof.runtime import Runtime

CPU = torch.device("cpu")
VIDEOS = {"train": 8, "val": 2}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module", params=["jpeg", "png"])
def store(request, tmp_path_factory):
    return build_store(tmp_path_factory.mktemp(request.param) / "data", VIDEOS, frames=4, size=32,
                       encoding=request.param)


def _dataset(paths, preset: str, epoch: int = 2) -> FaceDataset:
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "train", augment=preset, seed=5)
    ds.set_epoch(epoch)
    return ds


def _both(paths, preset: str, device=CPU) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training item through the CPU path, and through the device feed on ``device``."""
    ds = _dataset(paths, preset)
    cpu = torch.stack([ds[i][0] for i in range(len(ds))])
    packed, _, _ = collate_packed(preset)([PackedDataset(ds)[i] for i in range(len(ds))])
    return cpu, images(packed, device).cpu()


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_device_feed_on_the_cpu_is_the_cpu_path(store, preset: str) -> None:
    cpu, dev = _both(store, preset)
    assert dev.dtype == torch.float32 and dev.shape == cpu.shape
    if preset == "none":
        assert torch.equal(dev, cpu)  # decoding and scaling: exact
    else:  # jitter's float32 mean is summed in another order (module docstring): an ulp
        assert torch.allclose(dev, cpu, rtol=0, atol=1e-6)
    assert float(dev.min()) >= 0.0 and float(dev.max()) <= 1.0


@pytest.mark.parametrize("op", [o for o in DRAW if o != "jitter"])
def test_every_op_but_jitter_is_exact_on_the_cpu(op: str) -> None:
    step = next(s for s in PRESETS["strong"] if s.op == op)
    rng = np.random.default_rng(1)
    x = rng.random((6, 3, 32, 32), dtype=np.float32)
    drawn = [DRAW[op](item_rng(0, 0, i), 32, 32, *step.args) for i in range(6)]
    with one_thread():
        want = np.stack([APPLY[op](x[i], *drawn[i]) for i in range(6)])
        got = DEVICE_OPS[op](torch.from_numpy(x.copy()), list(range(6)), drawn)
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(want))), op


def test_drawing_takes_what_the_ops_took_from_the_generator() -> None:
    for preset in PRESETS:
        a, b = item_rng(7, 0, 3), item_rng(7, 0, 3)
        draw_preset(preset, a, 32, 32)
        augment_image(np.zeros((3, 32, 32), np.float32), preset, b)
        assert a.random() == b.random(), preset  # both streams left at the same place


def _fit(paths, tmp_path, decode: str, preset: str) -> dict:
    tp = replace(tiny_params().train, batch_size=8, threads=1, augment=preset, decode=decode)
    torch.manual_seed(0)
    model = create_model("smallcnn")
    ds = _dataset(paths, preset)
    step = lambda net, module, x, y, gen, w, progress: weighted_bce(net(x), y, w)  # noqa: E731
    fit(model, ds, tp, Runtime(CPU, None, True), 2, 1e-2, 5, step, lambda m: {"select": 0.0},
        tmp_path / f"tb_{decode}", "t", None, "fp")
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_training_through_the_device_feed_gives_the_cpu_paths_weights(store, tmp_path,
                                                                      one_torch_thread) -> None:
    for preset in ("none", "light"):
        cpu, dev = _fit(store, tmp_path, "cpu", preset), _fit(store, tmp_path, "device", preset)
        for k in cpu:
            if preset == "none":  # every op exact: the same weights bit for bit
                assert torch.equal(cpu[k], dev[k]), k
            else:  # jitter's grey an ulp apart: the same training up to float rounding
                assert torch.allclose(cpu[k].float(), dev[k].float(), rtol=1e-3, atol=1e-4), k


def test_the_loader_packs_items_only_when_decoding_on_the_device(store) -> None:
    ds = _dataset(store, "light")
    rt = Runtime(CPU, None, True)
    base = replace(tiny_params().train, batch_size=4, num_workers=0)
    x, _, _ = next(iter(train_loader(ds, replace(base, decode="cpu"), rt, 0, 0)))
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    x, _, _ = next(iter(train_loader(ds, replace(base, decode="device"), rt, 0, 0)))
    assert not isinstance(x, torch.Tensor) and x.preset == "light" and len(x.drawn) == 4


def test_auto_decodes_on_the_device_on_cuda_only_and_sbi_stays_on_the_cpu() -> None:
    cuda_dev = torch.device("cuda")
    assert resolve_decode("auto", "off", CPU) == "cpu"
    assert resolve_decode("auto", "off", cuda_dev) == "device"
    assert resolve_decode("auto", "mix", cuda_dev) == "cpu"
    assert resolve_decode("cpu", "off", cuda_dev) == "cpu"


def test_a_self_blended_dataset_is_never_packed(store) -> None:
    sbi = FaceDataset(store.store, store.faces_csv, store.splits_csv, "train", sbi="mix")
    with pytest.raises(DataError, match="train.sbi = 'mix': SBI runs on the CPU path only"):
        PackedDataset(sbi)


def test_params_validate_train_decode_and_adv_craft_precision() -> None:
    raw = default_params_raw()
    p = params_from_dict(raw)
    assert p.train.decode == "auto" and p.adv.craft_precision == "float32"
    raw["train"].update(decode="device", sbi="only")
    with pytest.raises(ParamsError, match=r"train.decode = 'device' with train.sbi = 'only'.*auto or cpu"):
        params_from_dict(raw)
    raw["train"].update(decode="gpu", sbi="off")
    with pytest.raises(ParamsError, match="train.decode = 'gpu': not allowed"):
        params_from_dict(raw)
    raw["train"]["decode"] = "cpu"
    raw["adv"]["craft_precision"] = "fp8"
    with pytest.raises(ParamsError, match="adv.craft_precision = 'fp8': not allowed"):
        params_from_dict(raw)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("preset", list(PRESETS))
def test_on_cuda_the_device_feed_matches_the_cpu_paths_statistics(store, preset: str) -> None:
    """nvJPEG (decode and re-encode) and CUDA convolutions round otherwise: per-item means and
    spreads agree, and most pixels within a few levels."""
    cpu, dev = _both(store, preset, torch.device("cuda"))
    assert dev.shape == cpu.shape and float(dev.min()) >= 0.0 and float(dev.max()) <= 1.0
    diff = (dev - cpu).abs()
    assert float(diff.mean()) < 4 / 255
    assert torch.allclose(dev.mean(dim=(1, 2, 3)), cpu.mean(dim=(1, 2, 3)), atol=2 / 255)
    assert torch.allclose(dev.std(dim=(1, 2, 3)), cpu.std(dim=(1, 2, 3)), atol=4 / 255)
    assert float((diff <= 8 / 255).float().mean()) > 0.95


@pytest.mark.gpu
@cuda
def test_on_cuda_a_training_epoch_runs_through_the_device_feed(store, tmp_path) -> None:
    tp = replace(tiny_params().train, batch_size=8, augment="standard", decode="device",
                 device="cuda", num_workers=1)
    model = create_model("smallcnn")
    fit(model, _dataset(store, "standard"), tp, Runtime(torch.device("cuda"), None, True), 1, 1e-2,
        5, lambda net, module, x, y, gen, w, progress: weighted_bce(net(x), y, w),
        lambda m: {"select": 0.0}, tmp_path / "tb", "t", None, "fp")
    assert all(torch.isfinite(v).all() for v in model.state_dict().values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())
