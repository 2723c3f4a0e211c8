"""Benchmark the face store encodings: size per crop and loader speed against training speed.

    python benchmarks/bench_loader.py [--crops 2000] [--sizes 128 224] [--photos DIR]

For raw, png and jpeg (quality 95) at each crop size: bytes per crop (data.mdb size / crops),
FaceDataset images/s (read + decode + to float tensor, batches of 32 through
``fakeproof.data.make_loader``) with 0 and 2 workers, and the training speed it has to feed:
torchvision mobilenet_v3_small (1 logit) forward + backward + SGD step at batch 32 on 2 threads.
Goal: loader >= 3x training speed. Crops are cut with the stage's crop policy from the face
photos shipped in ``fakeproof/assets/faces`` (random jitter of the face box), so they compress
like real face crops.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fakeproof.data import FaceDataset, make_loader
from fakeproof.faces import crop_face
from fakeproof.store import DATA_FILE, ENCODINGS, FaceStoreWriter, face_key

ENC_LABEL = {"raw": "raw", "png": "png", "jpeg": "jpeg95"}
# Training images/s of mobilenet_v3_small (batch 32, 2 threads) measured with this script's own
# training loop on the project's 2-core machine while it was idle: the bar to compare with when
# the machine is busy (training measured under load collapses, which flatters the ratio).
from _photos import load_photos

REFERENCE_TRAIN = {128: 246.0, 224: 88.0}


def face_boxes(photos: list[np.ndarray]) -> list[np.ndarray]:
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True)
    boxes = []
    for img in photos:
        b, _ = mtcnn.detect(img)
        b = np.asarray(b, dtype=object).astype(float).reshape(-1, 4)
        boxes.append(b[np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))])
    return boxes


def make_crops(n: int, size: int, photos: list[np.ndarray], boxes: list[np.ndarray],
               seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = i % len(photos)
        x1, y1, x2, y2 = boxes[k]
        w = x2 - x1
        jitter = rng.normal(0, 0.06 * w, size=4)
        out.append(crop_face(photos[k], (x1 + jitter[0], y1 + jitter[1], x2 + jitter[2], y2 + jitter[3]),
                             1 / 3, size))
    return out


def loader_speed(store: Path, faces_csv: Path, splits_csv: Path, workers: int, repeats: int
                 ) -> tuple[float, float]:
    """Best (images per wall second, images per CPU second of this process) over ``repeats``.

    With 0 workers all the loading runs in this process on one thread, so images per CPU second
    is the speed of one idle core, whatever else the machine is doing.
    """
    ds = FaceDataset(store, faces_csv, splits_csv, "train")
    best_wall = best_cpu = 0.0
    for _ in range(repeats):
        loader = make_loader(ds, 32, shuffle=True, seed=0, num_workers=workers)
        t0, c0 = time.perf_counter(), time.process_time()
        n = sum(len(y) for _, y, _ in loader)
        best_wall = max(best_wall, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / max(time.process_time() - c0, 1e-9))
    return best_wall, best_cpu


def train_speed(size: int, steps: int = 8) -> float:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    model = mobilenet_v3_small(num_classes=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(32, 3, size, size)
    y = torch.randint(0, 2, (32,)).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    speed = 32 * steps / (time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--repeats", type=int, default=2, help="loader passes per setting (best kept)")
    ap.add_argument("--photos", default=None, help="folder of face photos (default: package assets)")
    args = ap.parse_args()

    photos = load_photos(args.photos)
    boxes = face_boxes(photos)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in args.sizes:
            crops = make_crops(args.crops, size, photos, boxes)
            keys = [face_key(f"v{i // 32:05d}", i % 32, 0) for i in range(len(crops))]
            faces = pd.DataFrame({"key": keys, "video_id": [k.split("/")[0] for k in keys],
                                  "frame": [i % 32 for i in range(len(keys))], "face": 0})
            faces.to_csv(tmp / "faces.csv", index=False)
            vids = sorted(set(faces["video_id"]))
            pd.DataFrame({"video_id": vids, "label": [i % 2 for i in range(len(vids))], "split": "train",
                          "group": vids, "method": "m", "source": "bench"}).to_csv(tmp / "splits.csv", index=False)
            train = train_speed(size)
            for enc in ENCODINGS[::-1]:
                store = tmp / f"{enc}{size}.lmdb"
                t0 = time.process_time()
                with FaceStoreWriter(store, encoding=enc, jpeg_quality=95) as w:
                    for k, c in zip(keys, crops):
                        w.put(k, c)
                enc_ms = 1000 * (time.process_time() - t0) / len(keys)
                per_crop = (store / DATA_FILE).stat().st_size / len(keys)
                s0, s0cpu = loader_speed(store, tmp / "faces.csv", tmp / "splits.csv", 0, args.repeats)
                s2, _ = loader_speed(store, tmp / "faces.csv", tmp / "splits.csv", 2, args.repeats)
                rows.append((size, ENC_LABEL[enc], per_crop, enc_ms, s0, s0cpu, s2, train))
    print(f"\nface store encodings: {args.crops} crops per size, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; train = mobilenet_v3_small fwd+bwd, batch 32, 2 threads")
    print(f"{'px':>4}  {'encoding':>8}  {'bytes/crop':>10}  {'write CPU ms':>12}  {'0w img/s':>8}  "
          f"{'0w img/CPU-s':>12}  {'2w img/s':>8}  {'train img/s':>11}  {'loader/train':>12}  {'1 core/ref':>10}")
    for size, enc, per_crop, enc_ms, s0, s0cpu, s2, train in rows:
        ref = REFERENCE_TRAIN.get(size)
        vs_ref = f"{s0cpu / ref:>9.1f}x" if ref else f"{'-':>10}"
        print(f"{size:>4}  {enc:>8}  {per_crop:>10,.0f}  {enc_ms:>12.2f}  {s0:>8,.0f}  {s0cpu:>12,.0f}  "
              f"{s2:>8,.0f}  {train:>11.0f}  {max(s0, s2) / train:>11.1f}x  {vs_ref}")
    print("1 core/ref: one loading core (0w img/CPU-s) against the idle-machine training speed "
          f"({', '.join(f'{k} px: {v:g} img/s' for k, v in REFERENCE_TRAIN.items())})")


if __name__ == "__main__":
    main()
