"""End to end: real `dvc` in a temporary git repo on a tiny demo dataset.

Covers the acceptance of the spine: `dvc repro` runs all seven stages, `dvc status` is then up to
date, `dvc exp run -S adv.eps=2/255` (the default is 4/255) re-runs only adv_finetune and evaluate and `dvc exp show`
shows the eps as typed, `dvc metrics diff` shows the change, the data stages give byte-identical
outputs when forced to run again, and a real local DVC remote round trip (push, clone, pull)
leaves the clone up to date. Marked e2e (a few minutes on 2 cores); `make test` runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e

TINY = {
    "data": {"demo": {"groups": 6, "frames": 8, "fps": 8, "size": 128, "crf": 23}},
    "frames": {"count": 3},
    "faces": {"image_size": 64, "batch_size": 8},
    "model": {"name": "smallcnn"},
    "train": {"epochs": 2, "batch_size": 16, "patience": 2},
    "adv": {"epochs": 1, "steps": 2},
    "eval": {"eps": [0, "2/255", "8/255"], "attacks": ["fgsm", "pgd", "square"], "pgd_steps": 3,
             "square_queries": 10, "max_samples": 16, "gallery": 2, "roc_eps": "8/255"},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict):
            _merge(base.setdefault(k, {}), v)
        else:
            base[k] = v
    return base


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, check)


def make_project(dest: Path) -> Path:
    """A git + DVC repo holding this project's pipeline with tiny demo params."""
    dest.mkdir()
    for name in ("dvc.yaml", "stages", "fakeproof", ".dvcignore", ".gitignore"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.email", "ci@fakeproof.test"], dest)
    run(["git", "config", "user.name", "fakeproof ci"], dest)
    dvc("init", "-q", cwd=dest)
    dvc("config", "core.analytics", "false", cwd=dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "pipeline"], dest)
    return dest


def lock_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{stage}:{o['path']}": o["md5"] for stage, s in lock["stages"].items()
            for o in s.get("outs", [])}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    out = dvc("repro", cwd=repo)
    for stage in ("download", "extract_frames", "crop_faces", "split", "pretrain", "adv_finetune",
                  "evaluate"):
        assert f"Running stage '{stage}'" in out.stdout, out.stdout
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "baseline run"], repo)
    return repo


def test_repro_outputs_and_status(repo: Path) -> None:
    assert "up to date" in dvc("status", cwd=repo).stdout
    report = json.loads((repo / "metrics/eval.json").read_text())
    for model in ("clean", "robust"):
        assert 0.0 <= report[model]["auc"] <= 1.0
        assert "pgd_acc" in report[model] and "square_acc" in report[model]
        assert report["detail"][model]["sanity"]["eps0_equals_clean"] is True
    assert report["max_eps"] == "8/255"
    videos = (repo / "data/raw/videos.csv").read_text().splitlines()
    assert len(videos) - 1 >= 12
    assert (repo / "data/faces.lmdb/data.mdb").is_file()
    assert not (repo / "data/faces.lmdb/lock.mdb").exists()
    sweep = (repo / "metrics/plots/robust_acc.csv").read_text().splitlines()
    assert sweep[0].startswith("eps,eps_255,") and len(sweep) == 4
    assert (repo / "metrics/plots/gallery.png").read_bytes()[:4] == b"\x89PNG"
    assert list((repo / "models/tensorboard/pretrain").glob("events.out.tfevents.*"))


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
    out = dvc("exp", "run", "-S", "adv.eps=2/255", cwd=repo).stdout
    ran = {s for s in ("download", "extract_frames", "crop_faces", "split", "pretrain",
                       "adv_finetune", "evaluate") if f"Running stage '{s}'" in out}
    assert ran == {"adv_finetune", "evaluate"}, out
    assert "eps: 2/255" in (repo / "params.yaml").read_text()
    show = dvc("exp", "show", "--csv", cwd=repo).stdout
    assert "2/255" in show
    diff = dvc("metrics", "diff", "--json", cwd=repo).stdout
    changed = json.loads(diff)
    assert "metrics/finetune.json" in changed and "eps" in changed["metrics/finetune.json"]
    assert abs(changed["metrics/finetune.json"]["eps"]["new"] - 2 / 255) < 1e-6
    assert abs(changed["metrics/finetune.json"]["eps"]["old"] - 4 / 255) < 1e-6
    # Bad values stop the stage with one line naming the key.
    bad = dvc("exp", "run", "-S", "adv.eps=4/0", cwd=repo, check=False)
    assert bad.returncode != 0
    assert "adv.eps = '4/0': division by zero" in bad.stdout + bad.stderr


def test_queued_sweep_runs_each_eps(repo: Path) -> None:
    dvc("exp", "run", "--queue", "-S", "adv.eps=1/255,2/255", cwd=repo)
    queued = dvc("queue", "status", cwd=repo).stdout
    assert queued.count("Queued") == 2, queued
    dvc("exp", "run", "--run-all", cwd=repo)
    show = json.loads(dvc("exp", "show", "--json", cwd=repo).stdout)
    text = json.dumps(show)
    assert '"1/255"' in text and '"2/255"' in text
    failed = dvc("queue", "status", cwd=repo).stdout
    assert "Failed" not in failed, failed


def test_local_remote_round_trip(repo: Path, tmp_path: Path) -> None:
    run(["git", "checkout", "-q", "--", "."], repo)
    dvc("checkout", "-f", cwd=repo)
    remote = tmp_path / "remote"
    dvc("remote", "add", "-f", "-d", "store", str(remote), cwd=repo)
    run(["git", "commit", "-q", "-am", "remote"], repo)
    dvc("push", cwd=repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    dvc("pull", cwd=clone)
    assert "up to date" in dvc("status", cwd=clone).stdout
    assert (clone / "models/robust.pt").read_bytes() == (repo / "models/robust.pt").read_bytes()
    assert (clone / "data/faces.lmdb/data.mdb").stat().st_size > 0
