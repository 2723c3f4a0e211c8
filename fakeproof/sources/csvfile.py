"""A CSV list of anyone's videos (source name ``csv``): ``data.root`` is the CSV file.

Header ``path,label`` or ``path,label,group`` (any case); further columns (a description, say)
are allowed and ignored. ``path`` is relative to the CSV's folder
or absolute; ``label`` is ``0``/``1`` or ``real``/``fake`` (any case); ``group`` (optional, may be
blank) names videos that must share a split: give a fake the same group as the real clip(s) it
was made from. A video without a group is its own group. Rows whose file is missing are reported
and skipped; a bad header, label, column count or a path listed twice raises :class:`SourceError`
naming the file and line. No ``original`` is inferred (faces of every clip are detected).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path, PurePath

from fakeproof.config import DataParams
from fakeproof.sources import SourceError, SourceResult, register_source
from fakeproof.sources._common import (Problems, csv_records, log_summary, require_root, safe_id,
                                       video_row, videos_frame)

log = logging.getLogger(__name__)

NAME = "csv"
LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}
_WHAT = "a CSV file with header path,label[,group]"


def parse_label(value: str, where: str) -> int:
    key = value.strip().lower()
    if key not in LABELS:
        raise SourceError(f"{where}: label {value!r} is not 0, 1, real or fake")
    return LABELS[key]


@register_source(NAME)
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """The video table of a ``path,label[,group]`` CSV."""
    t0 = time.perf_counter()
    csv_path = require_root(params, _WHAT, want_file=True)
    base = csv_path.parent
    problems = Problems()
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for n, header, rec in csv_records(
            csv_path, lambda h: h[:2] == ["path", "label"] and "group" not in h[3:],
            "path,label or path,label,group (then any columns)"):
        if len(rec) != len(header):
            raise SourceError(f"{csv_path}:{n}: {len(rec)} columns; expected "
                              f"{len(header)} ({','.join(header)})")
        value = rec[0].strip()
        if not value:
            raise SourceError(f"{csv_path}:{n}: empty path")
        label = parse_label(rec[1], f"{csv_path}:{n}")
        group = rec[2].strip() if header[2:3] == ["group"] else ""
        rel = PurePath(value.replace("\\", "/"))
        path = Path(rel) if rel.is_absolute() else base / rel
        key = str(path)
        if key in seen:
            raise SourceError(f"{csv_path}:{n}: {value} is listed twice (first at line "
                              f"{seen[key]})")
        seen[key] = n
        parts = rel.parts[1:] if rel.is_absolute() else rel.parts
        vid = safe_id(NAME, PurePath(*parts).with_suffix("").as_posix())
        if not path.is_file():
            problems.add(path, f"listed at {csv_path.name}:{n} but not found; skipped", vid)
            continue
        rows.append(video_row(vid, path, label, f"csv_{safe_id(group)}" if group else vid,
                              "real" if label == 0 else "fake", NAME))
    if not rows and not problems.rows:
        raise SourceError(f"{csv_path}: no rows after the header; list videos as {_WHAT}")
    df = videos_frame(rows, f"data.root = {params.root!r} (csv)")
    log_summary(log, "csv", df, problems, t0)
    return SourceResult(df, problems.frame())
