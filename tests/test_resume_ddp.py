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
        "--curve", "metrics/curve.csv", "--tensorboard", "runs/tb", "--resume", "runs/resume.pt",
        "--cost", "metrics/cost.json"]


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
    cost = json.loads((work / "metrics" / "cost.json").read_text())  # by the launcher, once
    assert cost["stage"] == "pretrain" and cost["nproc"] == 2 and cost["device"] == "cpu"
    assert cost["seconds"] > 0 and "cores" in cost["hardware"]


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


ADV_ARGS = ["--store", "data/faces.lmdb", "--faces", "data/faces.csv", "--splits", "data/splits.csv",
            "--clean", "models/clean.pt", "--out", "models/robust.pt", "--metrics",
            "metrics/finetune.json", "--curve", "metrics/finetune_curve.csv", "--tensorboard",
            "runs/tb_adv", "--resume", "runs/resume_adv.pt", "--cost", "metrics/cost_adv.json"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp16_pretrain_and_pgd_finetune_on_the_gpu(tmp_path: Path) -> None:
    """fp16 (GradScaler) pretraining, then PGD fine-tuning on CUDA: both write checkpoints that load
    on the CPU, and the fine-tuned model's val PGD accuracy is one that CPU scoring reproduces."""
    work = _workdir(tmp_path / "fp16", device="cuda", amp="fp16", epochs=2)
    run = _pretrain(work)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "amp fp16" in run.stderr
    raw = yaml.safe_load((work / "params.yaml").read_text())
    raw["adv"].update({"epochs": 1, "steps": 3, "select_videos": 4})
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    adv = subprocess.run([sys.executable, str(PROJECT / "stages" / "adv_finetune.py"), *ADV_ARGS],
                         cwd=work, capture_output=True, text=True, timeout=600)
    assert adv.returncode == 0, adv.stderr[-3000:]
    model, meta = load_checkpoint_cpu(work / "models" / "robust.pt")
    assert meta["stage"] == "adv_finetune"
    assert next(model.parameters()).device.type == "cpu"
    saved = json.loads((work / "metrics" / "finetune.json").read_text())
    assert 0.0 <= saved["val_pgd_bacc"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_attacks_craft_on_the_models_device_in_float32() -> None:
    """Every attack keeps the model's device and returns float32 inside the eps ball; under an
    enclosing fp16 autocast the input gradient is still the float32 one (fp16 would underflow)."""
    from fakeproof.attacks import ATTACKS, get_attack
    from fakeproof.attacks._base import input_grad
    from fakeproof.models import create_model

    torch.manual_seed(0)
    model = create_model("smallcnn").cuda().eval()
    x = torch.rand(16, 3, 32, 32, device="cuda")
    y = (model(x).squeeze(1) > 0).long()  # the model's own calls: every attack has work
    full, _, _ = input_grad(model, x, y, "ce")
    with torch.autocast("cuda", dtype=torch.float16):
        mixed, _, _ = input_grad(model, x, y, "ce")
    assert mixed.dtype == torch.float32 and float(full.abs().max()) > 0
    # float32 up to kernel rounding (cudnn, atomic adds), far below fp16's 1e-3 relative error
    assert float((mixed - full).norm() / full.norm()) < 1e-4
    eps = 4 / 255
    for name in sorted(ATTACKS):
        with torch.autocast("cuda", dtype=torch.float16):
            adv = get_attack(name).fn(model, x, y, eps=eps)
        assert adv.device.type == "cuda" and adv.dtype == torch.float32, name
        assert float((adv - x).abs().max()) <= eps + 1e-6, name
