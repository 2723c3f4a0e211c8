"""The LMDB face store (round trips, deterministic bytes, growth, append) and the torch Dataset."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fakeproof.data import DataError, FaceDataset, make_loader
from fakeproof.store import (DATA_FILE, FaceStore, FaceStoreWriter, StoreError, encode_image,
                             face_key, value_info)
from helpers_video import face_photo


def crops(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Realistic crops: windows of a face photo at random offsets (compressible like real faces)."""
    img = face_photo("obama.jpg")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        out.append(np.ascontiguousarray(img[y:y + size, x:x + size]))
    return out


def write_store(path: Path, items: dict[str, np.ndarray], **kw) -> FaceStoreWriter:
    with FaceStoreWriter(path, **kw) as w:
        for k, v in items.items():
            w.put(k, v)
    return w


def sha(path: Path) -> str:
    return hashlib.sha256((path / DATA_FILE).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def items() -> dict[str, np.ndarray]:
    return {face_key(f"vid{i % 4}", i, 0): c for i, c in enumerate(crops(40))}


def test_keys() -> None:
    assert face_key("a.b-c", 42, 1) == "a.b-c/000042/1"
    assert "a/b/000042/1".rsplit("/", 2) == ["a/b", "000042", "1"]  # ids may hold a slash


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_round_trip(tmp_path, items, encoding) -> None:
    store = tmp_path / "faces.lmdb"
    write_store(store, items, encoding=encoding, jpeg_quality=95)
    assert os.listdir(store) == [DATA_FILE]  # no lock.mdb
    s = FaceStore(store)
    assert len(s) == len(items) and s.keys() == sorted(items)
    for k, ref in items.items():
        got = s.get(k)
        assert got.shape == ref.shape and got.dtype == np.uint8
        if encoding == "jpeg":
            assert np.abs(got.astype(int) - ref.astype(int)).mean() < 2.0
        else:
            assert np.array_equal(got, ref)
        t = s.get_tensor(k)
        assert t.shape == (3, 64, 64) and torch.equal(t.permute(1, 2, 0), torch.from_numpy(got))
        assert value_info(s.get_value(k)) == (encoding, 64, 64)
    assert next(iter(items)) in s and "vid0/999999/0" not in s and 3 not in s
    with pytest.raises(KeyError, match="vid0/999999/0"):
        s.get("vid0/999999/0")
    assert os.listdir(store) == [DATA_FILE]  # reading made no lock file either
    s.close()


def test_bytes_deterministic_and_map_growth(tmp_path, items) -> None:
    w1 = write_store(tmp_path / "a", items, encoding="png", map_size=4096, commit_every=7)
    w2 = write_store(tmp_path / "b", items, encoding="png", map_size=4096, commit_every=7)
    assert w1.grown >= 3 and w1.grown == w2.grown  # started far too small: it had to grow
    assert sha(tmp_path / "a") == sha(tmp_path / "b")
    s = FaceStore(tmp_path / "a")
    assert len(s) == len(items) and all(np.array_equal(s.get(k), v) for k, v in items.items())
    # nothing but the two stores is left behind (scratch environments removed)
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_append_second_source(tmp_path, items) -> None:
    store = tmp_path / "faces.lmdb"
    first = dict(list(items.items())[:20])
    other = {face_key(f"other{i}", i, 0): c for i, c in enumerate(crops(10, seed=1))}
    write_store(store, first, encoding="png")
    with FaceStoreWriter(store, encoding="jpeg", append=True) as w:
        assert len(w) == 20
        for k, v in other.items():
            w.put(k, v)
    s = FaceStore(store)
    assert len(s) == 30 and set(s.keys()) == set(first) | set(other)
    assert np.array_equal(s.get(next(iter(first))), next(iter(first.values())))  # png kept exact
    assert value_info(s.get_value(next(iter(other))))[0] == "jpeg"
    assert os.listdir(store) == [DATA_FILE]
    before = sha(store)
    with pytest.raises(StoreError, match="already in the store"):
        with FaceStoreWriter(store, append=True) as w:
            w.put(next(iter(other)), next(iter(other.values())))
    assert sha(store) == before and sorted(os.listdir(tmp_path)) == ["faces.lmdb"]


def test_failed_write_leaves_store_intact(tmp_path, items) -> None:
    store = tmp_path / "faces.lmdb"
    write_store(store, items)
    before = sha(store)
    with pytest.raises(RuntimeError, match="boom"):
        with FaceStoreWriter(store) as w:
            w.put("x/000000/0", crops(1)[0])
            raise RuntimeError("boom")
    assert sha(store) == before and sorted(os.listdir(tmp_path)) == ["faces.lmdb"]


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(StoreError, match="no data.mdb"):
        FaceStore(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="encoding"):
        FaceStoreWriter(tmp_path / "s", encoding="webp")
    with pytest.raises(StoreError, match="uint8"):
        encode_image(np.zeros((4, 4), np.float32))


def _child_read(store: FaceStore, key: str, q) -> None:
    q.put(store.get(key).sum())


def test_reader_pickles_and_survives_fork(tmp_path, items) -> None:
    store = tmp_path / "faces.lmdb"
    write_store(store, items)
    s = FaceStore(store)
    key = next(iter(items))
    want = int(items[key].sum())
    assert s.get(key).sum() == want  # opened in the parent before forking
    assert int(pickle.loads(pickle.dumps(s)).get(key).sum()) == want
    second = FaceStore(store)  # a second reader of the same file in one process
    assert int(second.get(key).sum()) == want
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        q = ctx.Queue()
        p = ctx.Process(target=_child_read, args=(s, key, q))
        p.start()
        got = q.get(timeout=60)
        p.join(timeout=60)
        assert p.exitcode == 0 and int(got) == want
    assert int(s.get(key).sum()) == want  # the parent's handles still work


# --------------------------------------------------------------------------------------------------
# FaceDataset
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("ds")
    videos = {"r1": ("train", 0), "f1": ("train", 1), "r2": ("val", 0), "f2": ("val", 1),
              "r3": ("test", 0), "dropped": ("", 0)}
    rows, items = [], {}
    imgs = iter(crops(60, size=48, seed=3))
    for vid in videos:
        for frame in (4, 0, 8):  # written out of order on purpose
            key = face_key(vid, frame, 0)
            items[key] = next(imgs)
            rows.append({"key": key, "video_id": vid, "frame": frame, "face": 0, "x1": 1.0,
                         "y1": 1.0, "x2": 9.0, "y2": 9.0, "prob": 0.99, "box_source": "self"})
    write_store(d / "faces.lmdb", items, encoding="png")
    pd.DataFrame(rows).to_csv(d / "faces.csv", index=False)
    splits = [{"video_id": v, "label": lab, "split": sp, "group": v[1:], "method": "m" if lab else "real",
               "source": "test", "n_faces": 3} for v, (sp, lab) in videos.items() if v != "dropped"]
    pd.DataFrame(splits).to_csv(d / "splits.csv", index=False)
    return d / "faces.lmdb", d / "faces.csv", d / "splits.csv"


def test_dataset_items_and_split_filter(dataset_files) -> None:
    store, faces, splits = dataset_files
    ds = FaceDataset(store, faces, splits, "train")
    assert len(ds) == 6
    assert ds.frames["key"].tolist() == sorted(ds.frames["key"])  # deterministic order by key
    assert set(ds.frames["video_id"]) == {"r1", "f1"} and set(ds.frames["split"]) == {"train"}
    assert {"key", "video_id", "frame", "label", "group", "split", "method", "source"} <= set(ds.frames)
    assert ds.labels.tolist() == [int(v.startswith("f")) for v in ds.frames["video_id"]]
    x, y, i = ds[4]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == torch.float32 and y.shape == () and float(y) == ds.labels[4] and i == 4
    raw = FaceStore(store).get(ds.frames["key"][4])
    assert torch.allclose(x, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)
    assert len(FaceDataset(store, faces, splits, "val")) == 6
    assert len(FaceDataset(store, faces, splits, "test")) == 3
    everything = FaceDataset(store, faces, splits, None)
    assert len(everything) == 15 and "dropped" not in set(everything.frames["video_id"])
    with pytest.raises(DataError, match="no split 'trian'"):
        FaceDataset(store, faces, splits, "trian")


def test_augment_is_deterministic_per_seed_epoch_index(dataset_files) -> None:
    store, faces, splits = dataset_files
    a = FaceDataset(store, faces, splits, "train", augment=True, seed=1)
    b = FaceDataset(store, faces, splits, "train", augment=True, seed=1)
    plain = FaceDataset(store, faces, splits, "train")
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    assert any(not torch.equal(a[i][0], plain[i][0]) for i in range(len(a)))
    e0 = [a[i][0] for i in range(len(a))]
    a.set_epoch(1)
    e1 = [a[i][0] for i in range(len(a))]
    assert any(not torch.equal(u, v) for u, v in zip(e0, e1))
    a.set_epoch(0)
    assert all(torch.equal(u, a[i][0]) for i, u in enumerate(e0))
    # flips are exact mirror images up to the brightness/contrast jitter (a monotone map)
    for i in range(len(a)):
        x, p = a[i][0], plain[i][0]
        corr_same = torch.corrcoef(torch.stack([x.flatten(), p.flatten()]))[0, 1]
        corr_flip = torch.corrcoef(torch.stack([x.flatten(), p.flip(-1).flatten()]))[0, 1]
        assert max(corr_same, corr_flip) > 0.99


def test_loader_with_workers_matches_single_process(dataset_files) -> None:
    store, faces, splits = dataset_files
    ds = FaceDataset(store, faces, splits, None, augment=True, seed=5)
    ds[0]  # the parent has the store open before the workers fork
    ds.set_epoch(3)

    def run(workers: int) -> list[tuple]:
        loader = make_loader(ds, batch_size=4, shuffle=True, seed=7, num_workers=workers)
        return [(x, y, i) for x, y, i in loader]

    single, multi = run(0), run(2)
    assert [b[2].tolist() for b in single] == [b[2].tolist() for b in multi]
    assert sorted(i for b in single for i in b[2].tolist()) == list(range(len(ds)))
    for (x0, y0, _), (x1, y1, _) in zip(single, multi):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert [b[2].tolist() for b in run(0)] == [b[2].tolist() for b in single]  # seeded order
    other = make_loader(ds, batch_size=4, shuffle=True, seed=8)
    assert [b[2].tolist() for b in other] != [b[2].tolist() for b in single]


def test_dataset_reports_store_out_of_step(dataset_files, tmp_path) -> None:
    store, faces, splits = dataset_files
    df = pd.read_csv(faces)
    df.loc[len(df)] = ["r1/000099/0", "r1", 99, 0, 1.0, 1.0, 9.0, 9.0, 0.9, "self"]
    df.to_csv(tmp_path / "faces.csv", index=False)
    with pytest.raises(DataError, match="r1/000099/0"):
        FaceDataset(store, tmp_path / "faces.csv", splits, "train")
    with pytest.raises(DataError, match="crop_faces"):
        FaceDataset(store, tmp_path / "absent.csv", splits, "train")
