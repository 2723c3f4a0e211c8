"""``fakeproof compare``: DeLong's test against its published definition, McNemar's exact test, the
paired bootstrap, and two real checkpoints (different input sizes) and two ``dvc exp`` runs."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from _params import default_params_raw
from _tinydata import build_store
from fakeproof.boundary import Boundary
from fakeproof.cli import main
from fakeproof.compare import (CompareError, markdown, mcnemar_exact, paired_stats,
                               resolve_checkpoint, run_compare)
from fakeproof.config import params_from_dict
from fakeproof.delong import delong_covariance, delong_test, midrank
from fakeproof.models import save_checkpoint
from fakeproof.recipe import build_recipe
from _models import spread_smallcnn

SIZE = 16
EVAL = {"eps": [0, "4/255"], "headline_eps": "4/255", "pgd_steps": 2, "bootstrap": 200,
        "batch_size": 16, "attack_videos": 0}  # 0: every test video attacked


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------
def test_midranks_average_ties() -> None:
    assert midrank(np.array([0.4, 0.1, 0.4, 0.9])).tolist() == [2.5, 1.0, 2.5, 4.0]


def test_delong_variance_on_a_hand_worked_example() -> None:
    """Positives X = (0.9, 0.8, 0.4), negatives Y = (0.7, 0.4, 0.2), with a tie at 0.4.

    psi(X_i, Y_j) by rows X: (1, 1, 1), (1, 1, 1), (0, 1/2, 1), so AUC = 7.5 / 9 = 5/6;
    V10 = (1, 1, 1/2); V01 = (2/3, 5/6, 1);
    S10 = [(1/6)^2 + (1/6)^2 + (1/3)^2] / 2 = 1/12; S01 = [(1/6)^2 + 0 + (1/6)^2] / 2 = 1/36;
    var = S10 / m + S01 / n = 1/36 + 1/108 = 1/27 (DeLong et al. 1988, eqs. for V10, V01, S)."""
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.4, 0.2])
    aucs, cov = delong_covariance(labels, scores)
    assert aucs[0] == pytest.approx(float(Fraction(5, 6)), abs=1e-15)
    assert cov[0, 0] == pytest.approx(float(Fraction(1, 27)), abs=1e-15)


def _quadratic_delong(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's covariance straight from its definition, O(mn), as the reference."""
    y = labels.astype(bool)
    k = scores.shape[0]
    v10, v01, aucs = [], [], []
    for r in range(k):
        x, yy = scores[r, y], scores[r, ~y]
        psi = (x[:, None] > yy[None, :]) + 0.5 * (x[:, None] == yy[None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = int(y.sum()), int((~y).sum())
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    return np.array(aucs), s10 / m + s01 / n


def test_the_fast_algorithm_equals_the_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.vstack([np.round(labels + rng.normal(0, 1, 300), 1),  # rounding makes ties
                        np.round(0.5 * labels + rng.normal(0, 1, 300), 1),
                        rng.integers(0, 3, 300).astype(float)])
    aucs, cov = delong_covariance(labels, scores)
    want_aucs, want_cov = _quadratic_delong(labels, scores)
    np.testing.assert_allclose(aucs, want_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov, want_cov, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# McNemar and the paired comparison
# --------------------------------------------------------------------------------------------
def test_mcnemar_exact_p_values() -> None:
    a = np.array([True] * 6 + [False] * 0 + [True] * 10)
    b = np.array([False] * 6 + [True] * 10)
    assert mcnemar_exact(a, b) == {"b": 6, "c": 0, "p": 2 / 64}  # 2 * P(Bin(6, 1/2) <= 0)
    assert mcnemar_exact([True, False], [False, True])["p"] == 1.0
    assert mcnemar_exact([True, True], [True, True]) == {"b": 0, "c": 0, "p": 1.0}
    big = mcnemar_exact(np.r_[np.ones(1500, bool), np.zeros(1500, bool)],
                        np.r_[np.zeros(1500, bool), np.ones(1500, bool)])
    assert big["p"] == pytest.approx(1.0)  # 1,500 vs 1,500 discordant: no overflow, p = 1


def test_a_model_against_itself_differs_by_exactly_zero_with_p_one() -> None:
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    s = y + rng.normal(0, 1, 60)
    correct = (s > 0.5) == (y == 1)
    r = paired_stats(y, s, s, correct, correct, n_boot=300, seed=0)
    assert r["auc_diff"] == 0.0
    assert r["auc_diff_lo"] <= 0.0 <= r["auc_diff_hi"]
    assert r["delong_p"] == 1.0 and r["mcnemar_p"] == 1.0
    assert r["auc_a"] == r["auc_b"]


def test_label_noise_on_half_the_videos_is_significant() -> None:
    """B is A except that on half the videos it scores as if trained on random labels: DeLong,
    McNemar and the paired bootstrap all see it."""
    rng = np.random.default_rng(2)
    n = 200
    y = np.arange(n) % 2
    a = (2 * y - 1) * 1.5 + rng.normal(0, 1, n)
    noisy = rng.permutation(n)[: n // 2]
    b = a.copy()
    b[noisy] = (2 * rng.integers(0, 2, noisy.size) - 1) * 1.5 + rng.normal(0, 1, noisy.size)
    r = paired_stats(y, a, b, (a > 0) == (y == 1), (b > 0) == (y == 1), n_boot=500, seed=0)
    assert r["auc_diff"] < 0
    assert r["delong_p"] < 0.05
    assert r["mcnemar_p"] < 0.05
    assert r["auc_diff_hi"] < 0
    assert delong_test(y, a, b)["p"] == r["delong_p"]


# --------------------------------------------------------------------------------------------
# real checkpoints
# --------------------------------------------------------------------------------------------
def _params(image_size: int = SIZE):
    return params_from_dict(default_params_raw(faces={"image_size": image_size}, eval=EVAL),
                            "test params")


def write_checkpoint(path: Path, seed: int, image_size: int = SIZE, threshold: float = 0.5) -> Path:
    model = spread_smallcnn(seed, means=True)
    recipe = build_recipe(_params(image_size), Boundary(1.0, 0.0, threshold))
    save_checkpoint(path, model, {"stage": "test", "recipe": recipe})
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("compare")
    data = build_store(root / "data", {"train": 2, "val": 2, "test": 12}, frames=2, size=SIZE)
    (root / "params.yaml").write_text(yaml.safe_dump(default_params_raw(eval=EVAL)))
    return {"root": root, "data": data,
            "a": write_checkpoint(root / "a.pt", 0),
            "b": write_checkpoint(root / "b.pt", 1, image_size=24, threshold=0.45)}


def _cli(project: dict, *argv: str) -> tuple[int, str, str]:
    d = project["data"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["compare", *argv, "--params", str(project["root"] / "params.yaml"),
                     "--store", str(d.store), "--faces", str(d.faces_csv),
                     "--splits", str(d.splits_csv)])
    return code, out.getvalue(), err.getvalue()


def test_two_checkpoints_with_different_input_sizes_compare_clean_and_under_pgd(project) -> None:
    code, out, err = _cli(project, str(project["a"]), str(project["b"]), "--json")
    assert code == 0, err
    r = json.loads(out)
    for key in ("auc_a", "auc_b", "auc_diff", "auc_diff_lo", "auc_diff_hi", "delong_p",
                "mcnemar_p"):
        assert isinstance(r[key], float), key
        assert isinstance(r["pgd"][key], float), key
    assert r["input_size_a"] == SIZE and r["input_size_b"] == 24
    assert r["threshold_b"] == 0.45
    assert r["test_videos"] == 12 and r["n"] == 12
    assert r["auc_diff"] == pytest.approx(r["auc_b"] - r["auc_a"])
    assert r["auc_diff_lo"] <= r["auc_diff_hi"]
    assert r["pgd"]["eps"] == "4/255"
    assert 0 <= r["delong_p"] <= 1 and 0 <= r["mcnemar_p"] <= 1
    code, md, _ = _cli(project, str(project["a"]), str(project["b"]))
    assert code == 0
    assert "| clean | 12 |" in md and "| PGD 4/255 | 12 |" in md and "DeLong p" in md


def test_a_checkpoint_against_itself_gives_zero_and_p_one_clean_and_attacked(project) -> None:
    ep = _params().eval
    r = run_compare(str(project["b"]), str(project["b"]), project["data"], ep, eps=4 / 255)
    for part in (r, r["pgd"]):
        assert part["auc_diff"] == 0.0
        assert part["auc_diff_lo"] <= 0.0 <= part["auc_diff_hi"]
        assert part["delong_p"] == 1.0 and part["mcnemar_p"] == 1.0
    assert "+0.0000" in markdown(r)


def test_a_file_that_is_not_a_checkpoint_gets_one_line_naming_it(project, tmp_path) -> None:
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    code, out, err = _cli(project, str(project["a"]), str(bad), "--eps", "0")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(bad) in err
    code, _, err = _cli(project, str(project["a"]), "no-such-experiment", "--eps", "0")
    assert code == 2 and "no-such-experiment: no such checkpoint file, dvc experiment" in err


# --------------------------------------------------------------------------------------------
# dvc experiments by name
# --------------------------------------------------------------------------------------------
def _run(*cmd: str, cwd: Path) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_two_dvc_experiments_compare_by_name_from_the_cache(project, tmp_path) -> None:
    """A tiny pipeline whose one stage writes dvc.yaml's ``path.robust``; ``dvc exp run`` twice;
    the experiments are compared by name, their checkpoints read from the DVC cache through
    their commits (the workspace stays as it was)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    _run("git", "init", "-q", "-b", "main", cwd=repo)
    _run("git", "config", "user.email", "ci@fakeproof.test", cwd=repo)
    _run("git", "config", "user.name", "fakeproof ci", cwd=repo)
    _run(dvc, "init", "-q", cwd=repo)
    for seed in range(3):  # the "training" copies one of three models, chosen by a param
        write_checkpoint(repo / f"model{seed}.pt", seed)
    (repo / "params.yaml").write_text("seed: 0\n")
    (repo / "dvc.yaml").write_text(
        "vars:\n  - path:\n      robust: models/robust.pt\n"
        "stages:\n  train:\n    cmd: mkdir -p models && cp model${seed}.pt ${path.robust}\n"
        "    deps: [model0.pt, model1.pt, model2.pt]\n    params: [seed]\n"
        "    outs: ['${path.robust}']\n")
    _run(dvc, "repro", cwd=repo)
    _run("git", "add", "-A", cwd=repo)
    _run("git", "commit", "-q", "-m", "baseline", cwd=repo)
    _run(dvc, "exp", "run", "-q", "-n", "seed-one", "-S", "seed=1", cwd=repo)
    _run(dvc, "exp", "run", "-q", "-n", "seed-two", "-S", "seed=2", cwd=repo)
    workspace = (repo / "models" / "robust.pt").read_bytes()

    ep = _params().eval
    r = run_compare("seed-one", "seed-two", project["data"], ep, eps=0, root=repo)
    assert (r["a"], r["b"]) == ("seed-one:models/robust.pt", "seed-two:models/robust.pt")
    assert r["auc_diff"] != 0.0  # two different models
    same = run_compare("seed-two", "seed-two:models/robust.pt", project["data"], ep, eps=0,
                       root=repo)
    assert same["auc_diff"] == 0.0 and same["delong_p"] == 1.0
    # each experiment's file is its own model, byte for byte; the workspace is left as it was
    for name, seed in (("seed-one", 1), ("seed-two", 2), ("main", 0)):
        path, _ = resolve_checkpoint(name, tmp_path, repo)
        assert path.read_bytes() == (repo / f"model{seed}.pt").read_bytes()
    assert (repo / "models" / "robust.pt").read_bytes() == workspace
    base = run_compare("main", "seed-one", project["data"], ep, eps=0, root=repo)
    assert base["a"] == "main:models/robust.pt" and base["auc_diff"] != 0.0
    with pytest.raises(CompareError, match="nope: no such checkpoint file"):
        resolve_checkpoint("nope", tmp_path, repo)
