"""The background prefetch of ``num_workers: 0`` loaders (:class:`fakeproof.data.Prefetched`,
used by :func:`fakeproof.fit.fit` when a core is left over by the step's threads): the same
batches in the same order, the same trained weights bit for bit as loading between steps, the
caller's torch thread count untouched while the thread augments, and no thread left behind when
the caller or the dataset raises."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

import fakeproof.fit as fit_mod
from _tinydata import build_store, tiny_params
from fakeproof.data import FaceDataset, Prefetched, make_loader, threads_are_per_thread
from fakeproof.errors import TrainingError
from fakeproof.fit import fit, weighted_bce
from fakeproof.models import create_model
from fakeproof.runtime import Runtime

VIDEOS = {"train": 6, "val": 2}


def _live() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "fakeproof-prefetch"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("prefetch") / "data", VIDEOS, frames=4, size=32,
                       encoding="png")


def _dataset(paths, augment="standard") -> FaceDataset:
    return FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "train", augment=augment,
                       seed=3)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _train(paths, tmp_path, depth: int, monkeypatch, threads_seen: list) -> tuple[dict, torch.Tensor]:
    """Two epochs of ``fit`` (smallcnn, ``standard`` augmentation, PNG crops) with prefetch
    ``depth``; the state dict and the global RNG state after."""
    monkeypatch.setattr(fit_mod, "prefetch_depth", lambda: depth)  # forced, whatever the cores
    tp = replace(tiny_params().train, batch_size=8, threads=2, augment="standard")
    torch.manual_seed(0)
    model = create_model("smallcnn")

    def step(net, module, x, y, gen, weights, progress):
        threads_seen.append(torch.get_num_threads())
        return weighted_bce(net(x), y, weights)

    fit(model, _dataset(paths), tp, Runtime(torch.device("cpu"), None, True), 2, 1e-2, 3, step,
        lambda m: {"select": 0.0}, tmp_path / f"tb{depth}", "t", None, "fp")
    return model.state_dict(), torch.get_rng_state()


def test_prefetched_training_gives_the_same_weights_bit_for_bit(paths, tmp_path, monkeypatch,
                                                                two_threads) -> None:
    seen_plain: list = []
    seen_ahead: list = []
    plain, rng_plain = _train(paths, tmp_path, 0, monkeypatch, seen_plain)
    ahead, rng_ahead = _train(paths, tmp_path, 2, monkeypatch, seen_ahead)
    assert plain.keys() == ahead.keys()
    for k in plain:
        same = (torch.equal(plain[k], ahead[k]) if isinstance(plain[k], torch.Tensor)
                else plain[k] == ahead[k])
        assert same, k
    assert torch.equal(rng_plain, rng_ahead)  # no global RNG draw moved
    assert set(seen_ahead) == {2} and set(seen_plain) == {2}  # train.threads in every step
    assert _live() == []


def test_the_same_batches_in_the_same_order(paths) -> None:
    ds = _dataset(paths)
    ds.set_epoch(1)
    plain = list(make_loader(ds, 5, shuffle=True, seed=7))
    with Prefetched(make_loader(ds, 5, shuffle=True, seed=7)) as ahead:
        got = list(ahead)
    assert len(got) == len(plain) == len(ahead)
    for (xa, ya, ia), (xb, yb, ib) in zip(plain, got):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert _live() == []


def test_a_per_thread_backend_starts_the_thread() -> None:
    # the default builds use OpenMP; without it the iteration runs in the caller (no overlap)
    assert threads_are_per_thread()


def test_the_thread_runs_only_with_a_core_left_over(monkeypatch, two_threads) -> None:
    monkeypatch.setattr(fit_mod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert fit_mod.prefetch_depth() == 0  # 2 cores, 2 intra-op threads: load between steps
    monkeypatch.setattr(fit_mod.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert fit_mod.prefetch_depth() == fit_mod.PREFETCH_DEPTH


def test_the_thread_stops_when_the_caller_leaves_early(paths) -> None:
    with pytest.raises(RuntimeError, match="caller"):
        with Prefetched(make_loader(_dataset(paths), 2), depth=1) as ahead:
            next(ahead)
            raise RuntimeError("caller")
    assert _live() == []


def test_an_error_in_the_dataset_reaches_the_caller(paths) -> None:
    class Broken(FaceDataset):
        def __getitem__(self, index):
            if index == 5:
                raise KeyError("crop 5")
            return super().__getitem__(index)

    ds = Broken(paths.store, paths.faces_csv, paths.splits_csv, "train")
    with pytest.raises(KeyError, match="crop 5"):
        with Prefetched(make_loader(ds, 2)) as ahead:
            for _ in ahead:
                pass
    assert _live() == []


def test_a_training_error_leaves_no_thread(paths, tmp_path) -> None:
    tp = replace(tiny_params().train, batch_size=8, threads=1)

    def nan_step(net, module, x, y, gen, weights, progress):
        return weighted_bce(net(x), y, weights) * float("nan")

    with pytest.raises(TrainingError, match="loss became"):
        fit(create_model("smallcnn"), _dataset(paths), tp, Runtime(torch.device("cpu"), None, True),
            1, 1e-2, 0, nan_step, lambda m: {"select": 0.0}, tmp_path / "tb", "t", None, "fp")
    assert _live() == []
