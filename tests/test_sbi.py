"""Self-Blended Images (fakeproof/sbi.py) and the training-only dataset options (train.sbi,
frames.train_count): the blend mask, the pseudo-fake, determinism, what `only` serves, and every
augmentation preset and SBI mode through pretrain and adv_finetune on tiny data."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from _tinydata import build_store, tiny_params
from fakeproof.attacks import AttackError
from fakeproof.attacks._base import check_inputs
from fakeproof.augment import PRESETS, augment_image, item_rng
from fakeproof.data import DataError, FaceDataset, every_nth_frame, make_loader
from fakeproof.landmarks import LANDMARK_COLUMNS, box_in_crop, box_points, face_outline
from fakeproof.sbi import PSEUDO_METHOD, hull_mask, sbi_rng, self_blend
from fakeproof.train import run_adv_finetune, run_pretrain

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


def _face(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, (3, SIZE, SIZE)).astype(np.float32)


def _points(box=(12.0, 10.0, 52.0, 56.0)) -> np.ndarray:
    return box_points(box)


POINT_SETS = {
    "centred": _points(),
    "small": _points((28.0, 28.0, 36.0, 37.0)),
    "at_the_edge": _points((40.0, 30.0, 80.0, 76.0)),
    "off_the_crop": _points((200.0, 200.0, 240.0, 240.0)),
}


@pytest.mark.parametrize("name", sorted(POINT_SETS))
def test_blend_mask_lies_inside_the_face_and_is_never_empty(name) -> None:
    pts = POINT_SETS[name]
    for seed in range(12):
        r = self_blend(_face(seed), pts, sbi_rng(0, 0, seed))
        assert r.mask.shape == (SIZE, SIZE) and r.mask.dtype == np.float32
        assert r.mask.any(), (name, seed)
        assert 0.0 <= r.mask.min() and r.mask.max() <= 1.0
        assert r.hull.any()
        # support of the mask: the hull grown by the blur and the small shift/scale/elastic
        # deformation (at most a fifth of the crop), never anywhere else
        grown = ndimage.binary_dilation(r.hull > 0, iterations=SIZE // 5)
        assert not (r.mask > 0)[~grown].any(), (name, seed)


def test_hull_is_the_face_outline_not_the_five_points() -> None:
    pts = POINT_SETS["centred"]
    hull = hull_mask(pts, SIZE, SIZE, np.random.default_rng(1))
    area_points = 0.5 * abs(np.cross(pts[1] - pts[0], pts[4] - pts[0]))  # a sliver of the face
    assert hull.sum() > 4 * area_points
    poly = face_outline(pts)
    assert poly[:, 1].min() < pts[:2, 1].min() and poly[:, 1].max() > pts[3:, 1].max()


def test_pseudo_fake_differs_from_its_target_only_inside_the_mask() -> None:
    img = _face(3)
    changed_inside = 0
    for seed in range(16):
        r = self_blend(img, POINT_SETS["centred"], sbi_rng(0, 0, seed))
        outside = r.mask == 0
        assert outside.any()
        assert np.array_equal(r.image[:, outside], r.target[:, outside])
        if np.array_equal(r.target, img):
            assert np.array_equal(r.image[:, outside], img[:, outside])
        changed_inside += int(not np.array_equal(r.image[:, ~outside], img[:, ~outside]))
        assert r.image.min() >= 0.0 and r.image.max() <= 1.0
    assert changed_inside >= 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("sbi")
    return build_store(root / "data", {"train": 6, "val": 4, "test": 2}, frames=4, size=32)


def test_same_seed_same_pseudo_fake_other_epoch_another(tiny) -> None:
    a = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="only", seed=7)
    b = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="only", seed=7)
    i = int(np.flatnonzero(a.frames["method"] == PSEUDO_METHOD)[0])
    assert torch.equal(a[i][0], b[i][0])
    b.set_epoch(1)
    assert not torch.equal(a[i][0], b[i][0])
    c = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="only", seed=8)
    assert not torch.equal(a[i][0], c[i][0])


def test_only_serves_no_real_fake(tiny) -> None:
    ds = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="only")
    reals = (pd.read_csv(tiny.splits_csv).query("split == 'train'")["label"] == 0).sum() * 4
    assert len(ds) == 2 * reals
    seen_real = seen_fake = 0
    for x, y, idx in make_loader(ds, 5, shuffle=True):
        methods = ds.frames["method"].to_numpy()[idx.numpy()]
        assert (methods[y.numpy() == 1] == PSEUDO_METHOD).all()
        assert (methods[y.numpy() == 0] == "real").all()
        seen_real, seen_fake = seen_real + int((y == 0).sum()), seen_fake + int((y == 1).sum())
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert seen_real == seen_fake == reals
    # each pseudo-fake is made from a real face of the split: its key is a real's key
    keys = set(ds.frames.loc[ds.frames["label"] == 0, "key"])
    assert set(ds.frames.loc[ds.frames["method"] == PSEUDO_METHOD, "key"]) == keys


def test_mix_adds_pseudo_fakes_at_the_ratio_beside_the_real_fakes(tiny) -> None:
    off = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train")
    mix = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="mix", sbi_ratio=0.5)
    n_real = int((off.labels == 0).sum())
    assert len(mix) == len(off) + round(0.5 * n_real)
    assert (mix.frames["method"] == "red").sum() == (off.frames["method"] == "red").sum()
    # off is the old dataset item for item
    assert all(torch.equal(off[i][0], FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv,
                                                  "train")[i][0]) for i in range(3))


def test_missing_landmark_columns_fall_back_to_the_box_template(tiny, tmp_path) -> None:
    assert not set(LANDMARK_COLUMNS) & set(pd.read_csv(tiny.faces_csv).columns)
    ds = FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="only")
    i = int(np.flatnonzero(ds.frames["method"] == PSEUDO_METHOD)[0])
    img = ds[i][0]
    assert img.shape == (3, 32, 32)
    box = box_in_crop((0, 0, 32, 32), 0.3333, 32)
    assert box[0] > 0 and box[2] < 32  # the box sits inside the crop by the margin


def test_val_and_test_never_get_sbi_or_frame_subsampling(tiny) -> None:
    for split in ("val", "test"):
        with pytest.raises(DataError, match="training options"):
            FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, split, sbi="mix")
        with pytest.raises(DataError, match="training options"):
            FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, split, frames_per_video=2)
    with pytest.raises(DataError, match="unknown mode"):
        FaceDataset(tiny.store, tiny.faces_csv, tiny.splits_csv, "train", sbi="on")


def test_train_count_keeps_evenly_spaced_frames_per_video() -> None:
    df = pd.DataFrame({"video_id": ["a"] * 8 + ["b"] * 3, "frame": list(range(0, 16, 2)) + [0, 5, 9]})
    out = every_nth_frame(df, 3)
    assert out.loc[out.video_id == "a", "frame"].tolist() == [0, 8, 14]
    assert out.loc[out.video_id == "b", "frame"].tolist() == [0, 5, 9]
    assert len(every_nth_frame(df, 1)) == 2


def test_attack_range_error_prints_the_exact_values() -> None:
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, 0, 0] = -1.1920928955078125e-07
    with pytest.raises(AttackError, match=r"min -1\.1920928955078125e-07, max 0\.0"):
        check_inputs(x, torch.zeros(1), 0.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_ends_in_the_unit_range(preset) -> None:
    # a white and a black face: the extremes where blur and resampling round past 0 and 1
    for img in (np.ones((3, 32, 32), np.float32), np.zeros((3, 32, 32), np.float32),
                _face(1)[:, :32, :32]):
        for i in range(30):
            out = augment_image(img, preset, item_rng(0, 0, i))
            assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    return root, build_store(root / "data", {"train": 6, "val": 4, "test": 2}, frames=3, size=16,
                             shift=0.3)


MODES = [("none", "off"), ("light", "off"), ("standard", "off"), ("strong", "off"),
         ("light", "mix"), ("none", "only"), ("standard", "only")]


@pytest.mark.parametrize("augment,sbi", MODES)
def test_every_preset_and_sbi_mode_runs_through_pretrain_and_adv_finetune(stage_data, augment,
                                                                           sbi) -> None:
    root, paths = stage_data
    params = tiny_params(train={"augment": augment, "sbi": sbi, "sbi_ratio": 0.5, "epochs": 1},
                         adv={"epochs": 1, "warmup_epochs": 0, "select_videos": 2})
    params = replace(params, frames=replace(params.frames, train_count=2))
    out = root / f"{augment}_{sbi}"
    pre = run_pretrain(params, paths, out / "clean.pt", out / "pretrain.json", out / "c.csv", out / "tb")
    fine = run_adv_finetune(params, paths, out / "clean.pt", out / "robust.pt", out / "finetune.json",
                            out / "f.csv", out / "tb")
    assert pre["epochs_run"] == 1 and fine["epochs_run"] == 1
    assert pre["train_faces"] == {"off": 12, "mix": 15, "only": 12}[sbi]


def test_the_sbi_recipe_is_valid_params_and_trains_on_reals_only() -> None:
    import yaml

    from fakeproof.config import default_params, params_from_dict

    def merge(base: dict, over: dict) -> dict:
        return {k: merge(base[k], over[k]) if isinstance(over.get(k), dict) else over.get(k, base[k])
                for k in base}

    root = Path(__file__).resolve().parents[1]
    over = yaml.safe_load((root / "recipes" / "sbi_ffpp_effb4.yaml").read_text())
    p = params_from_dict(merge(default_params(), over), "recipe")
    assert (p.train.sbi, p.model.name, p.model.input_size, p.faces.image_size) == (
        "only", "efficientnet_b4", 380, 380)
    assert (p.frames.count, p.frames.train_count, p.train.epochs) == (32, 8, 100)
