"""Plan and write the demo dataset: groups of two real clips and four fakes made from them.

Group ``g`` takes two photos of different people (a pair schedule that uses every photo before
any repeats, then balances how often each photo and pair appears) and renders:

=====================  =======  ==========  ===============================================
video_id               label    method      made from
=====================  =======  ==========  ===============================================
``gNNN_real_a``        0        real        photo A
``gNNN_real_b``        0        real        photo B
``gNNN_faceswap_a``    1        faceswap    target ``real_a``, donor face from ``real_b``
``gNNN_faceswap_b``    1        faceswap    target ``real_b``, donor face from ``real_a``
``gNNN_sbi_a``         1        sbi         ``real_a`` blended with itself
``gNNN_sbi_b``         1        sbi         ``real_b`` blended with itself
=====================  =======  ==========  ===============================================

so real:fake is 1:2, every real clip has exactly one face swap and one self-blend, and a fake's
``original`` is its target clip (its footage and camera motion, hence its face boxes). Every clip
draws from its own generator seeded by ``(data.seed, group, clip)``, so a group's clips do not
depend on how many groups there are, and the same params give byte-identical files.
"""

from __future__ import annotations

import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from fakeproof.config import DemoParams
from fakeproof.demo.clips import Clip, DemoAssetError, Photo, load_photos, render_real
from fakeproof.demo.manipulate import face_swap, self_blend
from fakeproof.io import atomic_path
from fakeproof.sources import VIDEO_COLUMNS
from fakeproof.video import write_mp4

log = logging.getLogger(__name__)

SOURCE_NAME = "demo"
#: Clip kinds of a group, in the order of their seed index.
CLIP_KINDS = ("real_a", "real_b", "faceswap_a", "faceswap_b", "sbi_a", "sbi_b")
_CLIP_FILE = re.compile(r"^g\d{3,}_(?:real|faceswap|sbi)_[ab]\.mp4$")


@dataclass(frozen=True)
class ClipSpec:
    """One clip of the plan (a row of the video table, before its path is known)."""

    video_id: str
    group: str
    method: str
    label: int
    photo: str
    original: str


def pair_schedule(photos: Sequence[Photo], n_groups: int) -> list[tuple[int, int]]:
    """Photo index pairs (A, B) of different identities, one per group.

    Greedy: the next pair has the fewest uses of its two photos, then of the pair itself, then
    the fewest possible partners (photos of a well-represented person first), so the first
    ``ceil(n/2)`` groups already use every photo. Roles alternate between groups.
    """
    n = len(photos)
    valid = [(i, j) for i in range(n) for j in range(i + 1, n)
             if photos[i].identity != photos[j].identity]
    if not valid:
        raise DemoAssetError("fakeproof/assets/faces: the demo needs photos of at least two different "
                             "people; add one")
    degree = [sum(1 for p in valid if k in p) for k in range(n)]
    uses = [0] * n
    pair_uses = {p: 0 for p in valid}
    out = []
    for g in range(n_groups):
        best = min(valid, key=lambda p: (uses[p[0]] + uses[p[1]], pair_uses[p],
                                         degree[p[0]] + degree[p[1]], p))
        uses[best[0]] += 1
        uses[best[1]] += 1
        pair_uses[best] += 1
        out.append(best if g % 2 == 0 else (best[1], best[0]))
    return out


def plan(n_groups: int, photos: Sequence[Photo] | None = None) -> list[ClipSpec]:
    """The clips of ``n_groups`` groups, in generation order (see the module docstring)."""
    photos = photos if photos is not None else load_photos()
    specs = []
    for g, (ia, ib) in enumerate(pair_schedule(photos, n_groups)):
        group = f"g{g:03d}"
        names = {"a": photos[ia].name, "b": photos[ib].name}
        for kind in CLIP_KINDS:
            method, role = kind.rsplit("_", 1)
            real = method == "real"
            specs.append(ClipSpec(f"{group}_{kind}", group, method, 0 if real else 1, names[role],
                                  "" if real else f"{group}_real_{role}"))
    return specs


def _rng(seed: int, group: int, clip: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, group, clip]))


def render_group(g: int, photo_a: Photo, photo_b: Photo, params: DemoParams, seed: int
                 ) -> dict[str, np.ndarray]:
    """All six clips of group ``g`` as uint8 frame arrays keyed by kind (``real_a`` ...)."""
    n, fps, size = params.frames, params.fps, params.size
    a: Clip = render_real(photo_a, n, fps, size, _rng(seed, g, 0))
    b: Clip = render_real(photo_b, n, fps, size, _rng(seed, g, 1))
    return {
        "real_a": a.frames,
        "real_b": b.frames,
        "faceswap_a": face_swap(a, b, _rng(seed, g, 2)),
        "faceswap_b": face_swap(b, a, _rng(seed, g, 3)),
        "sbi_a": self_blend(a, _rng(seed, g, 4)),
        "sbi_b": self_blend(b, _rng(seed, g, 5)),
    }


def generate(params: DemoParams, seed: int, raw_dir: str | Path, workers: int | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Write every clip to ``raw_dir/videos/<video_id>.mp4`` and return the video table.

    Groups render in ``workers`` threads (default: :func:`default_workers`; numpy and the ffmpeg
    encoder release the GIL); each
    group's output depends only on its own seeds, so the files are the same for any ``workers``.
    Each mp4 is written to a temporary name and renamed, so no half-written clip is left behind;
    demo clips left in the folder by an earlier run with more groups are removed.
    """
    start = time.perf_counter()
    workers = default_workers() if workers is None else workers
    photos = load_photos()
    specs = plan(params.groups, photos)
    by_name = {p.name: p for p in photos}
    out_dir = Path(raw_dir) / "videos"
    out_dir.mkdir(parents=True, exist_ok=True)

    def one_group(g: int) -> list[ClipSpec]:
        group_specs = specs[g * len(CLIP_KINDS):(g + 1) * len(CLIP_KINDS)]
        pa, pb = by_name[group_specs[0].photo], by_name[group_specs[1].photo]
        clips = render_group(g, pa, pb, params, seed)
        for spec, kind in zip(group_specs, CLIP_KINDS):
            with atomic_path(out_dir / f"{spec.video_id}.mp4") as tmp:
                write_mp4(tmp, clips[kind], fps=params.fps, crf=params.crf)
        return group_specs

    bar = tqdm(total=len(specs), desc="demo clips", unit="clip", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, params.groups))) as pool:
        for done in pool.map(one_group, range(params.groups)):
            bar.update(len(done))
    bar.close()
    wanted = {f"{s.video_id}.mp4" for s in specs}
    stale = sorted(p for p in out_dir.iterdir() if _CLIP_FILE.match(p.name) and p.name not in wanted)
    for p in stale:
        p.unlink()

    rows = [{"video_id": s.video_id, "path": str(out_dir / f"{s.video_id}.mp4"), "label": s.label,
             "group": s.group, "method": s.method, "source": SOURCE_NAME, "split_hint": "",
             "original": s.original} for s in specs]
    table = pd.DataFrame(rows, columns=VIDEO_COLUMNS)
    n_fake = int(table["label"].sum())
    log.info("demo: %d clips (%d real, %d faceswap, %d sbi) in %d groups from %d photos, "
             "%d frames of %d px at %d fps, written to %s in %.1f s (%d stale clips removed)",
             len(table), len(table) - n_fake, int((table["method"] == "faceswap").sum()),
             int((table["method"] == "sbi").sum()), params.groups, len(photos), params.frames,
             params.size, params.fps, out_dir, time.perf_counter() - start, len(stale))
    return table


def default_workers() -> int:
    """Threads for :func:`generate`: the CPUs this process may use, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))
