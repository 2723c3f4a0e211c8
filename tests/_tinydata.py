"""A tiny synthetic face store for the training tests, with a learnable colour cue.

Every "face" is a ``size`` x ``size`` crop of uniform noise (each channel in [0.25, 0.75]); fake
crops have their red channel raised by ``shift`` (before 8-bit rounding), so a detector can learn
"redder means fake". Videos alternate real / fake and hold ``frames`` crops each. The store, its
``faces.csv`` (columns of the crop_faces stage) and ``splits.csv`` (columns of the split stage) are
written the way the pipeline writes them, so :class:`fakeproof.data.FaceDataset` reads them as it
reads the real thing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from _params import default_params_raw
from fakeproof.config import Params, params_from_dict
from fakeproof.store import FaceStoreWriter, face_key
from fakeproof.data import DataPaths

def face_image(rng: np.random.Generator, size: int, label: int, shift: float) -> np.ndarray:
    """One crop: uniform noise, red channel raised by ``shift`` for fakes (label 1)."""
    img = rng.uniform(0.25, 0.75, size=(size, size, 3))
    if label:
        img[..., 0] += shift
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def build_store(root: Path, videos: dict[str, int], frames: int = 4, size: int = 16,
                shift: float = 0.25, shifts: Optional[dict[str, float]] = None,
                labels: Optional[dict[str, int]] = None, skip_crops: tuple[str, ...] = (),
                seed: int = 0, encoding: str = "raw") -> DataPaths:
    """Write ``faces.lmdb``, ``faces.csv``, ``splits.csv`` under ``root``.

    Args:
        videos: split name -> number of videos (labels alternate 0, 1, 0, ... within a split).
        shift: the red shift of fake crops; ``shifts`` overrides it per split.
        labels: split name -> 1 to flip the labels written to splits.csv for that split (the
            crops keep the colour of their original label): a split where the cue is reversed.
        skip_crops: splits whose crops are left out of the store (faces.csv still lists them).
        encoding: the store's (``faces.encoding``: raw, png or jpeg).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    faces, splits = [], []
    with FaceStoreWriter(root / "faces.lmdb", encoding=encoding) as w:
        for split, n in videos.items():
            s = (shifts or {}).get(split, shift)
            flip = (labels or {}).get(split, 0)
            for v in range(n):
                vid = f"{split}{v:02d}"
                label = v % 2
                for f in range(frames):
                    key = face_key(vid, f, 0)
                    img = face_image(rng, size, label, s)
                    if split not in skip_crops:
                        w.put(key, img)
                    faces.append({"key": key, "video_id": vid, "frame": f, "face": 0, "x1": 0.0,
                                  "y1": 0.0, "x2": float(size), "y2": float(size), "prob": 1.0,
                                  "box_source": "self"})
                splits.append({"video_id": vid, "label": label ^ flip, "split": split,
                               "group": vid, "method": "red" if label ^ flip else "real",
                               "source": "tiny", "n_faces": frames})
    table = pd.DataFrame(splits)
    # The fixture's promise: every split that has videos holds both classes.
    assert (table.groupby("split")["label"].nunique() == 2).all(), "a split lacks a class"
    pd.DataFrame(faces).to_csv(root / "faces.csv", index=False)
    table.to_csv(root / "splits.csv", index=False)
    return DataPaths(root / "faces.lmdb", root / "faces.csv", root / "splits.csv")


def tiny_params(train: Optional[dict] = None, adv: Optional[dict] = None) -> Params:
    """The code-default params with tiny, fast, single-threaded training values."""
    p = params_from_dict(default_params_raw(), "test params")
    tp = dict(epochs=3, batch_size=16, lr=0.01, patience=5, threads=1, num_workers=0, seed=0,
              augment=True)
    tp.update(train or {})
    ap = dict(eps=8 / 255, alpha=2 / 255, steps=3, epochs=3, lr=0.005, clean_share=0.5, seed=0)
    ap.update(adv or {})
    return replace(p, model=replace(p.model, name="smallcnn", pretrained=None),
                   train=replace(p.train, **tp), adv=replace(p.adv, **ap))
