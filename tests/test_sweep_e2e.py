"""Sweeps: a two-point queue over ``adv.eps`` on the tiny pipeline (real dvc, real git).

``dvc exp run --queue -S 'adv.eps=2/255,4/255'`` queues one experiment per value (the tiny
baseline trains at 8/255, so both differ from it); ``dvc exp run --run-all -j 1`` starts the queue
worker and returns when the queue is empty (no polling, no sleeping). Each experiment must re-run
only adv_finetune and what depends on it (evaluate, and any stage added after it), restoring the
upstream stages' outputs from the cache, and ``dvc exp show --json`` must list both with their
eps and different metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from _dvcrepo import CHEAP_EVAL, copy_repo, downstream, dvc, lock_hashes, ran_stages

pytestmark = pytest.mark.e2e


def _experiments(show: list[dict]) -> dict[str, dict]:
    """Experiment name -> its data, from ``dvc exp show --json`` (DVC 3 layout)."""
    out = {}
    for row in show:
        for exp in row.get("experiments") or []:
            rev = exp["revs"][0]
            out[rev["name"]] = rev["data"]
    return out


def test_queued_eps_sweep_reruns_only_downstream(tiny_pipeline: Path, tmp_path: Path) -> None:
    repo = copy_repo(tiny_pipeline, tmp_path / "repo")
    rerun = downstream(repo, "adv_finetune")
    assert {"adv_finetune", "evaluate"} <= rerun and "pretrain" not in rerun, rerun
    upstream = {k: v for k, v in lock_hashes(repo).items() if k.split(":")[0] not in rerun}
    assert upstream, "the lock records no upstream outputs"

    dvc("exp", "run", "--queue", "-S", "adv.eps=2/255,4/255", *CHEAP_EVAL, cwd=repo)
    queued = re.findall(r"^\S+\s+(\S+)\s.*\bQueued\b", dvc("queue", "status", cwd=repo).stdout, re.M)
    assert len(queued) == 2, queued
    try:
        dvc("exp", "run", "--run-all", "-j", "1", cwd=repo, timeout=1200)
    finally:
        dvc("queue", "stop", cwd=repo, check=False)
    status = dvc("queue", "status", cwd=repo).stdout
    assert status.count("Success") == 2 and "Failed" not in status, status

    for name in queued:
        log = dvc("queue", "logs", name, cwd=repo).stdout
        assert ran_stages(log) == rerun, log

    exps = _experiments(json.loads(dvc("exp", "show", "--json", cwd=repo).stdout))
    assert set(exps) == set(queued)
    eps = {n: d["params"]["params.yaml"]["data"]["adv"]["eps"] for n, d in exps.items()}
    assert sorted(eps.values()) == ["2/255", "4/255"]
    for name, data in exps.items():
        # Upstream outputs are the baseline's, byte for byte (restored, not rebuilt).
        for key, md5 in upstream.items():
            path = key.split(":", 1)[1]
            assert data["outs"][path]["hash"] == md5, (name, path)
    metrics = [{path: m.get("data") for path, m in d["metrics"].items()} for d in exps.values()]
    assert metrics[0] and metrics[0] != metrics[1]
    # The headline file, declared under metrics:, is what moved.
    changed = {path for path in metrics[0] if metrics[0][path] != metrics[1].get(path)}
    assert "metrics/headline.json" in changed, changed
