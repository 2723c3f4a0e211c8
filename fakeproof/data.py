"""The torch Dataset over the face store, and a seeded DataLoader helper.

:class:`FaceDataset` joins ``faces.csv`` (one row per stored crop) with ``splits.csv`` (one row per
video: label, split, group, method, source) and serves ``(image, label, index)``: ``image`` float32
(3, H, W) in [0, 1], ``label`` a float32 scalar tensor (1 = fake), ``index`` the item's position.
Rows are ordered by key (video, frame, face), so the order never depends on how the CSVs were
written. Faces of videos absent from ``splits.csv`` (dropped by the split stage) are left out.

Augmentation (``augment``: a preset of :mod:`fakeproof.augment`, ``none | light | standard |
strong``; ``True`` means ``light``, a flip and a small brightness/contrast jitter) is drawn from a
generator seeded by ``(seed, epoch, index)``: the same item in the same epoch is augmented the same
way whatever the worker count or order, and no global RNG is touched. Only training crops are
augmented: a val or test dataset asked for a preset is refused. Call
:meth:`FaceDataset.set_epoch` before each epoch (DataLoader workers receive a fresh copy of the
dataset every epoch unless ``persistent_workers``, which :func:`make_loader` leaves off).

Training-only options (a val or test dataset asked for one is refused, like augmentation):

- ``frames_per_video`` (``frames.train_count``): keep that many frames per video, evenly spaced
  among the stored ones (every face of a kept frame); None keeps every stored frame.
- ``sbi`` (``train.sbi``, :mod:`fakeproof.sbi`; Shiohara & Yamasaki, CVPR 2022): ``mix`` appends
  ``round(sbi_ratio * reals)`` pseudo-fake items, each made on the fly from a real face (spread
  evenly over the reals) with the label 1 and the method :data:`fakeproof.sbi.PSEUDO_METHOD`;
  ``only`` drops every fake face first and appends one pseudo-fake per real face, so each real
  face yields a real and a pseudo-fake sample and no real fake is ever served. The pseudo-fake
  of item ``i`` in epoch ``e`` is drawn from ``sbi_rng(seed, e, i)``: the same under any worker
  count, DDP rank split, resume or ``train.grad_accum`` (all of which only choose which items a
  batch holds). With ``sbi`` on, every training crop also gets the paper's augmentation
  (:func:`fakeproof.sbi.sbi_augment`) before ``augment``. Masks come from the landmark columns of
  faces.csv (:data:`fakeproof.landmarks.LANDMARK_COLUMNS`); rows without them get the box template
  of :func:`fakeproof.landmarks.box_points`, the box placed in the crop by ``margin``
  (``faces.margin``).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from fakeproof.augment import augment_image, item_rng, resolve_preset
from fakeproof.config import SBI_MODES
from fakeproof.errors import FakeproofError
from fakeproof.io import read_stage_csv
from fakeproof.splits import EVAL_SPLITS, SPLIT_COLUMNS
from fakeproof.landmarks import LANDMARK_COLUMNS, box_in_crop, box_points
from fakeproof.sbi import PSEUDO_METHOD, sbi_augment, sbi_rng, self_blend
from fakeproof.store import FaceStore

log = logging.getLogger(__name__)

#: The columns of faces.csv (crop_faces writes more: fakeproof.faces.FACES_CSV_COLUMNS) and of
#: splits.csv (fakeproof.splits.SPLIT_COLUMNS, less its n_faces) that a dataset reads.
FACES_CSV_READ = ("key", "video_id", "frame", "face")
SPLITS_CSV_READ = tuple(c for c in SPLIT_COLUMNS if c != "n_faces")


class DataError(FakeproofError, ValueError):
    """faces.csv / splits.csv / the store do not fit together (one-line message)."""


@dataclass(frozen=True)
class DataPaths:
    """Where one dataset's face store, face index and split table live (given by dvc.yaml)."""

    store: Path
    faces_csv: Path
    splits_csv: Path

    @classmethod
    def under(cls, root: str | Path) -> "DataPaths":
        """The layout of a pipeline's data folder: faces.lmdb, faces.csv, splits.csv."""
        root = Path(root)
        return cls(root / "faces.lmdb", root / "faces.csv", root / "splits.csv")


def _read_csv(path: Path, needed: tuple[str, ...], what: str) -> pd.DataFrame:
    return read_stage_csv(path, what, DataError, needed,
                          dtype={"key": str, "video_id": str, "split": str, "group": str,
                                 "method": str, "source": str})


class FaceDataset(Dataset):
    """Face crops of one split (or all splits with ``split=None``)."""

    def __init__(self, store_path: str | Path, faces_csv: str | Path, splits_csv: str | Path,
                 split: Optional[str], augment: Union[bool, str] = False, seed: int = 0,
                 sbi: str = "off", sbi_ratio: float = 1.0, frames_per_video: Optional[int] = None,
                 margin: float = 0.3333) -> None:
        self.augment = resolve_preset(augment)  # the preset's name ("none": no augmentation)
        if split in EVAL_SPLITS and self.augment != "none":  # val and test: never augmented
            raise DataError(f"augment = {augment!r} for the {split} split: only training crops are "
                            "augmented; build val and test datasets without augment")
        _check_train_options(split, sbi, frames_per_video)
        self.sbi, self.margin = sbi, float(margin)
        self.store = FaceStore(store_path)
        faces = _read_csv(Path(faces_csv), FACES_CSV_READ, "crop_faces")
        splits = _read_csv(Path(splits_csv), SPLITS_CSV_READ, "split")
        dup = splits["video_id"].duplicated()
        if dup.any():
            raise DataError(f"{splits_csv}: video_id {splits.loc[dup, 'video_id'].iloc[0]!r} "
                            "appears twice; re-run the split stage")
        if split is not None:
            known = sorted(set(splits["split"]))
            if split not in known:
                raise DataError(f"{splits_csv}: no split {split!r}; splits present: {known}")
            splits = splits[splits["split"] == split]
        cols = [c for c in faces.columns if c not in SPLITS_CSV_READ or c == "video_id"]
        df = faces[cols].merge(splits[list(SPLITS_CSV_READ)], on="video_id", how="inner",
                               validate="many_to_one")
        df["label"] = df["label"].astype(int)
        if not df["label"].isin([0, 1]).all():
            raise DataError(f"{splits_csv}: label must be 0 (real) or 1 (fake)")
        df = df.sort_values("key", kind="stable").reset_index(drop=True)
        if frames_per_video is not None:
            df = every_nth_frame(df, frames_per_video)
        self.frames: pd.DataFrame = with_pseudo_fakes(df, sbi, sbi_ratio)
        self._pseudo: np.ndarray = (self.frames["method"] == PSEUDO_METHOD).to_numpy() & (sbi != "off")
        self._points: np.ndarray = _landmarks(self.frames)
        self.labels: np.ndarray = self.frames["label"].to_numpy(dtype=np.int64)
        self._keys: list[str] = self.frames["key"].tolist()
        self.split = split
        self.seed = int(seed)
        self.epoch = 0
        self._check_keys(Path(store_path))
        if not len(self):
            log.warning("FaceDataset: no faces for split %r (%s, %s)", split, faces_csv, splits_csv)

    def _check_keys(self, store_path: Path) -> None:
        missing = [k for k in self._keys if k not in self.store]
        if missing:
            raise DataError(f"{store_path}: {len(missing)} faces of faces.csv are not in the store "
                            f"(first: {missing[0]!r}); re-run crop_faces")

    def set_epoch(self, epoch: int) -> None:
        """Choose the augmentation stream of ``epoch`` (see the module docstring)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._keys)

    def stored_value(self, index: int) -> bytes:
        """Item ``index``'s bytes as stored (header + encoded crop; :mod:`fakeproof.store`)."""
        return self.store.get_value(self._keys[int(index)])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        index = int(index)
        # numpy for the per-item arithmetic: single-threaded by construction. torch's intra-op
        # threads gain nothing on one small image and, when the cores are busy (DataLoader
        # workers beside training), measured 10-20x slower (see benchmarks/bench_loader.py).
        img = self.store.get_tensor(self._keys[index]).numpy().astype(np.float32)
        img *= np.float32(1.0 / 255.0)
        if self.sbi != "off":
            img = self._sbi_item(img, index)
        if self.augment != "none":
            img = augment_image(img, self.augment, item_rng(self.seed, self.epoch, index))
        return torch.from_numpy(img), torch.tensor(float(self.labels[index]), dtype=torch.float32), index


    def _sbi_item(self, img: np.ndarray, index: int) -> np.ndarray:
        """A pseudo-fake item blended from its real face, then (every item) the paper's
        augmentation, from the item's SBI generator (see the module docstring)."""
        rng = sbi_rng(self.seed, self.epoch, index)
        if self._pseudo[index]:
            pts = self._points[index]
            if not np.isfinite(pts).all():  # no landmarks in faces.csv: the box template
                row, size = self.frames.iloc[index], img.shape[-1]
                box = (box_in_crop((row["x1"], row["y1"], row["x2"], row["y2"]), self.margin, size)
                       if "x1" in row else (0.0, 0.0, size, size))
                pts = box_points(box)
            img = self_blend(img, pts, rng).image
        return sbi_augment(img, rng)


def _check_train_options(split: Optional[str], sbi: str, frames_per_video: Optional[int]) -> None:
    if sbi not in SBI_MODES:
        raise DataError(f"sbi = {sbi!r}: unknown mode; use one of {', '.join(SBI_MODES)}")
    if split in EVAL_SPLITS and (sbi != "off" or frames_per_video is not None):
        raise DataError(f"sbi = {sbi!r}, frames_per_video = {frames_per_video!r} for the {split} "
                        "split: training options; val and test score every stored face as it is")


def every_nth_frame(df: pd.DataFrame, count: int) -> pd.DataFrame:
    """The faces of ``count`` frames per video, evenly spaced over the video's stored frames
    (first and last included; every frame when it has ``count`` or fewer)."""
    keep = []
    for _, frames in df.groupby("video_id", sort=False)["frame"]:
        stored = np.unique(frames.to_numpy())
        pick = stored[np.unique(np.round(np.linspace(0, len(stored) - 1, count)).astype(int))]
        keep.append(frames.index[frames.isin(pick)])
    idx = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
    return df.loc[idx].reset_index(drop=True)


def with_pseudo_fakes(df: pd.DataFrame, sbi: str, ratio: float) -> pd.DataFrame:
    """``df`` with its pseudo-fake rows appended (``train.sbi``; see the module docstring):
    copies of real rows with label 1 and method :data:`fakeproof.sbi.PSEUDO_METHOD`."""
    if sbi == "off":
        return df
    if sbi == "only":
        df = df[df["label"] == 0].reset_index(drop=True)
    reals = np.flatnonzero(df["label"].to_numpy() == 0)
    m = len(reals) if sbi == "only" else int(round(ratio * len(reals)))
    src = reals[(np.arange(m) * len(reals)) // max(m, 1)] if len(reals) else reals[:0]
    pseudo = df.iloc[src].copy()
    pseudo["label"], pseudo["method"] = 1, PSEUDO_METHOD
    return pd.concat([df, pseudo], ignore_index=True)


def _landmarks(df: pd.DataFrame) -> np.ndarray:
    """(N, 5, 2) landmarks of every row in crop pixels; NaN where faces.csv has none."""
    if not all(c in df.columns for c in LANDMARK_COLUMNS):
        return np.full((len(df), 5, 2), np.nan)
    cols = df[list(LANDMARK_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    return cols.to_numpy(dtype=np.float64).reshape(-1, 5, 2)


def train_options(params) -> dict:
    """The training dataset's options from params (``train.sbi``, ``train.sbi_ratio``,
    ``frames.train_count``, ``faces.margin``), as :class:`FaceDataset` keywords."""
    return {"sbi": params.train.sbi, "sbi_ratio": params.train.sbi_ratio,
            "frames_per_video": params.frames.train_count, "margin": params.faces.margin}


def collate_faces(batch: list[tuple[torch.Tensor, torch.Tensor, int]]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack ``(image, label, index)`` items with numpy (single-threaded; see ``__getitem__``)."""
    images = torch.from_numpy(np.stack([b[0].numpy() for b in batch]))
    labels = torch.from_numpy(np.array([float(b[1]) for b in batch], dtype=np.float32))
    index = torch.from_numpy(np.array([int(b[2]) for b in batch], dtype=np.int64))
    return images, labels, index


def _worker_init(worker_id: int) -> None:
    """Seed each worker's global RNGs from torch's per-worker seed; one thread per worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on ``seed`` (a seeded ``torch.Generator``).

    Each epoch's shuffle continues the generator's stream, so a run that iterates the same epochs
    sees the same batches. Workers are seeded from it too (``worker_init_fn``) and run one torch
    thread each. Batches are ``(images (B, 3, H, W), labels (B,) float32, index (B,) int64)``,
    stacked by :func:`collate_faces`.
    """
    g = torch.Generator()
    g.manual_seed(int(seed))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      collate_fn=collate_faces, generator=g,
                      worker_init_fn=_worker_init if num_workers > 0 else None,
                      drop_last=drop_last, persistent_workers=False, pin_memory=False)


def threads_are_per_thread() -> bool:
    """Whether ``torch.set_num_threads`` sets only the calling thread's intra-op count: true
    with ATen's OpenMP backend (an ICV of the calling thread; the default builds), false with
    the native pool, where one count serves the whole process."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: a thread's nice value is its own):
    the step's intra-op threads keep the cores they want and loading fills the gaps between
    them (Python, serial ops), rather than taking a core from a parallel region that then waits
    for its slowest thread. Elsewhere: nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class Prefetched:
    """Iterate a ``num_workers: 0`` DataLoader with the next ``depth`` batches read, decoded
    and augmented by one background thread while the caller trains on the current one.

    The batches, their order and every pixel are those of ``iter(loader)``: the thread only runs
    that iterator ahead (its items are seeded per item, its shuffle by its own generator). The
    iterator is made here, in the caller's thread, because a DataLoader draws its base seed from
    the global torch RNG when it is made; the thread draws nothing from it. The thread runs torch
    on one intra-op thread (as a DataLoader worker; with OpenMP the count is per thread, so the
    caller keeps ``train.threads``: :func:`threads_are_per_thread`; without it no thread is
    started and batches load in the caller, as before). PNG/JPEG decoding and numpy release the
    GIL, so decoding overlaps the step. :meth:`close` (a ``with`` block, or the end of the
    iteration) stops and joins the thread, on an exception in the caller too; an exception in
    the thread is raised in the caller at the batch it would have produced. ``depth`` 0: no
    thread, the plain iteration.
    """

    def __init__(self, loader: DataLoader, depth: int = 2) -> None:
        self._len = len(loader)
        self._it: Iterator = iter(loader)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if depth > 0 and threads_are_per_thread():
            self._thread = threading.Thread(target=self._run, args=(torch.get_num_threads(),),
                                            name="fakeproof-prefetch", daemon=True)
            self._thread.start()

    def _run(self, caller_threads: int) -> None:
        torch.set_num_threads(1)
        _lower_priority()
        try:
            for batch in self._it:
                if not self._put(("batch", batch)):
                    return
            self._put(("end", None))
        except BaseException as e:  # handed to the caller, raised there
            self._put(("error", e))
        finally:
            # set_num_threads also records the count new threads start with: leave the caller's
            torch.set_num_threads(caller_threads)

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> "Prefetched":
        return self

    def __next__(self) -> Any:
        if self._thread is None:
            return next(self._it)
        if self._stop.is_set():
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "batch":
            return value
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread and wait for it (a batch it is loading is finished, then dropped)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a put waiting on a full queue
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread.join()

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
