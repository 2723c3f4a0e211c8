"""End to end: real `dvc` in a temporary git repo on a tiny demo dataset (``tests/_dvcrepo.py``).

Covers the acceptance of the spine: `dvc repro` runs every stage (the shared ``tiny_pipeline``
fixture), `dvc status` is then up to date, the data stages give byte-identical outputs when forced
to run again, and `dvc exp run -S adv.eps=2/255` (the tiny baseline trains at 8/255) re-runs only
adv_finetune and the stages after it (evaluate ...), `dvc exp show` shows the eps as typed and
`dvc metrics diff` the change of the headline metrics. Sweeps and the shared remote have their own modules
(test_sweep_e2e.py, test_remote_e2e.py). Marked e2e; `make test` runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _dvcrepo import CHEAP_EVAL, copy_repo, downstream, dvc, lock_hashes, ran_stages

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repo(tiny_pipeline: Path, tmp_path_factory) -> Path:
    return copy_repo(tiny_pipeline, tmp_path_factory.mktemp("e2e") / "proj")


def test_repro_outputs_and_status(repo: Path) -> None:
    assert "up to date" in dvc("status", cwd=repo).stdout
    headline = json.loads((repo / "metrics/headline.json").read_text())
    assert headline["eps"] == "8/255"
    for model in ("clean", "robust"):
        assert 0.0 <= headline[model]["auc"] <= 1.0
        assert 0.0 <= headline[model]["adv_bacc"] <= 1.0
    detail = json.loads((repo / "metrics/eval.json").read_text())
    for model in ("clean", "robust"):
        assert detail["models"][model]["sanity"]["eps0_differs_from_clean"]["fired"] is False
    videos = (repo / "data/raw/videos.csv").read_text().splitlines()
    assert len(videos) - 1 >= 12
    assert (repo / "data/faces.lmdb/data.mdb").is_file()
    assert not (repo / "data/faces.lmdb/lock.mdb").exists()
    sweep = (repo / "metrics/plots/eval/robust_acc.csv").read_text().splitlines()
    assert sweep[0].startswith("eps,eps_255,") and len(sweep) == 4
    assert (repo / "metrics/plots/eval/gallery.png").read_bytes()[:4] == b"\x89PNG"
    # TensorBoard events (wall-clock times, host names) are written, but are no DVC out.
    assert list((repo / "runs/tensorboard/pretrain").glob("events.out.tfevents.*"))
    assert not [k for k in lock_hashes(repo) if "tensorboard" in k]


def test_data_stages_are_byte_deterministic(repo: Path) -> None:
    before = lock_hashes(repo)
    for stage in ("download", "extract_frames", "crop_faces", "split", "pretrain"):
        dvc("repro", "-f", "-s", stage, cwd=repo)
    after = lock_hashes(repo)
    for key in ("download:data/raw", "extract_frames:data/frames", "crop_faces:data/faces.lmdb",
                "crop_faces:data/faces.csv", "split:data/splits.csv", "pretrain:models/clean.pt"):
        assert before[key] == after[key], key
    assert "up to date" in dvc("status", cwd=repo).stdout


def test_exp_run_fraction_reruns_only_downstream(repo: Path) -> None:
    rerun = downstream(repo, "adv_finetune")
    assert {"adv_finetune", "evaluate"} <= rerun and "pretrain" not in rerun, rerun
    out = dvc("exp", "run", "-S", "adv.eps=2/255", *CHEAP_EVAL, cwd=repo).stdout
    assert ran_stages(out) == rerun, out
    assert "eps: 2/255" in (repo / "params.yaml").read_text()
    show = dvc("exp", "show", "--csv", cwd=repo).stdout
    assert "2/255" in show
    changed = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    # The headline file changed; the full detail (eval.json) is an out, not a metric.
    assert "metrics/headline.json" in changed and "metrics/eval.json" not in changed, changed
    assert any(k.startswith("robust.") for k in changed["metrics/headline.json"]), changed
    # Bad values stop the stage with one line naming the key.
    bad = dvc("exp", "run", "-S", "adv.eps=4/0", cwd=repo, check=False)
    assert bad.returncode != 0
    assert "adv.eps = '4/0': division by zero" in bad.stdout + bad.stderr
