"""The evaluate stage's logic: eps labels, the attacked subset, sanity flags, the whole sweep.

The models here are hand-built so the expected outcome is known: a linear "redness" detector
(differentiable: gradient attacks flip every sample whose margin is below eps) and the same
detector behind an 8-bit rounding layer (zero gradient everywhere: gradient attacks do nothing,
the gradient-free Square attack still flips samples, so gradient masking must be flagged).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fakeproof.config import EvalParams
from fakeproof.data import FaceDataset
from fakeproof.evaluate import (choose_subset, eps_label, evaluate_model, sanity_flags)
from fakeproof.store import FaceStoreWriter, face_key

SIZE = 16


class Redness(nn.Module):
    """logit = k * (mean red - 0.5): fakes are redder."""

    def __init__(self, k: float = 60.0, quantize: bool = False) -> None:
        super().__init__()
        self.k = k
        self.quantize = quantize
        self.dummy = nn.Parameter(torch.zeros(1))  # so that the model has parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize:
            x = torch.round(x * 255) / 255  # zero gradient almost everywhere
        return (self.k * (x[:, 0].mean(dim=(1, 2)) - 0.5) + 0 * self.dummy).reshape(-1, 1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> FaceDataset:
    """12 test videos x 3 frames; margins between 1/255 and 20/255 from the decision boundary."""
    root = tmp_path_factory.mktemp("evalds")
    rng = np.random.default_rng(0)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding="png") as w:
        for v in range(12):
            label = v % 2
            vid = f"v{v:02d}"
            for f in range(3):
                margin = (1 + ((v * 3 + f) * 7) % 20) / 255
                red = 0.5 + margin if label else 0.5 - margin
                img = np.empty((SIZE, SIZE, 3), np.float64)
                img[..., 0] = red
                img[..., 1:] = rng.uniform(0.3, 0.7, size=(SIZE, SIZE, 2))
                key = face_key(vid, f, 0)
                w.put(key, np.round(img * 255).astype(np.uint8))
                faces.append({"key": key, "video_id": vid, "frame": f, "face": 0, "x1": 0, "y1": 0,
                              "x2": SIZE, "y2": SIZE, "prob": 1.0, "box_source": "self"})
            splits.append({"video_id": vid, "label": label, "split": "test", "group": vid,
                           "method": "m" if label else "real", "source": "t", "n_faces": 3})
    pd.DataFrame(faces).to_csv(root / "faces.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "splits.csv", index=False)
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "test")
    ds.root_dir = root  # type: ignore[attr-defined]  # for the stage-level test below
    return ds


def params(**kw) -> EvalParams:
    base = dict(eps=[0.0, 4 / 255, 8 / 255, 16 / 255], attacks=["fgsm", "pgd", "square"],
                pgd_steps=5, pgd_alpha=None, square_queries=60, max_samples=36, batch_size=16,
                gallery=0, roc_eps=8 / 255)
    base.update(kw)
    return EvalParams(**base)


def test_eps_label() -> None:
    assert eps_label(0.0) == "0"
    assert eps_label(8 / 255) == "8/255"
    assert eps_label(0.5 / 255) == "1/510"
    assert eps_label(0.123456789) == "0.1235"


def test_subset_takes_whole_videos_and_respects_the_cap(dataset) -> None:
    sub = choose_subset(dataset, 10, seed=0)
    assert len(sub.index) <= 10
    counts = sub.frames.groupby("video_id").size()
    assert (counts == 3).all()  # whole videos only
    again = choose_subset(dataset, 10, seed=0)
    assert np.array_equal(sub.index, again.index)


def test_sweep_on_a_normal_model_is_sane_and_exact(dataset) -> None:
    res = evaluate_model("linear", Redness().eval(), dataset, params())
    assert res["clean"]["frame"]["acc"] == 1.0 and res["clean"]["frame"]["auc"] == 1.0
    table = res["table"].set_index(["attack", "eps"])
    # The linear model flips exactly the samples whose margin is below eps (FGSM is optimal).
    red = np.array([dataset[i][0][0].mean().item() for i in range(len(dataset))])
    margins = np.abs(red - 0.5) * 255
    for eps in (4, 8, 16):
        expected = float(np.mean(margins > eps))
        assert table.loc[("fgsm", eps / 255), "acc"] == pytest.approx(expected, abs=1 / 36)
        assert table.loc[("pgd", eps / 255), "acc"] <= table.loc[("fgsm", eps / 255), "acc"] + 1e-9
    flags = res["sanity"]
    assert flags["eps0_equals_clean"] and flags["monotone_in_eps"] and flags["pgd_at_least_fgsm"]
    assert flags["gradient_masking_suspected"] is False and flags["ok"] is True
    asr = res["attacks"]["fgsm"]["16/255"]["attack_success_rate"]
    assert asr == pytest.approx(1 - table.loc[("fgsm", 16 / 255), "acc"], abs=1e-9)


def test_gradient_masking_is_flagged(dataset, caplog) -> None:
    masked = Redness(quantize=True).eval()
    with caplog.at_level("WARNING"):
        res = evaluate_model("masked", masked, dataset, params())
    table = res["table"].set_index(["attack", "eps"])
    # Gradient attacks are blind (zero gradient); Square is not.
    assert table.loc[("fgsm", 16 / 255), "acc"] == 1.0
    assert table.loc[("square", 16 / 255), "acc"] < 0.8
    assert res["sanity"]["gradient_masking_suspected"] is True
    assert "16/255" in res["sanity"]["square_beats_gradient_at_eps"]
    assert res["sanity"]["ok"] is False
    assert "gradient_masking_suspected" in caplog.text


def test_sanity_flags_on_constructed_tables() -> None:
    def t(rows):
        return pd.DataFrame(rows, columns=["attack", "eps", "acc"])

    good = t([("fgsm", 0, .9), ("fgsm", .01, .5), ("pgd", 0, .9), ("pgd", .01, .3)])
    assert sanity_flags(good, 0.9, 100)["ok"]
    rising = t([("pgd", 0, .9), ("pgd", .01, .3), ("pgd", .02, .6)])
    f = sanity_flags(rising, 0.9, 100)
    assert not f["monotone_in_eps"] and f["non_monotone_attacks"] == ["pgd"]
    weak = t([("fgsm", 0, .9), ("fgsm", .01, .2), ("pgd", 0, .9), ("pgd", .01, .5)])
    assert sanity_flags(weak, 0.9, 100)["pgd_weaker_at_eps"] == ["1/100"]
    drift = t([("fgsm", 0, .85), ("fgsm", .01, .5)])
    assert sanity_flags(drift, 0.9, 100)["eps0_equals_clean"] is False


def test_metrics_json_is_clean(tmp_path) -> None:
    from fakeproof.evaluate import _clean_json

    out = _clean_json({"a": float("nan"), "b": np.float32(0.1234567), "c": [np.int64(3)],
                       "d": np.bool_(True)})
    assert json.loads(json.dumps(out)) == {"a": None, "b": 0.123457, "c": [3], "d": True}
    assert Path(tmp_path).exists()


def test_run_evaluate_writes_report_plots_and_cross(dataset, tmp_path) -> None:
    """The stage function end to end on the tiny store; eval.cross on the same data must
    reproduce the main numbers exactly (same model, same faces, same seeds)."""
    import dataclasses

    import yaml

    from fakeproof.config import params_from_dict
    from fakeproof.evaluate import run_evaluate
    from fakeproof.models import create_model, save_checkpoint
    from fakeproof.train import DataPaths

    base = dataset.root_dir
    paths = DataPaths(base / "faces.lmdb", base / "faces.csv", base / "splits.csv")
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, create_model("smallcnn").eval(), {"image_size": SIZE})
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    p = params_from_dict(raw)
    p = dataclasses.replace(p, eval=dataclasses.replace(
        p.eval, eps=[0.0, 4 / 255], attacks=["fgsm", "pgd"], pgd_steps=2, max_samples=12,
        gallery=2, roc_eps=4 / 255, batch_size=8))
    report = run_evaluate(p, paths, {"m": ckpt}, tmp_path / "eval.json", tmp_path / "plots",
                          cross=paths)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["max_eps"] == "4/255" and saved["test_faces"] == 36
    assert saved["cross"]["m"]["auc"] == saved["m"]["auc"]
    assert saved["cross"]["m"]["pgd_acc"] == saved["m"]["pgd_acc"]
    for k in ("auc", "ap", "eer", "acc", "bacc", "precision", "recall", "f1"):
        assert k in saved["detail"]["m"]["clean"]["frame"] and k in saved["detail"]["m"]["clean"]["video"]
    wide = pd.read_csv(tmp_path / "plots" / "robust_acc.csv")
    assert list(wide.columns) == ["eps", "eps_255", "m_fgsm", "m_pgd"] and len(wide) == 2
    assert (tmp_path / "plots" / "roc" / "m_clean.csv").is_file()
    assert (tmp_path / "plots" / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    assert report["sanity_ok"] == saved["sanity_ok"]
