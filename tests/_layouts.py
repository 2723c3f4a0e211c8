"""Tiny dataset trees in every supported layout, made of real face mp4 clips, for pipeline tests.

Clips are encoded with :func:`fakeproof.video.write_mp4` (real libx264) from the public-domain demo
photos in ``fakeproof/assets/faces``: a square window two face-widths wide, centred on the face and
panning a little per frame, so the face fills about half of the frame (MTCNN finds it at 112 px).
A "fake" clip is the same footage with the face region recoloured and blurred (a crude manipulation
with the real clip's geometry, so face boxes of the original fit it). Each (photo, variant) clip
is encoded once per session (:class:`ClipBank`) and copied wherever a layout needs it.

Every ``build_*`` function writes one layout under a project folder and returns a :class:`Layout`:
the ``data`` params section to use and, per video file, what the pipeline must make of it
(:class:`Expect`). Paths in ``Layout.expect`` are relative to the project folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import yaml
from PIL import Image

from _params import default_params_raw
from fakeproof.video import write_mp4

# Face boxes (left, top, right, bottom) as fractions of the photo, found by facenet-pytorch MTCNN
# on the shipped photos (probability 1.0) and checked by eye.
FACE_BOXES = {
    "obama.jpg": (0.411, 0.077, 0.676, 0.369),
    "biden.jpg": (0.441, 0.122, 0.735, 0.397),
    "astronaut.jpg": (0.352, 0.117, 0.525, 0.338),
    "obama2.jpg": (0.317, 0.184, 0.753, 0.531),
    "obama3.jpg": (0.445, 0.195, 0.635, 0.467),
}
PHOTOS = tuple(FACE_BOXES)
CLIP_SIZE = 112
CLIP_FRAMES = 6
CLIP_FPS = 8
# Per-channel shift of the face region for fake variants 1, 2, ...
_FAKE_SHIFTS = {1: (22, -6, -6), 2: (-8, -8, 24), 3: (-6, 20, -6)}


def photo(name: str) -> np.ndarray:
    ref = resources.files("fakeproof") / "assets" / "faces" / name
    with resources.as_file(ref) as p, Image.open(p) as im:
        return np.asarray(im.convert("RGB"))


def face_frames(name: str, variant: int = 0, size: int = CLIP_SIZE,
                n_frames: int = CLIP_FRAMES) -> np.ndarray:
    """Frames (n, size, size, 3): the face of photo ``name`` filling about half of each frame.

    ``variant`` 0 is the real clip; 1, 2, 3 are fakes (the face region recoloured and blurred).
    """
    img = photo(name)
    H, W = img.shape[:2]
    fx1, fy1, fx2, fy2 = FACE_BOXES[name]
    box = np.array([fx1 * W, fy1 * H, fx2 * W, fy2 * H])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = 2.0 * max(box[2] - box[0], box[3] - box[1])
    pil = Image.fromarray(img)
    frames = []
    for t in range(n_frames):
        ox = cx - side / 2 + 0.03 * side * (t % 3 - 1)
        oy = cy - side / 2 + 0.02 * side * (t % 2)
        win = (ox, oy, ox + side, oy + side)
        frame = np.asarray(pil.transform((size, size), Image.Transform.EXTENT, win,
                                         Image.Resampling.BILINEAR)).copy()
        if variant:
            s = size / side
            x1, y1 = int(round((box[0] - ox) * s)), int(round((box[1] - oy) * s))
            x2, y2 = int(round((box[2] - ox) * s)), int(round((box[3] - oy) * s))
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, size), min(y2, size)
            region = Image.fromarray(frame[y1:y2, x1:x2]).reduce(2).resize((x2 - x1, y2 - y1))
            region = np.asarray(region).astype(np.int16) + np.array(_FAKE_SHIFTS[variant], np.int16)
            frame[y1:y2, x1:x2] = np.clip(region, 0, 255).astype(np.uint8)
        frames.append(frame)
    return np.stack(frames)


def blank_frames(size: int = 96, n_frames: int = CLIP_FRAMES) -> np.ndarray:
    """A clip without a face: a drifting grey gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for t in range(n_frames):
        g = np.clip(80 + 70 * (xx + 3 * t) / size + 25 * yy / size, 0, 255).astype(np.uint8)
        out.append(np.stack([g, g, g], axis=-1))
    return np.stack(out)


class ClipBank:
    """Encodes each (photo, variant) clip once and copies it to where a layout needs it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _clip(self, key: str, make) -> Path:
        path = self.folder / f"{key}.mp4"
        if not path.is_file():
            write_mp4(path, make(), fps=CLIP_FPS)
        assert path.stat().st_size > 0, f"{path}: empty clip"
        return path

    def face(self, name: str, variant: int = 0) -> Path:
        return self._clip(f"{Path(name).stem}_v{variant}", lambda: face_frames(name, variant))

    def blank(self) -> Path:
        return self._clip("blank", blank_frames)

    def put(self, dest: Path, name: Optional[str] = None, variant: int = 0) -> Path:
        """Copy the clip of photo ``name`` (or the blank clip when ``name`` is None) to ``dest``."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.blank() if name is None else self.face(name, variant), dest)
        return dest


@dataclass(frozen=True)
class Expect:
    """What the pipeline must make of one video file."""

    label: int                  # 1 = fake
    split: Optional[str] = None  # the official split, where one exists
    excluded: bool = False       # dropped by the source's protocol (split_hint exclude)
    face: bool = True            # MTCNN must find a face in every sampled frame
    same_group_as: Optional[str] = None  # another file (relative path) that must share its group
    original: Optional[str] = None       # the file whose video_id must be this fake's ``original``


@dataclass
class Layout:
    data: dict                                     # the params.yaml ``data`` section overrides
    expect: dict[str, Expect] = field(default_factory=dict)  # relative path -> Expect
    split: dict = field(default_factory=lambda: {"train": 0.34, "val": 0.33, "test": 0.33})


# --------------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------------


def ffpp_official_pairs() -> dict[str, list[list[str]]]:
    ref = resources.files("fakeproof") / "assets" / "splits" / "ffpp"
    return {s: json.loads((ref / f"{s}.json").read_text()) for s in ("train", "val", "test")}


def build_ffpp(project: Path, bank: ClipBank) -> Layout:
    """FF++ c23: one official pair per split; both originals; the pair's fakes under Deepfakes
    and Face2Face (the same TTT_SSS under two methods), plus the reverse SSS_TTT of the train pair."""
    root = "datasets/ffpp"  # relative to the project: paths in videos.csv stay relative
    expect: dict[str, Expect] = {}
    yt = f"{root}/original_sequences/youtube/c23/videos"
    for k, (split, pairs) in enumerate(ffpp_official_pairs().items()):
        t, s = pairs[0]
        pt, ps = PHOTOS[(2 * k) % len(PHOTOS)], PHOTOS[(2 * k + 1) % len(PHOTOS)]
        bank.put(project / yt / f"{t}.mp4", pt)
        bank.put(project / yt / f"{s}.mp4", ps)
        expect[f"{yt}/{t}.mp4"] = Expect(0, split)
        expect[f"{yt}/{s}.mp4"] = Expect(0, split, same_group_as=f"{yt}/{t}.mp4")
        fakes = [("Deepfakes", t, s, 1), ("Face2Face", t, s, 2)]
        if split == "train":
            fakes.append(("Deepfakes", s, t, 3))
        for method, a, b, variant in fakes:
            rel = f"{root}/manipulated_sequences/{method}/c23/videos/{a}_{b}.mp4"
            bank.put(project / rel, pt if a == t else ps, variant)
            expect[rel] = Expect(1, split, same_group_as=f"{yt}/{t}.mp4", original=f"{yt}/{a}.mp4")
    data = {"source": "ffpp", "root": root,
            "ffpp": {"compression": "c23", "methods": ["Deepfakes", "Face2Face"]}}
    return Layout(data, expect)


def build_celebdf(project: Path, bank: ClipBank) -> Layout:
    """Celeb-DF v2 with its own List_of_testing_videos.txt (1 = real, 0 = fake)."""
    root = project / "datasets" / "Celeb-DF-v2"
    files = {
        # listed in the test list
        "Celeb-real/id0_0000.mp4": (PHOTOS[0], 0, Expect(0, "test")),
        "Celeb-synthesis/id0_id1_0000.mp4": (PHOTOS[0], 1, Expect(1, "test")),
        "YouTube-real/00007.mp4": (PHOTOS[4], 0, Expect(0, "test")),
        # same source clip as a test video, not listed: excluded (data.celebdf.exclude = clip)
        "Celeb-synthesis/id0_id2_0000.mp4": (PHOTOS[0], 2, Expect(1, excluded=True)),
        # the rest: train/val, grouped by identity (target and donor): {id0, id1, id2}, {id3, id4}
        "Celeb-real/id3_0004.mp4": (PHOTOS[3], 1, Expect(0)),
        "Celeb-synthesis/id3_id4_0004.mp4": (PHOTOS[3], 2, Expect(1)),
        "Celeb-real/id0_0003.mp4": (PHOTOS[0], 0, Expect(0)),
        "Celeb-real/id1_0001.mp4": (PHOTOS[1], 0, Expect(0)),
        "Celeb-synthesis/id1_id0_0001.mp4": (PHOTOS[1], 1, Expect(1)),
        "Celeb-real/id2_0002.mp4": (PHOTOS[2], 0, Expect(0)),
        "Celeb-synthesis/id2_id0_0002.mp4": (PHOTOS[2], 2, Expect(1)),
        "YouTube-real/00001.mp4": (PHOTOS[3], 0, Expect(0)),
    }
    rel_root = root.relative_to(project).as_posix()
    expect = {}
    for rel, (name, variant, exp) in files.items():
        bank.put(root / rel, name, variant)
        if rel.startswith("Celeb-synthesis/"):
            a, _, n = Path(rel).stem.split("_")
            target = f"{rel_root}/Celeb-real/{a}_{n}.mp4"
            exp = Expect(exp.label, exp.split, exp.excluded, same_group_as=target, original=target)
        expect[f"{rel_root}/{rel}"] = exp
    listed = [(1, "Celeb-real/id0_0000.mp4"), (0, "Celeb-synthesis/id0_id1_0000.mp4"),
              (1, "YouTube-real/00007.mp4")]
    (root / "List_of_testing_videos.txt").write_text("".join(f"{lab} {rel}\n" for lab, rel in listed))
    return Layout({"source": "celebdf", "root": str(root)}, expect)


def build_dfdc(project: Path, bank: ClipBank) -> Layout:
    """Two DFDC parts with metadata.json; one fake's original sits in the other part; one entry is
    listed but absent and one file is on disk but unlisted (both reported, not fatal)."""
    root = project / "datasets" / "dfdc"
    parts = {
        "dfdc_train_part_0": {
            "aaaa.mp4": ({"label": "REAL", "split": "train"}, PHOTOS[0], 0),
            "bbbb.mp4": ({"label": "REAL", "split": "train"}, PHOTOS[1], 0),
            "cccc.mp4": ({"label": "REAL", "split": "train"}, PHOTOS[2], 0),
            "xaaa.mp4": ({"label": "FAKE", "split": "train", "original": "aaaa.mp4"}, PHOTOS[0], 1),
            "ybbb.mp4": ({"label": "FAKE", "split": "train", "original": "bbbb.mp4"}, PHOTOS[1], 1),
            "gone.mp4": ({"label": "FAKE", "split": "train", "original": "cccc.mp4"}, None, 0),
        },
        "dfdc_train_part_1": {
            "dddd.mp4": ({"label": "REAL", "split": "train"}, PHOTOS[3], 0),
            "waaa.mp4": ({"label": "FAKE", "split": "train", "original": "aaaa.mp4"}, PHOTOS[0], 2),
        },
    }
    rel_root = root.relative_to(project).as_posix()
    expect = {}
    for part, entries in parts.items():
        (root / part).mkdir(parents=True)
        meta = {}
        for name, (entry, ph, variant) in entries.items():
            meta[name] = entry
            if name == "gone.mp4":
                continue  # listed, not on disk
            bank.put(root / part / name, ph, variant)
            orig = entry.get("original")
            orig_rel = f"{rel_root}/dfdc_train_part_0/{orig}" if orig else None
            expect[f"{rel_root}/{part}/{name}"] = Expect(
                1 if entry["label"] == "FAKE" else 0, same_group_as=orig_rel, original=orig_rel)
        (root / part / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    bank.put(root / "dfdc_train_part_1" / "stray.mp4", PHOTOS[4])  # on disk, not in metadata
    return Layout({"source": "dfdc", "root": str(root)}, expect)


def build_folder(project: Path, bank: ClipBank) -> Layout:
    """real/ + fake/, with a truncated mp4, a zero-byte file, a text file named .mp4 and a clip
    without a face among them (reported or counted; the stages go on)."""
    root = "datasets/myvideos"
    expect = {}
    for k, who in enumerate(("alice", "bob", "carol")):
        real, fake = f"{root}/real/{who}.mp4", f"{root}/fake/{who}_swap.mp4"
        bank.put(project / real, PHOTOS[k])
        bank.put(project / fake, PHOTOS[k], 1)
        expect[real] = Expect(0)
        expect[fake] = Expect(1, same_group_as=real, original=real)
    good = bank.face(PHOTOS[3]).read_bytes()
    (project / root / "real" / "truncated.mp4").write_bytes(good[: len(good) * 2 // 3])
    (project / root / "fake" / "empty.mp4").write_bytes(b"")
    (project / root / "fake" / "notes.mp4").write_text("this is a text file, not a video\n")
    bank.put(project / root / "real" / "wall.mp4")  # no face
    for rel, label in ((f"{root}/real/truncated.mp4", 0), (f"{root}/fake/empty.mp4", 1),
                       (f"{root}/fake/notes.mp4", 1), (f"{root}/real/wall.mp4", 0)):
        expect[rel] = Expect(label, face=False)
    return Layout({"source": "folder", "root": root}, expect)


def build_csv(project: Path, bank: ClipBank) -> Layout:
    """A path,label,group CSV with relative paths, word and digit labels and one blank group."""
    root = project / "datasets" / "list"
    rows = [("clips/p1_real.mp4", "real", "g1", PHOTOS[0], 0),
            ("clips/p1_fake.mp4", "fake", "g1", PHOTOS[0], 1),
            ("clips/p2_real.mp4", "0", "g2", PHOTOS[1], 0),
            ("clips/p2_fake.mp4", "1", "g2", PHOTOS[1], 2),
            ("clips/p3_real.mp4", "REAL", "", PHOTOS[2], 0),
            ("other/p4_fake.mp4", "Fake", "", PHOTOS[3], 3)]
    rel_root = root.relative_to(project).as_posix()
    expect = {}
    for rel, label, group, ph, variant in rows:
        bank.put(root / rel, ph, variant)
        mate = next((r for r, _, g, _, _ in rows if group and g == group and r != rel), None)
        expect[f"{rel_root}/{rel}"] = Expect(1 if label.lower() in ("1", "fake") else 0,
                                             same_group_as=f"{rel_root}/{mate}" if mate else None)
    (root / "videos.csv").write_text(
        "path,label,group\n" + "".join(f"{r},{lab},{g}\n" for r, lab, g, _, _ in rows))
    return Layout({"source": "csv", "root": str(root / "videos.csv")}, expect)


BUILDERS = {"ffpp": build_ffpp, "celebdf": build_celebdf, "dfdc": build_dfdc,
            "folder": build_folder, "csv": build_csv}


# --------------------------------------------------------------------------------------------------
# Projects and the CLI
# --------------------------------------------------------------------------------------------------


def write_params(project: Path, data: dict, split: Optional[dict] = None, **sections: dict) -> Path:
    """``params.yaml`` in ``project``: the code defaults, with ``data`` keys replaced, 2 frames
    per video, 64 px crops, and ``split`` / other section keys overridden."""
    params = default_params_raw()
    params["data"].update(data)
    params["frames"]["count"] = 2
    params["faces"]["image_size"] = 64
    if split:
        params["split"].update(split)
    for name, over in sections.items():
        params[name].update(over)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@dataclass
class CliResult:
    rc: int
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ": error: " in ln]


def run_cli(project: Path, *argv: str) -> CliResult:
    """``fakeproof <argv>`` run in ``project`` as a user would, through :func:`fakeproof.cli.main`.

    The working directory, the root logger's handlers and level are restored afterwards (``main``
    points logging at the stderr it sees), and stderr is captured.
    """
    from fakeproof.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    cwd = os.getcwd()
    err = io.StringIO()
    try:
        os.chdir(project)
        with contextlib.redirect_stderr(err):
            rc = main(list(argv))
    finally:
        os.chdir(cwd)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
    sys.stderr.write(err.getvalue())  # visible in pytest's captured output on failure
    return CliResult(rc, err.getvalue())
