"""Every dataset source through the real data stages, run as a user runs them.

For each source (ffpp, celebdf, dfdc, folder, csv) a tiny dataset tree of real face mp4 clips is
written in a temporary project (``tests/_layouts.py``) with a ``params.yaml`` of the code's
defaults, and ``fakeproof download``, ``extract_frames``, ``crop_faces`` and ``split`` run there
through :func:`fakeproof.cli.main` with the paths the repository's ``dvc.yaml`` passes (real
ffmpeg, real MTCNN, real LMDB). The checks:
labels, groups and originals; official splits honoured (FF++ pairs, the Celeb-DF test list);
crops in the LMDB for every video with a face; no group spanning two splits (the leakage proof);
FF++ video ids unique across methods. Then bad input through the CLI: broken and face-less
videos are reported and the stages go on; a bad root, bad metadata or a hostile archive served
over HTTP end the command with exit code 2 and one error line, and nothing written before is lost.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _layouts import BUILDERS, ClipBank, CliResult, Layout, PHOTOS, run_cli, write_params
from fakeproof.store import FaceStore, face_key

SOURCES = tuple(BUILDERS)
STAGES = ("download", "extract_frames", "crop_faces", "split")
FRAMES_PER_VIDEO = 2  # frames.count in write_params
CROP = 64             # faces.image_size in write_params


@functools.lru_cache(maxsize=None)
def stage_paths(stage: str) -> tuple[str, ...]:
    """The path arguments of ``stage`` as the repository's dvc.yaml passes them (its one home)."""
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())
    paths = {f"path.{k}": v for k, v in spec["vars"][0]["path"].items()}
    cmd = re.sub(r"\$\{([^}]+)\}", lambda m: paths[m.group(1)], spec["stages"][stage]["cmd"])
    argv = cmd.split()
    return tuple(argv[argv.index(f"stages/{stage}.py") + 1:])


def run_stage(project: Path, stage: str) -> CliResult:
    """``fakeproof <stage>`` with dvc.yaml's paths, in ``project``."""
    return run_cli(project, stage, *stage_paths(stage))
SPLIT_NAMES = ("train", "val", "test")


# --------------------------------------------------------------------------------------------------
# Fixtures: one project per source, the four stages run once per module
# --------------------------------------------------------------------------------------------------


@dataclass
class Project:
    dir: Path
    layout: Layout
    runs: dict[str, CliResult]

    def csv(self, rel: str) -> pd.DataFrame:
        return pd.read_csv(self.dir / rel, dtype=str, keep_default_na=False)

    @functools.cached_property
    def videos(self) -> pd.DataFrame:
        df = self.csv("data/raw/videos.csv")
        df["label"] = df["label"].astype(int)
        df["rel"] = [rel_path(self.dir, p) for p in df["path"]]
        return df

    @functools.cached_property
    def vid(self) -> dict[str, str]:
        """Relative file path -> video_id."""
        return dict(zip(self.videos["rel"], self.videos["video_id"]))

    @functools.cached_property
    def faces(self) -> pd.DataFrame:
        return self.csv("data/faces.csv")

    @functools.cached_property
    def splits(self) -> pd.DataFrame:
        df = self.csv("data/splits.csv")
        df["label"] = df["label"].astype(int)
        return df

    def stats(self, stage: str) -> dict[str, float]:
        """The counts of the stage's summary line ('stage X done in ..: k=v, ...')."""
        line = next(ln for ln in self.runs[stage].stderr.splitlines() if f"stage {stage} done" in ln)
        return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", line.split(": ", 2)[-1])}


def rel_path(project: Path, path: str) -> str:
    p = Path(path)
    return (p.relative_to(project) if p.is_absolute() else p).as_posix()


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> ClipBank:
    return ClipBank(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def projects(tmp_path_factory, bank):
    """``projects(source)``: the source's project after the four stages (built once)."""
    cache: dict[str, Project] = {}

    def get(source: str) -> Project:
        if source not in cache:
            d = tmp_path_factory.mktemp(f"proj_{source}")
            layout = BUILDERS[source](d, bank)
            write_params(d, layout.data, layout.split)
            runs = {}
            for stage in STAGES:
                runs[stage] = run_stage(d, stage)
                assert runs[stage].rc == 0, f"fakeproof {stage} ({source}): {runs[stage].stderr[-2000:]}"
            cache[source] = Project(d, layout, runs)
        return cache[source]

    return get


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def only_line(res: CliResult, command: str) -> str:
    """The single error line of a failed command (exit code 2, no traceback)."""
    assert res.rc == 2, res.stderr
    assert len(res.error_lines) == 1, res.stderr
    line = res.error_lines[0]
    assert line.startswith(f"fakeproof {command}: error: ")
    assert "Traceback" not in res.stderr
    return line


# --------------------------------------------------------------------------------------------------
# Every source through the four stages
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_stages_run_and_table_matches_layout(projects, source):
    p = projects(source)
    for stage in STAGES:
        assert p.runs[stage].error_lines == []
    expect = p.layout.expect
    assert sorted(p.videos["rel"]) == sorted(expect)
    assert (p.videos["source"] == source).all()
    assert p.videos["video_id"].is_unique
    for row in p.videos.itertuples():
        e = expect[row.rel]
        assert row.label == e.label, row.rel
        assert (row.method == "real") == (e.label == 0), row.rel
        if e.split:
            assert row.split_hint == e.split, row.rel
        if e.excluded:
            assert row.split_hint == "exclude", row.rel
        # The content fingerprint: the sha256 of the file's bytes, wherever the file lives.
        assert row.sha256 == hashlib.sha256((p.dir / row.rel).read_bytes()).hexdigest(), row.rel


@pytest.mark.parametrize("source", SOURCES)
def test_groups_and_originals(projects, source):
    p = projects(source)
    by_rel = p.videos.set_index("rel")
    for rel, e in p.layout.expect.items():
        if e.same_group_as:
            assert by_rel.loc[rel, "group"] == by_rel.loc[e.same_group_as, "group"], rel
        if e.original:
            assert by_rel.loc[rel, "original"] == p.vid[e.original], rel
    # Videos of different identities are in different groups unless the layout ties them.
    n_groups = p.videos["group"].nunique()
    assert 1 < n_groups < len(p.videos)


@pytest.mark.parametrize("source", SOURCES)
def test_crops_in_store_for_every_video_with_a_face(projects, source):
    p = projects(source)
    faces = p.faces
    store = FaceStore(p.dir / "data" / "faces.lmdb")
    try:
        assert sorted(store.keys()) == sorted(faces["key"])
        per_video = faces.groupby("video_id").size()
        with_face = {p.vid[rel] for rel, e in p.layout.expect.items() if e.face}
        assert set(per_video.index) == with_face
        assert (per_video == FRAMES_PER_VIDEO).all(), per_video.to_dict()
        for row in faces.itertuples():
            assert row.key == face_key(row.video_id, int(row.frame), int(row.face))
            crop = store.get(row.key)
            assert crop.shape == (CROP, CROP, 3) and crop.dtype == np.uint8
            assert crop.std() > 10, row.key  # a picture, not a blank fill
            # The face fills about half of the 112 px frame: a real detection, not a speck.
            w, h = float(row.x2) - float(row.x1), float(row.y2) - float(row.y1)
            assert 30 < w < 90 and 30 < h < 100, (row.key, w, h)
    finally:
        store.close()
    # A fake whose original has faces is cropped with the original's boxes.
    originals = p.videos.set_index("video_id")["original"]
    for row in faces.itertuples():
        want = "original" if originals[row.video_id] in with_face else "self"
        assert row.box_source == want, row.key


@pytest.mark.parametrize("source", SOURCES)
def test_split_is_leak_free(projects, source):
    p = projects(source)
    sp = p.splits
    expect = {p.vid[rel]: e for rel, e in p.layout.expect.items()}
    kept = {v for v, e in expect.items() if e.face and not e.excluded}
    assert set(sp["video_id"]) == kept
    assert set(sp["split"]) == set(SPLIT_NAMES)
    # The leakage proof: no group spans two splits, and splits.csv keeps the source's groups.
    assert (sp.groupby("group")["split"].nunique() == 1).all()
    groups = p.videos.set_index("video_id")["group"]
    assert (sp["group"] == sp["video_id"].map(groups)).all()
    split_of = sp.set_index("video_id")["split"]
    for v in sp["video_id"]:
        mates = groups.index[groups == groups[v]]
        assert {split_of[m] for m in mates if m in split_of.index} == {split_of[v]}, v
        original = p.videos.set_index("video_id").loc[v, "original"]
        if original in split_of.index:
            assert split_of[original] == split_of[v], v
    labels = p.videos.set_index("video_id")["label"]
    assert (sp["label"] == sp["video_id"].map(labels)).all()
    assert (sp["n_faces"].astype(int) == FRAMES_PER_VIDEO).all()
    # Official splits are honoured.
    for v in sp["video_id"]:
        if expect[v].split:
            assert split_of[v] == expect[v].split, v


def test_ffpp_official_pairs_decide_the_split(projects):
    p = projects("ffpp")
    sp = p.splits.set_index("video_id")
    # One official pair per split; its originals and fakes under both methods in it.
    assert sp.groupby("split")["group"].nunique().to_dict() == {"test": 1, "train": 1, "val": 1}
    train = sp[sp["split"] == "train"]
    assert train["group"].iloc[0] == "ffpp_pair_054_071"  # official train pair ["071", "054"]
    assert sorted(train.index) == ["ffpp_c23_Deepfakes_054_071", "ffpp_c23_Deepfakes_071_054",
                                   "ffpp_c23_Face2Face_071_054", "ffpp_c23_real_054",
                                   "ffpp_c23_real_071"]


def test_celebdf_test_split_is_the_list(projects):
    p = projects("celebdf")
    root = p.dir / "datasets" / "Celeb-DF-v2"
    listed = [ln.split()[1] for ln in (root / "List_of_testing_videos.txt").read_text().splitlines()]
    listed_ids = {p.vid[f"datasets/Celeb-DF-v2/{rel}"] for rel in listed}
    sp = p.splits
    assert set(sp.loc[sp["split"] == "test", "video_id"]) == listed_ids
    # The unlisted fake made from a test clip is dropped, not put in train or val.
    assert "celebdf_fake_id0_id2_0000" not in set(sp["video_id"])
    assert p.stats("split")["excluded_by_protocol"] == 1


def test_ffpp_same_pair_two_methods_are_two_videos(projects):
    p = projects("ffpp")
    yt = "datasets/ffpp/manipulated_sequences/{}/c23/videos/071_054.mp4"
    df_id, f2f_id = p.vid[yt.format("Deepfakes")], p.vid[yt.format("Face2Face")]
    assert df_id != f2f_id
    sp = p.splits.set_index("video_id")
    assert sp.loc[df_id, "group"] == sp.loc[f2f_id, "group"]
    assert (sp.loc[df_id, "method"], sp.loc[f2f_id, "method"]) == ("Deepfakes", "Face2Face")
    keys = p.faces.groupby("video_id")["key"].apply(sorted)
    assert not set(keys[df_id]) & set(keys[f2f_id])
    # Same geometry (both reuse the original's boxes) but different pixels: two stored videos.
    store = FaceStore(p.dir / "data" / "faces.lmdb")
    try:
        a, b = store.get(keys[df_id][0]), store.get(keys[f2f_id][0])
    finally:
        store.close()
    assert not np.array_equal(a, b)


def test_ffpp_video_aggregation_keeps_methods_apart(projects):
    """Video-level aggregation keys on video_id: the same pair's fakes under two methods stay two
    videos with their own scores (DeepfakeBench merges them by folder name)."""
    from fakeproof.data import FaceDataset

    p = projects("ffpp")
    yt = "datasets/ffpp/manipulated_sequences/{}/c23/videos/071_054.mp4"
    df_id, f2f_id = p.vid[yt.format("Deepfakes")], p.vid[yt.format("Face2Face")]
    ds = FaceDataset(p.dir / "data" / "faces.lmdb", p.dir / "data" / "faces.csv",
                     p.dir / "data" / "splits.csv", split="train")
    frames = ds.frames[["video_id", "label"]].copy()
    frames["prob"] = np.where(frames["video_id"] == df_id, 0.9,
                              np.where(frames["video_id"] == f2f_id, 0.2, 0.5))
    video = aggregate(frames)
    assert len(video) == frames["video_id"].nunique() == 5
    assert video.loc[df_id, "prob"] == pytest.approx(0.9)
    assert video.loc[f2f_id, "prob"] == pytest.approx(0.2)
    assert video.loc[df_id, "label"] == video.loc[f2f_id, "label"] == 1
    assert (video["n_frames"] == FRAMES_PER_VIDEO).all()


def aggregate(frames: pd.DataFrame) -> pd.DataFrame:
    """Video scores as the evaluate stage makes them (fakeproof.metrics.aggregate_videos)."""
    from fakeproof.metrics import aggregate_videos

    return aggregate_videos(frames, how="mean").set_index("video_id")


# --------------------------------------------------------------------------------------------------
# Bad videos, bad metadata: reported, and the stages go on
# --------------------------------------------------------------------------------------------------


def test_broken_videos_reported_by_extract_frames(projects):
    p = projects("folder")
    problems = p.csv("data/frames/problems.csv").set_index("video_id")
    assert sorted(problems.index) == ["folder_fake_empty", "folder_fake_notes", "folder_real_truncated"]
    assert (problems["stage"] == "extract_frames").all()
    assert problems.loc["folder_fake_empty", "path"].endswith("fake/empty.mp4")
    assert "0 bytes" in problems.loc["folder_fake_empty", "reason"]
    assert "not a readable video" in problems.loc["folder_fake_notes", "reason"]
    assert problems.loc["folder_real_truncated", "reason"] != ""
    stats = p.stats("extract_frames")
    assert (stats["videos"], stats["videos_total"], stats["problems"]) == (7, 10, 3)
    index = p.csv("data/frames/index.csv")
    assert sorted(index["video_id"].unique()) == sorted(
        v for v in p.videos["video_id"] if v not in problems.index)


def test_video_without_face_is_counted_not_fatal(projects):
    p = projects("folder")
    crop = p.stats("crop_faces")
    assert crop["videos_no_face"] == 1 and crop["videos_no_frames"] == 3
    assert crop["frames_no_face"] == FRAMES_PER_VIDEO
    assert "folder_real_wall" in p.runs["crop_faces"].stderr  # named in the warning
    assert "folder_real_wall" not in set(p.faces["video_id"])
    assert p.stats("split")["dropped_no_faces"] == 4  # the face-less clip and the 3 broken files
    assert "folder_real_wall" not in set(p.splits["video_id"])


def test_dfdc_metadata_mismatches_reported(projects):
    p = projects("dfdc")
    problems = p.csv("data/raw/problems.csv")
    by_name = {Path(r.path).name: r.reason for r in problems.itertuples()}
    assert sorted(by_name) == ["gone.mp4", "stray.mp4"]
    assert "listed in dfdc_train_part_0/metadata.json but not on disk" in by_name["gone.mp4"]
    assert "not in dfdc_train_part_1/metadata.json" in by_name["stray.mp4"]
    assert not {"dfdc_gone", "dfdc_stray"} & set(p.videos["video_id"])
    # A fake whose original is in another part is grouped (and split) with it.
    sp = p.splits.set_index("video_id")
    assert sp.loc["dfdc_waaa", "split"] == sp.loc["dfdc_aaaa", "split"] == sp.loc["dfdc_xaaa", "split"]


# --------------------------------------------------------------------------------------------------
# Errors through the CLI: exit code 2, one line, nothing already written lost
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def raw_project(tmp_path, bank) -> Path:
    """A project whose download stage already succeeded (folder source, two clips)."""
    bank.put(tmp_path / "vids" / "real" / "a.mp4", PHOTOS[0])
    bank.put(tmp_path / "vids" / "fake" / "a_x.mp4", PHOTOS[0], 1)
    write_params(tmp_path, {"source": "folder", "root": "vids"})
    assert run_stage(tmp_path, "download").rc == 0
    assert (tmp_path / "data" / "raw" / "videos.csv").is_file()
    return tmp_path


def test_download_root_that_does_not_exist(raw_project):
    before = snapshot(raw_project / "data")
    write_params(raw_project, {"source": "folder", "root": "no/such/folder"})
    res = run_stage(raw_project, "download")
    line = only_line(res, "download")
    assert res.stderr.strip() == line  # nothing else on stderr
    assert "data.root = 'no/such/folder'" in line and "no such folder" in line
    assert snapshot(raw_project / "data") == before
    assert sorted(p.name for p in (raw_project / "data").iterdir()) == ["raw"]


def test_console_script_root_that_does_not_exist(raw_project):
    """The same through the installed ``fakeproof`` script: exit code 2, stderr one line."""
    exe = Path(sys.executable).parent / "fakeproof"
    before = snapshot(raw_project / "data")
    write_params(raw_project, {"source": "dfdc", "root": "missing_dfdc"})
    proc = subprocess.run([str(exe), "download", *stage_paths("download")], cwd=raw_project, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert proc.stderr.startswith("fakeproof download: error: data.root = 'missing_dfdc': no such "
                                  "folder; set data.root to the DFDC folder")
    assert snapshot(raw_project / "data") == before


def test_bad_params_key(raw_project):
    before = snapshot(raw_project / "data")
    write_params(raw_project, {"source": "ffpp2"})
    line = only_line(run_stage(raw_project, "download"), "download")
    assert "data.source = 'ffpp2'" in line and "params.yaml" in line
    assert snapshot(raw_project / "data") == before


def test_dfdc_malformed_metadata(raw_project, bank):
    part = raw_project / "dfdc" / "dfdc_train_part_0"
    bank.put(part / "aaaa.mp4", PHOTOS[0])
    (part / "metadata.json").write_text('{"aaaa.mp4": {"label": "REAL"},\n')
    before = snapshot(raw_project / "data")
    write_params(raw_project, {"source": "dfdc", "root": "dfdc"})
    line = only_line(run_stage(raw_project, "download"), "download")
    assert "dfdc/dfdc_train_part_0/metadata.json: not valid JSON" in line
    assert snapshot(raw_project / "data") == before


@pytest.mark.parametrize("stage, missing", [("extract_frames", "data/raw/videos.csv"),
                                            ("crop_faces", "data/frames/index.csv")])
def test_stage_without_its_input(raw_project, stage, missing):
    """A stage run before the one that makes its input: one line naming the missing file."""
    before = snapshot(raw_project / "data")
    if stage == "extract_frames":
        (raw_project / "data" / "raw" / "videos.csv").unlink()
        before.pop("raw/videos.csv")
    line = only_line(run_stage(raw_project, stage), stage)
    assert f"{missing}: not found" in line
    assert snapshot(raw_project / "data") == before
    assert sorted(p.name for p in (raw_project / "data").iterdir()) == ["raw"]


ESCAPE = "fakeproof-escape-check.txt"


def hostile_archive(folder: Path, kind: str) -> Path:
    """An archive with good clips and one member that climbs out with ``..``."""
    good = b"not checked: the archive is refused before anything is written"
    evil = "../" * 8 + ESCAPE
    if kind == "tar":
        path = folder / "dataset.tar.gz"
        with tarfile.open(path, "w:gz") as tf:
            for name, data in (("dataset/real/a.mp4", good), (evil, b"escaped")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        path = folder / "dataset.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("dataset/real/a.mp4", good)
            zf.writestr(evil, b"escaped")
    return path


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
    """A real HTTP server on 127.0.0.1 serving a folder: yields (folder, base URL)."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_download_archive_with_parent_member(raw_project, http_folder, kind):
    folder, base = http_folder
    archive = hostile_archive(folder, kind)
    before = snapshot(raw_project / "data")
    write_params(raw_project, {"source": "folder", "root": None, "url": f"{base}/{archive.name}"})
    res = run_stage(raw_project, "download")
    line = only_line(res, "download")
    assert res.stderr.strip().splitlines()[-1] == line
    assert f"member '{'../' * 8 + ESCAPE}' contains '..'; refusing to extract" in line
    assert archive.name in line
    # Nothing written outside (nor inside): no escaped file anywhere up the tree, data/ unchanged.
    assert not list(raw_project.parent.rglob(ESCAPE))
    assert not any((d / ESCAPE).exists() for d in raw_project.parents)
    assert snapshot(raw_project / "data") == before
    assert sorted(p.name for p in (raw_project / "data").iterdir()) == ["raw"]
