"""Benchmark ``fakeproof detect``: videos per minute, and where the time goes.

    python benchmarks/bench_detect.py [--videos 8] [--frames 32] [--length 32] [--size 640x360]
                                      [--models smallcnn mobilenet_v3_small efficientnet_b0]
                                      [--threads N] [--device cpu|cuda]

For each model, a freshly initialised checkpoint carrying a recipe with ``frames.count = --frames``
and the model's input size scores ``--videos`` clips of ``--length`` frames (h264, 25 fps, a
window panning over a packaged face photo, as ``bench_crop.py`` makes them) through
:func:`fakeproof.detect.score_paths`, after one untimed warm-up clip. Time is split as detect
reports it:

- decode: extract_frames' path (probe, stream check, ffmpeg decode, JPEG into a tar) and reading
  the frames back (runs in a background thread, overlapping detection);
- detect: MTCNN on the CPU (one thread, deterministic, as crop_faces), crops and their store
  round trip;
- classify: the model on the crops, batched across videos.

Goal (issue 13): decode + detect under 2x classify on the CPU, since they run once per video.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench_crop import make_clips
from fakeproof.config import params_from_dict
from fakeproof.detect import load_detector, score_paths
from fakeproof.models import create_model, model_config, save_checkpoint
from fakeproof.boundary import Boundary
from fakeproof.recipe import build_recipe

SECTIONS = ("data", "frames", "faces", "split", "model", "train", "adv", "eval")


def checkpoint(path: Path, name: str, frames: int) -> Path:
    size = model_config(name).input_size
    raw = {s: {} for s in SECTIONS}
    raw.update(frames={"count": frames}, faces={"image_size": size}, model={"name": name})
    torch.manual_seed(0)
    save_checkpoint(path, create_model(name).eval(),
                    {"recipe": build_recipe(params_from_dict(raw, "bench"), Boundary())})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=32, help="frames scored per video (frames.count)")
    ap.add_argument("--length", type=int, default=32, help="frames in each clip")
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--models", nargs="+", default=["smallcnn", "mobilenet_v3_small",
                                                     "efficientnet_b0"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for classification (default: torch's; MTCNN always uses 1)")
    ap.add_argument("--photos", default=None, help="folder of face photos (default: packaged)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = make_clips(tmp / "clips", args.videos + 1, args.length, (w, h), args.photos)
        paths = pd.read_csv(csv)["path"].tolist()
        for name in args.models:
            bundle = load_detector(checkpoint(tmp / f"{name}.pt", name, args.frames), args.device)
            score_paths(bundle, paths[:1], progress=False)  # warm-up: oneDNN primitives, caches
            t: dict[str, float] = {}
            t0 = time.perf_counter()
            results = score_paths(bundle, paths[1:], timings=t, progress=False)
            wall = time.perf_counter() - t0
            n = len(results)
            faces = sum(r.faces for r in results)
            rows.append((name, model_config(name).input_size, n, faces, wall, 60 * n / wall,
                         *(1000 * t[k] / n for k in ("decode", "detect", "classify")),
                         (t["decode"] + t["detect"]) / max(t["classify"], 1e-9)))
    print(f"\nfakeproof detect: {args.videos} videos of {args.length} frames at {w}x{h}, "
          f"{args.frames} frames scored per video, device {args.device}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':20s} {'px':>4s} {'videos':>6s} {'faces':>5s} {'wall s':>7s} {'videos/min':>10s} "
          f"{'decode ms/v':>11s} {'detect ms/v':>11s} {'classify ms/v':>13s} {'(dec+det)/cls':>13s}")
    for name, px, n, faces, wall, vpm, dec, det, cls, ratio in rows:
        print(f"{name:20s} {px:4d} {n:6d} {faces:5d} {wall:7.1f} {vpm:10.1f} {dec:11.0f} {det:11.0f} "
              f"{cls:13.0f} {ratio:13.1f}")
    print("goal: (decode + detect) / classify < 2 on the CPU")


if __name__ == "__main__":
    main()
