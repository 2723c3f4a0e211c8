"""extract_frames and crop_faces on every core and on a Dask cluster: the same bytes as one process.

Real mp4 clips, real ffmpeg, real MTCNN, real LMDB; a real ``distributed.LocalCluster`` of two
worker processes. The serial run (``workers: 1``, in the test's own process) is the reference.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fakeproof import parallel
from fakeproof.faces import FacesError, resolve_device, run_crop_faces
from fakeproof.frames import FramesError, run_extract_frames
from fakeproof.store import DATA_FILE
from helpers_video import make_blank_clip, make_face_clip, make_fake_clip, make_params, video_table

COUNT = 5
FACES = {"image_size": 64, "batch_size": 4}


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_both(csv: Path, out: Path, frames: dict, faces: dict) -> tuple[dict, dict]:
    params = make_params(frames={"count": COUNT, **frames}, faces={**FACES, **faces})
    fstats = run_extract_frames(params, csv, out / "frames")
    cstats = run_crop_faces(params, csv, out / "frames", out / "faces.lmdb", out / "faces.csv")
    return fstats, cstats


def outputs(out: Path) -> dict[str, str]:
    return {**{f"frames/{k}": v for k, v in digests(out / "frames").items()},
            "faces.csv": digests(out)["faces.csv"],
            "data.mdb": digests(out / "faces.lmdb")[DATA_FILE]}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two real/fake pairs, a face clip without fakes, a clip without a face, a damaged file; and
    the serial run's outputs."""
    d = tmp_path_factory.mktemp("par")
    make_face_clip(d / "r1.mp4", "obama.jpg", size=128, n_frames=10)
    make_fake_clip(d / "f1.mp4", "obama.jpg", size=128, n_frames=10)
    make_face_clip(d / "r2.mp4", "obama2.jpg", size=112, n_frames=10)
    make_fake_clip(d / "f2.mp4", "obama2.jpg", size=112, n_frames=10)
    make_face_clip(d / "solo.mp4", "obama2.jpg", size=128, n_frames=12)
    make_blank_clip(d / "blank.mp4", size=96, n_frames=10)
    (d / "broken.mp4").write_bytes((d / "r1.mp4").read_bytes()[:600])
    rows = [{"video_id": "r1", "path": "r1.mp4", "group": "g1"},
            {"video_id": "f1", "path": "f1.mp4", "label": 1, "group": "g1", "original": "r1"},
            {"video_id": "r2", "path": "r2.mp4", "group": "g2"},
            {"video_id": "f2", "path": "f2.mp4", "label": 1, "group": "g2", "original": "r2"},
            {"video_id": "solo", "path": "solo.mp4"},
            {"video_id": "blank", "path": "blank.mp4"},
            {"video_id": "broken", "path": "broken.mp4"}]
    for r in rows:
        r["path"] = str(d / r["path"])
    csv = video_table(d / "videos.csv", rows)
    fstats, cstats = run_both(csv, d / "serial", {"workers": 1}, {"workers": 1})
    assert fstats["workers"] == cstats["workers"] == "1 process (this one)"
    assert fstats["problems"] == 1 and cstats["videos"] == 6 and cstats["frames_reused"] == 2 * COUNT
    return {"dir": d, "csv": csv, "rows": rows, "serial": outputs(d / "serial"), "stats": cstats}


def test_local_processes_give_the_serial_bytes(clips, tmp_path) -> None:
    fstats, cstats = run_both(clips["csv"], tmp_path, {"workers": 2}, {"workers": 2})
    assert fstats["workers"] == cstats["workers"] == "2 local processes"
    assert outputs(tmp_path) == clips["serial"]
    same = ("videos", "frames", "faces", "frames_reused", "frames_no_face", "videos_no_face")
    assert {k: cstats[k] for k in same} == {k: clips["stats"][k] for k in same}


def test_dask_cluster_gives_the_serial_bytes(clips, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    import dask

    # Workers fork from this process's preloaded forkserver instead of importing torch afresh
    # (seconds each): faster, and the same code path as spawned workers once they are up.
    parallel.forkserver_context(parallel.PREPROCESS_MODULES)
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        fstats, cstats = run_both(clips["csv"], tmp_path, {"scheduler": address},
                                  {"scheduler": address})
    assert fstats["workers"].startswith(f"dask {address} (2 workers")
    assert cstats["workers"] == fstats["workers"]
    assert outputs(tmp_path) == clips["serial"]


def test_groups_of_videos_batch_across_them_and_stay_deterministic(clips, tmp_path) -> None:
    """faces.videos_per_task 3: detection batches pool frames of several videos (the GPU setting);
    the bytes depend on the grouping, not on where the groups run; boxes match the per-video run."""
    serial_frames = clips["dir"] / "serial" / "frames"
    runs = {}
    for workers in (1, 2):
        params = make_params(frames={"count": COUNT},
                             faces={**FACES, "batch_size": 8, "videos_per_task": 3, "workers": workers})
        out = tmp_path / f"w{workers}"
        run_crop_faces(params, clips["csv"], serial_frames, out / "faces.lmdb", out / "faces.csv")
        runs[workers] = (digests(out)["faces.csv"], digests(out / "faces.lmdb")[DATA_FILE])
    assert runs[1] == runs[2]
    grouped = pd.read_csv(tmp_path / "w1" / "faces.csv")
    single = pd.read_csv(clips["dir"] / "serial" / "faces.csv")
    assert grouped[["key", "box_source"]].equals(single[["key", "box_source"]])
    cols = ["x1", "y1", "x2", "y2"]
    assert np.abs(grouped[cols].to_numpy() - single[cols].to_numpy()).max() < 0.5


def test_relative_paths_follow_the_working_directory(clips, tmp_path, monkeypatch) -> None:
    """Workers fork from a server started earlier, elsewhere: paths are resolved in the stage."""
    rows = [dict(r, path=os.path.relpath(r["path"], tmp_path)) for r in clips["rows"]]
    broken = rows[-1]["path"]
    csv = video_table(tmp_path / "videos.csv", rows)
    monkeypatch.chdir(tmp_path)
    params = make_params(frames={"count": COUNT, "workers": 2}, faces={**FACES, "workers": 2})
    stats = run_extract_frames(params, Path("videos.csv"), Path("frames"))
    run_crop_faces(params, csv, Path("frames"), Path("faces.lmdb"), Path("faces.csv"))
    assert stats["videos"] == 6 and stats["problems"] == 1
    problems = "frames/problems.csv"  # lists the path as the table gives it
    assert pd.read_csv(tmp_path / problems)["path"].tolist() == [broken]
    got, want = outputs(tmp_path), clips["serial"]
    assert got.pop(problems) != want.pop(problems) and got == want


def test_a_worker_error_reaches_the_stage_and_keeps_old_outputs(clips, tmp_path) -> None:
    frames = tmp_path / "frames"
    shutil.copytree(clips["dir"] / "serial" / "frames", frames)
    (frames / "r2.tar").write_bytes(b"not a tar archive at all" * 100)
    (tmp_path / "faces.csv").write_text("old\n")
    params = make_params(frames={"count": COUNT}, faces={**FACES, "workers": 2})
    with pytest.raises(FramesError, match="r2.tar: unreadable frame archive"):
        run_crop_faces(params, clips["csv"], frames, tmp_path / "faces.lmdb", tmp_path / "faces.csv")
    assert (tmp_path / "faces.csv").read_text() == "old\n" and not (tmp_path / "faces.lmdb").exists()


def test_scheduler_address_errors_name_the_key(clips, tmp_path, monkeypatch) -> None:
    params = make_params(faces={"scheduler": "localhost:8786"})
    with pytest.raises(parallel.ParallelError, match=r"^faces.scheduler = 'localhost:8786': not a dask"):
        run_crop_faces(params, clips["csv"], clips["dir"] / "serial" / "frames",
                       tmp_path / "f.lmdb", tmp_path / "f.csv")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(parallel.ParallelError, match="frames.scheduler = tcp://127.0.0.1:9: no dask"):
        run_extract_frames(make_params(frames={"scheduler": "tcp://127.0.0.1:9"}), clips["csv"],
                           tmp_path / "frames")
    assert sorted(os.listdir(tmp_path)) == []


def _threads(_: int) -> tuple[int, int]:
    return torch.get_num_threads(), parallel.worker_rank()


def test_executor_keeps_order_bounds_the_window_and_reports_dead_workers() -> None:
    pulled = []

    def items():
        for i in range(20):
            pulled.append(i)
            yield i

    with parallel.executor("faces", 2, None) as ex:
        results = ex.imap(_threads, items())
        first = next(results)
        assert len(pulled) <= parallel.WINDOW * 2 + 1  # not the whole list up front
        rest = list(results)
    assert first[0] == 1 and {t for t, _ in rest} == {1} and {r for _, r in rest} <= {0, 1}
    with parallel.executor("faces", 2, None) as ex:
        assert list(ex.imap(abs, range(-30, 0))) == list(range(30, 0, -1))
    with pytest.raises(parallel.ParallelError, match="faces.workers = 2: a worker process died"):
        with parallel.executor("faces", 2, None) as ex:
            list(ex.imap(os._exit, [3, 3, 3]))
    assert parallel.resolve_workers(0) == parallel.cpu_count()
    assert parallel.resolve_workers(0, tasks=1) == 1 and parallel.resolve_workers(5, tasks=3) == 3
    with parallel.executor("frames", 4, None, tasks=1) as ex:
        assert ex.in_process and list(ex.imap(abs, [-1])) == [1]


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        assert resolve_device("cuda", rank=torch.cuda.device_count()).index == 0
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(FacesError, match="faces.device = 'cuda': no CUDA device here"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_mtcnn_on_the_gpu(clips, tmp_path) -> None:
    """MTCNN on CUDA: serial and 2 processes give the same bytes; boxes agree with the CPU run."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    frames = clips["dir"] / "serial" / "frames"
    runs = {}
    for workers in (1, 2):
        params = make_params(frames={"count": COUNT},
                             faces={**FACES, "device": "cuda", "videos_per_task": 2,
                                    "workers": workers})
        out = tmp_path / f"w{workers}"
        stats = run_crop_faces(params, clips["csv"], frames, out / "faces.lmdb", out / "faces.csv")
        assert stats["device"].startswith("cuda")
        runs[workers] = (digests(out)["faces.csv"], digests(out / "faces.lmdb")[DATA_FILE])
    assert runs[1] == runs[2]
    gpu = pd.read_csv(tmp_path / "w1" / "faces.csv")
    cpu = pd.read_csv(clips["dir"] / "serial" / "faces.csv")
    assert gpu["key"].tolist() == cpu["key"].tolist()
    cols = ["x1", "y1", "x2", "y2"]
    assert np.abs(gpu[cols].to_numpy() - cpu[cols].to_numpy()).max() < 1.0
