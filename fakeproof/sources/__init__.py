"""Dataset sources: one module per layout, all producing the same video table.

A source is a function ``build(params: DataParams, raw_dir: Path) -> SourceResult`` registered
under its ``data.source`` name with :func:`register_source`. The video table has the columns
:data:`VIDEO_COLUMNS`:

- ``video_id``: unique, filesystem-safe (``[A-Za-z0-9][A-Za-z0-9_.-]*``); unique across methods
- ``path``: the video file (under ``data/raw/`` for generated/downloaded data; in place under
  ``data.root`` for local roots, which are never copied)
- ``label``: 1 = fake, 0 = real
- ``group``: every video of a group lands in the same split (a fake and the real clip(s) it was
  made from share a group)
- ``method``: ``real`` for real videos, else the manipulation method
- ``source``: the source name
- ``split_hint``: ``train``/``val``/``test`` where an official split exists, ``exclude`` for
  videos the protocol drops (reported by the split stage), else empty
- ``original``: video_id of the real clip whose face boxes a fake reuses, else empty

The download stage appends :data:`FINGERPRINT` (``sha256``): the sha256 of the file's bytes, so
that ``data/raw/videos.csv`` changes whenever a listed video does (see :mod:`fakeproof.download`).
Sources do not produce it; :func:`validate_video_table` keeps it when present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from fakeproof.config import DataParams
from fakeproof.errors import FakeproofError

VIDEO_COLUMNS = ["video_id", "path", "label", "group", "method", "source", "split_hint", "original"]
PROBLEM_COLUMNS = ["video_id", "path", "stage", "reason"]
FINGERPRINT = "sha256"
OPTIONAL_COLUMNS = [FINGERPRINT]
SPLIT_HINTS = {"", "train", "val", "test", "exclude"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SourceError(FakeproofError, RuntimeError):
    """A dataset root or its metadata is unusable (message: one line naming the file)."""


@dataclass
class SourceResult:
    videos: pd.DataFrame
    problems: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PROBLEM_COLUMNS))


SourceFn = Callable[[DataParams, Path], SourceResult]
SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    def deco(fn: SourceFn) -> SourceFn:
        SOURCES[name] = fn
        return fn
    return deco


def problems_frame(rows: list[dict]) -> pd.DataFrame:
    """A problems table from dicts with keys of :data:`PROBLEM_COLUMNS` (missing keys blank)."""
    return pd.DataFrame([{c: r.get(c, "") for c in PROBLEM_COLUMNS} for r in rows],
                        columns=PROBLEM_COLUMNS)


def validate_video_table(df: pd.DataFrame, where: str = "videos.csv") -> pd.DataFrame:
    """Check and normalise a video table: columns, dtypes, unique safe ids, labels, hints.

    Columns are :data:`VIDEO_COLUMNS` plus those of :data:`OPTIONAL_COLUMNS` present; others are
    dropped.
    """
    missing = [c for c in VIDEO_COLUMNS if c not in df.columns]
    if missing:
        raise SourceError(f"{where}: missing columns {missing}; expected {VIDEO_COLUMNS}")
    df = df[VIDEO_COLUMNS + [c for c in OPTIONAL_COLUMNS if c in df.columns]].copy()
    if FINGERPRINT in df.columns:
        df[FINGERPRINT] = df[FINGERPRINT].fillna("").astype(str)
    for c in ("video_id", "path", "group", "method", "source", "split_hint", "original"):
        df[c] = df[c].fillna("").astype(str)
    df["label"] = df["label"].astype(int)
    bad = df.loc[~df["video_id"].str.match(_SAFE_ID), "video_id"]
    if len(bad):
        raise SourceError(f"{where}: video_id {bad.iloc[0]!r} is not filesystem-safe")
    dup = df.loc[df["video_id"].duplicated(), "video_id"]
    if len(dup):
        raise SourceError(f"{where}: video_id {dup.iloc[0]!r} appears twice; ids must be unique")
    if not df["label"].isin([0, 1]).all():
        raise SourceError(f"{where}: label must be 0 (real) or 1 (fake)")
    if not df["split_hint"].isin(SPLIT_HINTS).all():
        raise SourceError(f"{where}: split_hint must be one of {sorted(SPLIT_HINTS)}")
    if (df["group"] == "").any():
        raise SourceError(f"{where}: every video needs a group")
    return df.sort_values("video_id", kind="stable").reset_index(drop=True)


def build_video_table(params: DataParams, raw_dir: Path) -> SourceResult:
    """Run the source named by ``data.source`` and validate its table."""
    _load_all()
    if params.source not in SOURCES:
        raise SourceError(f"data.source = {params.source!r}: unknown; use one of {sorted(SOURCES)}")
    res = SOURCES[params.source](params, Path(raw_dir))
    res.videos = validate_video_table(res.videos, f"data.source={params.source}")
    return res


def _load_all() -> None:
    """Import every source module so that each registers itself."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
