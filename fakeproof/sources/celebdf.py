"""Celeb-DF v2 (Li et al., "Celeb-DF: A Large-scale Challenging Dataset for DeepFake Forensics",
CVPR 2020), read in place.

Layout::

    Celeb-real/idA_NNNN.mp4          590 real clips of 59 celebrities
    YouTube-real/NNNNN.mp4           300 more real clips
    Celeb-synthesis/idA_idB_NNNN.mp4 5639 fakes: the target clip idA_NNNN with idB's face
    List_of_testing_videos.txt       518 lines "<label> <folder>/<file>.mp4", 1 = REAL, 0 = FAKE

Our label is ``1 - <label>`` (1 = fake). The list is read from ``data.root`` when present, else the
shipped copy (``fakeproof/assets/splits/celebdf``); the log says which. A copy whose labels
contradict the folders (community code often flips the convention) is refused.

Test = the official list (``split_hint`` ``test``). Train/val come from the rest, shared by the split
stage. What else a test video touches is ``exclude``d (kept in the table and counted, dropped by the
split stage), by ``data.celebdf.exclude``:

- ``clip`` (default): non-test videos made from the same source clip as a test video (the real
  ``idA_NNNN`` and every fake ``idA_*_NNNN``) share its footage, so they are excluded; test
  videos and those are grouped per source clip (``celebdf_clip_idA_NNNN``). The other Celeb videos
  (the ones train and val share) are grouped by identity: the connected components of the identity
  graph over them (a real ``idA_*`` is a node, a fake ``idA_idB_*`` joins its target idA and its
  donor idB), named ``celebdf_ids_<smallest id>``. So no identity, target or donor, is in both
  train and val. Face swaps link many identities, so these components are few and large (the
  official test fakes alone link 55 identities into 4 components): val's share of videos can be
  far from ``split.val``; the split stage reports the counts.
- ``identity``: no identity of a test video appears outside test. Groups are the connected
  components of the identity graph (a real is a node, a fake idA_idB an edge); every non-test video
  in a component that holds a test video is excluded. This is the strictest protocol, but the
  official list covers 56 of the 59 celebrities, so it leaves almost no Celeb videos for training:
  it is offered for identity-disjoint evaluation, not as the default.

The official protocol itself (as used in the literature) keeps the test identities in training:
with ``clip``, test shares identities (not footage) with train and val, as in every published
Celeb-DF result; ``clip`` removes the footage overlap, which is the part that leaks pixels, and
``identity`` removes the identity overlap too. YouTube-real clips are
one person each: every clip is its own group. A fake's ``original`` is the video_id of its target
clip ``Celeb-real/idA_NNNN.mp4`` when present (face-box reuse).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from fakeproof.config import DataParams
from fakeproof.sources import SourceError, SourceResult, register_source
from fakeproof.sources._common import (Problems, UnionFind, list_videos, log_summary, package_text,
                                       require_root, video_row, videos_frame)

log = logging.getLogger(__name__)

NAME = "celebdf"
TEST_LIST = "List_of_testing_videos.txt"
FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
EXCLUDE_MODES = ("clip", "identity")
_CELEB_REAL = re.compile(r"^(id\d+)_(\d+)$")
_SYNTH = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")
_YOUTUBE = re.compile(r"^(\d+)$")
_WHAT = "the Celeb-DF v2 folder (with Celeb-real/, Celeb-synthesis/, YouTube-real/)"


def read_test_list(root: Path) -> tuple[dict[str, int], str]:
    """The official test list as ``{"<folder>/<file>.mp4": label (1 = fake)}`` and where it came from.

    Lines are ``<label> <folder>/<file>.mp4`` with the release's convention 1 = REAL, 0 = FAKE.
    """
    path = root / TEST_LIST
    if path.is_file():
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        text = package_text("splits", "celebdf", TEST_LIST)
        where = f"fakeproof/assets/splits/celebdf/{TEST_LIST}"
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1") or "/" not in parts[1]:
            raise SourceError(f"{where}:{n}: {line.strip()!r} is not '<0|1> <folder>/<file>.mp4'")
        rel = parts[1]
        folder = rel.split("/", 1)[0]
        if folder not in FOLDERS:
            raise SourceError(f"{where}:{n}: folder {folder!r} is not one of {sorted(FOLDERS)}")
        fake = 1 - int(parts[0])
        if fake != FOLDERS[folder]:
            raise SourceError(
                f"{where}:{n}: {rel} is labelled {parts[0]}, but the Celeb-DF list uses 1 = real, "
                "0 = fake; this copy looks flipped: use the list from the Celeb-DF v2 release")
        if rel in out:
            raise SourceError(f"{where}:{n}: {rel} is listed twice")
        out[rel] = fake
    if not out:
        raise SourceError(f"{where}: empty test list")
    return out, where


@register_source(NAME)
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """The Celeb-DF v2 video table: official test list, the rest grouped for train/val."""
    t0 = time.perf_counter()
    root = require_root(params, _WHAT)
    if not any((root / f).is_dir() for f in FOLDERS):
        raise SourceError(f"data.root = {params.root!r}: none of {', '.join(FOLDERS)} found; "
                          f"set data.root to {_WHAT}")
    mode = getattr(getattr(params, "celebdf", None), "exclude", "clip")
    if mode not in EXCLUDE_MODES:
        raise SourceError(f"data.celebdf.exclude = {mode!r}: use one of {', '.join(EXCLUDE_MODES)}")
    test, where = read_test_list(root)
    log.info("celebdf: test list from %s (%d videos)", where, len(test))
    problems = Problems()

    # Scan: one record per parseable file.
    recs: list[dict] = []
    for folder, label in FOLDERS.items():
        for p in list_videos(root / folder, (".mp4",)):
            rel = f"{folder}/{p.name}"
            rec = _parse(folder, p.stem)
            if rec is None:
                problems.add(p, f"not a Celeb-DF {folder} file name; skipped")
                continue
            rec.update(rel=rel, path=p, label=label, test=rel in test)
            recs.append(rec)
    on_disk = {r["rel"] for r in recs}
    for rel in sorted(set(test) - on_disk):
        problems.add(root / rel, f"listed in {TEST_LIST} but not on disk (or not a Celeb-DF name); "
                                 "skipped")

    real_ids = {r["vid"] for r in recs if r["kind"] == "real"}
    _group(recs, mode)

    rows = []
    for r in recs:
        original = ""
        if r["kind"] == "fake":
            target = "celebdf_real_{}_{}".format(*r["clip"])
            original = target if target in real_ids else ""
        rows.append(video_row(r["vid"], r["path"], r["label"], r["group"], r["method"], NAME,
                              r["hint"], original))
    df = videos_frame(rows, f"data.root = {params.root!r} (celebdf)")
    n_ex = int((df["split_hint"] == "exclude").sum())
    ids = df[df["group"].str.startswith("celebdf_ids_") & (df["split_hint"] == "")]
    if len(ids):
        sizes = ids["group"].value_counts()
        log.info("celebdf: train/val Celeb videos form %d identity groups (target and donor kept "
                 "together); the largest holds %d of %d videos", len(sizes), int(sizes.iloc[0]),
                 len(ids))
    log.info("celebdf: %d of %d listed test videos found; %d non-test videos excluded "
             "(data.celebdf.exclude = %s: they share %s with a test video)",
             int((df["split_hint"] == "test").sum()), len(test), n_ex, mode,
             "a source clip" if mode == "clip" else "an identity")
    log_summary(log, "celebdf", df, problems, t0)
    return SourceResult(df, problems.frame())


def _group(recs: list[dict], mode: str) -> None:
    """Set each record's ``group`` and split ``hint`` (``data.celebdf.exclude`` = ``mode``)."""
    if mode == "clip":
        test_clips = {r["clip"] for r in recs if r["test"]}
        free = UnionFind()  # identities of the videos train and val share, target and donor
        for r in recs:
            if r["kind"] != "yt" and r["clip"] not in test_clips:
                for i in r["ids"]:
                    free.union(r["ids"][0], i)
        for r in recs:
            if r["kind"] == "yt":
                r["group"] = f"celebdf_yt_{r['clip'][1]}"
            elif r["clip"] in test_clips:
                r["group"] = "celebdf_clip_{}_{}".format(*r["clip"])
            else:
                r["group"] = f"celebdf_ids_{free.find(r['ids'][0])}"
            touched = r["clip"] in test_clips
            r["hint"] = "test" if r["test"] else ("exclude" if touched else "")
    else:
        uf = UnionFind()
        for r in recs:
            for i in r["ids"]:
                uf.union(r["ids"][0], i)
        test_comps = {uf.find(r["ids"][0]) for r in recs if r["test"] and r["ids"]}
        for r in recs:
            if r["kind"] == "yt":
                r["group"], touched = f"celebdf_yt_{r['clip'][1]}", False
            else:
                comp = uf.find(r["ids"][0])
                r["group"], touched = f"celebdf_ids_{comp}", comp in test_comps
            r["hint"] = "test" if r["test"] else ("exclude" if touched else "")


def _parse(folder: str, stem: str) -> dict | None:
    """Ids, source clip, video_id and method from a Celeb-DF file name (None if unexpected)."""
    if folder == "Celeb-real":
        m = _CELEB_REAL.match(stem)
        if m:
            a, n = m.groups()
            return {"kind": "real", "ids": (a,), "clip": (a, n), "vid": f"celebdf_real_{stem}",
                    "method": "real"}
    elif folder == "Celeb-synthesis":
        m = _SYNTH.match(stem)
        if m:
            a, b, n = m.groups()
            return {"kind": "fake", "ids": (a, b), "clip": (a, n), "vid": f"celebdf_fake_{stem}",
                    "method": "Celeb-synthesis"}
    else:
        m = _YOUTUBE.match(stem)
        if m:
            return {"kind": "yt", "ids": (), "clip": ("yt", stem), "vid": f"celebdf_yt_{stem}",
                    "method": "real"}
    return None
