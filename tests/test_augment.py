"""Training augmentation presets (fakeproof/augment.py) through the real face store and loader:
``light`` is the pre-preset augmentation byte for byte, ``none`` is the identity, every op of
``standard`` changes a face, items are deterministic per (seed, epoch, index) whatever the worker
or thread count, and val/test crops are never augmented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _params import default_params_raw
from _tinydata import build_store
from fakeproof.augment import (PRESETS, AugmentError, Step, apply_step, augment_image, item_rng,
                               resolve_preset)
from fakeproof.config import params_from_dict
from fakeproof.data import DataError, FaceDataset, make_loader

FACES = Path(__file__).resolve().parents[1] / "fakeproof" / "assets" / "faces"


def _face(name: str = "obama.jpg", size: int = 64) -> np.ndarray:
    img = Image.open(FACES / name).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def _old_light(img: np.ndarray, seed: int, epoch: int, index: int) -> np.ndarray:
    """The augmentation of ``train.augment: true`` before the presets (fakeproof/data.py at
    e9cd7fd), kept verbatim as the reference for ``light``."""
    rng = np.random.default_rng([seed, epoch, index])
    flip, b, c = rng.random(), rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
    if flip < 0.5:
        img = img[:, :, ::-1]
    grey = np.float32((0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).mean())
    out = (img - grey) * np.float32(c) + grey
    out *= np.float32(b)
    return np.clip(out, 0.0, 1.0, out=out)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path, Path]:
    paths = build_store(tmp_path_factory.mktemp("aug"), {"train": 4, "val": 2, "test": 2},
                        frames=3, size=32)
    return paths.store, paths.faces_csv, paths.splits_csv


def test_default_preset_is_light_and_names_resolve() -> None:
    assert params_from_dict(default_params_raw()).train.augment == "light"
    assert resolve_preset(True) == "light" and resolve_preset(False) == "none"
    assert [resolve_preset(p) for p in PRESETS] == list(PRESETS)
    with pytest.raises(AugmentError, match="train.augment = 'heavy': unknown preset"):
        resolve_preset("heavy")


def test_light_is_the_old_augmentation_byte_for_byte(store) -> None:
    ds = FaceDataset(*store, "train", augment="light", seed=3)
    plain = FaceDataset(*store, "train")
    for epoch in (0, 1, 7):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ref = _old_light(plain[i][0].numpy(), 3, epoch, i)
            assert ds[i][0].numpy().tobytes() == ref.tobytes()
    assert FaceDataset(*store, "train", augment=True, seed=3)[0][0].equal(
        FaceDataset(*store, "train", augment="light", seed=3)[0][0])


def test_none_is_the_identity(store) -> None:
    plain = FaceDataset(*store, "train")
    none = FaceDataset(*store, "train", augment="none", seed=1)
    none.set_epoch(4)
    for i in range(len(plain)):
        assert none[i][0].numpy().tobytes() == plain[i][0].numpy().tobytes()
    img = _face()
    assert augment_image(img, "none", item_rng(0, 0, 0)).tobytes() == img.tobytes()


@pytest.mark.parametrize("split", ["val", "test"])
def test_val_and_test_are_never_augmented(store, split: str) -> None:
    with pytest.raises(DataError, match=f"the {split} split: only training crops are augmented"):
        FaceDataset(*store, split, augment="standard")
    ds = FaceDataset(*store, split)
    assert ds.augment == "none"
    keys = ds.frames["key"].tolist()
    for i in range(len(ds)):  # exactly the stored pixels
        want = ds.store.get_tensor(keys[i]).numpy().astype(np.float32) * np.float32(1 / 255)
        assert np.array_equal(ds[i][0].numpy(), want)


@pytest.mark.parametrize("step", PRESETS["standard"], ids=lambda s: s.op)
def test_every_standard_op_changes_a_face(step: Step) -> None:
    img = _face(size=64)
    for index in range(5):
        out = apply_step(img, Step(step.op, 1.0, step.args), item_rng(0, 0, index))
        assert out.shape == img.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert np.abs(np.ascontiguousarray(out) - img).mean() > 1e-4, (step.op, index)


@pytest.mark.parametrize("preset", ["standard", "strong"])
def test_presets_are_deterministic_per_seed_epoch_index(store, preset: str) -> None:
    a = FaceDataset(*store, "train", augment=preset, seed=1)
    b = FaceDataset(*store, "train", augment=preset, seed=1)
    first = [a[i][0] for i in range(len(a))]
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(first))
    assert len({x.numpy().tobytes() for x in first}) == len(first)  # items differ from each other
    a.set_epoch(1)
    assert any(not torch.equal(x, a[i][0]) for i, x in enumerate(first))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i][0]) for i, x in enumerate(first))
    other_seed = FaceDataset(*store, "train", augment=preset, seed=2)
    assert any(not torch.equal(x, other_seed[i][0]) for i, x in enumerate(first))
    for x in first:
        assert x.dtype == torch.float32 and x.is_contiguous() and 0 <= x.min() and x.max() <= 1


def test_same_items_in_workers_and_on_any_thread_count(store) -> None:
    """Antialiased resizing splits its work by thread count; augmentation runs its torch ops on
    one thread, so the main process (train.threads) and a worker (one thread) agree."""
    ds = FaceDataset(*store, "train", augment="strong", seed=5)
    ds[0]  # the parent has the store open before the workers fork
    ds.set_epoch(2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = [ds[i][0] for i in range(len(ds))]
        assert torch.get_num_threads() == 2  # restored after each item
        torch.set_num_threads(1)
        one = [ds[i][0] for i in range(len(ds))]
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(x, y) for x, y in zip(one, two))

    def run(workers: int) -> list[torch.Tensor]:
        loader = make_loader(ds, batch_size=4, shuffle=True, seed=7, num_workers=workers)
        return [(x, i) for x, _, i in loader]

    for (x0, i0), (x1, i1) in zip(run(0), run(2)):
        assert torch.equal(i0, i1) and torch.equal(x0, x1)
