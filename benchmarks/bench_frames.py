"""Benchmark the extract_frames stage on every backend, beside bare ffmpeg decoding.

    python benchmarks/bench_frames.py [--videos 16] [--length 64] [--frames 16] [--size 640x360]
                                      [--dask 2] [--repeats 2]

The stage (check the file, probe it, scan the stream for errors, decode the sampled frames, JPEG
and tar them, write index.csv) runs with 1 process (``frames.workers: 1``), with every core
(``workers: 0``) and on a ``distributed.LocalCluster`` of ``--dask`` worker processes
(``frames.scheduler``). Beside it, bare decoding: :func:`fakeproof.video.read_frames` of the same
frame indices (ffmpeg's select filter, one thread; the probe done beforehand, not timed), in 1 and
in N processes. Frames/s count stored frames. A first run of each backend starts its workers and
is not timed; configurations alternate over ``--repeats``, medians are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

from bench_crop import backend_runs, make_clips, make_params, measure, print_table


def bare_job(job: tuple[str, list[int], int, object]) -> int:
    """Decode the sampled frames of one video (probed beforehand); returns the frames decoded."""
    from fakeproof import video

    path, want, max_side, info = job
    got, _ = video.read_frames(path, want, info=info, max_side=max_side)
    return len(got)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--length", type=int, default=64, help="frames per clip")
    ap.add_argument("--frames", type=int, default=16, help="frames kept per clip (frames.count)")
    ap.add_argument("--size", default="640x360", help="clip size WxH")
    ap.add_argument("--dask", type=int, default=2, help="worker processes of the LocalCluster")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--photos", default=None, help="folder of face photos (default: package assets)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd

    from fakeproof import parallel, video
    from fakeproof.frames import choose_indices, run_extract_frames

    w, h = (int(v) for v in args.size.split("x"))
    params = make_params(args.frames)
    cores = parallel.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = make_clips(tmp / "clips", args.videos, args.length, (w, h), args.photos)
        jobs = []
        for path in pd.read_csv(csv)["path"]:
            info = video.probe(path)
            jobs.append((path, choose_indices(params.frames, info), params.frames.max_side, info))

        def stage(tag: str, **frames) -> tuple[int, float, float]:
            p = dataclasses.replace(params, frames=dataclasses.replace(params.frames, **frames))
            return measure(lambda: run_extract_frames(p, csv, tmp / tag)["frames"])

        configs, runs = backend_runs(bare_job, jobs, stage, args.dask, args.repeats,
                                     "bare decode")
    print_table(f"\nextract_frames speed: {args.videos} clips of {args.length} frames at {w}x{h}, "
                f"{args.frames} kept per clip, JPEG {params.frames.jpeg_quality}, {cores} cores, "
                f"load average {os.getloadavg()[0]:.1f}, median of {args.repeats}", configs, runs,
                "bare decode")


if __name__ == "__main__":
    main()
