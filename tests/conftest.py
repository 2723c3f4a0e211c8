"""Session fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from _dvcrepo import commit_all, dvc, make_project, ran_stages, stage_names


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """This project's pipeline in a temporary git + DVC repo with tiny params, reproduced once
    (every stage ran) and committed. Shared by the e2e modules: copy it (``_dvcrepo.copy_repo``)
    before changing anything."""
    repo = make_project(tmp_path_factory.mktemp("tiny") / "pipeline")
    out = dvc("repro", cwd=repo).stdout
    assert ran_stages(out) == set(stage_names(repo)), out
    commit_all(repo, "baseline run")
    return repo
