"""Benchmark the common-corruption sweep of the evaluate stage against a clean forward pass.

    python benchmarks/bench_corruptions.py [--data DIR --clean PT --robust PT] [--params FILE]
        [--severities 1 2 3 4 5] [--threads 2] [--videos 18 --frames 8] [--evaluate]

Without ``--data``: a demo-sized test set (18 videos x 8 face crops of 128 px cut from the shipped
photos, drifting a pixel per frame, stored as PNG like the demo) and two fresh ``smallcnn``
models (the cost does not depend on the weights). With ``--data``: the test split of a
pipeline's data folder (``faces.lmdb``, ``faces.csv``, ``splits.csv``) and its checkpoints.

Prints, per corruption, the milliseconds per face spent corrupting (mean over the severities)
and scoring the corrupted crops with both models, each also as a multiple of one clean forward
pass of one model over the same faces (loading and decoding included, as evaluate's clean pass);
then the whole sweep (every corruption x severity, both models) and its metrics (bootstrap
intervals). With ``--evaluate`` (needs ``--data`` and the checkpoints) it runs the evaluate stage
twice, with ``eval.corruptions: []`` and as ``--params`` has it, and prints the share of the
stage's time that the sweep adds (the goal: at most a third on the demo, 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from _photos import load_photos
from fakeproof.config import CORRUPTION_NAMES, load_params, params_from_dict, default_params
from fakeproof.corruption_sweep import corrupted_logits
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.evaluate import corruption_results, level_metrics
from fakeproof.models import create_model, load_checkpoint
from fakeproof.predict import logits_of
from fakeproof.store import FaceStoreWriter, face_key


def demo_like_store(root: Path, videos: int, frames: int, size: int) -> DataPaths:
    """``videos`` x ``frames`` crops of ``size`` px from the shipped photos, PNG in an LMDB store."""
    photos = load_photos(None)
    rows, split_rows = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding="png") as w:
        for v in range(videos):
            photo = photos[v % len(photos)]
            h, wd = photo.shape[:2]
            side = int(min(h, wd) * 0.6)
            y0, x0 = (h - side) // 2, (wd - side) // 2
            for f in range(frames):
                crop = photo[y0 + f:y0 + f + side, x0 + f:x0 + f + side]
                img = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
                key = face_key(f"v{v:03d}", f, 0)
                w.put(key, img)
                rows.append({"key": key, "video_id": f"v{v:03d}", "frame": f, "face": 0})
            split_rows.append({"video_id": f"v{v:03d}", "label": v % 2, "split": "test",
                               "group": f"v{v:03d}", "method": "m" if v % 2 else "real", "source": "bench"})
    pd.DataFrame(rows).to_csv(root / "faces.csv", index=False)
    pd.DataFrame(split_rows).to_csv(root / "splits.csv", index=False)
    return DataPaths(root / "faces.lmdb", root / "faces.csv", root / "splits.csv")


def clean_pass_seconds(model: torch.nn.Module, ds: FaceDataset, batch_size: int) -> float:
    logits_of(model, make_loader(ds, batch_size), "warm-up")
    t0 = time.perf_counter()
    logits_of(model, make_loader(ds, batch_size), "clean")
    return time.perf_counter() - t0


def evaluate_share(params_file: str | None, data: DataPaths, checkpoints: dict[str, Path]) -> None:
    from fakeproof.evaluate import run_evaluate

    params = load_params(params_file) if params_file else params_from_dict(default_params())
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, ep in (("without corruptions", dataclasses.replace(params.eval, corruptions=[])),
                          ("with corruptions", params.eval)):
            p = dataclasses.replace(params, eval=ep)
            t0 = time.perf_counter()
            run_evaluate(p, data, checkpoints, tmp / "h.json", tmp / "d.json", tmp / "plots",
                         out_corruptions=tmp / "c.json")
            times[label] = time.perf_counter() - t0
    base, full = times["without corruptions"], times["with corruptions"]
    print(f"\nevaluate stage, {len(params.eval.corruptions)} corruptions x severities "
          f"{params.eval.corruption_severities}:")
    print("| evaluate | seconds |\n| --- | --- |")
    for k, v in times.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| sweep adds | {full - base:.1f} s = {(full - base) / base:.0%} of the stage without it |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a pipeline's data folder (default: a demo-sized synthetic set)")
    ap.add_argument("--clean", help="clean checkpoint (default: a fresh smallcnn)")
    ap.add_argument("--robust", help="robust checkpoint (default: a fresh smallcnn)")
    ap.add_argument("--params", help="params file for --evaluate (default: the code defaults)")
    ap.add_argument("--corruptions", nargs="+", default=list(CORRUPTION_NAMES))
    ap.add_argument("--severities", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--videos", type=int, default=18)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--evaluate", action="store_true", help="also time the evaluate stage with and "
                    "without the sweep (needs --data, --clean, --robust)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = (DataPaths.under(args.data) if args.data else
                demo_like_store(Path(tmp), args.videos, args.frames, args.size))
        ds = FaceDataset(data.store, data.faces_csv, data.splits_csv, "test")
        models = {}
        for name, path in (("clean", args.clean), ("robust", args.robust)):
            torch.manual_seed(0)
            models[name] = (load_checkpoint(path)[0] if path else create_model("smallcnn")).eval()
        n = len(ds)
        clean_s = clean_pass_seconds(models["clean"], ds, args.batch_size)
        clean_ms = 1000 * clean_s / n
        print(f"{n} test faces ({ds.frames['video_id'].nunique()} videos), "
              f"{ds[0][0].shape[-1]} px, {args.threads} threads; one clean pass of one model: "
              f"{clean_s:.2f} s ({clean_ms:.2f} ms/face)\n")
        print("| corruption | corrupt ms/face | score ms/face (2 models) | total / clean pass |")
        print("| --- | --- | --- | --- |")
        k = len(args.severities)
        for c in args.corruptions:
            sw = corrupted_logits(models, ds, [c], args.severities, seed=0, batch_size=args.batch_size)
            cor, fwd = 1000 * sw.corrupt_s[c] / n / k, 1000 * sw.forward_s / n / k
            print(f"| {c} | {cor:.2f} | {fwd:.2f} | {(cor + fwd) / clean_ms:.1f}x |")

        t0 = time.perf_counter()
        sweep = corrupted_logits(models, ds, args.corruptions, args.severities, seed=0,
                                 batch_size=args.batch_size)
        sweep_s = time.perf_counter() - t0
        from fakeproof.config import EvalParams

        ep = EvalParams(corruptions=args.corruptions, corruption_severities=args.severities,
                        bootstrap=args.bootstrap, batch_size=args.batch_size)
        frames = ds.frames.reset_index(drop=True)
        results = {}
        for name, m in models.items():
            z, _ = logits_of(m, make_loader(ds, args.batch_size), name)
            results[name] = {"test_clean": level_metrics(frames, z, ep.video_agg, ep.bootstrap)}
        t0 = time.perf_counter()
        corruption_results(frames, sweep, results, ep)
        metrics_s = time.perf_counter() - t0
        cells = len(args.corruptions) * k
        print(f"\nwhole sweep: {len(args.corruptions)} corruptions x {k} severities = {cells} cells, "
              f"2 models: {sweep_s:.1f} s (corrupting {sum(sweep.corrupt_s.values()):.1f} s, "
              f"scoring {sweep.forward_s:.1f} s) = {sweep_s / clean_s:.0f} clean passes; metrics "
              f"with {args.bootstrap} bootstrap draws: {metrics_s:.1f} s")
        if args.evaluate:
            if not (args.data and args.clean and args.robust):
                raise SystemExit("--evaluate needs --data, --clean and --robust")
            evaluate_share(args.params, data, {"clean": Path(args.clean), "robust": Path(args.robust)})


if __name__ == "__main__":
    main()
