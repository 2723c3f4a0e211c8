"""The ensemble: one differentiable detector over members of different sizes and normalisations,
weights fitted on val on the simplex, a checkpoint every loader takes, and the DVC stage."""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _params import default_params_raw, merge
from _tinydata import build_store
from fakeproof.cli import main
from fakeproof.config import params_from_dict
from fakeproof.boundary import Boundary
from fakeproof.calibration import log_loss
from fakeproof.ensemble import (Ensemble, EnsembleError, Member, fit_weights, load_member,
                                run_ensemble, select_members)
from fakeproof.under_attack import eps_label
from fakeproof.models.fusion import save_ensemble
from fakeproof.models import load_checkpoint, resize, save_checkpoint
from fakeproof.recipe import build_recipe, read_recipe
from _models import spread_smallcnn

SIZE = 16
PHOTO = Path(__file__).resolve().parents[1] / "fakeproof" / "assets" / "faces" / "obama.jpg"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def detector(seed: int) -> torch.nn.Module:
    return spread_smallcnn(seed, means=True)


def tiny_eval_params(image_size: int = SIZE, **sections: dict):
    """Code-default params with ``faces.image_size`` and ``sections`` merged in, one thread."""
    raw = default_params_raw(faces={"image_size": image_size}, train={"threads": 1})
    return params_from_dict(merge(raw, sections), "test params")


def write_member(path: Path, seed: int, image_size: int = SIZE, threshold: float = 0.5,
                 a: float = 1.0, b: float = 0.0, params=None) -> Path:
    params = params or tiny_eval_params(image_size)
    recipe = build_recipe(params, Boundary(a, b, threshold))
    save_checkpoint(path, detector(seed), {"stage": "test", "recipe": recipe})
    return path


def images(n: int = 6, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------------------------
def test_an_ensemble_of_one_member_equals_that_member() -> None:
    m = detector(0)
    ens = Ensemble([Member(m, SIZE)], ["only"], [1.0]).eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(ens(x), m(x))
    assert ens.weights == {"only": 1.0}


def test_an_ensemble_of_two_identical_members_equals_either() -> None:
    m = detector(1)
    ens = Ensemble([Member(m, SIZE), Member(copy.deepcopy(m), SIZE)], ["a", "b"], [0.5, 0.5]).eval()
    x = images()
    with torch.no_grad():
        want = m(x)
        assert torch.equal(ens(x), want)  # 0.5 z + 0.5 z is z exactly
        lopsided = Ensemble([Member(m, SIZE), Member(copy.deepcopy(m), SIZE)], ["a", "b"],
                            [0.3, 0.7]).eval()
        assert torch.allclose(lopsided(x), want, atol=1e-6)


def test_a_member_of_weight_zero_is_not_run() -> None:
    calls = {"a": 0, "b": 0}
    a, b = Member(detector(1), SIZE, a=1.3, b=0.2), Member(detector(2), SIZE)
    for name, m in (("a", a), ("b", b)):
        m.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    x = images()
    with torch.no_grad():
        ens = Ensemble([a, b], ["a", "b"], [0.0, 1.0]).eval()
        assert torch.equal(ens(x), b(x).reshape(ens(x).shape))
        assert calls["a"] == 0
        both = Ensemble([a, b], ["a", "b"], [0.25, 0.75]).eval()
        want = 0.25 * a(x).reshape(-1) + 0.75 * b(x).reshape(-1)
        assert torch.allclose(both(x).reshape(-1), want, atol=1e-6)
        assert calls["a"] == 2


def test_members_keep_their_own_input_size_normalisation_and_calibration() -> None:
    a, b = detector(2), detector(3)
    with torch.no_grad():  # another normalisation for b, as an ImageNet model would have
        b.normalize.mean.copy_(torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        b.normalize.std.copy_(torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    ens = Ensemble([Member(a, SIZE), Member(b, 24, 0.5, 0.2)], ["a", "b"], [0.25, 0.75]).eval()
    x = images(size=SIZE)
    with torch.no_grad():
        big = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear",
                                              align_corners=False)
        want = 0.25 * a(x) + 0.75 * (0.5 * b(big) + 0.2)
        assert torch.allclose(ens(x), want, atol=1e-5)
        # crops larger than every member are shrunk (antialiased), never cropped
        assert ens(images(size=40)).shape == (6, 1)
    assert resize(x, SIZE) is x
    assert ens.config()["members"][1] == {"name": "b", "model": "smallcnn", "input_size": 24,
                                          "platt_a": 0.5, "platt_b": 0.2}


def test_gradients_reach_every_member_and_the_input() -> None:
    # crops of 24 px: one member shrinks them (antialiased), one grows them, one takes them as is
    members = [Member(detector(4), SIZE), Member(detector(5), 32), Member(detector(6), 24)]
    ens = Ensemble(members, ["a", "b", "c"], [0.2, 0.3, 0.5]).eval()
    x = images(size=24).requires_grad_(True)
    ens(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    for name, m in zip("abc", members):
        grads = [p.grad for p in m.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_bad_weights_and_names_are_refused() -> None:
    m = Member(detector(0), SIZE)
    for names, weights, fragment in ((["a", "b"], [0.5, 0.5], "one name and one weight"),
                                     (["a"], [0.9], "sum to 1"),
                                     (["a", "a"], [0.5, 0.5], "repeat")):
        members = [m] * len(names)
        with pytest.raises(Exception, match=fragment):
            Ensemble(members if fragment != "one name and one weight" else [m], names, weights)


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------
def _val_logits(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Three members: a good one, a noisier one on another scale, and one that is pure noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    signal = 2 * y - 1
    z = np.stack([1.5 * signal + rng.normal(0, 1.5, n),
                  4.0 * signal + rng.normal(0, 6.0, n),
                  rng.normal(0, 2.0, n)], axis=1)
    return z, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitted_weights_are_on_the_simplex_and_beat_the_best_member_on_val(seed: int) -> None:
    z, y = _val_logits(seed)
    w = fit_weights(z, y, "logloss")
    assert w.shape == (3,)
    assert (w >= 0).all() and abs(w.sum() - 1.0) < 1e-9
    best = min(log_loss(z[:, i], y) for i in range(3))
    assert log_loss(z @ w, y) <= best + 1e-12
    assert w[2] < 0.05  # the pure-noise member gets (almost) nothing
    assert fit_weights(z, y, "equal").tolist() == [1 / 3] * 3
    assert fit_weights([z[:, 0], z[:, 1]], y).shape == (2,)  # a list of vectors works too


def test_a_dominant_member_keeps_every_weight_when_that_is_best() -> None:
    """The optimum on a vertex, which a softmax reaches only in the limit: still never worse."""
    rng = np.random.default_rng(3)
    y = (np.arange(300) % 2).astype(float)
    z = np.stack([5 * (2 * y - 1) + rng.normal(0, 1, 300), rng.normal(0, 3, 300)], axis=1)
    w = fit_weights(z, y)
    assert log_loss(z @ w, y) <= log_loss(z[:, 0], y) + 1e-12
    assert w[0] > 0.95


def test_robust_fit_moves_weight_to_the_member_that_survives_attack() -> None:
    """Member 0 is sharp clean but inverted on the adversarial rows; member 1 is modest on both.
    On clean rows alone the fit trusts member 0; with the adversarial rows it moves to member 1."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    sign = 2 * y - 1
    clean = np.stack([4 * sign + rng.normal(0, 1, 400), 1 * sign + rng.normal(0, 1, 400)], axis=1)
    adv = np.stack([-3 * sign + rng.normal(0, 1, 400), 0.8 * sign + rng.normal(0, 1, 400)], axis=1)
    w_clean = fit_weights(clean, y, "logloss")
    w_robust = fit_weights(np.vstack([clean, adv]), np.r_[y, y], "robust")
    assert w_clean[0] > 0.5 > w_robust[0]
    assert log_loss(adv @ w_robust, y) < log_loss(adv @ w_clean, y)


def test_unknown_fit_method_is_refused() -> None:
    z, y = _val_logits()
    with pytest.raises(EnsembleError, match="ensemble.fit = 'stacking'"):
        fit_weights(z, y, "stacking")


def test_members_are_chosen_by_name_or_path_among_the_declared_ones(tmp_path: Path) -> None:
    avail = {"clean": tmp_path / "c.pt", "robust": tmp_path / "r.pt"}
    assert select_members(avail, []) == avail
    assert select_members(avail, ["robust"]) == {"robust": avail["robust"]}
    assert select_members(avail, [str(tmp_path / "c.pt")]) == {"clean": avail["clean"]}
    with pytest.raises(EnsembleError, match=r"ensemble.members\[0\] = 'other.pt': not a member.*"
                                            r"--member NAME=PATH"):
        select_members(avail, ["other.pt"])


# --------------------------------------------------------------------------------------------
# checkpoint: load_checkpoint and fakeproof detect take it
# --------------------------------------------------------------------------------------------
def _saved_ensemble(tmp_path: Path, params) -> tuple[Path, Ensemble, list[Path]]:
    paths = [write_member(tmp_path / "a.pt", 7, params=params),
             write_member(tmp_path / "b.pt", 8, params=params, a=1 / 1.7)]
    members = [load_member(p)[0] for p in paths]
    ens = Ensemble(members, ["a", "b"], [0.35, 0.65]).eval()
    from fakeproof.ensemble import ensemble_recipe

    path = tmp_path / "ensemble.pt"
    save_ensemble(path, ens, {"recipe": ensemble_recipe(params, Boundary(1.0, 0.0, 0.42),
                                                        "smallcnn")})
    return path, ens, paths


def test_the_checkpoint_loads_with_load_checkpoint_and_scores_the_same(tmp_path: Path) -> None:
    path, ens, _ = _saved_ensemble(tmp_path, tiny_eval_params())
    model, meta = load_checkpoint(path)
    assert isinstance(model, Ensemble) and not model.training
    assert model.weights == pytest.approx({"a": 0.35, "b": 0.65})
    assert [m.a for m in model.members] == [1.0, 1 / 1.7]
    recipe = read_recipe(meta, str(path))
    assert recipe.model == "ensemble" and recipe.threshold == 0.42
    assert recipe.mean == (0.0, 0.0, 0.0) and recipe.std == (1.0, 1.0, 1.0)
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x), ens(x))
    with pytest.raises(EnsembleError, match="is itself an ensemble"):
        load_member(path)


def test_fakeproof_detect_takes_the_ensemble_checkpoint(tmp_path: Path) -> None:
    """detect on a real photo (real MTCNN): the ensemble's P(fake) is the fusion of what detect
    says with each member, sigmoid(sum_i w_i logit(p_i)) (each p_i already Platt-calibrated)."""
    if not PHOTO.is_file():
        pytest.skip(f"{PHOTO} absent")
    params = tiny_eval_params(64, faces={"device": "cpu"})
    path, _, members = _saved_ensemble(tmp_path, params)

    def detect(ckpt: Path) -> dict:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["detect", str(PHOTO), "--checkpoint", str(ckpt), "--json",
                         "--device", "cpu"])
        assert code == 0, err.getvalue()
        got = json.loads(out.getvalue())
        return (got["results"] if isinstance(got, dict) else got)[0]

    res = detect(path)
    assert res["status"] == "scored" and res["threshold"] == 0.42
    assert res["label"] == ("fake" if res["p_fake"] > 0.42 else "real")
    pa, pb = detect(members[0])["p_fake"], detect(members[1])["p_fake"]
    # members' recipes have Platt slopes 1.0 and 1/1.7: detect's p_b is already sigmoid(z_b / 1.7)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    want = 1 / (1 + np.exp(-(0.35 * logit(pa) + 0.65 * logit(pb))))
    assert res["p_fake"] == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
EVAL = {"eps": [0, "4/255", "16/255"], "headline_eps": "4/255",
        "attacks": ["fgsm", "pgd", "apgd", "square"],
        "pgd_steps": 2, "apgd_steps": 2, "square_queries": 5, "bootstrap": 20, "batch_size": 16,
        "min_videos": 2}


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ensemble")
    data = build_store(root / "data", {"train": 4, "val": 6, "test": 6}, frames=3, size=SIZE)
    params = tiny_eval_params(eval=EVAL)
    members = {"clean": write_member(root / "clean.pt", 10, threshold=0.4),
               "robust": write_member(root / "robust.pt", 11, image_size=24, a=1 / 1.3,
                                      params=tiny_eval_params(24))}
    stats = run_ensemble(params, data, members, root / "models" / "ensemble.pt",
                         root / "metrics" / "ensemble.json", root / "metrics" / "head.json",
                         root / "plots")
    return {"root": root, "data": data, "params": params, "stats": stats, "members": members,
            "detail": json.loads((root / "metrics" / "ensemble.json").read_text()),
            "head": json.loads((root / "metrics" / "head.json").read_text())}


def test_stage_metrics_hold_members_ensemble_sweep_weights_and_transfer(stage_run) -> None:
    d, params = stage_run["detail"], stage_run["params"]
    assert set(d["weights"]) == {"clean", "robust"}
    assert all(w >= 0 for w in d["weights"].values())
    assert sum(d["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    for name in ("clean", "robust"):
        m = d["members"][name]
        assert m["weight"] == d["weights"][name]
        for level in ("frame", "video"):
            t = m["test_clean"][level]
            assert {"auc", "auc_lo", "auc_hi", "bacc", "bacc_lo", "bacc_hi"} <= set(t)
    assert d["members"]["robust"]["input_size"] == 24
    assert d["members"]["robust"]["platt_a"] == pytest.approx(1 / 1.3)
    e = d["ensemble"]
    # ensemble.fit: robust (the default): each round refits on clean + adversarial val faces
    # crafted on the ensemble, so their summed log loss never rises within a round
    assert d["fit"] == "robust" and len(d["fit_log"]["rounds"]) == 2
    for r in d["fit_log"]["rounds"]:
        assert sum(r["after"].values()) <= sum(r["before"].values()) + 1e-6
    assert d["fit_log"]["rounds"][-1]["weights"] == pytest.approx(d["weights"], abs=1e-6)
    assert set(d["pairs"]) == {"robust-clean", "ensemble-clean", "ensemble-robust"}
    labels = [eps_label(v) for v in sorted(params.eval.eps)]
    for attack in ("pgd", "apgd", "square"):
        assert sorted(e["attacks"][attack]) == sorted(labels)
    assert set(e["robust"]) == set(labels)
    for lab in labels:  # per-face robust accuracy is at most every attack's
        rob = e["robust"][lab]["frame"]["acc"]
        assert all(rob <= e["attacks"][a][lab]["frame"]["acc"] + 1e-9 for a in params.eval.attacks)
    # eps 0 leaves the images as they are: robust accuracy there is the clean one
    assert e["robust"]["0"]["frame"]["acc"] == pytest.approx(e["sample_clean"]["frame"]["acc"])
    # transfer: every source and every scorer; the ensemble's white-box cell is evaluate's PGD
    names = ["clean", "robust", "ensemble"]
    assert set(d["transfer"]) == set(names)
    assert all(set(row) == set(names) for row in d["transfer"].values())
    assert all(0 <= v <= 1 for row in d["transfer"].values() for v in row.values())
    head = eps_label(params.eval.headline_eps)
    assert d["transfer_eps"] == head
    assert d["transfer"]["ensemble"]["ensemble"] == pytest.approx(
        e["attacks"]["pgd"][head]["frame"]["acc"], abs=1e-6)
    assert d["transfer_clean"]["ensemble"] == pytest.approx(e["sample_clean"]["frame"]["acc"],
                                                            abs=1e-6)


def test_stage_headline_is_small_and_the_checkpoint_reloads(stage_run) -> None:
    assert list(stage_run["head"]) == ["ens"]  # dvc exp show: ens.auc, ens.adv_ci, ...
    h = stage_run["head"]["ens"]
    assert set(h) == {"auc", "auc_ci", "bacc", "adv_bacc", "adv_ci"}
    e = stage_run["detail"]["ensemble"]
    clean = e["test_clean"]["frame"]
    assert h["auc"] == pytest.approx(clean["auc"], abs=1e-4)
    assert h["auc_ci"] == f"{clean['auc_lo']:.3f}-{clean['auc_hi']:.3f}"
    rob = e["robust"][eps_label(stage_run["params"].eval.headline_eps)]["frame"]
    assert h["adv_bacc"] == pytest.approx(rob["bacc"], abs=1e-4)
    assert h["adv_ci"] == f"{rob['bacc_lo']:.3f}-{rob['bacc_hi']:.3f}"
    model, meta = load_checkpoint(stage_run["root"] / "models" / "ensemble.pt")
    assert isinstance(model, Ensemble)
    assert model.weights == pytest.approx(stage_run["detail"]["weights"], abs=1e-6)
    assert read_recipe(meta, "ensemble.pt").input_size == SIZE
    assert meta["recipe"]["threshold"] == pytest.approx(stage_run["detail"]["boundary"]["threshold"],
                                                        abs=1e-6)
    table = (stage_run["root"] / "plots" / "robust_acc.csv").read_text().splitlines()[0]
    assert table.split(",")[:2] == ["eps", "eps_255"] and "ensemble_robust" in table


def test_stage_refuses_unknown_members_and_a_one_class_val_split(stage_run, tmp_path) -> None:
    p = stage_run["params"]
    bad = replace(p, ensemble=replace(p.ensemble, members=["nope"]))
    with pytest.raises(EnsembleError, match=r"ensemble.members\[0\] = 'nope'"):
        run_ensemble(bad, stage_run["data"], stage_run["members"], tmp_path / "e.pt",
                     tmp_path / "e.json", tmp_path / "h.json")
    data = build_store(tmp_path / "one", {"train": 2, "val": 2, "test": 2}, frames=1, size=SIZE)
    import pandas as pd

    s = pd.read_csv(data.splits_csv)
    s.loc[s["split"] == "val", "label"] = 0
    s.to_csv(data.splits_csv, index=False)
    with pytest.raises(EnsembleError, match=r"splits.csv: the val split needs real and fake"):
        run_ensemble(p, data, stage_run["members"], tmp_path / "e.pt", tmp_path / "e.json",
                     tmp_path / "h.json")
    assert not (tmp_path / "e.pt").exists()


# --------------------------------------------------------------------------------------------
# what evaluate measured of the members is reused, never measured again
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def same_size(tmp_path_factory) -> dict:
    """Members at the crops' size (as a pipeline trains them), the ensemble stage measuring
    everything itself, and evaluate run on the same members and data."""
    from fakeproof.evaluate import run_evaluate

    root = tmp_path_factory.mktemp("reuse")
    data = build_store(root / "data", {"train": 4, "val": 6, "test": 6}, frames=3, size=SIZE)
    params = tiny_eval_params(eval=EVAL)
    members = {"clean": write_member(root / "clean.pt", 12, threshold=0.45),
               "robust": write_member(root / "robust.pt", 13, a=1 / 1.3, b=0.2)}
    run_ensemble(params, data, members, root / "ens.pt", root / "ens.json", root / "h.json",
                 root / "plots")
    run_evaluate(replace(params, eval=replace(params.eval, corruptions=())), data, members,
                 root / "ev" / "head.json", root / "ev" / "eval.json", root / "ev" / "plots")
    return {"root": root, "data": data, "params": params, "members": members,
            "detail": json.loads((root / "ens.json").read_text()),
            "logits": root / "ev" / "plots" / "logits.csv"}


def _rerun(run: dict, tmp_path: Path, evaluated: Path) -> dict:
    run_ensemble(run["params"], run["data"], run["members"], tmp_path / "e.pt",
                 tmp_path / "e.json", tmp_path / "h.json", tmp_path / "plots", evaluated)
    return json.loads((tmp_path / "e.json").read_text())


def test_the_ensemble_reuses_what_evaluate_measured_of_its_members(same_size, tmp_path,
                                                                    monkeypatch, caplog) -> None:
    import fakeproof.ensemble as ens_mod

    def crafted_again(*a, **k):
        raise AssertionError("the members' PGD examples were crafted again")

    monkeypatch.setattr(ens_mod, "members_crafted", crafted_again)
    with caplog.at_level("INFO", logger="fakeproof.ensemble"):
        d = _rerun(same_size, tmp_path, same_size["logits"])
    assert any("from " + str(same_size["logits"]) in r.getMessage() for r in caplog.records)
    ref = same_size["detail"]  # the same stage measuring everything itself
    for src, row in ref["transfer"].items():
        assert d["transfer"][src] == pytest.approx(row, abs=1e-9), src
    assert d["transfer_clean"] == pytest.approx(ref["transfer_clean"], abs=1e-9)
    for n in ("clean", "robust"):
        got, want = d["members"][n]["test_clean"]["frame"], ref["members"][n]["test_clean"]["frame"]
        assert got["auc"] == pytest.approx(want["auc"], abs=1e-6)
        assert got["bacc"] == pytest.approx(want["bacc"], abs=1e-9)
    assert d["weights"] == pytest.approx(ref["weights"], abs=1e-9)
    head = eps_label(same_size["params"].eval.headline_eps)
    for key in ("auc_diff", "bacc_diff"):
        assert d["pairs"]["robust-clean"][f"robust@{head}"][key] == pytest.approx(
            ref["pairs"]["robust-clean"][f"robust@{head}"][key], abs=1e-6)
    # the ensemble's own white-box cell is its evaluate-style sweep, as before
    assert d["transfer"]["ensemble"]["ensemble"] == pytest.approx(
        d["ensemble"]["attacks"]["pgd"][head]["frame"]["acc"], abs=1e-9)


def test_logits_of_other_checkpoints_are_not_reused(same_size, tmp_path, caplog) -> None:
    import pandas as pd

    stale = tmp_path / "logits.csv"
    df = pd.read_csv(same_size["logits"], dtype=str, keep_default_na=False)
    df.loc[df["scorer"] == "robust", "scorer_sha256"] = "0" * 64  # another robust checkpoint
    df.to_csv(stale, index=False)
    with caplog.at_level("INFO", logger="fakeproof.face_scores"):
        d = _rerun(same_size, tmp_path, stale)
    assert any("no scores of member(s) robust" in r.getMessage() for r in caplog.records)
    assert d["transfer"] == same_size["detail"]["transfer"]


def test_a_member_that_resizes_the_crops_is_measured_here(stage_run, same_size, tmp_path,
                                                          caplog) -> None:
    """stage_run's robust member resizes 16 px crops to 24 (evaluate would feed them as they
    are): its logits are never taken from evaluate."""
    with caplog.at_level("INFO", logger="fakeproof.ensemble"):
        d = _rerun(stage_run, tmp_path, same_size["logits"])
    assert any("robust resize the 16 px test crops" in r.getMessage() for r in caplog.records)
    assert d["transfer"] == stage_run["detail"]["transfer"]
