"""Training: class weights, the weighted loss, pretraining with val selection, adversarial
fine-tuning, determinism, and that the test split is never read.

Data: a tiny synthetic LMDB store (``tests/_tinydata.py``): 16 px noise crops whose red channel is
raised by 64/255 in fakes, 4 frames per video, train 16 / val 8 / test 4 videos. A ``smallcnn``
learns the cue in one epoch; PGD at 8/255 cannot erase a 64/255 shift, so a robust model exists,
while the clean model, which also leans on the noise, can be fooled.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

import fakeproof.train as train_mod
from _tinydata import build_store, tiny_params
from fakeproof.attacks import pgd
from fakeproof.data import DataError, FaceDataset, make_loader
from fakeproof.metrics import binary_metrics
from fakeproof.models import load_checkpoint
from fakeproof.data import DataPaths
from fakeproof.errors import TrainingError
from fakeproof.predict import logits_of, proba
from fakeproof.fit import class_weights, weighted_bce
from fakeproof.train import run_adv_finetune, run_pretrain

VIDEOS = {"train": 16, "val": 8, "test": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pretrain(params, paths: DataPaths, out: Path) -> dict:
    return run_pretrain(params, paths, out / "clean.pt", out / "pretrain.json",
                        out / "pretrain_curve.csv", out / "tb")


def _finetune(params, paths: DataPaths, clean: Path, out: Path) -> dict:
    return run_adv_finetune(params, paths, clean, out / "robust.pt", out / "finetune.json",
                            out / "finetune_curve.csv", out / "tb_adv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The store holds no test crops (faces.csv and splits.csv still list the test videos);
    pretrain twice (determinism) and fine-tune once, recording which splits were opened."""
    root = tmp_path_factory.mktemp("tiny")
    paths = build_store(root / "data", VIDEOS, skip_crops=("test",))
    params = tiny_params()
    opened: list = []

    class Recording(FaceDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self.split)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "FaceDataset", Recording)
        run1 = _pretrain(params, paths, root / "run1")
        run2 = _pretrain(params, paths, root / "run2")
        fine = _finetune(params, paths, root / "run1" / "clean.pt", root / "run1")
    return dict(root=root, paths=paths, params=params, run1=run1, run2=run2, fine=fine,
                opened=opened)


# --------------------------------------------------------------------------------------------------
# Loss pieces
# --------------------------------------------------------------------------------------------------


def test_class_weights_are_inverse_class_shares() -> None:
    w = class_weights(np.array([0, 1, 1, 1]), "balanced_bce")  # 1 real : 3 fake
    assert w.tolist() == pytest.approx([2.0, 2 / 3])
    labels = np.array([0] * 8 + [1] * 2)
    w = class_weights(labels, "balanced_bce")
    assert w.tolist() == pytest.approx([10 / 16, 10 / 4])
    assert float(w[0]) * 8 == pytest.approx(float(w[1]) * 2)  # each class weighs the same in total
    assert class_weights(labels, "bce").tolist() == [1.0, 1.0]


@pytest.mark.parametrize("labels", [np.zeros(5, int), np.ones(3, int)])
def test_class_weights_one_class_raises(labels) -> None:
    with pytest.raises(TrainingError, match="one class"):
        class_weights(labels, "balanced_bce")


def test_weighted_bce_is_the_weighted_log_loss() -> None:
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    weights = torch.tensor([0.7, 1.8])  # [real, fake]
    got = float(weighted_bce(logits.reshape(-1, 1), labels, weights))
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    y = labels.numpy().astype(int)
    sw = np.where(y == 1, 1.8, 0.7)
    hand = -np.sum(sw * (y * np.log(p) + (1 - y) * np.log(1 - p))) / sw.sum()
    assert got == pytest.approx(hand, rel=1e-6)
    assert got == pytest.approx(log_loss(y, p, sample_weight=sw), rel=1e-6)
    # Equal weights: the plain mean BCE.
    plain = float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))
    assert float(weighted_bce(logits, labels, torch.ones(2))) == pytest.approx(plain, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------------


def test_pretrain_learns_the_cue_and_writes_its_outputs(trained) -> None:
    out, params = trained["root"] / "run1", trained["params"]
    metrics = json.loads((out / "pretrain.json").read_text())
    assert set(metrics) == set(trained["run1"])
    assert all(metrics[k] == pytest.approx(v, abs=1e-6) for k, v in trained["run1"].items())
    assert metrics["val_auc"] >= 0.9
    assert metrics["train_faces"] == 16 * 4 and metrics["val_faces"] == 8 * 4
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= params.train.epochs

    curve = pd.read_csv(out / "pretrain_curve.csv")
    assert curve["epoch"].tolist() == list(range(1, metrics["epochs_run"] + 1))
    assert {"train_loss", "val_auc", "val_bacc", "val_acc", "lr"} <= set(curve.columns)
    assert curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    best = curve.set_index("epoch").loc[metrics["best_epoch"]]
    assert best["val_auc"] == pytest.approx(metrics["val_auc"], abs=1e-5)

    events = sorted((out / "tb").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("pretrain/val_auc")]
    assert steps == curve["epoch"].tolist()

    model, meta = load_checkpoint(out / "clean.pt")
    assert meta["stage"] == "pretrain" and meta["image_size"] == 16
    assert meta["model"]["name"] == "smallcnn" and meta["best"]["epoch"] == metrics["best_epoch"]


def test_pretrain_is_deterministic(trained) -> None:
    a, b = trained["root"] / "run1", trained["root"] / "run2"
    for name in ("clean.pt", "pretrain.json", "pretrain_curve.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_training_never_reads_the_test_split(trained) -> None:
    paths = trained["paths"]
    # The store really lacks the test crops: opening the test split fails ...
    with pytest.raises(DataError, match="not in the store"):
        FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    # ... yet both stages ran, and opened train and val only.
    assert trained["run1"]["val_auc"] >= 0.9 and trained["fine"]["epochs_run"] >= 1
    assert set(trained["opened"]) == {"train", "val"}
    assert None not in trained["opened"]


def test_model_selection_keeps_the_best_val_epoch(tmp_path) -> None:
    """Val labels are the reverse of the train cue (weak shift): the more the model learns, the
    worse its val AUC. With patience 1 training stops after epoch 2 and keeps epoch 1."""
    paths = build_store(tmp_path / "data", {"train": 16, "val": 8, "test": 2},
                        shifts={"val": 0.1}, labels={"val": 1})
    params = tiny_params(train=dict(epochs=5, patience=1, lr=1e-4))
    metrics = _pretrain(params, paths, tmp_path)
    curve = pd.read_csv(tmp_path / "pretrain_curve.csv")
    assert len(curve) == 2 and metrics["epochs_run"] == 2  # early stop, not 5 epochs
    assert curve["val_auc"].iloc[1] < curve["val_auc"].iloc[0] - 0.05  # the construction works
    assert metrics["best_epoch"] == 1

    model, meta = load_checkpoint(tmp_path / "clean.pt")
    val = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "val")
    logits, labels = logits_of(model, make_loader(val, 16))
    m = binary_metrics(labels, proba(logits), scores=logits)
    assert m["auc"] == pytest.approx(metrics["val_auc"], abs=1e-6)
    assert m["bacc"] == pytest.approx(metrics["val_bacc"], abs=1e-6)
    assert m["auc"] == pytest.approx(curve["val_auc"].iloc[0], abs=1e-5)
    assert abs(m["auc"] - curve["val_auc"].iloc[1]) > 0.05  # not the last epoch's weights
    assert meta["best"]["epoch"] == 1


# --------------------------------------------------------------------------------------------------
# Adversarial fine-tuning
# --------------------------------------------------------------------------------------------------


def _pgd_accuracy(model, ds: FaceDataset, eps: float) -> float:
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.labels)
    adv = pgd(model, x, y, eps=eps, steps=10, random_start=True, seed=0)
    assert (adv - x).abs().max() <= eps + 1e-6
    with torch.no_grad():
        pred = (model(adv).reshape(-1) > 0).long()
    return float((pred == y).float().mean())


def test_adv_finetune_writes_a_robust_model(trained) -> None:
    out, paths, params = trained["root"] / "run1", trained["paths"], trained["params"]
    metrics = json.loads((out / "finetune.json").read_text())
    assert metrics["eps"] == pytest.approx(8 / 255, abs=1e-6)
    assert metrics["epochs_run"] == len(pd.read_csv(out / "finetune_curve.csv"))
    assert 0.0 <= metrics["val_pgd_bacc"] <= 1.0

    clean, _ = load_checkpoint(out / "clean.pt")
    robust, meta = load_checkpoint(out / "robust.pt")
    assert meta["stage"] == "adv_finetune" and meta["image_size"] == 16
    assert meta["adv"]["eps"] == pytest.approx(params.adv.eps)
    changed = [k for k, v in clean.state_dict().items()
               if isinstance(v, torch.Tensor) and v.is_floating_point()
              and not torch.equal(v, robust.state_dict()[k])]
    assert any(k.endswith("weight") for k in changed)

    val = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "val")
    acc_clean = _pgd_accuracy(clean, val, params.adv.eps)
    acc_robust = _pgd_accuracy(robust, val, params.adv.eps)
    assert acc_robust >= acc_clean
    assert acc_robust >= 0.9


def test_adv_finetune_starts_from_the_clean_checkpoint(trained, tmp_path) -> None:
    """With lr 0 the learnable weights stay those of clean.pt (only BatchNorm statistics move):
    fine-tuning starts from the checkpoint, not from a fresh model."""
    paths, params = trained["paths"], trained["params"]
    clean_pt = trained["root"] / "run1" / "clean.pt"
    p0 = replace(params, adv=replace(params.adv, lr=0.0, epochs=1))
    _finetune(p0, paths, clean_pt, tmp_path)
    clean, _ = load_checkpoint(clean_pt)
    robust, _ = load_checkpoint(tmp_path / "robust.pt")
    params_clean = dict(clean.named_parameters())
    for name, p in robust.named_parameters():
        assert torch.equal(p, params_clean[name]), name


def test_a_nan_loss_stops_training_with_one_line(tmp_path, monkeypatch) -> None:
    import fakeproof.train as train

    paths = build_store(tmp_path / "data", {"train": 4, "val": 2, "test": 2})
    monkeypatch.setattr(train, "weighted_bce", lambda *a, **k: torch.tensor(float("nan"),
                                                                            requires_grad=True))
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 1, step 1; lower the"):
        _pretrain(tiny_params(), paths, tmp_path)


def test_checkpoints_carry_a_val_threshold_and_the_recipe(trained) -> None:
    _, meta = load_checkpoint(trained["root"] / "run1" / "clean.pt")
    recipe = meta["recipe"]
    assert 0.0 < recipe["threshold"] < 1.0
    assert recipe["model"] == "smallcnn"
    assert recipe["input_size"] == trained["params"].faces.image_size


def test_adv_finetune_reports_a_val_eps_sweep_with_a_stronger_select_attack(trained) -> None:
    saved = json.loads((trained["root"] / "run1" / "finetune.json").read_text())
    assert set(saved["val_sweep"]) == {"1/255", "2/255", "4/255", "8/255"}
    assert saved["selection"]["attack"].startswith("PGD-10")
    assert saved["selection"]["rule"].startswith("max worst-class robust recall")
    accs = [saved["val_sweep"][k]["pgd_acc"] for k in ("2/255", "4/255", "8/255")]
    assert accs[0] >= accs[2]  # a larger eps never leaves more val faces correct here


@pytest.mark.parametrize("method", ["fgsm_rs", "trades", "mart"])
def test_every_adversarial_objective_trains_through_the_stage(trained, tmp_path, method) -> None:
    params = tiny_params(adv={"method": method, "epochs": 1, "warmup_epochs": 1})
    out = _finetune(params, trained["paths"], trained["root"] / "run1" / "clean.pt", tmp_path)
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert saved["method"] == method and out["epochs_run"] == 1
    model, meta = load_checkpoint(tmp_path / "robust.pt")
    assert meta["adv"]["method"] == method


def test_fgsm_rs_guard_fires_on_a_collapse_of_val_pgd_balanced_accuracy() -> None:
    from fakeproof.train import _fgsm_rs_guard

    assert _fgsm_rs_guard([{"val_pgd_bacc": 0.6}, {"val_pgd_bacc": 0.1}]) is True
    assert _fgsm_rs_guard([{"val_pgd_bacc": 0.6}, {"val_pgd_bacc": 0.55}]) is False
    assert _fgsm_rs_guard([{"val_pgd_bacc": 0.6}]) is False
