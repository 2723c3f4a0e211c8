"""Benchmark the training loop against a bare torch loop, and adversarial steps against clean ones.

    python benchmarks/bench_train.py [--images 512] [--repeats 3] [--sizes 128 224] [--threads 2]
                                      [--encoding png] [--pgd-steps 5]
    python benchmarks/bench_train.py memory [--small 432] [--large 4320]
    python benchmarks/bench_train.py gpu [--models mobilenet_v3_small resnet50] [--size 224]
                                         [--images 8192] [--adv-images 2048] [--batch 256]

For mobilenet_v3_small (one logit) at each input size, on the same images, batch, threads and
optimiser:

- **train loop**: one epoch of fakeproof's own loop (``fakeproof.fit.fit``: the LMDB face store
  read and decoded by the loader, per-epoch reseeding, the step of every precision, the resume
  state written after the epoch) with validation scoring replaced by a no-op;
- **bare loop**: the images preloaded as one tensor, forward + backward + AdamW step, nothing else;
- **no-prefetch ratio**: the train loop with ``fakeproof.fit.PREFETCH_DEPTH = 0`` (each batch read,
  decoded and collated in the main thread between steps, as before the background prefetch of
  :class:`fakeproof.data.Prefetched`) over the bare loop: what the prefetch thread buys.

Both channels-last, as the stages train on every device.

It ends with ``train loop / bare loop: R.RRx`` (the worst row; goal >= 0.95x), then each
adversarial step's cost over a clean step (PGD-k crafting in eval mode + the training step; goal
PGD-k <= (k+1)x, as k forward+backward passes of crafting plus one of training).

``memory``: peak RSS of one training epoch (smallcnn, 128 px PNG store) on the demo's number of
training faces and on 10x that, each in a fresh process: memory must stay flat in the dataset's
size (the loader reads crops from the LMDB store on demand; only the face index is in memory).

``gpu``: on a CUDA device, per model at 224 px with bf16 autocast and channels_last: the loader
alone (JPEG crops from the LMDB store, ``train.num_workers: -1``: every core but one, pinned memory), one
epoch of fakeproof's clean training loop, a bare loop on images already on the GPU, and one epoch
of PGD-5 adversarial fine-tuning through ``adv_finetune``'s own objective (examples crafted in
float32). Each loop runs once untimed first (cudnn.benchmark autotuning, worker start-up, the
allocator). The resume state is not written in this mode (its cost is per epoch, so a
8k-image epoch would overstate it against an FF++ epoch of 160k faces).
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
from fakeproof.fit import fit, weighted_bce
from fakeproof.train import _clean_loss

CL = torch.channels_last  # the memory format the stages train in (fakeproof/runtime.py)


def build_store(root: Path, n: int, size: int, encoding: str) -> Path:
    rng = np.random.default_rng(0)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding=encoding) as w:
        for i in range(n):
            vid = f"v{i:04d}"
            img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            w.put(face_key(vid, 0, 0), img)
            _index(faces, splits, i, vid, size)
    return _write_index(root, faces, splits)


def _index(faces: list, splits: list, i: int, vid: str, size: int) -> None:
    """The faces.csv and splits.csv rows of bench image ``i`` (one face, train split)."""
    faces.append({"key": face_key(vid, 0, 0), "video_id": vid, "frame": 0, "face": 0,
                  "x1": 0, "y1": 0, "x2": size, "y2": size, "prob": 1.0, "box_source": "self"})
    splits.append({"video_id": vid, "label": i % 2, "split": "train", "group": vid,
                   "method": "m" if i % 2 else "real", "source": "bench", "n_faces": 1})


def _write_index(root: Path, faces: list, splits: list) -> Path:
    pd.DataFrame(faces).to_csv(root / "faces.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "splits.csv", index=False)
    return root


def loop_rate(root: Path, size: int, threads: int, batch: int, prefetch: int = 2) -> float:
    """img/s of one epoch of ``fit`` with ``prefetch`` batches loaded ahead by a background
    thread (``fakeproof.fit.PREFETCH_DEPTH``; 0: every batch loaded between steps)."""
    import fakeproof.fit as fit_mod

    fit_mod.PREFETCH_DEPTH = prefetch
    tp = params_from_dict(default_params()).train
    tp = tp.__class__(**{**tp.__dict__, "batch_size": batch, "threads": threads, "num_workers": 0,
                         "epochs": 1, "augment": False})
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "train")
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small")
    rt = Runtime(torch.device("cpu"), None, channels_last=True)  # as runtime.setup on the CPU

    def step(net, module, x, y, gen, weights, progress):
        return weighted_bce(net(x), y, weights)

    # a resume state left by the previous run (same fingerprint, epoch 1 of 1) would skip training
    (root / "resume.pt").unlink(missing_ok=True)
    t0 = time.perf_counter()
    fit(model, ds, tp, rt, 1, 1e-3, 0, step, lambda m: {"select": 0.0},
         root / "tb", "bench", root / "resume.pt", "fp")
    return len(ds) / (time.perf_counter() - t0)


def bare_rate(n: int, size: int, batch: int) -> float:
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small").to(memory_format=CL).train()
    x_all = torch.rand(n, 3, size, size).contiguous(memory_format=CL)
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
    model = create_model("mobilenet_v3_small").to(memory_format=CL).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=CL)
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
from fakeproof.fit import fit, weighted_bce
torch.set_num_threads(2)
with tempfile.TemporaryDirectory() as d:
    root = build_store(Path(d), {n}, 128, "png")
    tp = params_from_dict(default_params()).train
    tp = tp.__class__(**{{**tp.__dict__, "epochs": 1, "augment": "light"}})
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "train", augment=True)
    step = lambda net, module, x, y, gen, w, progress: weighted_bce(net(x), y, w)
    fit(create_model("smallcnn"), ds, tp, Runtime(torch.device("cpu"), None, True), 1, 1e-3, 0, step,
         lambda m: {{"select": 0.0}}, root / "tb", "mem", None, "fp")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def memory(small: int, large: int) -> None:
    rows = [{"train faces": n, "peak RSS MiB": round(_epoch_peak_rss(n), 1)} for n in (small, large)]
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"peak RSS {large} / {small} faces: {rows[1]['peak RSS MiB'] / rows[0]['peak RSS MiB']:.2f}x")


def smooth_store(root: Path, n: int, size: int) -> Path:
    """Like :func:`build_store`, with smooth face-sized JPEG crops (random 14x14 colour fields
    upsampled, plus mild noise): real crops compress like this, white noise does not."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding="jpeg") as w:
        for s in range(0, n, 256):
            m = min(256, n - s)
            base = F.interpolate(torch.rand(m, 3, 14, 14, generator=gen), size=size, mode="bilinear")
            imgs = ((base + 0.03 * torch.randn(m, 3, size, size, generator=gen)).clamp(0, 1) * 255)
            imgs = imgs.to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j in range(m):
                i = s + j
                vid = f"v{i:05d}"
                w.put(face_key(vid, 0, 0), imgs[j])
                _index(faces, splits, i, vid, size)
    return _write_index(root, faces, splits)


def gpu(models: list[str], size: int, n: int, n_adv: int, batch: int, steps: int,
        device: str = "cuda") -> None:
    from fakeproof.config import AdvParams
    from fakeproof.fit import train_loader
    from fakeproof.train import _objective_loss

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_train.py gpu: torch sees no CUDA device (--device cpu: a dry run)")
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    rt = Runtime(dev, torch.bfloat16 if dev.type == "cuda" else None, channels_last=True)
    base = params_from_dict(default_params())
    tp = base.train.__class__(**{**base.train.__dict__, "batch_size": batch, "num_workers": -1,
                                 "epochs": 1, "augment": False, "device": device,
                                 "amp": "bf16" if dev.type == "cuda" else "off"})
    ap = AdvParams(**{**base.adv.__dict__, "steps": steps, "clean_share": 0.0})
    clean_step = _clean_loss(rt)  # pretrain's own step
    rows = []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        smooth_store(Path(d) / "clean", n, size)
        smooth_store(Path(d) / "adv", n_adv, size)
        print(f"stores of {n} and {n_adv} JPEG crops of {size} px built in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

        def ds_of(name):
            r = Path(d) / name
            return FaceDataset(r / "faces.lmdb", r / "faces.csv", r / "splits.csv", "train")

        ds, ds_adv = ds_of("clean"), ds_of("adv")
        loader = {}
        for workers in (0, -1, -1):  # -1: train.num_workers auto (cores - 1 on CUDA); warm second
            tw = tp.__class__(**{**tp.__dict__, "num_workers": workers})
            t0 = time.perf_counter()
            seen = sum(len(y) for _x, y, _ in train_loader(ds, tw, rt, 0, 0))
            loader[workers] = seen / (time.perf_counter() - t0)
        print(f"loader alone: {loader[0]:.0f} img/s in the main process, {loader[-1]:.0f} img/s "
              "with train.num_workers auto", flush=True)
        loader = loader[-1]

        def fit_rate(model_name, data, step):
            rates = []
            for _ in range(2):  # untimed, then timed
                torch.manual_seed(0)
                model = create_model(model_name)
                t0 = time.perf_counter()
                fit(model, data, tp, rt, 1, 1e-3, 0, step, lambda m: {"select": 0.0},
                     Path(d) / "tb", "bench", None, "fp")
                rates.append(len(data) / (time.perf_counter() - t0))
            return rates[-1]

        for name in models:
            clean = fit_rate(name, ds, clean_step)
            bare = bare_gpu_rate(name, n, size, batch, rt)
            adv = fit_rate(name, ds_adv, _objective_loss(rt, ap))
            rows.append({"model": name, "size": size, "batch": batch, "loader img/s": round(loader),
                         "train loop img/s": round(clean), "bare loop img/s": round(bare),
                         "ratio": round(clean / bare, 3), f"PGD-{steps} fine-tune img/s": round(adv),
                         "clean / PGD": round(clean / adv, 2)})
            print(rows[-1], flush=True)
        repeat_check(ds_adv, tp)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    print(f"\n{where}, torch {torch.__version__}, bf16 autocast, "
          f"channels_last, cudnn.benchmark; {n} clean / {n_adv} PGD images per epoch")
    print(pd.DataFrame(rows).to_string(index=False))


def repeat_check(ds: FaceDataset, tp) -> None:
    """Two runs of one pretrain epoch with ``train.deterministic: true`` (runtime.setup: seeded,
    deterministic algorithms in warn-only mode on CUDA, cudnn.benchmark off): are the weights
    identical? Printed, not asserted (CUDA has kernels without a deterministic version)."""
    import warnings

    from fakeproof import runtime

    tpd = tp.__class__(**{**tp.__dict__, "deterministic": True})
    states = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            rt = runtime.setup(tpd, 0)
            model = create_model("mobilenet_v3_small")
            fit(model, ds, tpd, rt, 1, 1e-3, 0, _clean_loss(rt), lambda m: {"select": 0.0},
                 Path(tempfile.gettempdir()) / "tb_repeat", "repeat", None, "fp")
            states.append({k: v.clone() for k, v in model.state_dict().items()
                           if isinstance(v, torch.Tensor)})
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in
               zip(states[0].values(), states[1].values()))
    ops = sorted({str(w.message).split(" does not have")[0] for w in caught
                  if "deterministic" in str(w.message)})
    print(f"deterministic repeat ({len(ds)} images, mobilenet_v3_small, amp {tpd.amp}): weights "
          f"{'identical' if diff == 0 else 'differ'}; max abs difference {diff:.3g}; ops without "
          f"a deterministic kernel: {', '.join(ops) or 'none'}", flush=True)


def bare_gpu_rate(name: str, n: int, size: int, batch: int, rt: Runtime) -> float:
    """A bare bf16 loop on images already on the GPU (the ceiling of the training loop)."""
    torch.manual_seed(0)
    model = create_model(name).to(rt.device).to(memory_format=torch.channels_last).train()
    x_all = torch.rand(batch * 8, 3, size, size, device=rt.device).contiguous(
        memory_format=torch.channels_last)
    y_all = (torch.arange(batch * 8, device=rt.device) % 2).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    w = torch.ones(2, device=rt.device)
    steps = max(8, n // batch)
    step = _clean_loss(rt)  # pretrain's own step: autocast + class-weighted BCE

    def run(k):
        for i in range(k):
            s = (i % 8) * batch
            loss = step(model, model, x_all[s:s + batch], y_all[s:s + batch], None, w, 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if rt.device.type == "cuda":
            torch.cuda.synchronize()

    run(8)
    t0 = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "gpu":
        gp = argparse.ArgumentParser(description="training img/s on a CUDA device")
        gp.add_argument("--models", nargs="+", default=["mobilenet_v3_small", "resnet50"])
        gp.add_argument("--size", type=int, default=224)
        gp.add_argument("--images", type=int, default=8192)
        gp.add_argument("--adv-images", type=int, default=2048)
        gp.add_argument("--batch", type=int, default=256)
        gp.add_argument("--pgd-steps", type=int, default=5)
        gp.add_argument("--device", default="cuda", help="cpu: a dry run of this mode")
        a = gp.parse_args(sys.argv[2:])
        gpu(a.models, a.size, a.images, a.adv_images, a.batch, a.pgd_steps, a.device)
        return

    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        mp = argparse.ArgumentParser(description="peak RSS of a training epoch, N vs 10N faces")
        mp.add_argument("--small", type=int, default=432)
        mp.add_argument("--large", type=int, default=4320)
        a = mp.parse_args(sys.argv[2:])
        memory(a.small, a.large)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each loop (the best counts)")
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
            # best of N for every loop: on a shared machine one run can lose 20 % to a neighbour
            loop = max(loop_rate(root, size, args.threads, args.batch) for _ in range(args.repeats))
            inline = max(loop_rate(root, size, args.threads, args.batch, prefetch=0)
                         for _ in range(args.repeats))
        bare = max(bare_rate(args.images, size, args.batch) for _ in range(args.repeats))
        cost = step_costs(size, args.batch, args.pgd_steps)
        rows.append({"model": "mobilenet_v3_small", "size": size, "encoding": args.encoding,
                     "train loop img/s": round(loop, 1), "bare loop img/s": round(bare, 1),
                     "ratio": round(loop / bare, 3), "no-prefetch ratio": round(inline / bare, 3),
                     f"PGD-{args.pgd_steps} step / clean step": round(
                         cost[f"pgd{args.pgd_steps}"] / cost["clean"], 2)})
    table = pd.DataFrame(rows)
    print(f"threads {args.threads}, batch {args.batch}, {args.images} images, CPU")
    print(table.to_string(index=False))
    print(f"train loop / bare loop: {table['ratio'].min():.2f}x (goal >= 0.95x; without the "
          f"prefetch thread {table['no-prefetch ratio'].min():.2f}x)")
    print(f"PGD-{args.pgd_steps} step / clean step: {table.iloc[:, -1].max():.2f}x "
          f"(goal <= {args.pgd_steps + 1}x)")


if __name__ == "__main__":
    main()
