"""A shared remote, the way a team uses one: ``dvc push`` to a local-path remote, a fresh
``git clone``, ``dvc pull``; the clone is then up to date and ``dvc repro`` runs nothing (every
trained model comes from the remote, none is retrained). Real git, real dvc.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _dvcrepo import commit_all, copy_repo, dvc, git, lock_hashes, ran_stages

pytestmark = pytest.mark.e2e

UP_TO_DATE = "Data and pipelines are up to date."


def test_push_clone_pull_is_up_to_date(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    dvc("remote", "add", "--default", "team", str(tmp_path / "remote"), cwd=repo)
    commit_all(repo, "a shared remote")
    dvc("push", cwd=repo)

    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    dvc("pull", cwd=clone)
    assert UP_TO_DATE in dvc("status", cwd=clone).stdout
    out = dvc("repro", cwd=clone).stdout
    assert ran_stages(out) == set() and UP_TO_DATE in out, out
    assert lock_hashes(clone) == lock_hashes(repo)
    for path in ("models/clean.pt", "models/robust.pt", "data/faces.csv"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    assert (clone / "data/faces.lmdb/data.mdb").stat().st_size > 0
