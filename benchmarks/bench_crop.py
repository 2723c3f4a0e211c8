"""Benchmark the crop_faces stage: speed against bare MTCNN, and peak memory against video count.

    python benchmarks/bench_crop.py speed  [--videos 6] [--frames 32] [--size 640x360]
    python benchmarks/bench_crop.py memory [--small 4] [--large 16]

``speed`` runs the whole stage (frame archives read and decoded, detection, crops, PNG encoding,
LMDB and CSV writing) and, on the same frames already decoded and downscaled in memory, bare
``MTCNN.detect()`` with the same batch size and thread count. Goal: stage >= 0.8x bare.

``memory`` runs the stage in a fresh subprocess on N videos and reads the child's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and tracemalloc's peak: it must not grow with
the number of videos (frames are streamed one batch at a time).

Clips are made from the face photos shipped in ``fakeproof/assets/faces`` (or ``--photos DIR``):
a window pans and zooms over the photo, h264 at 25 fps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from fakeproof.config import params_from_dict
from fakeproof.sources import VIDEO_COLUMNS

from _photos import load_photos as photos

SECTIONS = ("data", "frames", "faces", "split", "model", "train", "adv", "eval")


def face_centre(img: np.ndarray) -> tuple[float, float, float]:
    """Centre and width of the largest face in a photo (MTCNN; setup only, not timed)."""
    from facenet_pytorch import MTCNN

    boxes, _ = MTCNN(keep_all=True).detect(img)
    if boxes is None:
        h, w = img.shape[:2]
        return w / 2, h / 3, w / 3
    b = np.asarray(boxes, dtype=object).astype(float).reshape(-1, 4)
    x1, y1, x2, y2 = b[np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))]
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1


def make_clips(folder: Path, n: int, frames: int, size: tuple[int, int], photo_dir: str | None) -> Path:
    """``n`` clips of ``frames`` frames (a window panning and zooming about a photo's face; the
    face is about 3.5 times narrower than the frame); returns the videos.csv path."""
    import pandas as pd

    from fakeproof.video import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    pics = photos(photo_dir)
    centres = [face_centre(p) for p in pics]
    w, h = size
    rows = []
    for i in range(n):
        img = Image.fromarray(pics[i % len(pics)])
        cx, cy, fw = centres[i % len(pics)]
        base_w = fw * (3.5 + 0.25 * (i // len(pics)) % 1.0)
        clip = []
        for t in range(frames):
            z = 1 + 0.004 * t
            cw = base_w / z
            ch = cw * h / w
            x0 = cx - cw / 2 + 0.05 * fw * np.sin(t / 5 + i)
            y0 = cy - ch / 2 + 0.02 * fw * t / 4
            clip.append(np.asarray(img.transform((w, h), Image.Transform.EXTENT,
                                                 (x0, y0, x0 + cw, y0 + ch),
                                                 Image.Resampling.BILINEAR)))
        path = folder / f"clip{i:03d}.mp4"
        write_mp4(path, np.stack(clip), fps=25)
        rows.append({"video_id": f"clip{i:03d}", "path": str(path), "label": 0, "group": f"g{i}",
                     "method": "real", "source": "bench", "split_hint": "", "original": ""})
    csv = folder / "videos.csv"
    pd.DataFrame(rows, columns=VIDEO_COLUMNS).to_csv(csv, index=False)
    return csv


def make_params(count: int):
    return params_from_dict({s: ({"count": count} if s == "frames" else {}) for s in SECTIONS})


def cmd_speed(args: argparse.Namespace) -> None:
    import torch

    from fakeproof.faces import detection_size, run_crop_faces
    from fakeproof.frames import iter_frame_batches, run_extract_frames

    w, h = (int(v) for v in args.size.split("x"))
    params = make_params(args.frames)
    fp = params.faces
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = make_clips(tmp / "clips", args.videos, args.frames + 8, (w, h), args.photos)
        run_extract_frames(params, csv, tmp / "frames")
        vids = [f"clip{i:03d}" for i in range(args.videos)]

        # bare MTCNN (facenet-pytorch as shipped, same params) on the same frames, decoded and
        # downscaled beforehand (not timed), same batches and the stage's one detection thread
        from facenet_pytorch import MTCNN

        bare_mtcnn = MTCNN(min_face_size=fp.min_face_size, thresholds=list(fp.thresholds),
                           keep_all=True, post_process=False).eval()
        batches = []
        for vid in vids:
            for _, frames in iter_frame_batches(tmp / "frames", vid, fp.batch_size):
                dw, dh = detection_size(frames.shape[2], frames.shape[1], fp.detect_max_side)
                if (dw, dh) != (frames.shape[2], frames.shape[1]):
                    frames = np.stack([np.asarray(Image.fromarray(f).resize((dw, dh), Image.Resampling.BILINEAR))
                                       for f in frames])
                batches.append(frames)
        n_frames = sum(len(b) for b in batches)
        rows = []
        for rep in range(args.repeats):  # alternate the two so that machine load hits both alike
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            w0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                for b in batches:
                    bare_mtcnn.detect(b)
            bare_wall, bare_cpu = time.perf_counter() - w0, time.process_time() - c0
            torch.set_num_threads(threads)
            w0, c0 = time.perf_counter(), time.process_time()
            stats = run_crop_faces(params, csv, tmp / "frames", tmp / f"faces{rep}.lmdb",
                                   tmp / f"faces{rep}.csv")
            st_wall, st_cpu = time.perf_counter() - w0, time.process_time() - c0
            rows.append((rep, n_frames, n_frames / bare_wall, stats["frames"] / st_wall,
                         1000 * bare_cpu / n_frames, 1000 * st_cpu / stats["frames"], stats["faces"]))
    print(f"\ncrop_faces speed: {args.videos} videos x {args.frames} frames at {w}x{h}, "
          f"detect_max_side {fp.detect_max_side}, batch {fp.batch_size}, encoding {fp.encoding}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'run':>3}  {'frames':>6}  {'bare f/s':>8}  {'stage f/s':>9}  {'ratio':>5}  "
          f"{'bare CPU ms/f':>13}  {'stage CPU ms/f':>14}  {'CPU ratio':>9}  {'faces':>5}")
    for rep, n, bw, sw, bc, sc, faces in rows:
        print(f"{rep:>3}  {n:>6}  {bw:>8.2f}  {sw:>9.2f}  {sw / bw:>5.2f}  {bc:>13.1f}  {sc:>14.1f}  "
              f"{bc / sc:>9.2f}  {faces:>5}")
    med = lambda xs: float(np.median(xs))  # noqa: E731
    print(f"median: bare {med([r[2] for r in rows]):.2f} f/s, stage {med([r[3] for r in rows]):.2f} f/s, "
          f"wall ratio {med([r[3] / r[2] for r in rows]):.2f}, CPU ratio "
          f"{med([r[4] / r[5] for r in rows]):.2f} (goal >= 0.8)")


def cmd_memory(args: argparse.Namespace) -> None:
    from fakeproof.frames import run_extract_frames

    w, h = (int(v) for v in args.size.split("x"))
    params = make_params(args.frames)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in (args.small, args.large):
            csv = make_clips(tmp / f"clips{n}", n, args.frames + 4, (w, h), args.photos)
            run_extract_frames(params, csv, tmp / f"frames{n}")
            out = subprocess.run(
                [sys.executable, __file__, "_child", "--csv", str(csv), "--frames-dir",
                 str(tmp / f"frames{n}"), "--out", str(tmp / f"out{n}"), "--frames", str(args.frames)],
                capture_output=True, text=True, check=True)
            results.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"\ncrop_faces peak memory: videos of {args.frames} frames at {w}x{h}")
    print(f"{'videos':>6}  {'frames':>6}  {'peak RSS MiB':>12}  {'tracemalloc peak MiB':>20}  {'seconds':>7}")
    for n, r in results:
        print(f"{n:>6}  {r['frames']:>6}  {r['maxrss_mib']:>12.1f}  {r['tracemalloc_mib']:>20.1f}  {r['seconds']:>7.1f}")
    a, b = results[0][1], results[1][1]
    print(f"growth {args.small} -> {args.large} videos: RSS {b['maxrss_mib'] - a['maxrss_mib']:+.1f} MiB, "
          f"tracemalloc {b['tracemalloc_mib'] - a['tracemalloc_mib']:+.1f} MiB")


def cmd_child(args: argparse.Namespace) -> None:
    import resource
    import tracemalloc

    from fakeproof.faces import run_crop_faces

    params = make_params(args.frames)
    tracemalloc.start()
    out = Path(args.out)
    stats = run_crop_faces(params, Path(args.csv), Path(args.frames_dir), out / "faces.lmdb",
                           out / "faces.csv")
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"frames": stats["frames"], "maxrss_mib": rss, "tracemalloc_mib": peak / 2**20,
                      "seconds": stats["seconds"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("speed", "memory"):
        p = sub.add_parser(name)
        p.add_argument("--frames", type=int, default=32, help="frames per video (frames.count)")
        p.add_argument("--size", default="640x360", help="clip size WxH")
        p.add_argument("--photos", default=None, help="folder of face photos (default: package assets)")
    sub.choices["speed"].add_argument("--videos", type=int, default=6)
    sub.choices["speed"].add_argument("--repeats", type=int, default=2)
    sub.choices["memory"].add_argument("--small", type=int, default=4)
    sub.choices["memory"].add_argument("--large", type=int, default=16)
    c = sub.add_parser("_child")
    for a in ("--csv", "--frames-dir", "--out"):
        c.add_argument(a, required=True)
    c.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    {"speed": cmd_speed, "memory": cmd_memory, "_child": cmd_child}[args.cmd](args)


if __name__ == "__main__":
    main()
