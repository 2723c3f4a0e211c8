"""Kill-safe training and data-parallel training, through the real stage scripts.

- A pretrain run SIGKILLed right after its first epoch (the way a pre-empted job dies), then re-run,
  ends with a checkpoint byte-identical to an uninterrupted run's (CPU).
- A resume state from other params is discarded, never resumed into.
- ``train.nproc: 2`` trains with DistributedDataParallel (gloo, 2 processes through torch's elastic
  launcher), writes one checkpoint of the usual kind, and its val metrics are those of the model it
  wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _params import default_params_raw
from _tinydata import build_store

PROJECT = Path(__file__).resolve().parents[1]
ARGS = ["--store", "data/faces.lmdb", "--faces", "data/faces.csv", "--splits", "data/splits.csv",
        "--out", "models/clean.pt", "--metrics", "metrics/pretrain.json",
        "--curve", "metrics/curve.csv", "--tensorboard", "runs/tb", "--resume", "runs/resume.pt"]


def _workdir(root: Path, **train) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "data").exists():
        build_store(root / "data", {"train": 8, "val": 4, "test": 2}, frames=3, size=16)
    tp = {"epochs": 3, "batch_size": 8, "threads": 1, "patience": 5, "lr": 0.01, **train}
    (root / "params.yaml").write_text(yaml.safe_dump(default_params_raw(train=tp)))
    return root


def _pretrain(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROJECT / "stages" / "pretrain.py"), *ARGS], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)


def test_a_killed_run_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    whole = _workdir(tmp_path / "whole")
    assert _pretrain(whole).returncode == 0
    killed = _workdir(tmp_path / "killed")
    first = _pretrain(killed, {"FAKEPROOF_KILL_AFTER_EPOCH": "1"})
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert (killed / "runs" / "resume.pt").is_file() and not (killed / "models" / "clean.pt").exists()
    second = _pretrain(killed)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from runs/resume.pt after epoch 1" in second.stderr
    assert (killed / "models" / "clean.pt").read_bytes() == (whole / "models" / "clean.pt").read_bytes()
    assert (killed / "metrics" / "curve.csv").read_text() == (whole / "metrics" / "curve.csv").read_text()
    assert not (killed / "runs" / "resume.pt").exists()  # deleted on success


def test_a_resume_state_of_other_params_is_discarded(tmp_path: Path) -> None:
    work = _workdir(tmp_path / "w")
    assert _pretrain(work, {"FAKEPROOF_KILL_AFTER_EPOCH": "1"}).returncode == -signal.SIGKILL
    _workdir(work, lr=0.02)  # another experiment
    run = _pretrain(work)
    assert run.returncode == 0
    assert "belongs to other params or data: discarded" in run.stderr
    assert "resuming" not in run.stderr


def test_data_parallel_training_on_two_cpu_processes(tmp_path: Path) -> None:
    from fakeproof.data import FaceDataset, make_loader
    from fakeproof.metrics import binary_metrics
    from fakeproof.models import load_checkpoint
    from fakeproof.predict import logits_of, proba

    work = _workdir(tmp_path / "ddp", nproc=2, epochs=2)
    run = _pretrain(work)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "launching" in run.stderr and "2 process(es)" in run.stderr
    model, meta = load_checkpoint(work / "models" / "clean.pt")
    assert meta["stage"] == "pretrain" and meta["train"]["nproc"] == 2
    saved = json.loads((work / "metrics" / "pretrain.json").read_text())
    val = FaceDataset(work / "data" / "faces.lmdb", work / "data" / "faces.csv",
                      work / "data" / "splits.csv", "val")
    logits, labels = logits_of(model, make_loader(val, 8))
    m = binary_metrics(labels, proba(logits), scores=logits)
    assert saved["val_auc"] == pytest.approx(m["auc"], abs=1e-6)
    assert saved["val_bacc"] == pytest.approx(m["bacc"], abs=1e-6)
    assert len(list((work / "models").iterdir())) == 1  # one checkpoint, written by rank 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_the_gpu_with_amp(tmp_path: Path) -> None:
    work = _workdir(tmp_path / "gpu", device="cuda", amp="bf16", epochs=1)
    run = _pretrain(work)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "device cuda" in run.stderr and "amp bf16" in run.stderr
    model, _ = load_checkpoint_cpu(work / "models" / "clean.pt")
    assert next(model.parameters()).device.type == "cpu"  # checkpoints stay device-neutral


def load_checkpoint_cpu(path: Path):
    from fakeproof.models import load_checkpoint

    return load_checkpoint(path)
