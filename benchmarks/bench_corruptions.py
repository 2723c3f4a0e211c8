"""Benchmark the common-corruption sweep of the evaluate stage against a clean forward pass.

    python benchmarks/bench_corruptions.py [--data DIR --clean PT --robust PT] [--params FILE]
        [--severities 1 2 3 4 5] [--threads 2] [--videos 18 --frames 8] [--evaluate [--keep DIR]]

Without ``--data``: a demo-sized test set (18 videos x 8 face crops of 128 px cut from the shipped
photos, drifting a pixel per frame, stored as PNG like the demo) and two fresh ``smallcnn``
models (the cost does not depend on the weights). With ``--data``: the test split of a
pipeline's data folder (``faces.lmdb``, ``faces.csv``, ``splits.csv``) and its checkpoints.

Prints, per corruption, the milliseconds per face spent corrupting (mean over the severities)
and scoring the corrupted crops with both models, each also as a multiple of one clean forward
pass of one model over the same faces (loading and decoding included, as evaluate's clean pass);
then the whole sweep (every corruption x severity, both models) and its metrics (bootstrap
intervals). With ``--evaluate`` (needs ``--data`` and the checkpoints) it runs the evaluate stage
once as ``--params`` has it and prints the time the sweep takes against the rest of the stage
(the goal: the sweep adds at most a third to the demo's evaluate time on 2 cores).
"""

from __future__ import annotations

import argparse
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
from fakeproof.boundary import Boundary
from fakeproof.evaluate import corruption_results
from fakeproof.intervals import level_metrics
from fakeproof.models import create_model, load_checkpoint
from fakeproof.runtime import frozen_on
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


def evaluate_share(params_file: str | None, data: DataPaths, checkpoints: dict[str, Path],
                   keep: str | None) -> None:
    """One evaluate run with the sweep, its time split into the sweep (corrupting, scoring,
    metrics) and the rest, in wall and in CPU seconds of this process: both parts run at the same
    moment, so the share holds on a machine whose load changes (two separate runs, with and without
    the sweep, on the shared 2-core machine differed by more than the sweep itself)."""
    import fakeproof.evaluate as evaluate

    params = load_params(params_file) if params_file else params_from_dict(default_params())
    spent = {"wall": 0.0, "cpu": 0.0}

    def timed(fn):
        def wrapper(*a, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                spent["wall"] += time.perf_counter() - t0
                spent["cpu"] += time.process_time() - c0
        return wrapper

    evaluate.corrupted_logits = timed(evaluate.corrupted_logits)
    evaluate.corruption_results = timed(evaluate.corruption_results)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep or tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        evaluate.run_evaluate(params, data, checkpoints, out / "headline.json", out / "eval.json",
                              out / "plots", out_corruptions=out / "corruptions.json")
        total = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    ep = params.eval
    print(f"\nevaluate stage with {len(ep.corruptions)} corruptions x severities "
          f"{ep.corruption_severities} ({len(ep.attacks)} attacks x {len(ep.eps)} eps, "
          f"preset {ep.preset}):")
    print("| seconds | whole stage | corruption sweep | the rest | sweep / rest |")
    print("| --- | --- | --- | --- | --- |")
    for k in ("wall", "cpu"):
        rest = total[k] - spent[k]
        print(f"| {k} | {total[k]:.1f} | {spent[k]:.1f} | {rest:.1f} | {spent[k] / rest:.0%} |")


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
    ap.add_argument("--evaluate", action="store_true", help="also run the evaluate stage and split "
                    "its time into the sweep and the rest (needs --data, --clean, --robust)")
    ap.add_argument("--skip-parts", action="store_true", help="skip the per-corruption tables")
    ap.add_argument("--keep", help="with --evaluate: write the with-corruptions outputs here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        data = (DataPaths.under(args.data) if args.data else
                demo_like_store(Path(tmp), args.videos, args.frames, args.size))
        ds = FaceDataset(data.store, data.faces_csv, data.splits_csv, "test")
        models = {}
        for name, path in (("clean", args.clean), ("robust", args.robust)):
            torch.manual_seed(0)
            models[name] = frozen_on(load_checkpoint(path)[0] if path else create_model("smallcnn"),
                                     torch.device("cpu"))  # as evaluate scores
        n = len(ds)
        clean_s = clean_pass_seconds(models["clean"], ds, args.batch_size)
        clean_ms = 1000 * clean_s / n
        print(f"{n} test faces ({ds.frames['video_id'].nunique()} videos), "
              f"{ds[0][0].shape[-1]} px, {args.threads} threads; one clean pass of one model: "
              f"{clean_s:.2f} s ({clean_ms:.2f} ms/face)\n")
        print("| corruption | corrupt ms/face | score ms/face (2 models) | total / clean pass |")
        print("| --- | --- | --- | --- |")
        k = len(args.severities)
        for c in ([] if args.skip_parts else args.corruptions):
            sw = corrupted_logits(models, ds, [c], args.severities, seed=0, batch_size=args.batch_size)
            cor, fwd = 1000 * sw.corrupt_s[c] / n / k, 1000 * sw.forward_s / n / k
            print(f"| {c} | {cor:.2f} | {fwd:.2f} | {(cor + fwd) / clean_ms:.1f}x |")

        if args.skip_parts and args.evaluate:
            evaluate_share(args.params, data, {"clean": Path(args.clean), "robust": Path(args.robust)},
                           args.keep)
            return
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
            results[name] = {"test_clean": level_metrics(frames, z, Boundary(), ep.video_agg,
                                                         ep.bootstrap), "boundary": Boundary()}
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
            evaluate_share(args.params, data, {"clean": Path(args.clean), "robust": Path(args.robust)},
                           args.keep)


if __name__ == "__main__":
    main()
