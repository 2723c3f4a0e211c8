"""Benchmark the crop_faces stage: speed against bare MTCNN on every backend, memory against videos.

    python benchmarks/bench_crop.py speed  [--videos 8] [--frames 16] [--size 640x360] [--dask 2]
                                           [--device auto] [--videos-per-task 1] [--batch 16]
    python benchmarks/bench_crop.py memory [--small 90] [--large 900] [--frames 8] [--size 256x256]

``speed`` runs the whole stage (frame archives read and decoded, detection, crops, PNG encoding,
LMDB and CSV writing) with 1 process (``faces.workers: 1``), with every core (``workers: 0``) and
on a ``distributed.LocalCluster`` of ``--dask`` worker processes (``faces.scheduler``), and beside
them bare ``MTCNN.detect()`` (facenet-pytorch as shipped, same params, one torch thread) on the
same frames, already decoded and downscaled in memory, in 1 and in N processes. Goal: the stage
at >= 0.8x bare MTCNN per process. A first run starts the forkserver and the Dask workers
(imports, MTCNN weights) and is not timed; configurations alternate over ``--repeats`` so that
machine load hits all alike.

``memory`` runs the stage in a fresh subprocess on N videos (``--small``, then ``--large``; the
defaults are the demo's 90 videos of 8 frames at 256 px, and 10x that) and samples, every 0.2 s,
the resident memory of the stage's process and of every process below it (psutil and
``/proc/<pid>/smaps_rollup``): peak RSS of the stage process, the largest worker's peak RSS, and
the peak PSS summed over all of them (PSS splits shared pages among the processes that share
them, so the sum counts the forkserver's torch pages once), in total and anonymous only (heap and
stacks: what the stage allocates). Total PSS also holds the pages of files the processes map,
which includes the LMDB store being written (LMDB reads its own file through ``mmap``): that part
grows with the store, is page cache the kernel may drop, and is not the stage's heap. Anonymous
memory must not grow with the number of videos. Every third clip is a
"fake" of the clip before it, so both waves (and box reuse) run.

Clips are made from the face photos shipped in ``fakeproof/assets/faces`` (or ``--photos DIR``):
a window pans and zooms over the photo, h264 at 25 fps.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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


def make_clips(folder: Path, n: int, frames: int, size: tuple[int, int], photo_dir: str | None,
               fakes: bool = False) -> Path:
    """``n`` clips of ``frames`` frames (a window panning and zooming about a photo's face; the
    face is about 3.5 times narrower than the frame); returns the videos.csv path. With ``fakes``
    every third clip is labelled a fake whose original is the clip before it."""
    import pandas as pd

    from fakeproof.video import write_mp4

    folder.mkdir(parents=True, exist_ok=True)
    pics = photos(photo_dir)
    centres = [face_centre(p) for p in pics]
    w, h = size
    rows = []
    for i in range(n):
        path = folder / f"clip{i:04d}.mp4"
        if not path.exists():
            img = Image.fromarray(pics[i % len(pics)])
            cx, cy, fw = centres[i % len(pics)]
            base_w = fw * (3.5 + 0.25 * ((i // len(pics)) % 4))
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
            write_mp4(path, np.stack(clip), fps=25)
        fake = fakes and i % 3 == 2
        rows.append({"video_id": f"clip{i:04d}", "path": str(path), "label": int(fake),
                     "group": f"g{i - fake}", "method": "fake" if fake else "real",
                     "source": "bench", "split_hint": "",
                     "original": f"clip{i - 1:04d}" if fake else ""})
    csv = folder / f"videos{n}.csv"
    pd.DataFrame(rows, columns=VIDEO_COLUMNS).to_csv(csv, index=False)
    return csv


def make_params(count: int, **faces):
    sections = {s: {} for s in SECTIONS}
    sections["frames"] = {"count": count}
    sections["faces"] = dict(faces)
    return params_from_dict(sections)


# --------------------------------------------------------------------------------------------------
# speed
# --------------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used during a block by this process and every process below it.

    Sampled with psutil every ``every`` s (a process that exits between samples loses at most that
    much). Each process counts its own user + system time plus that of the children it reaped
    (ffmpeg under extract_frames' workers), except the forkserver, whose reaped children are the
    pool workers, already counted. On a shared machine wall-clock speed depends on the load;
    CPU time per frame much less, so per-core efficiency is read from it.
    """

    def __init__(self, every: float = 0.1) -> None:
        import psutil

        self.me = psutil.Process()
        self.every = every
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.seconds = 0.0

    def _sample(self, first: bool = False) -> None:
        import psutil

        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                cpu = t.user + t.system
                # forkserver workers share its command line: tell the server by its parent
                if not (p.ppid() == self.me.pid and "forkserver" in " ".join(p.cmdline())):
                    cpu += t.children_user + t.children_system
            except psutil.Error:
                continue
            self.base.setdefault(p.pid, cpu if first else 0.0)
            self.last[p.pid] = cpu

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(self.last[pid] - self.base[pid] for pid in self.last)


def print_table(title: str, configs: list, runs: dict, bare_name: str) -> None:
    """Medians per configuration: wall frames/s, CPU ms per frame, and both against bare."""
    rate = {i: statistics.median(f / s for f, s, _ in r) for i, r in runs.items()}
    cpu = {i: statistics.median(1000 * c / f for f, _, c in r) for i, r in runs.items()}
    bare1 = next(i for i, (name, n, _) in enumerate(configs) if name == bare_name and n == 1)
    print(title)
    print(f"{'configuration':<26} {'procs':>5} {'frames':>6} {'frames/s':>8} {'f/s per proc':>12} "
          f"{'CPU ms/frame':>12} {'per-core vs bare':>16}")
    for i, (name, n, _) in enumerate(configs):
        print(f"{name:<26} {n:>5} {runs[i][0][0]:>6} {rate[i]:>8.2f} {rate[i] / n:>12.2f} "
              f"{cpu[i]:>12.1f} {cpu[bare1] / cpu[i]:>16.2f}")
    print(f"per-core vs bare = {bare_name} CPU ms/frame (1 process) / this CPU ms/frame; "
          "frames/s depend on the machine's load, CPU ms/frame hardly")


def measure(fn) -> tuple[int, float, float]:
    """(frames, wall seconds, CPU seconds) of ``fn() -> frames``."""
    with CpuMeter() as m:
        t = time.perf_counter()
        frames = fn()
        wall = time.perf_counter() - t
    return frames, wall, m.seconds


def backend_runs(bare_fn, jobs: list, stage, dask_workers: int, repeats: int, bare_name: str
                 ) -> tuple[list, dict]:
    """Time the bare operation (``bare_fn`` over ``jobs``, returning frames) in 1 and in every-core
    processes beside the stage (``stage(tag, **knobs) -> measure(...)``) in one process, every core
    and a Dask LocalCluster of ``dask_workers``; ``repeats`` rounds, warm-ups untimed. Returns
    ``(configs, runs)`` for :func:`print_table`."""
    import dask
    import distributed

    from fakeproof import parallel

    cores = parallel.cpu_count()

    def bare(n: int) -> tuple[int, float, float]:
        with parallel.executor("bench", n, None, tasks=len(jobs),
                               preload=parallel.PREPROCESS_MODULES) as ex:
            list(ex.imap(bare_fn, jobs[:n]))  # warm: every worker imports and builds its model
            return measure(lambda: sum(ex.imap(bare_fn, jobs)))

    parallel.forkserver_context(parallel.PREPROCESS_MODULES)
    with dask.config.set({"distributed.worker.multiprocessing-method": "spawn"}), \
            distributed.LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        configs = [(bare_name, 1, lambda: bare(1)),
                   (bare_name, cores, lambda: bare(cores)),
                   ("stage, 1 process", 1, lambda: stage("one", workers=1)),
                   ("stage, workers 0", cores, lambda: stage("all", workers=0)),
                   ("stage, dask LocalCluster", dask_workers, lambda: stage("dask", scheduler=addr))]
        stage("warm", scheduler=addr)  # dask workers import torch (and build MTCNN): not timed
        stage("warm", workers=0)
        runs: dict[int, list[tuple[int, float, float]]] = {i: [] for i in range(len(configs))}
        for _ in range(repeats):
            for i, (_, _, fn) in enumerate(configs):
                runs[i].append(fn())
    return configs, runs


_bare_mtcnn = None


def bare_detect(job: tuple[str, list, list]) -> int:
    """Bare facenet-pytorch MTCNN (one thread) on saved batches; returns the frames seen."""
    global _bare_mtcnn
    import torch
    from facenet_pytorch import MTCNN

    path, min_face_size, thresholds = job
    if _bare_mtcnn is None:
        _bare_mtcnn = MTCNN(min_face_size=min_face_size, thresholds=thresholds, keep_all=True,
                            post_process=False).eval()
    torch.set_num_threads(1)
    batches = np.load(path, allow_pickle=True)
    with torch.no_grad():
        for b in batches:
            _bare_mtcnn.detect(b)
    return sum(len(b) for b in batches)


def cmd_speed(args: argparse.Namespace) -> None:
    from fakeproof import parallel
    from fakeproof.faces import detection_size, run_crop_faces
    from fakeproof.frames import iter_frame_batches, run_extract_frames

    w, h = (int(v) for v in args.size.split("x"))
    knobs = {"device": args.device, "videos_per_task": args.videos_per_task, "batch_size": args.batch}
    params = make_params(args.frames, **knobs)
    fp = params.faces
    cores = parallel.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = make_clips(tmp / "clips", args.videos, args.frames + 8, (w, h), args.photos)
        run_extract_frames(params, csv, tmp / "frames")
        vids = [f"clip{i:04d}" for i in range(args.videos)]
        # the bare runs get the stage's batches, decoded and downscaled beforehand (not timed),
        # one file per video so that N processes share them out as the stage does
        jobs = []
        for vid in vids:
            batches = []
            for _, frames in iter_frame_batches(tmp / "frames", vid, fp.batch_size):
                dw, dh = detection_size(frames.shape[2], frames.shape[1], fp.detect_max_side)
                if (dw, dh) != (frames.shape[2], frames.shape[1]):
                    frames = np.stack([np.asarray(Image.fromarray(f).resize(
                        (dw, dh), Image.Resampling.BILINEAR)) for f in frames])
                batches.append(frames)
            arr = np.empty(len(batches), dtype=object)
            arr[:] = batches
            np.save(tmp / f"{vid}.npy", arr, allow_pickle=True)
            jobs.append((str(tmp / f"{vid}.npy"), fp.min_face_size, list(fp.thresholds)))

        devices: set[str] = set()

        def stage(tag: str, **faces) -> tuple[int, float, float]:
            p = make_params(args.frames, **knobs, **faces)

            def run() -> int:
                stats = run_crop_faces(p, csv, tmp / "frames", tmp / f"{tag}.lmdb", tmp / f"{tag}.csv")
                devices.add(stats["device"])
                return stats["frames"]
            return measure(run)

        configs, runs = backend_runs(bare_detect, jobs, stage, args.dask, args.repeats,
                                     "bare MTCNN")
    print_table(f"\ncrop_faces speed: {args.videos} videos x {args.frames} frames at {w}x{h}, "
                f"detect_max_side {fp.detect_max_side}, batch {fp.batch_size}, encoding "
                f"{fp.encoding}, videos_per_task {fp.videos_per_task}, {cores} cores, MTCNN on "
                f"{'/'.join(sorted(devices))}, load average "
                f"{os.getloadavg()[0]:.1f}, median of {args.repeats}", configs, runs, "bare MTCNN")
    print("goal: stage >= 0.8x bare MTCNN per core")


# --------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------


def cmd_memory(args: argparse.Namespace) -> None:
    from fakeproof.frames import run_extract_frames

    w, h = (int(v) for v in args.size.split("x"))
    params = make_params(args.frames)
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        csv_large = make_clips(tmp / "clips", args.large, args.frames + 4, (w, h), args.photos, fakes=True)
        run_extract_frames(params, csv_large, tmp / "frames")  # frames of every clip, once
        print(f"setup: {args.large} clips made and extracted in {time.perf_counter() - t:.0f}s",
              file=sys.stderr)
        for n in (args.small, args.large):
            csv = make_clips(tmp / "clips", n, args.frames + 4, (w, h), args.photos, fakes=True)
            out = subprocess.run(
                [sys.executable, __file__, "_child", "--csv", str(csv), "--frames-dir",
                 str(tmp / "frames"), "--out", str(tmp / f"out{n}"), "--frames", str(args.frames),
                 "--workers", str(args.workers)],
                capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            results.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
    print(f"\ncrop_faces peak memory: clips of {args.frames} stored frames at {w}x{h} (every third a "
          f"fake reusing boxes), faces.workers {args.workers}, {os.cpu_count()} cores")
    print(f"{'videos':>6} {'frames':>6} {'processes':>9} {'stage RSS MiB':>13} "
          f"{'worker RSS MiB':>14} {'total PSS MiB':>13} {'anon PSS MiB':>12} {'tracemalloc MiB':>15} "
          f"{'store MiB':>9} {'frames/s':>8} {'seconds':>7}")
    for n, r in results:
        print(f"{n:>6} {r['frames']:>6} {r['processes']:>9} {r['stage_rss']:>13.0f} "
              f"{r['worker_rss']:>14.0f} {r['total_pss']:>13.0f} {r['anon_pss']:>12.0f} "
              f"{r['tracemalloc']:>15.1f} {r['store_mib']:>9.0f} {r['frames_per_s']:>8.1f} "
              f"{r['seconds']:>7.1f}")
    a, b = results[0][1], results[1][1]
    print(f"growth {args.small} -> {args.large} videos: stage RSS {b['stage_rss'] - a['stage_rss']:+.0f} "
          f"MiB, worker RSS {b['worker_rss'] - a['worker_rss']:+.0f} MiB, anonymous PSS "
          f"{b['anon_pss'] - a['anon_pss']:+.0f} MiB, total PSS {b['total_pss'] - a['total_pss']:+.0f} "
          f"MiB (store {b['store_mib'] - a['store_mib']:+.0f} MiB), tracemalloc "
          f"{b['tracemalloc'] - a['tracemalloc']:+.1f} MiB")


def _pss(pid: int) -> tuple[float, float]:
    """(PSS, anonymous + shmem PSS) of a process in MiB, from /proc/<pid>/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return fields.get("Pss", 0.0), fields.get("Pss_Anon", 0.0) + fields.get("Pss_Shmem", 0.0)


class Sampler:
    """Peak memory of this process and every process below it, sampled every ``every`` s."""

    def __init__(self, every: float = 0.2) -> None:
        import psutil

        self.me = psutil.Process()
        self.every = every
        self.stage_rss = self.worker_rss = self.total_pss = self.anon_pss = 0.0
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.every):
            try:
                kids = self.me.children(recursive=True)
                self.stage_rss = max(self.stage_rss, self.me.memory_info().rss / 2**20)
                total, anon = _pss(self.me.pid)
                for k in kids:
                    try:
                        self.worker_rss = max(self.worker_rss, k.memory_info().rss / 2**20)
                        t, a = _pss(k.pid)
                        total, anon = total + t, anon + a
                        self.pids.add(k.pid)
                    except (psutil.Error, OSError):
                        pass
                self.total_pss = max(self.total_pss, total)
                self.anon_pss = max(self.anon_pss, anon)
            except psutil.Error:
                pass

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def cmd_child(args: argparse.Namespace) -> None:
    import resource
    import tracemalloc

    from fakeproof.faces import run_crop_faces

    params = make_params(args.frames, workers=args.workers)
    tracemalloc.start()
    out = Path(args.out)
    with Sampler() as s:
        stats = run_crop_faces(params, Path(args.csv), Path(args.frames_dir), out / "faces.lmdb",
                               out / "faces.csv")
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"frames": stats["frames"], "stage_rss": max(rss, s.stage_rss),
                      "worker_rss": s.worker_rss, "total_pss": s.total_pss, "anon_pss": s.anon_pss,
                      "processes": len(s.pids), "tracemalloc": peak / 2**20,
                      "frames_per_s": stats["frames_per_s"], "seconds": stats["seconds"],
                      "store_mib": (out / "faces.lmdb" / "data.mdb").stat().st_size / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--videos", type=int, default=8)
    sp.add_argument("--frames", type=int, default=16, help="frames per video (frames.count)")
    sp.add_argument("--size", default="640x360", help="clip size WxH")
    sp.add_argument("--repeats", type=int, default=2)
    sp.add_argument("--dask", type=int, default=2, help="worker processes of the LocalCluster")
    sp.add_argument("--device", default="auto", help="faces.device (bare MTCNN: always the CPU)")
    sp.add_argument("--videos-per-task", type=int, default=1, help="faces.videos_per_task")
    sp.add_argument("--batch", type=int, default=16, help="faces.batch_size")
    mp = sub.add_parser("memory")
    mp.add_argument("--small", type=int, default=90)
    mp.add_argument("--large", type=int, default=900)
    mp.add_argument("--frames", type=int, default=8, help="frames per video (frames.count)")
    mp.add_argument("--size", default="256x256", help="clip size WxH")
    mp.add_argument("--workers", type=int, default=0, help="faces.workers (0 = every core)")
    mp.add_argument("--workdir", default=None, help="where the clips go (default: system temp)")
    for p in (sp, mp):
        p.add_argument("--photos", default=None, help="folder of face photos (default: package assets)")
    c = sub.add_parser("_child")
    for a in ("--csv", "--frames-dir", "--out"):
        c.add_argument(a, required=True)
    c.add_argument("--frames", type=int, default=8)
    c.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    {"speed": cmd_speed, "memory": cmd_memory, "_child": cmd_child}[args.cmd](args)


if __name__ == "__main__":
    main()
