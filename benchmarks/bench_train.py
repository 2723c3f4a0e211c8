"""Benchmark the training loop against a bare torch loop, and adversarial steps against clean ones.

    python benchmarks/bench_train.py [--images 256] [--sizes 128 224] [--threads 2]
                                      [--encoding png] [--pgd-steps 5]
    python benchmarks/bench_train.py memory [--small 432] [--large 4320]

For mobilenet_v3_small (one logit) at each input size, on the same images, batch, threads and
optimiser:

- **train loop**: one epoch of fakeproof's own loop (``fakeproof.train._fit``: the LMDB face store
  read and decoded by the loader, per-epoch reseeding, the step of every precision, the resume
  state written after the epoch) with validation scoring replaced by a no-op;
- **bare loop**: the images preloaded as one tensor, forward + backward + AdamW step, nothing else.

It ends with ``train loop / bare loop: R.RRx`` (the worst row; goal >= 0.95x), then each
adversarial step's cost over a clean step (PGD-k crafting in eval mode + the training step; goal
PGD-k <= (k+1)x, as k forward+backward passes of crafting plus one of training).

``memory``: peak RSS of one training epoch (smallcnn, 128 px PNG store) on the demo's number of
training faces and on 10x that, each in a fresh process: memory must stay flat in the dataset's
size (the loader reads crops from the LMDB store on demand; only the face index is in memory).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakeproof.attacks import pgd
from fakeproof.config import default_params, params_from_dict
from fakeproof.data import FaceDataset
from fakeproof.models import create_model
from fakeproof.runtime import Runtime
from fakeproof.store import FaceStoreWriter, face_key
from fakeproof.train import _fit, weighted_bce


def build_store(root: Path, n: int, size: int, encoding: str) -> Path:
    rng = np.random.default_rng(0)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding=encoding) as w:
        for i in range(n):
            vid = f"v{i:04d}"
            img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            w.put(face_key(vid, 0, 0), img)
            faces.append({"key": face_key(vid, 0, 0), "video_id": vid, "frame": 0, "face": 0,
                          "x1": 0, "y1": 0, "x2": size, "y2": size, "prob": 1.0,
                          "box_source": "self"})
            splits.append({"video_id": vid, "label": i % 2, "split": "train", "group": vid,
                           "method": "m" if i % 2 else "real", "source": "bench", "n_faces": 1})
    pd.DataFrame(faces).to_csv(root / "faces.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "splits.csv", index=False)
    return root


def loop_rate(root: Path, size: int, threads: int, batch: int) -> float:
    tp = params_from_dict(default_params()).train
    tp = tp.__class__(**{**tp.__dict__, "batch_size": batch, "threads": threads, "num_workers": 0,
                         "epochs": 1, "augment": False})
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "train")
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small")
    rt = Runtime(torch.device("cpu"), None, channels_last=False)

    def step(net, module, x, y, gen, weights, progress):
        return weighted_bce(net(x), y, weights)

    t0 = time.perf_counter()
    _fit(model, ds, tp, rt, 1, 1e-3, 0, step, lambda m: {"select": 0.0},
         root / "tb", "bench", root / "resume.pt", "fp")
    return len(ds) / (time.perf_counter() - t0)


def bare_rate(n: int, size: int, batch: int) -> float:
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small").train()
    x_all = torch.rand(n, 3, size, size)
    y_all = (torch.arange(n) % 2).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    w = torch.ones(2)
    for s in range(0, 2 * batch, batch):  # warm-up, as the train loop's first run is
        loss = weighted_bce(model(x_all[s:s + batch]), y_all[s:s + batch], w)
        loss.backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        loss = weighted_bce(model(x_all[s:s + batch]), y_all[s:s + batch], w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def step_costs(size: int, batch: int, k: int, reps: int = 3) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = (torch.arange(batch) % 2).float()
    w = torch.ones(2)
    gen = torch.Generator().manual_seed(0)

    def clean():
        loss = weighted_bce(model(x), y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def adv():
        model.eval()
        a = pgd(model, x, y.long(), eps=4 / 255, steps=k, generator=gen)
        model.train()
        loss = weighted_bce(model(a), y, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {}
    for name, fn in (("clean", clean), (f"pgd{k}", adv)):
        fn()  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps
    return out


def _epoch_peak_rss(n: int) -> float:
    """Peak RSS (MiB) of a fresh process that trains smallcnn one epoch on ``n`` faces."""
    import subprocess
    import sys

    code = f"""
import resource, sys, tempfile, torch
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_train import build_store
from fakeproof.config import default_params, params_from_dict
from fakeproof.data import FaceDataset
from fakeproof.models import create_model
from fakeproof.runtime import Runtime
from fakeproof.train import _fit, weighted_bce
torch.set_num_threads(2)
with tempfile.TemporaryDirectory() as d:
    root = build_store(Path(d), {n}, 128, "png")
    tp = params_from_dict(default_params()).train
    tp = tp.__class__(**{{**tp.__dict__, "epochs": 1, "augment": "light"}})
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "train", augment=True)
    step = lambda net, module, x, y, gen, w, progress: weighted_bce(net(x), y, w)
    _fit(create_model("smallcnn"), ds, tp, Runtime(torch.device("cpu"), None, False), 1, 1e-3, 0, step,
         lambda m: {{"select": 0.0}}, root / "tb", "mem", None, "fp")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory(small: int, large: int) -> None:
    rows = [{"train faces": n, "peak RSS MiB": round(_epoch_peak_rss(n), 1)} for n in (small, large)]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"peak RSS {large} / {small} faces: {rows[1]['peak RSS MiB'] / rows[0]['peak RSS MiB']:.2f}x")


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        mp = argparse.ArgumentParser(description="peak RSS of a training epoch, N vs 10N faces")
        mp.add_argument("--small", type=int, default=432)
        mp.add_argument("--large", type=int, default=4320)
        a = mp.parse_args(sys.argv[2:])
        memory(a.small, a.large)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--encoding", default="png", choices=["png", "jpeg", "raw"])
    ap.add_argument("--pgd-steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as d:
            root = build_store(Path(d), args.images, size, args.encoding)
            loop_rate(root, size, args.threads, args.batch)  # warm-up (allocator, page cache)
            loop = loop_rate(root, size, args.threads, args.batch)
        bare = bare_rate(args.images, size, args.batch)
        cost = step_costs(size, args.batch, args.pgd_steps)
        rows.append({"model": "mobilenet_v3_small", "size": size, "encoding": args.encoding,
                     "train loop img/s": round(loop, 1), "bare loop img/s": round(bare, 1),
                     "ratio": round(loop / bare, 3),
                     f"PGD-{args.pgd_steps} step / clean step": round(
                         cost[f"pgd{args.pgd_steps}"] / cost["clean"], 2)})
    table = pd.DataFrame(rows)
    print(f"threads {args.threads}, batch {args.batch}, {args.images} images, CPU")
    print(table.to_string(index=False))
    print(f"train loop / bare loop: {table['ratio'].min():.2f}x")
    print(f"PGD-{args.pgd_steps} step / clean step: {table.iloc[:, -1].max():.2f}x "
          f"(goal <= {args.pgd_steps + 1}x)")


if __name__ == "__main__":
    main()
