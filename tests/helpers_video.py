"""Tiny real mp4 clips for the preprocessing tests, made from the demo face photos.

Clips are encoded with :func:`fakeproof.video.write_mp4` (real libx264) from a face photo shipped
in ``fakeproof/assets/faces``: a square window around the face pans and zooms a little from frame
to frame, so the face moves. The face's location in each frame is known from the construction
(the photo's face box, hand-checked on the picture, mapped through the window), which lets tests
check the detector against ground truth.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from fakeproof.frames import FramesError, iter_frame_batches, tar_path
from fakeproof.video import write_mp4

# Face boxes as fractions (left, top, right, bottom) of the photo's width/height: found by MTCNN on
# the original photos and checked by eye (forehead to chin, ear to ear).
FACE_BOXES = {
    "obama.jpg": (0.411, 0.077, 0.675, 0.368),
    "obama2.jpg": (0.315, 0.185, 0.763, 0.530),
}


def face_photo(name: str = "obama.jpg") -> np.ndarray:
    """A demo photo as RGB uint8 (H, W, 3), read from the installed package."""
    ref = resources.files("fakeproof") / "assets" / "faces" / name
    with resources.as_file(ref) as p, Image.open(p) as im:
        return np.asarray(im.convert("RGB"))


def face_clip_frames(photo: str = "obama.jpg", size: int = 128, n_frames: int = 10,
                     pan: float = 0.04, zoom: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n, size, size, 3) and the known face boxes (n, 4) in frame pixels.

    The window is a square 2.2 face-widths wide centred on the face. In frame ``t`` it is
    scaled by ``1 + zoom * t``, shifted sideways by ``pan * t / 2`` window widths (to the right on
    even frames, to the left on odd ones) and down by ``pan * t / 4``.
    """
    img = face_photo(photo)
    H, W = img.shape[:2]
    fx1, fy1, fx2, fy2 = FACE_BOXES[photo]
    box = np.array([fx1 * W, fy1 * H, fx2 * W, fy2 * H])
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side0 = 2.2 * (box[2] - box[0])
    pil = Image.fromarray(img)
    frames, boxes = [], []
    for t in range(n_frames):
        side = side0 * (1 + zoom * t)
        ox = cx - side / 2 + pan * side0 * (t if t % 2 == 0 else -t) / 2
        oy = cy - side / 2 + pan * side0 * t / 4
        win = (ox, oy, ox + side, oy + side)
        frames.append(np.asarray(pil.transform((size, size), Image.Transform.EXTENT, win,
                                               Image.Resampling.BILINEAR)))
        s = size / side
        boxes.append([(box[0] - ox) * s, (box[1] - oy) * s, (box[2] - ox) * s, (box[3] - oy) * s])
    boxes_arr = np.array(boxes)
    # The fixture's promise: the known face box lies inside every frame.
    assert boxes_arr.min() >= 0 and boxes_arr.max() <= size, "face box leaves the frame"
    return np.stack(frames), boxes_arr


def make_face_clip(path: str | Path, photo: str = "obama.jpg", size: int = 128,
                   n_frames: int = 10, fps: int = 10) -> np.ndarray:
    """Write a face clip to ``path``; return its known face boxes (n, 4)."""
    frames, boxes = face_clip_frames(photo, size, n_frames)
    write_mp4(path, frames, fps=fps)
    return boxes


def make_fake_clip(path: str | Path, photo: str = "obama.jpg", size: int = 128,
                   n_frames: int = 10, fps: int = 10) -> np.ndarray:
    """A crude 'manipulated' version of :func:`make_face_clip`: the face region is recoloured and
    blurred, everything else identical (same geometry, so an original's boxes fit it)."""
    frames, boxes = face_clip_frames(photo, size, n_frames)
    out = frames.copy()
    for t, (x1, y1, x2, y2) in enumerate(boxes.round().astype(int)):
        x1, y1 = max(x1, 0), max(y1, 0)
        region = Image.fromarray(out[t, y1:y2, x1:x2]).reduce(2).resize((x2 - x1, y2 - y1))
        region = np.asarray(region).astype(np.int16)
        region[..., 0] += 18
        out[t, y1:y2, x1:x2] = np.clip(region, 0, 255).astype(np.uint8)
    write_mp4(path, out, fps=fps)
    return boxes


def make_blank_clip(path: str | Path, size: int = 96, n_frames: int = 8, fps: int = 10,
                    seed: int = 0) -> None:
    """A clip with no face: a smooth grey gradient with faint noise that drifts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n_frames):
        base = 90 + 60 * (xx + 2 * t) / size + 20 * yy / size
        noise = rng.normal(0, 3, size=(size, size))
        g = np.clip(base + noise, 0, 255).astype(np.uint8)
        frames.append(np.stack([g, g, g], axis=-1))
    write_mp4(path, np.stack(frames), fps=fps)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


SECTIONS = ("data", "frames", "faces", "split", "model", "train", "adv", "eval")


def make_params(**sections: dict):
    """Validated :class:`fakeproof.config.Params` with defaults, overriding e.g.
    ``frames={"count": 4}``."""
    from fakeproof.config import params_from_dict

    return params_from_dict({s: dict(sections.get(s, {})) for s in SECTIONS}, "test params")


def video_table(path: str | Path, rows: list[dict]) -> Path:
    """Write a videos.csv (columns of fakeproof.sources.VIDEO_COLUMNS) with defaults filled in."""
    import pandas as pd

    from fakeproof.sources import VIDEO_COLUMNS

    full = []
    for r in rows:
        vid = r["video_id"]
        d = {"label": 0, "group": vid, "method": "real", "source": "test", "split_hint": "",
             "original": ""}
        d.update(r)
        if d["label"] == 1 and d["method"] == "real":
            d["method"] = "fake"
        full.append(d)
    pd.DataFrame(full, columns=VIDEO_COLUMNS).to_csv(path, index=False)
    return Path(path)


def iter_video_frames(frames_dir: str | Path, video_id: str) -> tuple[list[int], np.ndarray]:
    """All stored frames of a video: ``(indices, uint8 (N, H, W, 3))`` (frames are equal-sized)."""
    indices: list[int] = []
    chunks: list[np.ndarray] = []
    for idx, arr in iter_frame_batches(frames_dir, video_id, batch_size=64):
        indices.extend(idx)
        chunks.append(arr)
    if not chunks:
        raise FramesError(f"{tar_path(frames_dir, video_id)}: holds no frames; re-run extract_frames")
    return indices, np.concatenate(chunks)
