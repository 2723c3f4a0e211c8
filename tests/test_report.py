"""``fakeproof report`` (``make report``): the pull-request report, on two commits of a temporary
git + DVC repo whose metrics and plot files are committed directly (no training; real git, real
dvc). The base branch ``main`` holds the first commit, the workspace the second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _dvcrepo import commit_all, git, init_repo
from fakeproof.cli import main

DVC_YAML = """\
metrics:
  - metrics/headline.json
plots:
  - Robust AUC vs eps:
      x: eps_255
      y:
        metrics/plots/robust_auc.csv: [clean_pgd, robust_pgd]
"""

BASE = {"clean": {"auc": 0.91, "pgd_auc": 0.12}, "robust": {"auc": 0.85, "pgd_auc": 0.55},
        "headline_eps": "4/255"}
HEAD = {"clean": {"auc": 0.91, "pgd_auc": 0.2}, "robust": {"auc": 0.8125, "pgd_auc": 0.625},
        "headline_eps": "4/255"}


def _write(repo: Path, headline: dict, robust_pgd: list[float]) -> None:
    (repo / "metrics/plots").mkdir(parents=True, exist_ok=True)
    (repo / "metrics/headline.json").write_text(json.dumps(headline, indent=2, sort_keys=True))
    rows = ["eps_255,clean_pgd,robust_pgd"] + [f"{e},{c},{r}" for e, c, r in
                                               zip((0, 2, 4), (0.9, 0.4, 0.1), robust_pgd)]
    (repo / "metrics/plots/robust_auc.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = init_repo(tmp_path_factory.mktemp("report") / "repo")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    _write(repo, BASE, [0.85, 0.7, 0.55])
    commit_all(repo, "baseline metrics")
    git("checkout", "-q", "-b", "pull-request", cwd=repo)
    _write(repo, HEAD, [0.81, 0.72, 0.625])
    commit_all(repo, "a change that moves the metrics")
    return repo


def test_report_names_every_changed_headline_metric(repo, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo)
    assert main(["report", "--base", "main"]) == 0
    md = capsys.readouterr().out
    changed = md.split("### Changed headline metrics (3)\n", 1)[1].split("\n### ", 1)[0]
    assert "- `clean.pgd_auc` in `metrics/headline.json`: 0.12 -> 0.2 (+0.08)" in changed
    assert "- `robust.auc` in `metrics/headline.json`: 0.85 -> 0.8125 (-0.0375)" in changed
    assert "- `robust.pgd_auc` in `metrics/headline.json`: 0.55 -> 0.625 (+0.075)" in changed
    assert "clean.auc" not in changed and "headline_eps" not in changed
    # DVC's own table follows, with the base branch and the workspace as its columns.
    table = md.split("### `dvc metrics diff --md main`\n", 1)[1]
    assert "| main " in table and "| workspace " in table and "robust.pgd_auc" in table
    # The plots of both revisions, rendered by dvc plots diff under build/ (git-ignored there).
    plots = repo / "build/report/plots"
    html = (plots / "index.html").read_text()
    assert "Robust AUC vs eps" in html and "0.625" in html
    assert "- Robust AUC vs eps" in md and "build/report/plots/index.html" in md


def test_report_without_changes_says_so(repo, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo)
    assert main(["report", "--base", "pull-request"]) == 0
    md = capsys.readouterr().out
    assert "### Changed headline metrics (0)" in md
    assert "No headline metric changed against `pull-request`." in md


def test_unknown_base_is_one_line_error(repo, monkeypatch, capsys) -> None:
    monkeypatch.chdir(repo)
    assert main(["report", "--base", "no-such-branch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fakeproof report: error: dvc metrics diff failed")
    assert "no-such-branch" in err[0]
