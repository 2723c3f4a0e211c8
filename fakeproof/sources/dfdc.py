"""The DeepFake Detection Challenge training set (Dolhansky et al., "The DeepFake Detection
Challenge (DFDC) Dataset", arXiv:2006.07397), read in place.

Layout: ``data.root/dfdc_train_part_N/`` holding the clips and a ``metadata.json`` that maps each
file name to ``{"label": "FAKE" | "REAL", "split": ..., "original": "<real>.mp4"}`` (only fakes
carry ``original``). ``data.dfdc.parts`` picks part folders; empty = every sub-folder of the root
with a ``metadata.json`` (natural order), or the root itself when it holds the ``metadata.json``.

A fake is grouped with its original (union-find over all parts: an original can sit in another
part), so a fake and the real clip it was made from always share a split; ``original`` is the real's
video_id when that clip is on disk. The metadata ``split`` field is the competition's (``train`` for
every public training part) and does not make a held-out split, so ``split_hint`` stays empty and
the split stage shares the groups out. Files listed but absent, files present but unlisted (no
label), duplicate names across parts and fakes without ``original`` are reported as problems;
a malformed ``metadata.json`` raises :class:`SourceError` naming it.

What the default grouping does not do: DFDC's metadata has no actor ids, and one paid actor
appears in many original clips, so the same person can land in train and test (their clips are
apart, their face is not). ``data.dfdc.groups`` names a CSV with header ``video,group`` (a video
is its file name ``abc.mp4``, its stem ``abc`` or its video_id ``dfdc_abc``), e.g. actor clusters
from face clustering: every video of a user group shares one split, on top of the fake-with-its-
original rule (the two are merged, so the file can join groups, never separate a fake from its
original). Videos the file does not list keep the default grouping; rows naming videos not in
the table (another part, say) are ignored; both are counted in the log. A relative path is read
from the current directory (the project root), as ``data.root`` is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from fakeproof.config import DataParams
from fakeproof.sources import SourceError, SourceResult, register_source
from fakeproof.sources._common import (Problems, UnionFind, csv_records, list_videos, log_summary,
                                       natural_key, require_root, safe_id, video_row, videos_frame)

log = logging.getLogger(__name__)

NAME = "dfdc"
META = "metadata.json"
LABELS = {"REAL": 0, "FAKE": 1}
_WHAT = "the DFDC folder holding dfdc_train_part_N/ folders (each with a metadata.json)"


def find_parts(root: Path, wanted: list[str]) -> list[Path]:
    """The part folders to read: ``wanted`` by name, else all with a metadata.json."""
    if wanted:
        parts = []
        for name in wanted:
            d = root / name
            if not (d / META).is_file():
                found = [p.name for p in _all_parts(root)]
                raise SourceError(f"data.dfdc.parts: {name!r} has no {d / META}; parts found under "
                                  f"data.root: {', '.join(found) or 'none'}")
            parts.append(d)
        return list(dict.fromkeys(parts))
    parts = _all_parts(root)
    if not parts and (root / META).is_file():
        parts = [root]
    if not parts:
        raise SourceError(f"data.root = {str(root)!r}: no sub-folder with a {META}; set data.root "
                          f"to {_WHAT}")
    return parts


def _all_parts(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and (p / META).is_file()),
                  key=lambda p: natural_key(p.name))


def read_metadata(path: Path) -> dict[str, dict]:
    """A part's metadata.json, checked: file name -> {"label": 0|1, "original": str}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                          "re-download this part") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text; re-download this part") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{path}: top level must be an object mapping file names to entries")
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or entry.get("label") not in LABELS:
            raise SourceError(f"{path}: entry {name!r} needs \"label\": \"FAKE\" or \"REAL\", got "
                              f"{entry!r:.80}")
        original = entry.get("original") or ""
        if not isinstance(original, str):
            raise SourceError(f"{path}: entry {name!r}: \"original\" must be a file name")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise SourceError(f"{path}: entry {name!r} is not a plain file name")
        out[name] = {"label": LABELS[entry["label"]], "original": original}
    return out


def read_groups(path: Path) -> dict[str, str]:
    """A ``video,group`` CSV as ``{video: group}`` (SourceError naming file and line if bad)."""
    if not path.is_file():
        raise SourceError(f"data.dfdc.groups = {str(path)!r}: no such file; give a CSV with "
                          "header video,group or set data.dfdc.groups: null")
    out: dict[str, str] = {}
    where: dict[str, int] = {}
    for n, _, rec in csv_records(path, (("video", "group"),), "video,group (data.dfdc.groups)",
                                 empty="empty; give a CSV with header video,group"):
        if len(rec) != 2:
            raise SourceError(f"{path}:{n}: {len(rec)} columns; expected 2 (video,group)")
        video, group = rec[0].strip(), rec[1].strip()
        if not video or not group:
            raise SourceError(f"{path}:{n}: empty video or group")
        if video in out and out[video] != group:
            raise SourceError(f"{path}:{n}: {video} is in group {group!r} here and in "
                              f"{out[video]!r} at line {where[video]}; give one group")
        out[video], where[video] = group, n
    return out


def _apply_groups(path: Path, entries: dict[str, dict], uf: UnionFind) -> None:
    """Merge the user's groups into ``uf`` (keys: file names of ``entries``) and log the counts."""
    groups = read_groups(path)
    lookup: dict[str, str] = {}
    for name in entries:
        stem = Path(name).stem
        for alias in (name, stem, safe_id(NAME, stem)):
            lookup.setdefault(alias, name)
    first: dict[str, str] = {}
    listed: set[str] = set()
    unknown = []
    for video, group in groups.items():
        name = lookup.get(video)
        if name is None:
            unknown.append(video)
            continue
        listed.add(name)
        if group in first:
            uf.union(first[group], name)
        else:
            first[group] = name
    log.info("dfdc: data.dfdc.groups = %s: %d user groups over %d videos merged into the "
             "grouping", path, len(first), len(listed))
    if len(listed) < len(entries):
        log.warning("dfdc: %d of %d videos are not in %s; they keep the default grouping (a fake "
                    "with its original) only", len(entries) - len(listed), len(entries), path)
    if unknown:
        log.warning("dfdc: %d rows of %s name videos not in the table (e.g. %s); ignored",
                    len(unknown), path, unknown[0])


@register_source(NAME)
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """The DFDC video table; fakes grouped with their originals across parts."""
    t0 = time.perf_counter()
    root = require_root(params, _WHAT)
    parts = find_parts(root, list(params.dfdc.parts))
    problems = Problems()
    entries: dict[str, dict] = {}  # file name -> entry with path
    for part in parts:
        meta = read_metadata(part / META)
        on_disk = {p.name: p for p in list_videos(part)}
        for name in sorted(meta):
            if name not in on_disk:
                problems.add(part / name, f"listed in {part.name}/{META} but not on disk; skipped")
                continue
            if name in entries:
                problems.add(part / name, f"also in {entries[name]['path'].parent.name}; "
                                          "duplicate file name skipped")
                continue
            entries[name] = {**meta[name], "path": on_disk[name]}
        for name in sorted(set(on_disk) - set(meta)):
            problems.add(on_disk[name], f"not in {part.name}/{META} (no label); skipped")

    uf = UnionFind()
    for name, e in entries.items():
        uf.add(name)
        if e["label"] == 1 and e["original"]:
            uf.union(name, e["original"])
    if params.dfdc.groups:
        _apply_groups(Path(params.dfdc.groups).expanduser(), entries, uf)
    rows = []
    for name in sorted(entries):
        e = entries[name]
        vid = safe_id(NAME, Path(name).stem)
        original = ""
        if e["label"] == 1:
            if not e["original"]:
                problems.add(e["path"], "fake without \"original\" in metadata.json; grouped alone",
                             vid)
            elif entries.get(e["original"], {}).get("label") == 0:
                original = safe_id(NAME, Path(e["original"]).stem)
        group = safe_id(NAME, Path(uf.find(name)).stem)
        rows.append(video_row(vid, e["path"], e["label"], group,
                              "real" if e["label"] == 0 else "fake", NAME, "", original))
    df = videos_frame(rows, f"data.root = {params.root!r} (dfdc)")
    log_summary(log, f"dfdc ({len(parts)} parts)", df, problems, t0)
    return SourceResult(df, problems.frame())
