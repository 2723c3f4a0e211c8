"""Benchmark the training loop against a bare torch loop, and adversarial steps against clean ones.

    python benchmarks/bench_train.py [--images 512] [--repeats 3] [--sizes 128 224] [--threads 2]
                                      [--encoding png] [--pgd-steps 5]
    python benchmarks/bench_train.py memory [--small 432] [--large 4320]
    python benchmarks/bench_train.py gpu [--models mobilenet_v3_small resnet50] [--size 224]
                                         [--images 8192] [--adv-images 2048] [--batch 256]
                                         [--pgd-steps 5] [--check-images N] [--device cuda]

For mobilenet_v3_small (one logit) at each input size, on the same images, batch, threads and
optimiser:

- **train loop**: one epoch of fakeproof's own loop (``fakeproof.fit.fit``: the LMDB face store
  read and decoded by the loader, per-epoch reseeding, the step of every precision, the resume
  state written after the epoch) with validation scoring replaced by a no-op;
- **bare loop**: the images preloaded as one tensor, forward + backward + AdamW step, nothing else;
- **prefetch ratio**: the train loop with a background thread loading 2 batches ahead forced on
  (:class:`fakeproof.data.Prefetched`) over the bare loop. fakeproof starts that thread only when
  a core is left over by ``train.threads`` (``fakeproof.fit.prefetch_depth``); the **train loop**
  column is fakeproof's own choice (on 2 cores and 2 threads: batches load between steps).

Both channels-last, as the stages train on every device.

It ends with ``train loop / bare loop: R.RRx`` (the worst row; goal >= 0.95x), then each
adversarial step's cost over a clean step (PGD-k crafting in eval mode + the training step; goal
PGD-k <= (k+1)x, as k forward+backward passes of crafting plus one of training).

``memory``: peak RSS of one training epoch (smallcnn, 128 px PNG store) on the demo's number of
training faces and on 10x that, each in a fresh process: memory must stay flat in the dataset's
size (the loader reads crops from the LMDB store on demand; only the face index is in memory).

``gpu``: on a CUDA device, per model at 224 px with bf16 autocast and channels_last, on smooth
JPEG crops in the LMDB store (:func:`smooth_store`): the loader alone (``train.num_workers: -1``:
every core but one, pinned memory) decoding on the CPU (``train.decode: cpu``: float32 crops out
of the workers) and through the device feed (``train.decode: device``: JPEG bytes out of the
workers, one batched nvJPEG decode on the GPU, :mod:`fakeproof.device_feed`); one epoch of
fakeproof's clean training loop with each; a bare loop on images already on the GPU; one epoch of
PGD-k adversarial fine-tuning through ``adv_finetune``'s own objective (device feed) with the
examples crafted in float32 and with ``adv.craft_precision: amp`` (bf16 autocast). Ratios and the
goals of issue 25 are printed: train loop (device feed) >= 0.8x the bare loop for
mobilenet_v3_small, >= 0.9x for resnet50; PGD-k fine-tuning >= 0.8x of (bare img/s) / (k + 1).
Then the crafting-precision check: both fine-tunings start from the same clean weights (the
device-feed epoch's) on the same images, and each model's clean and PGD-10 accuracy (float32, at
the training eps) on held-out crops says whether crafting in bf16 is exact enough. Each loop runs
once untimed first (cudnn.benchmark autotuning, worker start-up, the allocator). The resume state
is not written in this mode (its cost is per epoch, so a 8k-image epoch would overstate it
against an FF++ epoch of 160k faces). ``--device cpu`` is a dry run of the same code (e.g.
``--images 64 --adv-images 32 --size 64 --batch 16``): its numbers say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

import fakeproof.fit as fit_module
from fakeproof.attacks import pgd
from fakeproof.config import default_params, params_from_dict
from fakeproof.data import FaceDataset
from fakeproof.models import create_model
from fakeproof.runtime import Runtime
from fakeproof.store import FaceStoreWriter, face_key
from fakeproof.fit import _cpu_copy, fit, weighted_bce
from fakeproof.train import _clean_loss

CL = torch.channels_last  # the memory format the stages train in (fakeproof/runtime.py)
_ORIGINAL_DEPTH = fit_module.prefetch_depth


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


def _index(faces: list, splits: list, i: int, vid: str, size: int, frame: int = 0,
           split: str = "train", frames: int = 1) -> None:
    """The faces.csv row of frame ``frame`` (one face) of bench video ``i``, and with its first
    frame the video's splits.csv row (label ``i % 2``, in ``split``, ``frames`` faces)."""
    faces.append({"key": face_key(vid, frame, 0), "video_id": vid, "frame": frame, "face": 0,
                  "x1": 0, "y1": 0, "x2": size, "y2": size, "prob": 1.0, "box_source": "self"})
    if frame == 0:
        splits.append({"video_id": vid, "label": i % 2, "split": split, "group": vid,
                       "method": "m" if i % 2 else "real", "source": "bench", "n_faces": frames})


def _write_index(root: Path, faces: list, splits: list) -> Path:
    pd.DataFrame(faces).to_csv(root / "faces.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "splits.csv", index=False)
    return root


def loop_rate(root: Path, size: int, threads: int, batch: int, prefetch: Optional[int] = None
              ) -> float:
    """img/s of one epoch of ``fit``; ``prefetch``: batches loaded ahead by a background thread,
    forced (0: every batch loaded between steps); None: fakeproof's choice (``prefetch_depth``)."""
    fit_module.prefetch_depth = _ORIGINAL_DEPTH if prefetch is None else (lambda: prefetch)
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


def smooth_store(root: Path, n: int, size: int, cue: float = 0.1, seed: int = 0, frames: int = 1,
                 split: str = "train") -> Path:
    """Like :func:`build_store`, with smooth face-sized JPEG crops (random 14x14 colour fields
    upsampled, plus mild noise): real crops compress like this, white noise does not. ``n``
    faces, ``frames`` per video, every video in ``split``. Fakes (odd videos) have their red
    channel raised by ``cue``: something to learn, so that robust accuracies mean something."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding="jpeg") as w:
        for s in range(0, n, 256):
            m = min(256, n - s)
            base = F.interpolate(torch.rand(m, 3, 14, 14, generator=gen), size=size, mode="bilinear")
            base[((torch.arange(s, s + m) // frames) % 2) == 1, 0] += cue
            imgs = ((base + 0.03 * torch.randn(m, 3, size, size, generator=gen)).clamp(0, 1) * 255)
            imgs = imgs.to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j in range(m):
                v, f = divmod(s + j, frames)
                vid = f"v{v:05d}"
                w.put(face_key(vid, f, 0), imgs[j])
                _index(faces, splits, v, vid, size, f, split, frames)
    return _write_index(root, faces, splits)


#: the goals of issue 25 on one H100 / H200: train loop over bare loop per model (others: 0.8),
#: and PGD-k fine-tuning over (bare clean img/s) / (k + 1)
GOAL = {"mobilenet_v3_small": 0.8, "resnet50": 0.9}
ADV_GOAL = 0.8


def gpu(models: list[str], size: int, n: int, n_adv: int, batch: int, steps: int,
        device: str = "cuda", n_check: int = 0) -> None:
    from fakeproof.config import AdvParams

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_train.py gpu: torch sees no CUDA device (--device cpu: a dry run)")
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    rt = Runtime(dev, torch.bfloat16 if dev.type == "cuda" else None, channels_last=True)
    base = params_from_dict(default_params())
    tp = base.train.__class__(**{**base.train.__dict__, "batch_size": batch, "num_workers": -1,
                                 "epochs": 1, "augment": False, "device": device, "decode": "cpu",
                                 "amp": "bf16" if dev.type == "cuda" else "off"})
    ap = AdvParams(**{**base.adv.__dict__, "steps": steps, "clean_share": 0.0, "warmup_epochs": 0})
    n_check = n_check or max(64, n_adv // 4)
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        for name, count, seed in (("clean", n, 0), ("adv", n_adv, 1), ("check", n_check, 2)):
            smooth_store(Path(d) / name, count, size, seed=seed)
        print(f"stores of {n}, {n_adv} and {n_check} (held out) JPEG crops of {size} px built in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)

        def ds_of(name):
            r = Path(d) / name
            return FaceDataset(r / "faces.lmdb", r / "faces.csv", r / "splits.csv", "train")

        ds, ds_adv, ds_check = ds_of("clean"), ds_of("adv"), ds_of("check")
        loader = loader_rates(ds, tp, rt)
        for name in models:
            row, check = model_rows(name, ds, ds_adv, ds_check, tp, ap, rt, Path(d), size, batch,
                                    steps, loader)
            rows.append(row)
            checks.append(check)
            print(row, flush=True)
        repeat_check(ds_adv, tp)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    print(f"\n{where}, torch {torch.__version__}, {'bf16' if rt.amp_dtype else 'no'} autocast, "
          f"channels_last, cudnn.benchmark; {n} clean / {n_adv} PGD images per epoch; "
          f"{tp.batch_size} per batch; decode cpu: JPEG decoded in the loader workers; decode "
          "device: JPEG bytes to the device, nvJPEG there (fakeproof/device_feed.py)")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    for r in rows:
        print(f"{r['model']}: train loop (decode device) / bare {r['device / bare']:.2f}x (goal >= "
              f"{GOAL.get(r['model'], 0.8)}x, {'met' if r['device / bare'] >= GOAL.get(r['model'], 0.8) else 'NOT met'}); "
              f"PGD-{steps} fine-tune / (bare / {steps + 1}): float32 crafting "
              f"{r['adv f32 / goal base']:.2f}x, amp crafting {r['adv amp / goal base']:.2f}x "
              f"(goal >= {ADV_GOAL}x)")
    print(f"\ncrafting precision: PGD-{steps} fine-tuning ({n_adv} images, one epoch from the same "
          f"clean weights, eps {ap.eps * 255:.3g}/255), then PGD-10 at that eps in float32 on "
          f"{n_check} held-out images")
    print(pd.DataFrame(checks).to_string(index=False))


def loader_rates(ds: FaceDataset, tp, rt: Runtime) -> dict[str, float]:
    """img/s of the loader alone, ``train.num_workers`` auto: CPU decoding (float32 crops out of
    the workers) and the device feed (JPEG bytes out of the workers, decoded on the device)."""
    from fakeproof import device_feed
    from fakeproof.fit import train_loader

    out = {}
    for decode in ("cpu", "device", "cpu", "device"):  # warm runs second
        tw = tp.__class__(**{**tp.__dict__, "decode": decode})
        t0 = time.perf_counter()
        seen = 0
        for x, y, _ in train_loader(ds, tw, rt, 0, 0):
            x = device_feed.images(x, rt.device) if isinstance(x, device_feed.Packed) else x.to(rt.device)
            seen += len(y)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        out[decode] = seen / (time.perf_counter() - t0)
    print(f"loader alone, train.num_workers auto: {out['cpu']:.0f} img/s decoding on the CPU, "
          f"{out['device']:.0f} img/s decoding on {rt.device}", flush=True)
    return out


def model_rows(name: str, ds, ds_adv, ds_check, tp, ap, rt: Runtime, d: Path, size: int,
               batch: int, steps: int, loader: dict) -> tuple[dict, dict]:
    """One model's row (loops and ratios) and its crafting-precision check."""
    from fakeproof.train import _objective_loss

    def fit_rate(data, step, decode, start=None):
        tpd = tp.__class__(**{**tp.__dict__, "decode": decode})
        rates = []
        for _ in range(2):  # untimed, then timed
            torch.manual_seed(0)
            model = create_model(name)
            if start is not None:
                model.load_state_dict(start)
            t0 = time.perf_counter()
            fit(model, data, tpd, rt, 1, 1e-3, 0, step, lambda m: {"select": 0.0},
                d / "tb", "bench", None, "fp")
            rates.append(len(data) / (time.perf_counter() - t0))
        return rates[-1], model

    clean_step = _clean_loss(rt)  # pretrain's own step
    cpu_rate, _ = fit_rate(ds, clean_step, "cpu")
    dev_rate, clean_model = fit_rate(ds, clean_step, "device")
    start = _cpu_copy(clean_model.state_dict())
    bare = bare_gpu_rate(name, len(ds), size, batch, rt)
    adv, check = {}, {"model": name}
    for prec in ("float32", "amp"):
        apc = ap.__class__(**{**ap.__dict__, "craft_precision": prec})
        adv[prec], model = fit_rate(ds_adv, _objective_loss(rt, apc), "device", start)
        check[f"{prec} crafting img/s"] = round(adv[prec])
        check.update({f"{prec} {k}": v for k, v in robust_accuracy(model, ds_check, ap.eps, rt).items()})
    goal_base = bare / (steps + 1)
    row = {"model": name, "size": size, "batch": batch,
           "loader cpu img/s": round(loader["cpu"]), "loader device img/s": round(loader["device"]),
           "loop decode cpu img/s": round(cpu_rate), "loop decode device img/s": round(dev_rate),
           "bare loop img/s": round(bare), "cpu / bare": round(cpu_rate / bare, 3),
           "device / bare": round(dev_rate / bare, 3),
           f"PGD-{steps} f32 img/s": round(adv["float32"]), f"PGD-{steps} amp img/s": round(adv["amp"]),
           "adv f32 / goal base": round(adv["float32"] / goal_base, 3),
           "adv amp / goal base": round(adv["amp"] / goal_base, 3)}
    return row, check


def robust_accuracy(model: torch.nn.Module, ds: FaceDataset, eps: float, rt: Runtime) -> dict:
    """Clean and PGD-10 accuracy (L-inf ``eps``, step 2.5 eps / 10, random start, float32, seeded)
    of ``model`` at logit 0 on ``ds``."""
    from fakeproof.data import make_loader

    model = model.to(rt.device).to(memory_format=CL).eval()
    right = torch.zeros(2)
    n = 0
    for i, (x, y, _) in enumerate(make_loader(ds, 64)):
        x, y = rt.to_device(x), y.to(rt.device)
        adv = pgd(model, x, y.long(), eps=eps, alpha=2.5 * eps / 10, steps=10, seed=i)
        with torch.no_grad():
            for j, img in enumerate((x, adv)):
                right[j] += float(((model(img).reshape(-1) > 0).float() == y).sum())
        n += len(y)
    return {"clean acc": round(float(right[0]) / n, 4), "PGD-10 acc": round(float(right[1]) / n, 4)}


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
        gp.add_argument("--check-images", type=int, default=0,
                        help="held-out images of the crafting-precision check; 0: adv-images / 4")
        gp.add_argument("--device", default="cuda", help="cpu: a dry run of this mode")
        a = gp.parse_args(sys.argv[2:])
        gpu(a.models, a.size, a.images, a.adv_images, a.batch, a.pgd_steps, a.device,
            a.check_images)
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
            ahead = max(loop_rate(root, size, args.threads, args.batch, prefetch=2)
                        for _ in range(args.repeats))
        bare = max(bare_rate(args.images, size, args.batch) for _ in range(args.repeats))
        cost = step_costs(size, args.batch, args.pgd_steps)
        rows.append({"model": "mobilenet_v3_small", "size": size, "encoding": args.encoding,
                     "train loop img/s": round(loop, 1), "bare loop img/s": round(bare, 1),
                     "ratio": round(loop / bare, 3), "prefetch ratio": round(ahead / bare, 3),
                     f"PGD-{args.pgd_steps} step / clean step": round(
                         cost[f"pgd{args.pgd_steps}"] / cost["clean"], 2)})
    table = pd.DataFrame(rows)
    print(f"threads {args.threads}, batch {args.batch}, {args.images} images, CPU")
    print(table.to_string(index=False))
    print(f"train loop / bare loop: {table['ratio'].min():.2f}x (goal >= 0.95x; with the "
          f"prefetch thread forced on: {table['prefetch ratio'].min():.2f}x)")
    print(f"PGD-{args.pgd_steps} step / clean step: {table.iloc[:, -1].max():.2f}x "
          f"(goal <= {args.pgd_steps + 1}x)")


if __name__ == "__main__":
    main()
