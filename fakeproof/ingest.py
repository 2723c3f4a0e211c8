"""The download stage: fetch (or generate) a dataset and write the video table.

``data/raw/`` is written whole or not at all: generated and downloaded files go to a temp folder
that is renamed into place, and the table's paths are rewritten to the final location. Local
dataset roots (``data.root``) are read in place and never copied; only ``videos.csv`` and
``problems.csv`` land in ``data/raw/`` for them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from fakeproof.config import DataParams
from fakeproof.io import atomic_path, write_csv
from fakeproof.sources import build_video_table

log = logging.getLogger(__name__)


def _relocate(paths: pd.Series, tmp: Path, final: Path) -> pd.Series:
    def fix(p: str) -> str:
        try:
            return (final / Path(p).resolve().relative_to(tmp.resolve())).as_posix()
        except ValueError:
            return p
    return paths.map(fix)


def run_download(params: DataParams, raw_dir: Path) -> dict:
    """Run ``data.source`` into ``raw_dir``; write ``videos.csv`` and ``problems.csv`` there."""
    from fakeproof.download import prepare_raw

    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    with atomic_path(raw_dir, is_dir=True) as tmp:
        resolved = prepare_raw(params, tmp)
        res = build_video_table(resolved, tmp)
        videos = res.videos.copy()
        videos["path"] = _relocate(videos["path"], tmp, raw_dir)
        problems = res.problems.copy()
        if len(problems):
            problems["path"] = _relocate(problems["path"].astype(str), tmp, raw_dir)
        write_csv(tmp / "videos.csv", videos)
        write_csv(tmp / "problems.csv", problems)
    stats = {"videos": int(len(videos)), "fake": int(videos["label"].sum()),
             "real": int((videos["label"] == 0).sum()), "groups": int(videos["group"].nunique()),
             "problems": int(len(problems)), "seconds": round(time.perf_counter() - t0, 1)}
    if len(problems):
        log.warning("download: %d problems reported in %s", len(problems), raw_dir / "problems.csv")
    log.info("download (%s): %d videos (%d real, %d fake) in %d groups; %.1fs", params.source,
             stats["videos"], stats["real"], stats["fake"], stats["groups"], stats["seconds"])
    return stats
