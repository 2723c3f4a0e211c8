"""Benchmark the evaluate stage's attack sweep on a device: wall time and faces/s per attack.

    python benchmarks/bench_evaluate.py gpu [--faces 4500] [--frames 32] [--size 224]
                                            [--batch 256] [--model mobilenet_v3_small]
                                            [--preset standard] [--device cuda]
    python benchmarks/bench_evaluate.py gpu --device cpu --faces 64     # a dry run

A dry run on the CPU defaults to 32 px crops and ``eval.preset: quick`` (the standard budget on
64 faces takes minutes on 2 cores): it runs the same code, and its numbers say nothing of a GPU.

Issue 25's goal: the ``standard`` preset (AutoAttack's recipe for two classes: APGD-CE 100
iterations x 5 restarts, Square 5,000 queries, plus PGD-50 x 3 restarts and FGSM, on every test
video) over a test split of about 4,500 faces (FF++'s test split at 32 frames per video) in under
30 minutes on one H100 for mobilenet_v3_small.

Data: smooth synthetic JPEG crops (``bench_train.smooth_store``: random colour fields with mild
noise, fakes' red channel raised), ``--frames`` per video, every video in the test split. The
demo generator (:mod:`fakeproof.demo`) makes videos that would still need the frames and
crop_faces stages (MTCNN) to become crops, which would time those stages, not the attacks;
what is timed here depends on the number, size and model of the crops, not on their content.
The model: ``--model`` trained one epoch from scratch on a second store of the same size (a
model with a real decision, not the constant of an untrained one), behind the identity
boundary.

Printed: the wall time of :func:`fakeproof.evaluate.evaluate_model` with ``eval.preset:
standard`` and ``eval.attack_videos: 0`` (every test video: the stage's model evaluation,
clean scoring, the eps sweep of every attack, the unbounded PGD check, bootstrap intervals),
then each attack alone through :func:`fakeproof.under_attack.score_under_attack` at the headline
eps (evaluate runs the attacks together per batch and does not time them apart), as seconds and
faces/s per eps; the sweep costs about that times the number of non-zero eps in ``eval.eps``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_train import smooth_store  # benchmarks/ is the script's folder
from fakeproof.boundary import Boundary, Deployed
from fakeproof.config import default_params, params_from_dict
from fakeproof.data import FaceDataset
from fakeproof.evaluate import eval_budget, evaluate_model
from fakeproof.fit import fit
from fakeproof.models import create_model
from fakeproof.runtime import Runtime, frozen_on
from fakeproof.train import _clean_loss
from fakeproof.under_attack import dataset_batches, score_under_attack


def trained_model(name: str, root: Path, n: int, size: int, frames: int, batch: int,
                  rt: Runtime) -> torch.nn.Module:
    """``name`` after one epoch of pretrain's loop on ``n`` training crops."""
    smooth_store(root, n, size, seed=1, frames=frames)
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "train")
    base = params_from_dict(default_params()).train
    tp = replace(base, batch_size=batch, epochs=1, augment="none", device=str(rt.device),
                 amp="bf16" if rt.amp_dtype else "off")
    torch.manual_seed(0)
    model = create_model(name)
    fit(model, ds, tp, rt, 1, 1e-3, 0, _clean_loss(rt), lambda m: {"select": 0.0}, root / "tb",
        "bench", None, "fp")
    return model


def run(faces: int, frames: int, size: int, batch: int, name: str, device: str, preset: str
        ) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_evaluate.py gpu: torch sees no CUDA device (--device cpu: a dry run)")
    dev = torch.device(device)
    rt = Runtime(dev, torch.bfloat16 if dev.type == "cuda" else None, channels_last=True)
    ep = replace(params_from_dict(default_params()).eval, preset=preset, attack_videos=0,
                 batch_size=batch)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        root = smooth_store(Path(d) / "test", faces, size, frames=frames, split="test")
        ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "test")
        model = trained_model(name, Path(d) / "train", faces, size, frames, batch, rt)
        deployed = frozen_on(Deployed(model, Boundary()), dev)
        print(f"{len(ds)} test faces in {ds.frames['video_id'].nunique()} videos of {size} px; "
              f"{name} trained one epoch; {time.perf_counter() - t0:.0f} s", flush=True)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        t0 = time.perf_counter()
        evaluate_model(name, deployed, ds, ep)
        sync()
        total = time.perf_counter() - t0
        print(f"evaluate_model, eval.preset {preset}, {len(ep.eps)} eps {ep.eps}, attacks "
              f"{ep.attacks}: {total:.1f} s ({total / 60:.1f} min)", flush=True)
        rows = per_attack(deployed, ds, ep, sync)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    print(f"\n{where}, torch {torch.__version__}, {name}, {len(ds)} faces, batch {batch}, "
          f"budget {eval_budget(ep)}")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"evaluate_model: {total:.1f} s = {total / 60:.1f} min (goal on one H100 for 4,500 "
          "faces: < 30 min)")


def per_attack(model: Deployed, ds: FaceDataset, ep, sync) -> list[dict]:
    """Each attack of ``eval.attacks`` alone on every face at the headline eps, timed."""
    index = np.arange(len(ds))
    keys = ds.frames["key"].tolist()
    rows = []
    for attack in ep.attacks:
        t0 = time.perf_counter()
        score_under_attack(model, dataset_batches(ds, index, ep.batch_size, keys), [attack],
                           ep.headline_eps, eval_budget(ep), ep.seed)
        sync()
        s = time.perf_counter() - t0
        rows.append({"attack": attack, "eps": f"{ep.headline_eps * 255:g}/255", "seconds": round(s, 1),
                     "faces/s": round(len(ds) / s, 1)})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    import sys

    if len(sys.argv) < 2 or sys.argv[1] != "gpu":
        raise SystemExit("usage: python benchmarks/bench_evaluate.py gpu [--faces N] [--device cpu]")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=4500)
    ap.add_argument("--frames", type=int, default=32, help="faces per test video (FF++: 32)")
    ap.add_argument("--size", type=int, default=0, help="crop side; 0: 224 on CUDA, 32 on the CPU")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--model", default="mobilenet_v3_small")
    ap.add_argument("--preset", default="", help="eval.preset; default: standard on CUDA, quick "
                    "on the CPU (a dry run)")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run")
    a = ap.parse_args(sys.argv[2:])
    on_gpu = a.device.startswith("cuda")
    size = a.size or (224 if on_gpu else 32)
    frames = a.frames if a.faces >= 10 * a.frames else max(1, a.faces // 16)  # >= 10 videos
    run(a.faces, frames, size, a.batch, a.model, a.device,
        a.preset or ("standard" if on_gpu else "quick"))


if __name__ == "__main__":
    main()
