"""Helpers shared by the dataset sources: the root check, file scans, ids, grouping, problems.

Every source lists files only (it never decodes a video: the extract stage reports undecodable
ones), keeps paths as found under ``data.root`` (a relative root gives relative paths, so the
video table does not depend on the machine), and returns rows in a deterministic order.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import pandas as pd

from fakeproof.config import DataParams
from fakeproof.sources import VIDEO_COLUMNS, SourceError, problems_frame
from fakeproof.video import VIDEO_SUFFIXES

STAGE = "download"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def require_root(params: DataParams, what: str, want_file: bool = False) -> Path:
    """``data.root`` as a Path; :class:`SourceError` (one line) if unset or missing."""
    if not params.root:
        raise SourceError(f"data.root is not set; set data.root in params.yaml to {what}")
    root = Path(params.root).expanduser()
    if want_file:
        if not root.is_file():
            raise SourceError(f"data.root = {params.root!r}: no such file; set data.root to {what}")
    elif not root.is_dir():
        raise SourceError(f"data.root = {params.root!r}: no such folder; set data.root to {what}")
    return root


def safe_id(*parts: str) -> str:
    """A filesystem-safe id from parts: ``/`` and other unsafe characters become ``-``."""
    text = "_".join(str(p) for p in parts if str(p) != "")
    text = _UNSAFE.sub("-", text.replace("\\", "/").replace("/", "-")).strip("-.")
    if not text or not text[0].isalnum():
        text = "v" + text
    return text


def natural_key(text: str) -> list:
    """Sort key that orders ``part_2`` before ``part_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def list_videos(folder: Path, exts: Iterable[str] = VIDEO_SUFFIXES, recursive: bool = False) -> list[Path]:
    """Video files (by extension, case-insensitive) in ``folder``, sorted by relative path."""
    if not folder.is_dir():
        return []
    exts = tuple(e.lower() for e in exts)
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in it if p.suffix.lower() in exts and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def csv_records(path: Path, headers: Sequence[Sequence[str]] | Callable[[list[str]], bool],
                expected: str, empty: Optional[str] = None
                ) -> Iterator[tuple[int, list[str], list[str]]]:
    """The rows of a user's UTF-8 CSV after its header, as ``(line, header, row)``; blank lines
    are skipped and the header (lower-cased) must be one of ``headers``, or pass it when it is a
    predicate (``expected`` says what in the error). Not UTF-8, not CSV, or (with ``empty``) no
    header at all: one-line :class:`SourceError` naming the file (and line)."""
    accept = headers if callable(headers) else (lambda h: h in [list(x) for x in headers])
    header = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for rec in reader:
                n = reader.line_num
                if not rec or all(not c.strip() for c in rec):
                    continue
                if header is None:
                    header = [c.strip().lower() for c in rec]
                    if not accept(header):
                        raise SourceError(f"{path}:{n}: header {','.join(rec)!r}; expected "
                                          f"{expected}")
                    continue
                yield n, header, rec
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    except csv.Error as e:
        raise SourceError(f"{path}: not a valid CSV ({e})") from None
    if header is None and empty is not None:
        raise SourceError(f"{path}: {empty}")


def package_text(*parts: str) -> str:
    """Text of a file shipped in ``fakeproof/assets`` (read with importlib.resources)."""
    ref = resources.files("fakeproof").joinpath("assets", *parts)
    if not ref.is_file():
        raise SourceError(f"fakeproof/assets/{'/'.join(parts)}: missing from the installed package; "
                          "reinstall fakeproof")
    return ref.read_text(encoding="utf-8")


class UnionFind:
    """Disjoint sets over hashable keys; :meth:`find` returns the smallest key of a set."""

    def __init__(self) -> None:
        self._parent: dict = {}

    def add(self, x) -> None:
        self._parent.setdefault(x, x)

    def find(self, x):
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def union(self, a, b) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra <= rb else (rb, ra)
            self._parent[hi] = lo


class Problems:
    """Collects one row per skipped or questionable file for ``problems.csv``."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, path: str | Path, reason: str, video_id: str = "") -> None:
        self.rows.append({"video_id": video_id, "path": str(path), "stage": STAGE, "reason": reason})

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        rows = sorted(self.rows, key=lambda r: (r["path"], r["video_id"], r["reason"]))
        return problems_frame(rows)


def video_row(video_id: str, path: Path | str, label: int, group: str, method: str, source: str,
              split_hint: str = "", original: str = "") -> dict:
    return {"video_id": video_id, "path": str(path), "label": int(label), "group": group,
            "method": method, "source": source, "split_hint": split_hint, "original": original}


def videos_frame(rows: list[dict], where: str) -> pd.DataFrame:
    """The video table from row dicts, sorted by video_id; duplicate ids raise SourceError."""
    df = pd.DataFrame(rows, columns=VIDEO_COLUMNS)
    if df.empty:
        raise SourceError(f"{where}: no videos found; check data.root and the expected layout "
                          "(see README, Datasets)")
    dup = df.loc[df["video_id"].duplicated(), "video_id"]
    if len(dup):
        raise SourceError(f"{where}: two files map to video_id {dup.iloc[0]!r}; rename one of them")
    df["label"] = df["label"].astype(int)
    return df.sort_values("video_id", kind="stable").reset_index(drop=True)


def log_summary(log: logging.Logger, name: str, df: pd.DataFrame, problems: Problems,
                t0: float) -> None:
    """One line: counts of real/fake, groups, split hints, problems and the time taken."""
    hints = df["split_hint"].replace("", "free").value_counts().sort_index()
    log.info("%s: %d videos (%d real, %d fake) in %d groups; hints %s; %d problems; %.2fs",
             name, len(df), int((df["label"] == 0).sum()), int((df["label"] == 1).sum()),
             df["group"].nunique(), ", ".join(f"{k} {v}" for k, v in hints.items()), len(problems),
             time.perf_counter() - t0)
