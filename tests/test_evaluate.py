"""The evaluate stage's logic: eps labels, the stratified attacked sample, per-face robust
accuracy, sanity flags, intervals, the whole sweep.

The models here are hand-built so the expected outcome is known: a linear "redness" detector
(differentiable: gradient attacks flip every sample whose margin is below eps) and the same
detector behind an 8-bit rounding layer (zero gradient everywhere: gradient attacks do nothing,
the gradient-free Square attack still flips samples, so gradient masking must be flagged).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fakeproof.boundary import Boundary, Deployed
from fakeproof.config import EvalParams
from fakeproof.data import FaceDataset
from fakeproof.evaluate import evaluate_model, model_pairs
from fakeproof.sampling import choose_sample
from fakeproof.sanity import sanity_flags
from fakeproof.under_attack import eps_label, worst_logits
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


def deployed(k: float = 60.0, quantize: bool = False, boundary: Boundary = Boundary()) -> Deployed:
    """The Redness detector behind a decision boundary (default: the raw model at 0.5)."""
    return Deployed(Redness(k, quantize).eval(), boundary).eval()


def params(**kw) -> EvalParams:
    base = dict(eps=[0.0, 4 / 255, 8 / 255, 16 / 255], attacks=["fgsm", "pgd", "square"],
                pgd_steps=5, pgd_alpha=None, square_queries=60, batch_size=16, bootstrap=50,
                gallery=0, headline_eps=8 / 255, attack_videos=0)  # 0: every video
    base.update(kw)
    return EvalParams(**base)


def test_eps_label() -> None:
    assert eps_label(0.0) == "0"
    assert eps_label(8 / 255) == "8/255"
    assert eps_label(0.5 / 255) == "1/510"
    assert eps_label(0.123456789) == "0.1235"


def _table(counts: dict[tuple[int, str], int], frames: int = 2) -> pd.DataFrame:
    rows = []
    for (label, method), n in counts.items():
        for v in range(n):
            for f in range(frames):
                vid = f"{method}{v:02d}"
                rows.append({"video_id": vid, "label": label, "method": method,
                             "key": f"{vid}/{f}"})
    return pd.DataFrame(rows)


def test_sample_is_stratified_by_class_and_method_and_takes_whole_videos() -> None:
    # 12 real videos, 3 methods x 8 fakes: a 1:2 real:fake table, as FF++ is 1:4
    frames = _table({(0, "real"): 12, (1, "Deepfakes"): 8, (1, "FaceSwap"): 8,
                     (1, "NeuralTextures"): 8})
    s = choose_sample(frames, 9, seed=0)
    assert s.strata == {"0:real": 3, "1:Deepfakes": 2, "1:FaceSwap": 2, "1:NeuralTextures": 2}
    assert (s.frames.groupby("video_id").size() == 2).all()  # whole videos only
    assert np.array_equal(s.index, choose_sample(frames, 9, seed=0).index)  # seeded
    # small sizes still hold both classes and every method
    s4 = choose_sample(frames, 4, seed=1)
    assert sorted(s4.strata) == ["0:real", "1:Deepfakes", "1:FaceSwap", "1:NeuralTextures"]
    assert choose_sample(frames, None, seed=0).frames["video_id"].nunique() == 36


def test_robust_accuracy_is_per_face_not_per_attack(dataset, monkeypatch) -> None:
    """Two planted attacks each fool a different half of the faces: each alone leaves accuracy
    0.5, together no face survives, and robust accuracy must say 0."""
    import fakeproof.attacks as attacks
    from fakeproof.attacks import AttackSpec

    n = len(dataset)

    def planted(half: int):
        def fn(model, x, y, *, eps, **_):
            if eps == 0:
                return x
            keys = torch.arange(len(x))
            out = x.clone()
            # a fake becomes "real" (red to 0.5 - 0.1) on one parity of its row, a real becomes
            # "fake" likewise: what flips depends on the row, so the halves do not overlap
            flip = (keys % 2) == half
            out[flip, 0] = torch.where(y[flip].bool()[:, None, None], 0.4, 0.6)
            return out
        return fn

    monkeypatch.setitem(attacks.ATTACKS, "half_a", AttackSpec("half_a", planted(0), False, "planted"))
    monkeypatch.setitem(attacks.ATTACKS, "half_b", AttackSpec("half_b", planted(1), False, "planted"))
    res = evaluate_model("linear", deployed(), dataset,
                         params(attacks=["half_a", "half_b"], batch_size=len(dataset)))
    t = res.table.set_index(["attack", "eps"])
    assert t.loc[("half_a", 8 / 255), "acc"] == pytest.approx(0.5, abs=1 / n)
    assert t.loc[("half_b", 8 / 255), "acc"] == pytest.approx(0.5, abs=1 / n)
    assert t.loc[("robust", 8 / 255), "acc"] == 0.0
    assert t.loc[("robust", 0.0), "acc"] == 1.0


def test_worst_logits_takes_the_most_adverse_per_face() -> None:
    labels = np.array([1, 1, 0, 0])
    a, b = np.array([3.0, -1.0, -2.0, 4.0]), np.array([-2.0, 2.0, 1.0, -3.0])
    assert worst_logits(labels, [a, b]).tolist() == [-2.0, -1.0, 1.0, 4.0]


def test_sweep_on_a_normal_model_is_sane_and_exact(dataset) -> None:
    res = evaluate_model("linear", deployed(), dataset, params())
    c = res.test_clean["frame"]
    assert c["acc"] == 1.0 and c["auc"] == 1.0
    # every bootstrap draw has AUC 1: not a zero-width "certainty" but an exact interval at the
    # video count (6 real / 6 fake videos)
    assert c["ci_method"]["auc"].startswith("clopper-pearson") and c["auc_hi"] == 1.0
    assert 0.4 < c["auc_lo"] < 0.9
    table = res.table.set_index(["attack", "eps"])
    # The linear model flips exactly the samples whose margin is below eps (FGSM is optimal).
    red = np.array([dataset[i][0][0].mean().item() for i in range(len(dataset))])
    margins = np.abs(red - 0.5) * 255
    for eps in (4, 8, 16):
        expected = float(np.mean(margins > eps))
        assert table.loc[("fgsm", eps / 255), "acc"] == pytest.approx(expected, abs=1 / 36)
        assert table.loc[("pgd", eps / 255), "acc"] <= table.loc[("fgsm", eps / 255), "acc"] + 1e-9
        assert table.loc[("robust", eps / 255), "acc"] <= table.loc[("pgd", eps / 255), "acc"]
    flags = res.sanity
    for name in ("eps0_differs_from_clean", "rises_with_eps", "pgd_weaker_than_fgsm",
                 "gradient_masking", "above_chance_at_large_eps", "collapsed", "one_class",
                 "unbounded_attack_fails", "selection_failed"):
        assert flags[name]["fired"] is False, name
    assert res.unbounded["robust_acc"] == 0.0  # PGD at 64/255 beats every 1-20/255 margin
    assert flags["ok"] is True
    asr = res.attacks["fgsm"]["16/255"]["attack_success_rate"]
    assert asr == pytest.approx(1 - table.loc[("fgsm", 16 / 255), "acc"], abs=1e-9)
    assert res.spread["logit_std"] > 1.0


def test_gradient_masking_is_flagged(dataset, caplog) -> None:
    masked = deployed(quantize=True)
    with caplog.at_level("WARNING"):
        res = evaluate_model("masked", masked, dataset, params())
    table = res.table.set_index(["attack", "eps"])
    # Gradient attacks are blind (zero gradient); Square is not.
    assert table.loc[("fgsm", 16 / 255), "acc"] == 1.0
    assert table.loc[("square", 16 / 255), "acc"] < 0.8
    assert res.sanity["gradient_masking"]["fired"] is True
    assert "16/255" in res.sanity["gradient_masking"]["evidence"]
    assert res.sanity["ok"] is False
    assert "gradient_masking" in caplog.text
    # the unbounded check sees it too: blind gradients leave faces correct at 64/255
    assert res.sanity["unbounded_attack_fails"]["fired"] is True
    assert res.sanity["unbounded_attack_fails"]["evidence"]["robust_acc"] > 0.9


def test_a_collapsed_model_is_flagged(dataset) -> None:
    flat = deployed(k=0.05)  # every P(fake) within 0.01 of 0.5
    res = evaluate_model("flat", flat, dataset, params(attacks=["fgsm"]), reference_spread=5.0)
    assert res.sanity["collapsed"]["fired"] is True
    assert res.sanity["collapsed"]["evidence"]["near_threshold_share"] == 1.0


def _t(rows):
    return pd.DataFrame(rows, columns=["attack", "eps", "acc", "bacc"])


SPREAD = {"logit_std": 3.0, "near_threshold_share": 0.0}


def test_sanity_flags_on_constructed_tables() -> None:
    good = _t([("fgsm", 0, .9, .9), ("fgsm", .01, .5, .5), ("pgd", 0, .9, .9),
               ("pgd", .01, .3, .3)])
    assert sanity_flags(good, 0.9, 100, SPREAD, 3.0, ["fgsm", "pgd"])["ok"]
    rising = _t([("pgd", 0, .9, .9), ("pgd", .01, .3, .3), ("pgd", .02, .6, .6)])
    f = sanity_flags(rising, 0.9, 100, SPREAD, None, ["pgd"])
    assert f["rises_with_eps"]["fired"] and list(f["rises_with_eps"]["evidence"]) == ["pgd"]
    weak = _t([("fgsm", 0, .9, .9), ("fgsm", .01, .2, .2), ("pgd", 0, .9, .9), ("pgd", .01, .5, .5)])
    assert sanity_flags(weak, 0.9, 100, SPREAD, None, ["fgsm", "pgd"])["pgd_weaker_than_fgsm"]["fired"]
    drift = _t([("fgsm", 0, .85, .85), ("fgsm", .01, .5, .5)])
    assert sanity_flags(drift, 0.9, 100, SPREAD, None, ["fgsm"])["eps0_differs_from_clean"]["fired"]


def test_apgd_weaker_than_pgd_fires_on_a_planted_case() -> None:
    planted = _t([("pgd", 0, .9, .9), ("pgd", 4 / 255, .30, .3), ("apgd", 0, .9, .9),
                  ("apgd", 4 / 255, .45, .45)])
    f = sanity_flags(planted, 0.9, 100, SPREAD, None, ["pgd", "apgd"])
    assert f["apgd_weaker_than_pgd"]["fired"] is True
    assert f["apgd_weaker_than_pgd"]["evidence"] == {"4/255": {"apgd": 0.45, "pgd": 0.3}}
    assert f["ok"] is False


def test_above_chance_at_a_large_eps_is_flagged() -> None:
    t = _t([("pgd", 0, .9, .9), ("pgd", 16 / 255, .7, .7), ("robust", 0, .9, .9),
            ("robust", 16 / 255, .7, .7)])
    f = sanity_flags(t, 0.9, 100, SPREAD, None, ["pgd"])
    assert f["above_chance_at_large_eps"]["fired"] is True
    # a warning since the unbounded check took over the failing role: ok stays true
    assert f["above_chance_at_large_eps"]["severity"] == "warn" and f["ok"] is True
    g = sanity_flags(t, 0.9, 100, SPREAD, None, ["pgd"], unbounded_acc=0.3)
    assert g["unbounded_attack_fails"]["fired"] is True and g["ok"] is False


def test_attacks_aim_at_the_deployed_boundary_and_numbers_are_taken_there(dataset) -> None:
    """A threshold of 0.9 on P(fake) moves the decision to logit 2.197, i.e. red = 0.5 + 9.3/255
    for k = 60: fakes closer than that are called real clean, and FGSM (optimal for a linear
    model) flips exactly the faces within eps of *that* boundary, never of logit 0."""
    b = Boundary(1.0, 0.0, 0.9)
    res = evaluate_model("shifted", deployed(boundary=b), dataset, params())
    red = np.array([dataset[i][0][0].mean().item() for i in range(len(dataset))])
    y = dataset.labels
    dist = (red - 0.5) * 255 - np.log(9) / 60 * 255  # signed distance to the boundary in 1/255
    right = (dist > 0) == (y == 1)
    tpr, tnr = np.mean(right[y == 1]), np.mean(right[y == 0])
    assert res.test_clean["frame"]["bacc"] == pytest.approx((tpr + tnr) / 2, abs=1e-9)
    table = res.table.set_index(["attack", "eps"])
    for eps in (4, 8):
        expected = np.mean(right & (np.abs(dist) > eps))
        assert table.loc[("fgsm", eps / 255), "acc"] == pytest.approx(expected, abs=1 / 36)
    # the video level compares the mean calibrated P(fake) with the same threshold
    assert res.test_clean["video"]["bacc"] <= 1.0
    assert res.boundary == b


def test_one_class_is_flagged_and_fails_sanity(dataset) -> None:
    everything_real = deployed(boundary=Boundary(1.0, 0.0, 1.0 - 1e-12))
    res = evaluate_model("one", everything_real, dataset, params(attacks=["fgsm"]))
    f = res.sanity["one_class"]
    assert f["fired"] is True and f["evidence"]["clean_tpr"] == 0.0 and f["evidence"]["clean_tnr"] == 1.0
    assert res.sanity["ok"] is False
    assert res.test_clean["frame"]["bacc"] == 0.5


def test_selection_failure_is_carried_to_sanity(dataset) -> None:
    res = evaluate_model("r", deployed(), dataset, params(attacks=["fgsm"], eps=[0.0, 8 / 255]),
                         selection={"qualified": False, "auc_floor": 0.9})
    assert res.sanity["selection_failed"]["fired"] is True and res.sanity["ok"] is False


def test_model_pairs_are_paired_differences_on_the_same_faces(dataset) -> None:
    """A sharper detector against a blunter one: clean AUC equal (same ranking), robust balanced
    accuracy paired on the same videos; a model against itself differs by exactly 0."""
    ep = params(attacks=["fgsm"], eps=[0.0, 8 / 255], bootstrap=200)
    a = evaluate_model("a", deployed(), dataset, ep)
    b = evaluate_model("b", deployed(boundary=Boundary(1.0, 0.0, 0.9)), dataset, ep)
    frames = dataset.frames.reset_index(drop=True)
    pairs = model_pairs({"a": a, "b": b, "a2": a}, frames, ep)
    assert set(pairs) == {"b-a", "a2-a", "a2-b"}
    same = pairs["a2-a"]["robust@8/255"]
    assert same["bacc_diff"] == 0.0 and same["bacc_diff_lo"] == 0.0 == same["bacc_diff_hi"]
    ab = pairs["b-a"]
    assert ab["clean"]["auc_diff"] == 0.0  # a threshold never changes the ranking
    r = ab["robust@8/255"]
    assert r["bacc_diff"] == pytest.approx(r["bacc_b"] - r["bacc_a"])
    assert r["bacc_diff_lo"] <= r["bacc_diff"] <= r["bacc_diff_hi"]
    assert r["videos"] == 12 and r["significant"] in (True, False)
    drop = a.clean_to_attacked
    assert drop["bacc_a"] == 1.0 and drop["bacc_diff"] < 0  # attacked minus clean

def test_run_evaluate_writes_headline_detail_plots_and_cross(dataset, tmp_path) -> None:
    """The stage function end to end on the tiny store; eval.cross on the same data must
    reproduce the main numbers exactly (same model, same faces, same seeds)."""
    import dataclasses

    from _params import default_params_raw
    from fakeproof.config import params_from_dict
    from fakeproof.data import DataPaths
    from fakeproof.evaluate import run_evaluate
    from fakeproof.models import create_model, save_checkpoint

    base = dataset.root_dir
    paths = DataPaths(base / "faces.lmdb", base / "faces.csv", base / "splits.csv")
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, create_model("smallcnn").eval(),  # a boundary as fitted on val
                    {"image_size": SIZE,
                     "recipe": {"platt_a": 0.5, "platt_b": 0.3, "threshold": 0.6}})
    p = params_from_dict(default_params_raw(), "test params")
    p = dataclasses.replace(p, eval=dataclasses.replace(
        p.eval, eps=[0.0, 4 / 255], attacks=["fgsm", "pgd"], pgd_steps=2, attack_videos=6,
        gallery=2, headline_eps=4 / 255, batch_size=8, bootstrap=50, min_videos=3))
    head = run_evaluate(p, paths, {"m": ckpt}, tmp_path / "headline.json", tmp_path / "eval.json",
                        tmp_path / "plots", cross=paths, out_corruptions=tmp_path / "corr.json")
    saved = json.loads((tmp_path / "headline.json").read_text())
    detail = json.loads((tmp_path / "eval.json").read_text())
    corr = json.loads((tmp_path / "corr.json").read_text())
    assert saved["eps"] == "4/255" and detail["test_faces"] == 36
    assert saved["cross"]["m"]["auc"] == saved["m"]["auc"]
    assert saved["cross"]["m"]["adv_bacc"] == saved["m"]["adv_bacc"]
    m = saved["m"]
    d = detail["models"]["m"]
    # five short keys per model; the intervals are the detail's, as one "lo-hi" string each
    assert set(m) == {"auc", "auc_ci", "bacc", "adv_bacc", "adv_ci"}
    clean, rob = d["test_clean"]["frame"], d["robust"]["4/255"]["frame"]
    assert m["auc_ci"] == f"{clean['auc_lo']:.3f}-{clean['auc_hi']:.3f}"
    assert m["adv_ci"] == f"{rob['bacc_lo']:.3f}-{rob['bacc_hi']:.3f}"
    assert m["adv_bacc"] == pytest.approx(rob["bacc"], abs=1e-4)
    lo, hi = (float(v) for v in m["auc_ci"].split("-"))
    assert lo <= m["auc"] <= hi
    assert len(json.dumps(saved)) < 400  # the headline file stays small
    assert d["sample"]["videos"] == 6 and d["sample"]["strata"] == {"0:real": 3, "1:m": 3}
    for k in ("auc", "ap", "eer", "acc", "bacc", "precision", "recall", "f1"):
        assert k in d["test_clean"]["frame"] and k in d["sample_clean"]["video"]
    wide = pd.read_csv(tmp_path / "plots" / "robust_acc.csv")
    assert list(wide.columns) == ["eps", "eps_255", "m_fgsm", "m_pgd", "m_robust"]
    assert (tmp_path / "plots" / "roc" / "m_clean.csv").is_file()
    assert (tmp_path / "plots" / "gallery.png").read_bytes()[:4] == b"\x89PNG"
    assert head["sanity_ok"] == saved["sanity_ok"]
    # common corruptions: {model: {corruption: {severity: {...}}}}, every default one, 1-5
    assert list(corr) == ["m"] and sorted(corr["m"]) == sorted(p.eval.corruptions)
    for c, by_sev in corr["m"].items():
        assert sorted(by_sev) == ["1", "2", "3", "4", "5"]
        for cell in by_sev.values():
            assert cell["auc_lo"] <= cell["auc"] <= cell["auc_hi"], c
            assert cell["bacc_lo"] <= cell["bacc"] <= cell["bacc_hi"], c
            assert cell["videos"] == 12 and cell["skipped_videos"] == 0
        table = pd.read_csv(tmp_path / "plots" / "corruptions" / f"{c}.csv")
        assert table["severity"].tolist() == [0, 1, 2, 3, 4, 5]
        assert table["m_auc"][0] == pytest.approx(m["auc"], abs=1e-4)
        assert table["m_auc"][3] == pytest.approx(by_sev["3"]["auc"], abs=1e-4)
    mean = d["corruptions"]["mean_corruption_auc"]  # detail, not headline
    assert mean["auc_lo"] <= mean["auc"] <= mean["auc_hi"]
    assert mean["auc"] == pytest.approx(
        np.mean([v["auc"] for by_sev in corr["m"].values() for v in by_sev.values()]), abs=1e-4)
    assert "corruptions" not in detail["cross"]["m"]  # the sweep runs on the main test set
    # calibration with the recipe's Platt scaling, and without it; ECE with its interval
    assert (d["platt_a"], d["platt_b"]) == (0.5, 0.3) and d["ece"] != d["ece_uncalibrated"]
    assert d["boundary"] == {"platt_a": 0.5, "platt_b": 0.3, "threshold": 0.6}
    ci = d["calibration"]["ece_interval"]
    assert ci["ece_lo"] <= d["ece"] <= ci["ece_hi"] and ci["ece_hi"] > ci["ece_lo"]
    assert d["ece_ci"] == f"{ci['ece_lo']:.3f}-{ci['ece_hi']:.3f}"
    assert d["calibration"]["brier_uncalibrated"] != d["brier"]
    assert 0.0 <= d["ece"] <= 1.0 and 0.0 <= d["brier"] <= 1.0
    rel = pd.read_csv(tmp_path / "plots" / "reliability" / "m.csv")
    assert rel["count"].sum() == 36 and list(rel["ideal"]) == list(rel["mean_prob"])


def test_adding_an_eps_changes_no_other_number(dataset) -> None:
    a = evaluate_model("m", deployed(k=20), dataset, params(eps=[0.0, 8 / 255]))
    b = evaluate_model("m", deployed(k=20), dataset, params(eps=[0.0, 4 / 255, 8 / 255]))
    ta, tb = (r.table.set_index(["attack", "eps"]) for r in (a, b))
    assert ta.loc[("square", 8 / 255), "acc"] == tb.loc[("square", 8 / 255), "acc"]
    assert ta.loc[("pgd", 8 / 255), "auc"] == tb.loc[("pgd", 8 / 255), "auc"]
