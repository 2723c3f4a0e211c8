"""A generic folder of anyone's videos: ``real/`` and ``fake/`` (source name ``folder``).

Layout under ``data.root`` (extensions mp4, avi, mov, mkv, webm, any case; folder names ``real``
and ``fake``, any case)::

    real/abc.mp4            a real clip: its own group ``folder_abc``
    fake/abc_xyz.mp4        a fake whose stem starts with a real's stem + "_" (or equals it)
                            joins that real's group, and the real is its ``original``
    real/<g>/...  fake/<g>/...   nested: everything under a first-level folder <g> (in real/ or
                            fake/) is group ``folder_<g>``; inside it the same stem rule
                            picks a fake's ``original``
    fake/other.mp4          a fake matching no real: its own group ``folder_fake_other``

The longest matching real stem wins. Nothing is decoded here and no split is imposed
(``split_hint`` empty: the split stage shares the groups out). Video files lying directly in
``data.root`` are reported and skipped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from fakeproof.config import DataParams
from fakeproof.sources import SourceError, SourceResult, register_source
from fakeproof.sources._common import (Problems, list_videos, log_summary, require_root, safe_id,
                                       video_row, videos_frame)

log = logging.getLogger(__name__)

NAME = "folder"
_WHAT = "a folder with real/ and fake/ sub-folders of videos"


def _subdir(root: Path, name: str) -> Path | None:
    exact = root / name
    if exact.is_dir():
        return exact
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.lower() == name:
            return p
    return None


def match_original(stem: str, reals: dict[str, str]) -> str:
    """The video_id of the real whose stem is the longest prefix of ``stem`` (``stem`` or
    ``stem_...``), else ``""``. ``reals`` maps real stems to video_ids."""
    best = ""
    for rs in reals:
        if (stem == rs or stem.startswith(rs + "_")) and len(rs) > len(best):
            best = rs
    return reals[best] if best else ""


@register_source(NAME)
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """The video table of a ``real/`` + ``fake/`` folder."""
    t0 = time.perf_counter()
    root = require_root(params, _WHAT)
    dirs = {label: _subdir(root, name) for label, name in ((0, "real"), (1, "fake"))}
    if dirs[0] is None and dirs[1] is None:
        raise SourceError(f"data.root = {params.root!r}: no real/ or fake/ sub-folder; set "
                          f"data.root to {_WHAT}")
    problems = Problems()
    for p in list_videos(root):
        problems.add(p, "video directly in data.root (not under real/ or fake/); skipped")

    # (group folder or "") -> {stem: video_id} of its reals, for the original match.
    reals: dict[str, dict[str, str]] = {}
    items: list[tuple[int, Path, str, str, str]] = []  # label, path, nest, stem, video_id
    for label in (0, 1):
        d = dirs[label]
        if d is None:
            problems.add(root / ("real" if label == 0 else "fake"), "folder not found; no "
                         f"{'real' if label == 0 else 'fake'} videos")
            continue
        for p in list_videos(d, recursive=True):
            rel = p.relative_to(d)
            nest = rel.parts[0] if len(rel.parts) > 1 else ""
            vid = safe_id(NAME, "real" if label == 0 else "fake", rel.with_suffix("").as_posix())
            items.append((label, p, nest, p.stem, vid))
            if label == 0:
                reals.setdefault(nest, {}).setdefault(p.stem, vid)

    real_group = {vid: (f"folder_{safe_id(nest)}" if nest else f"folder_{safe_id(stem)}")
                  for label, _, nest, stem, vid in items if label == 0}
    rows = []
    for label, p, nest, stem, vid in items:
        original = ""
        if label == 0:
            group = real_group[vid]
        else:
            original = match_original(stem, reals.get(nest, {}))
            if nest:
                group = f"folder_{safe_id(nest)}"
            elif original:
                group = real_group[original]
            else:
                group = f"folder_fake_{safe_id(stem)}"
        rows.append(video_row(vid, p, label, group, "real" if label == 0 else "fake", NAME, "",
                              original))
    df = videos_frame(rows, f"data.root = {params.root!r} (folder)")
    log_summary(log, "folder", df, problems, t0)
    return SourceResult(df, problems.frame())
