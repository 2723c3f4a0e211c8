"""fakeproof leaderboard: the grid, the rows, the ranks.

The e2e test builds a two-cell grid (``adv.eps`` 2/255 and 4/255, one cheap attack) on the tiny
pipeline in a temporary git + DVC repo (real dvc, real queue workers), and checks the table
against the experiments' own metrics, that a second run queues nothing, that rows measured with
other attacks are grouped apart, and that a row with a planted failing sanity flag is listed,
marked and not ranked. The unit tests check the grid's cells, ranking and pairing on rows built
here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _dvcrepo import copy_repo, dvc, run
from fakeproof.leaderboard.grid import LeaderboardError, build_cells, split_values, with_overrides
from fakeproof.leaderboard.render import markdown, pareto
from fakeproof.leaderboard.table import Group, Row, rank, seed_spread

GRID = ["--grid", "adv.eps=2/255,4/255", "--set", "eval.attacks=[pgd]", "--set", "eval.eps=[0,8/255]"]


def _leaderboard(repo: Path, out: Path, *args: str):
    return run([sys.executable, "-m", "fakeproof", "leaderboard", "--out", str(out), *args],
               cwd=repo, timeout=1500)


def _exp_metrics(repo: Path) -> dict[str, dict]:
    """Experiment eps -> its headline metrics, from ``dvc exp show --json``."""
    out = {}
    for row in json.loads(dvc("exp", "show", "--json", cwd=repo).stdout):
        for exp in row.get("experiments") or []:
            data = exp["revs"][0]["data"]
            eps = data["params"]["params.yaml"]["data"]["adv"]["eps"]
            out[eps] = data["metrics"]["metrics/headline.json"]["data"]
    return out


@pytest.mark.e2e
def test_grid_table_matches_experiments_and_reruns_nothing(tiny_pipeline: Path,
                                                           tmp_path: Path) -> None:
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    first = _leaderboard(repo, tmp_path / "lb1", *GRID)
    assert "0 already measured, 0 already queued, 2 to run" in first.stderr
    board = json.loads((tmp_path / "lb1" / "leaderboard.json").read_text())
    assert len(board["groups"]) == 1, "both cells share one test set and attack list"
    rows = board["groups"][0]["rows"]
    by_eps = {r["train_eps"]: r for r in rows if r["objective"] == "pgd"}
    assert set(by_eps) == {"2/255", "4/255"}
    clean = [r for r in rows if r["objective"] == "none"]
    assert len(clean) == 1 and len(clean[0]["experiments"]) == 2, "one clean checkpoint, one row"
    metrics = _exp_metrics(repo)
    for eps, row in by_eps.items():
        head = metrics[eps]["robust"]
        assert row["robust_bacc"] == pytest.approx(head["adv_bacc"], abs=5e-5)
        assert row["clean_auc"] == pytest.approx(head["auc"], abs=5e-5)
        assert row["train_seconds"] > 0 and row["hardware"]
    ranked = [r for r in rows if r["rank"] is not None]
    assert [r["rank"] for r in ranked] == list(range(1, len(ranked) + 1))
    assert all(a["robust_bacc"] >= b["robust_bacc"] for a, b in zip(ranked, ranked[1:]))
    for upper, lower in zip(ranked, ranked[1:]):
        assert upper["vs_next"]["bacc_diff"] == pytest.approx(
            upper["robust_bacc"] - lower["robust_bacc"], abs=1e-6)
    assert (tmp_path / "lb1" / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "lb1" / "leaderboard.md").read_text()
    assert "| rank | detector |" in md and "2/255" in md and "4/255" in md

    exps_before = dvc("exp", "list", "--name-only", cwd=repo).stdout.split()
    again = _leaderboard(repo, tmp_path / "lb2", *GRID)
    assert "2 already measured, 0 already queued, 0 to run" in again.stderr
    assert sorted(dvc("exp", "list", "--name-only", cwd=repo).stdout.split()) == sorted(exps_before)
    assert json.loads((tmp_path / "lb2" / "leaderboard.json").read_text()) == board

    # A planted failing flag in the workspace's results (committed to dvc.lock, so the workspace
    # is current): its row is listed, marked and not ranked; the baseline's row, with the same
    # checkpoint and the real results, is ranked. Other attacks: another group.
    detail = repo / "metrics/eval.json"
    d = json.loads(detail.read_text())
    d["models"]["robust"]["sanity"]["planted"] = {"fired": True, "severity": "fail",
                                                  "evidence": "planted by the test"}
    d["models"]["robust"]["sanity"]["ok"] = False
    detail.write_text(json.dumps(d))
    dvc("commit", "-f", "evaluate", cwd=repo)
    _leaderboard(repo, tmp_path / "lb3", "--from-exps")
    groups = json.loads((tmp_path / "lb3" / "leaderboard.json").read_text())["groups"]
    assert len(groups) == 2, [g["description"] for g in groups]
    base = next(g for g in groups if not any(r["train_eps"] in ("2/255", "4/255")
                                            for r in g["rows"]))
    planted = [r for r in base["rows"] if "workspace" in r["experiments"] and r["objective"] == "pgd"]
    assert len(planted) == 1 and planted[0]["rank"] is None
    assert planted[0]["flags"]["planted"] == "fail" and planted[0]["sanity_ok"] is False
    real = [r for r in base["rows"] if "main" in r["experiments"] and r["objective"] == "pgd"]
    # The baseline's row: the same checkpoint with its real results, a row of its own, ranked
    # exactly when its own checks pass (the tiny model may fail some of them by itself).
    assert len(real) == 1 and real[0]["checkpoint"] == planted[0]["checkpoint"]
    assert "planted" not in real[0]["flags"]
    assert (real[0]["rank"] is not None) == real[0]["sanity_ok"]
    assert "**FAILS**" in (tmp_path / "lb3" / "leaderboard.md").read_text()
    assert "planted (fail)" in (tmp_path / "lb3" / "leaderboard.md").read_text()


# ----------------------------------------------------------------------------------------------
def test_grid_cells_are_the_product_with_shared_sets_and_seeds() -> None:
    cells = build_cells(["model.name=a,b", "adv.eps=2/255,4/255"], ["eval.eps=[0,2/255]"], seeds=2)
    assert len(cells) == 8
    assert cells[0].overrides[0] == ("eval.eps", "[0,2/255]")
    seeds = {(dict(c.overrides)["train.seed"], dict(c.overrides)["adv.seed"]) for c in cells}
    assert seeds == {("0", "0"), ("1", "1")}
    assert split_values("a,[1,2],b") == ["a", "[1,2]", "b"]
    with pytest.raises(LeaderboardError, match="train.seed"):
        build_cells(["train.seed=1,2"], seeds=2)
    with pytest.raises(LeaderboardError, match="KEY=VALUE"):
        build_cells(["adv.eps"])
    raw = {"adv": {"eps": "4/255", "method": "pgd"}}
    assert with_overrides(raw, cells[0].__class__((("adv.eps", "2/255"),))) == \
        {"adv": {"eps": "2/255", "method": "pgd"}}
    with pytest.raises(LeaderboardError, match="adv.epz"):
        with_overrides(raw, cells[0].__class__((("adv.epz", "1"),)))


def _row(name: str, bacc: float, auc: float, ok: bool = True, seed: int = 0,
         scores: pd.DataFrame | None = None) -> Row:
    return Row(detector=name, objective="pgd", train_eps="2/255", seed=seed, model="robust",
               experiments=[name], group="g", checkpoint=name + str(seed), clean_auc=auc,
               clean_auc_ci=(None, None), robust_bacc=bacc, robust_bacc_ci=(None, None),
               robust_acc=bacc, robust_acc_ci=(None, None), corruption_auc=None,
               corruption_auc_ci=(None, None), cross_auc=None, cross_auc_ci=(None, None),
               preset="quick", train_seconds=60.0, hardware="cpu", flags={} if ok else
               {"collapsed": "fail"}, sanity_ok=ok, scores=scores)


def _scores(correct: np.ndarray) -> pd.DataFrame:
    n = correct.size
    label = np.repeat([0, 1], n // 2)
    vid = np.arange(n) // 4
    return pd.DataFrame({"key": [f"f{i}" for i in range(n)], "video_id": vid, "label": label,
                         "method": np.where(label == 1, "faceswap", ""),
                         "attacked": np.where(correct == (label == 1), 1.0, -1.0)})


def test_rank_orders_by_robust_bacc_pairs_neighbours_and_leaves_failures_unranked() -> None:
    rng = np.random.default_rng(0)
    strong = _scores(rng.random(160) < 0.95)
    hits = rng.random(160) < 0.3
    weak = _scores(hits)
    hits[:2] = ~hits[:2]  # two faces apart: a tie
    close = _scores(hits)
    rows = [_row("weak", 0.3, 0.9, scores=weak), _row("bad", 0.99, 0.99, ok=False),
            _row("strong", 0.95, 0.8, scores=strong), _row("close", 0.29, 0.95, scores=close)]
    rank(rows, n_boot=300)
    assert [r.detector for r in rows] == ["strong", "weak", "close", "bad"]
    assert [r.rank for r in rows] == [1, 2, 3, None]
    assert rows[0].vs_next["significant"] is True and rows[0].vs_next["bacc_diff"] > 0.5
    assert rows[1].vs_next["significant"] is False
    assert rows[2].vs_next is None
    md = markdown([Group("g", "test set g", rows)])
    assert "**real**" in md and "tie" in md and "not ranked" in md
    front = pareto(rows[:3] + [_row("dominated", 0.2, 0.85)])
    assert {r.detector for r in front} == {"strong", "weak", "close"}


def test_seed_spread_is_the_training_noise_of_a_cell() -> None:
    rows = [_row("a", 0.5, 0.9, seed=0), _row("a", 0.7, 0.9, seed=1), _row("b", 0.4, 0.9)]
    seed_spread(rows)
    assert rows[0].seed_spread == rows[1].seed_spread
    assert rows[0].seed_spread["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert rows[2].seed_spread is None


def test_dvcfile_flattens_vars_and_fills_a_stage_s_flags() -> None:
    from fakeproof.dvcfile import flatten_vars, stage_flags

    spec = {"vars": [{"path": {"store": "data/s.lmdb", "plots": "m/p"}}, {"n": 3}],
            "stages": {"evaluate": {"cmd": "python e.py --store ${path.store} --plots "
                                           "${path.plots}/eval --checkpoint a=x.pt --checkpoint "
                                           "'b=y z.pt' --unknown ${nope}"}}}
    assert flatten_vars(spec) == {"path.store": "data/s.lmdb", "path.plots": "m/p", "n": 3}
    assert stage_flags(spec, "evaluate") == {"--store": ["data/s.lmdb"], "--plots": ["m/p/eval"],
                                             "--checkpoint": ["a=x.pt", "b=y z.pt"],
                                             "--unknown": ["${nope}"]}
    assert stage_flags(spec, "absent") == {}
