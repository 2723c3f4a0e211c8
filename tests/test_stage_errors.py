"""Every stage script, given broken input, prints one line naming the problem, exits 2, and
shows no traceback (the error family: fakeproof.errors.FakeproofError)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _params import default_params_raw

PROJECT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((PROJECT / "dvc.yaml").read_text())
PATHS = DVC["vars"][0]["path"]


def _argv(stage: str) -> list[str]:
    cmd = DVC["stages"][stage]["cmd"]
    for k, v in PATHS.items():
        cmd = cmd.replace("${path." + k + "}", v)
    return cmd.split()[2:]


def _run(stage: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "stages" / f"{stage}.py"), *_argv(stage),
                           *extra], cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, stage: str, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith(f"fakeproof {stage}: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in errors[0], errors[0]


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params_raw()))
    return tmp_path


@pytest.mark.parametrize("stage, fragments", [
    ("extract_frames", ("data/raw/videos.csv", "not found")),
    ("crop_faces", ("data/raw/videos.csv",)),
    ("split", ("data/raw/videos.csv",)),
    ("pretrain", ("data/",)),
    ("adv_finetune", ("models/clean.pt", "not found")),
    ("evaluate", ("data/",)),
])
def test_missing_inputs(workdir: Path, stage: str, fragments: tuple[str, ...]) -> None:
    _one_line(_run(stage, workdir), stage, *fragments)


def test_bad_param_value(workdir: Path) -> None:
    raw = default_params_raw(adv={"eps": "4/0"})
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    _one_line(_run("adv_finetune", workdir), "adv_finetune", "adv.eps", "division by zero")


def test_missing_params_file(tmp_path: Path) -> None:
    _one_line(_run("download", tmp_path), "download", "params.yaml", "not found")


def test_unknown_data_source_root(workdir: Path) -> None:
    raw = default_params_raw(data={"source": "folder", "root": str(workdir / "nowhere")})
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    _one_line(_run("download", workdir), "download", "nowhere")


def test_a_checkpoint_that_is_not_one(workdir: Path) -> None:
    from _tinydata import build_store

    build_store(workdir / "data", {"train": 2, "val": 2, "test": 2})
    (workdir / "models").mkdir()
    (workdir / "models" / "clean.pt").write_bytes(b"not a checkpoint")
    (workdir / "models" / "robust.pt").write_bytes(b"not a checkpoint")
    _one_line(_run("evaluate", workdir), "evaluate", "models/clean.pt", "not a fakeproof checkpoint")
