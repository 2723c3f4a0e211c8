"""Self-Blended Images (``train.sbi``): what they buy across manipulations and datasets, and their cost.

    python benchmarks/bench_sbi.py [--data data] [--params params.yaml] [--cross PATH/labels.csv]
                                   [--epochs N] [--out DIR]

1. **Cost**: :func:`fakeproof.sbi.self_blend` plus the paper's augmentation
   (:func:`fakeproof.sbi.sbi_augment`) per image, one thread, on real demo crops at their stored
   size and resized to EfficientNet-B4's 380 px (images/s: a loader worker's throughput).
2. **Cross-manipulation on the demo** (``--data``, ``make demo`` builds it; its videos.csv
   ``method`` column: ``real``, ``faceswap``, ``sbi``): both rows are scored on the test split's
   real and face-swap videos only.
   - ``sbi only, no fake seen``: ``train.sbi: only`` on the train split's real videos (every fake
     dropped); val holds real and the demo's video-level self-blends (no face swap), so neither
     training nor selection nor the boundary ever sees a face swap.
   - ``trained on face swaps``: ``train.sbi: off`` on train real + face-swap videos, val likewise.
3. **Every mode on the whole demo** and **cross-dataset** (``--cross``: a ``path,label[,group]``
   CSV such as the 20 public clips' ``labels.csv``; its videos go through this project's own
   download, extract_frames and crop_faces code into a temporary store and are all scored as a
   test split, as ``eval.cross`` does): ``train.sbi: off`` (the pipeline's clean model), ``mix``
   (ratio ``train.sbi_ratio``), ``only``, trained on the demo's train split.

Training is the pretrain stage's own (``fakeproof.train.run_pretrain``, val selection, the
boundary fitted on val) with ``--params`` (default: the code's: smallcnn, 10 epochs,
``train.augment: light``) except ``train.sbi`` and ``--epochs``; give the params the store was
cropped with (``--params params.yaml`` after ``make demo``), so that the cross store is cropped at
the same size. Scores are at each model's
deployed boundary; AUCs carry 95 % BCa intervals that resample videos within strata
(``eval.bootstrap`` draws; not estimable below ``eval.min_videos`` videos of a class).
Prints Markdown tables; ``--out`` keeps the checkpoints and the cross store.
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
from bench_augment import ci  # "0.917 [0.667, 1.000]" (benchmarks/ is the script's folder)

from fakeproof.boundary import Deployed
from fakeproof.config import default_params, load_params, params_from_dict
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.intervals import level_metrics
from fakeproof.models import load_checkpoint
from fakeproof.predict import logits_of
from fakeproof.recipe import deployed_boundary
from fakeproof.sbi import PSEUDO_METHOD, sbi_augment, sbi_rng, self_blend
from fakeproof.train import run_pretrain


def cost(paths: DataPaths, n: int = 48) -> list[tuple[int, float]]:
    """Images/s of self_blend + sbi_augment on ``n`` real train crops, stored size and 380 px."""
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "train", sbi="only")
    pseudo = np.flatnonzero(ds.frames["method"].to_numpy() == PSEUDO_METHOD)[:n]
    torch.set_num_threads(1)
    out = []
    for size in (None, 380):
        items = []
        for i in pseudo:
            img = ds.store.get_tensor(ds._keys[i]).numpy().astype(np.float32) / 255
            pts = ds._points[i]
            if size:
                k = size / img.shape[-1]
                img = torch.nn.functional.interpolate(torch.from_numpy(img)[None], size=(size, size),
                                                      mode="bilinear", align_corners=False)[0]
                img, pts = img.clamp(0, 1).numpy(), pts * k
            items.append((img, pts))
        t0 = time.perf_counter()
        for j, (img, pts) in enumerate(items):
            rng = sbi_rng(0, 0, j)
            sbi_augment(self_blend(img, pts, rng).image, rng)
        out.append((items[0][0].shape[-1], len(items) / (time.perf_counter() - t0)))
    return out


def splits_variant(paths: DataPaths, out: Path, name: str, keep: dict[str, set[str]]) -> DataPaths:
    """A copy of splits.csv where, per split, only the ``keep`` methods stay (others: excluded)."""
    df = pd.read_csv(paths.splits_csv, dtype=str, keep_default_na=False)
    drop = ~df.apply(lambda r: r["method"] in keep.get(r["split"], set()), axis=1)
    df.loc[drop, "split"] = "excluded"
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"splits_{name}.csv", index=False)
    return DataPaths(paths.store, paths.faces_csv, out / f"splits_{name}.csv")


def cross_store(labels_csv: Path, params, out: Path) -> DataPaths:
    """The clips of a path,label[,group] CSV through download, extract_frames and crop_faces,
    every video in the test split."""
    from fakeproof.faces import run_crop_faces
    from fakeproof.frames import run_extract_frames
    from fakeproof.download import run_download

    p = dataclasses.replace(params, data=dataclasses.replace(params.data, source="csv",
                                                             root=str(labels_csv)))
    run_download(p.data, out / "raw", cache=out / "cache")
    run_extract_frames(p, out / "raw" / "videos.csv", out / "frames")
    run_crop_faces(p, out / "raw" / "videos.csv", out / "frames", out / "faces.lmdb",
                   out / "faces.csv")
    videos = pd.read_csv(out / "raw" / "videos.csv", dtype=str, keep_default_na=False)
    faces = pd.read_csv(out / "faces.csv", dtype=str, keep_default_na=False)
    n = faces.groupby("video_id").size()
    videos = videos[videos["video_id"].isin(n.index)].assign(split="test")
    videos["n_faces"] = videos["video_id"].map(n)
    videos[["video_id", "label", "split", "group", "method", "source", "n_faces"]].to_csv(
        out / "splits.csv", index=False)
    return DataPaths.under(out)


def train(params, paths: DataPaths, sbi: str, out: Path) -> tuple[Path, float, dict]:
    p = dataclasses.replace(params, train=dataclasses.replace(params.train, sbi=sbi))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    m = run_pretrain(p, paths, out / "clean.pt", out / "pretrain.json", out / "curve.csv",
                     out / "tb")
    return out / "clean.pt", time.perf_counter() - t0, m


def score(ckpt: Path, paths: DataPaths, ep) -> dict:
    model, meta = load_checkpoint(ckpt)
    deployed = Deployed(model.eval(), deployed_boundary(meta))
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    z, _ = logits_of(deployed, make_loader(ds, ep.batch_size), "score")
    m = level_metrics(ds.frames.reset_index(drop=True), z, deployed.boundary, ep.video_agg,
                      ep.bootstrap, ep.seed, ep.min_videos)
    labels = ds.frames.drop_duplicates("video_id")["label"]
    m["videos"] = f"{int((labels == 0).sum())} real / {int((labels == 1).sum())} fake"
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data", help="folder with faces.lmdb, faces.csv, splits.csv")
    ap.add_argument("--cross", default=None, help="a path,label[,group] CSV of clips to score "
                    "as a cross-dataset test set (a path,label[,group] CSV of clips)")
    ap.add_argument("--params", default=None, help="params file (default: the code's defaults)")
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the code's)")
    ap.add_argument("--out", default=None, help="keep checkpoints and the cross store here")
    args = ap.parse_args()
    params = load_params(args.params) if args.params else params_from_dict(default_params())
    if args.epochs:
        params = dataclasses.replace(params, train=dataclasses.replace(params.train,
                                                                      epochs=args.epochs))
    ep = params.eval
    paths = DataPaths.under(args.data)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        speed = cost(paths)
        no_swap = splits_variant(paths, root, "sbi", {"train": {"real"}, "val": {"real", "sbi"},
                                                      "test": {"real", "faceswap"}})
        swap = splits_variant(paths, root, "faceswap", {"train": {"real", "faceswap"},
                                                        "val": {"real", "faceswap"},
                                                        "test": {"real", "faceswap"}})
        cross = cross_store(Path(args.cross), params, root / "cross") if args.cross else None
        xrows = []
        for label, sbi, sp in (("sbi only, no fake seen", "only", no_swap),
                               ("trained on face swaps", "off", swap)):
            ckpt, secs, m = train(params, sp, sbi, root / f"x_{sbi}")
            xrows.append((label, m, secs, score(ckpt, sp, ep)))
        rows = []
        for sbi in ("off", "mix", "only"):
            ckpt, secs, m = train(params, paths, sbi, root / f"all_{sbi}")
            rows.append((sbi, m, secs, score(ckpt, paths, ep),
                         score(ckpt, cross, ep) if cross else None))
    print(f"\nSBI cost (self_blend + the paper's augmentation, one thread): " + ", ".join(
        f"{s} px {r:.0f} img/s" for s, r in speed))
    print(f"\n{params.model.name}, {params.train.epochs} epochs, train.augment "
          f"{params.train.augment}; test: real + face-swap videos of the demo's test split")
    print("| training | train faces | val AUC | test videos | frame AUC [95% CI] | video AUC "
          "[95% CI] | video bacc [95% CI] | train s |")
    print("| --- | ---: | ---: | --- | --- | --- | --- | ---: |")
    for label, m, secs, s in xrows:
        print(f"| {label} | {m['train_faces']} | {m['val_auc']:.3f} | {s['videos']} | "
              f"{ci(s['frame'])} | {ci(s['video'])} | {ci(s['video'], 'bacc')} | {secs:.0f} |")
    print("\nEvery mode on the whole demo (train: all its methods); demo test split (real, "
          "faceswap, sbi videos)" + (f" and the cross set {args.cross}" if cross else ""))
    print("| train.sbi | train faces | val AUC | demo test video AUC [95% CI] | cross videos | "
          "cross frame AUC [95% CI] | cross video AUC [95% CI] | train s |")
    print("| --- | ---: | ---: | --- | --- | --- | --- | ---: |")
    for sbi, m, secs, s, c in rows:
        cx = (f"{c['videos']} | {ci(c['frame'])} | {ci(c['video'])}" if c else "- | - | -")
        print(f"| {sbi} | {m['train_faces']} | {m['val_auc']:.3f} | {ci(s['video'])} | {cx} | "
              f"{secs:.0f} |")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
