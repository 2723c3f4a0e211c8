"""FaceForensics++ (Rössler et al., "FaceForensics++: Learning to Detect Manipulated Facial Images",
ICCV 2019), read in place from the folder the official download script writes.

Layout (``c`` = ``data.ffpp.compression``: raw, c23 or c40)::

    original_sequences/youtube/<c>/videos/NNN.mp4                 1000 real clips
    manipulated_sequences/<Method>/<c>/videos/TTT_SSS.mp4         fakes: target TTT, source face SSS
    original_sequences/actors/<c>/videos/AA__<scene>.mp4          DeepFakeDetection reals (optional)
    manipulated_sequences/DeepFakeDetection/<c>/videos/AA_BB__<scene>__<code>.mp4   (optional)

Grouping and splits follow the official split (``fakeproof/assets/splits/ffpp``, from
ondyari/FaceForensics, MIT): each ``[target, source]`` pair is one group (``ffpp_pair_000_003``,
ids sorted) holding the originals TTT and SSS and every method's fakes TTT_SSS and SSS_TTT, and the
group carries the pair's split as ``split_hint``. A fake is placed by its pair even when its
original is absent. ``original`` is the target real's video_id (TTT of TTT_SSS) when that file is
present, so its face boxes can be reused.

Files outside the official pairs (none in the real release) are kept and reported: reals and fakes
whose ids are in no official pair are grouped by the ids they connect and get no hint (the split
stage places them); a fake joining ids of two *different* official pairs would tie two splits
together, so it is ``exclude``d (kept in the table, dropped by the split stage).

DeepFakeDetection (``include_actors``, or ``DeepFakeDetection`` in ``methods``) has no official
split: videos are grouped by actor (connected components of the actor graph, a fake ``AA_BB``
joining actors AA and BB), with no hint. The dataset does not document which of AA and BB is the
target, so DeepFakeDetection fakes get no ``original`` (their faces are detected, not reused).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from fakeproof.config import DataParams
from fakeproof.sources import SourceError, SourceResult, register_source
from fakeproof.sources._common import (Problems, UnionFind, list_videos, log_summary, package_text,
                                       require_root, safe_id, video_row, videos_frame)

log = logging.getLogger(__name__)

NAME = "ffpp"
SPLITS = ("train", "val", "test")
DFD = "DeepFakeDetection"
_REAL = re.compile(r"^(\d{3})$")
_FAKE = re.compile(r"^(\d{3})_(\d{3})$")
_ACTOR_REAL = re.compile(r"^(\d{2})__(.+)$")
_ACTOR_FAKE = re.compile(r"^(\d{2})_(\d{2})__(.+)$")
_WHAT = "the FaceForensics++ folder (with original_sequences/ and manipulated_sequences/)"


def official_pairs() -> dict[str, tuple[str, str]]:
    """Map each FF++ id to ``(split, pair_key)`` from the shipped official split files."""
    out: dict[str, tuple[str, str]] = {}
    for split in SPLITS:
        where = f"fakeproof/assets/splits/ffpp/{split}.json"
        try:
            pairs = json.loads(package_text("splits", "ffpp", f"{split}.json"))
        except json.JSONDecodeError as e:
            raise SourceError(f"{where}: not valid JSON (line {e.lineno}); reinstall fakeproof") from None
        for pair in pairs:
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(i, str) and _REAL.match(i) for i in pair)):
                raise SourceError(f"{where}: entry {pair!r} is not a [target, source] pair of ids")
            key = "_".join(sorted(pair))
            for i in pair:
                if i in out:
                    raise SourceError(f"{where}: id {i} is in two official pairs")
                out[i] = (split, key)
    return out


@register_source(NAME)
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """The FF++ video table for ``data.ffpp.compression`` and ``data.ffpp.methods``."""
    t0 = time.perf_counter()
    root = require_root(params, _WHAT)
    if not (root / "original_sequences").is_dir() and not (root / "manipulated_sequences").is_dir():
        raise SourceError(f"data.root = {params.root!r}: no original_sequences/ or "
                          f"manipulated_sequences/ folder; set data.root to {_WHAT}")
    c = params.ffpp.compression
    methods = [m for m in dict.fromkeys(params.ffpp.methods) if m != DFD]
    use_actors = params.ffpp.include_actors or DFD in params.ffpp.methods
    pairs = official_pairs()
    problems = Problems()
    rows: list[dict] = []

    reals, fakes = _scan(root, c, methods, problems)

    # Ids outside the official pairs are grouped by the ids their fakes connect.
    loose = UnionFind()
    for i in reals:
        if i not in pairs:
            loose.add(i)
    for _, t, s in fakes:
        if t not in pairs and s not in pairs:
            loose.union(t, s)

    def place(i: str) -> tuple[str, str]:
        if i in pairs:
            split, key = pairs[i]
            return f"ffpp_pair_{key}", split
        return f"ffpp_ids_{loose.find(i)}", ""

    for i, row in reals.items():
        row["group"], row["split_hint"] = place(i)
        if i not in pairs:
            problems.add(row["path"], "id is in no official FF++ pair; kept without a split hint",
                         row["video_id"])
        rows.append(row)
    for row, t, s in fakes:
        if t in pairs and s in pairs and pairs[t][1] == pairs[s][1]:
            row["group"], row["split_hint"] = place(t)
        elif t not in pairs and s not in pairs:
            row["group"], row["split_hint"] = place(t)
            problems.add(row["path"], "pair is not in the official FF++ split; kept without a "
                                      "split hint", row["video_id"])
        else:
            row["group"], row["split_hint"] = place(t)[0], "exclude"
            problems.add(row["path"], f"ids {t} and {s} belong to different official pairs; "
                                      "excluded (it would tie two splits together)", row["video_id"])
        if t in reals:
            row["original"] = reals[t]["video_id"]
        rows.append(row)

    if use_actors:
        rows.extend(_actors(root, c, problems))

    df = videos_frame(rows, f"data.root = {params.root!r} (ffpp, {c})")
    log_summary(log, f"ffpp {c} ({', '.join(methods)}{', actors' if use_actors else ''})", df,
                problems, t0)
    return SourceResult(df, problems.frame())


def _scan(root: Path, c: str, methods: list[str], problems: Problems
          ) -> tuple[dict[str, dict], list[tuple[dict, str, str]]]:
    """The originals by id and the fakes of ``methods`` with their (target, source) ids."""
    # Originals (youtube): one per official id.
    reals: dict[str, dict] = {}
    yt = root / "original_sequences" / "youtube" / c / "videos"
    if not yt.is_dir():
        problems.add(yt, "folder not found: no FF++ originals at this compression; fakes are kept "
                         "and placed by their pair, without original boxes")
    for p in list_videos(yt, (".mp4",)):
        m = _REAL.match(p.stem)
        if not m:
            problems.add(p, "not an FF++ original name (NNN.mp4); skipped")
            continue
        reals[p.stem] = video_row(f"ffpp_{c}_real_{p.stem}", p, 0, "", "real", NAME)

    # Fakes of each method.
    fakes: list[tuple[dict, str, str]] = []
    for method in methods:
        d = root / "manipulated_sequences" / method / c / "videos"
        if not d.is_dir():
            problems.add(d, f"folder not found: method {method} (data.ffpp.methods) has no videos "
                            f"at {c}; download it or remove it from data.ffpp.methods")
            continue
        for p in list_videos(d, (".mp4",)):
            m = _FAKE.match(p.stem)
            if not m:
                problems.add(p, "not an FF++ fake name (TTT_SSS.mp4); skipped")
                continue
            row = video_row(safe_id("ffpp", c, method, p.stem), p, 1, "", method, NAME)
            fakes.append((row, m.group(1), m.group(2)))
    return reals, fakes


def _actors(root: Path, c: str, problems: Problems) -> list[dict]:
    """DeepFakeDetection reals and fakes, grouped by connected actors, no official split."""
    actors_dir = root / "original_sequences" / "actors" / c / "videos"
    dfd_dir = root / "manipulated_sequences" / DFD / c / "videos"
    for d in (actors_dir, dfd_dir):
        if not d.is_dir():
            problems.add(d, "folder not found: DeepFakeDetection data requested "
                            "(data.ffpp.include_actors) but not downloaded at this compression")
    uf = UnionFind()
    items: list[tuple[dict, str]] = []
    for p in list_videos(actors_dir, (".mp4",)):
        m = _ACTOR_REAL.match(p.stem)
        if not m:
            problems.add(p, "not a DeepFakeDetection original name (AA__scene.mp4); skipped")
            continue
        uf.add(m.group(1))
        items.append((video_row(safe_id("ffpp", c, "actors", p.stem), p, 0, "", "real", NAME),
                      m.group(1)))
    for p in list_videos(dfd_dir, (".mp4",)):
        m = _ACTOR_FAKE.match(p.stem)
        if not m:
            problems.add(p, "not a DeepFakeDetection fake name (AA_BB__scene__code.mp4); skipped")
            continue
        uf.union(m.group(1), m.group(2))
        items.append((video_row(safe_id("ffpp", c, DFD, p.stem), p, 1, "", DFD, NAME), m.group(1)))
    out = []
    for row, actor in items:
        row["group"] = f"ffpp_actors_{uf.find(actor)}"
        out.append(row)
    return out
