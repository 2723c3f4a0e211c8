"""Session fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (the machine is shared); restores the thread count and the
    determinism flags after (the training entry points set both process-wide)."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
