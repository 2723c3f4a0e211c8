"""Real footage synthesis: a talking-head recording rendered from one still photo.

Each clip is a virtual camera looking at the photo: smooth hand-held motion (translation and a
slight roll), a slow zoom drift, auto-exposure and white-balance drift (brightness, gamma, colour
temperature), a talking motion (the jaw region below the mouth corners opens and closes at
syllable rate while the head bobs with it) and signal-dependent sensor noise. Every random choice
comes from the clip's own ``numpy.random.Generator``, so one photo yields many distinct clips and
the same seed yields the same pixels.

The photo's face is placed so that its MTCNN box is 36-46 % of the frame height (up to 50 % where
the photo is too narrow for the camera's motion) and stays inside the frame in every frame. The
landmarks of every frame are known exactly (the photo's MTCNN landmarks mapped through the camera
motion), which is what the manipulations in :mod:`fakeproof.demo.manipulate` align to.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fakeproof.demo.imaging import bilinear, grid, resize, smooth_curve, to_uint8
from fakeproof.demo.landmarks import Face, detect_face
from fakeproof.errors import FakeproofError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


class DemoAssetError(FakeproofError, RuntimeError):
    """The packaged demo photos are missing or unusable."""


@dataclass(frozen=True)
class Photo:
    """A packaged still photo with its detected face; ``identity`` groups photos of one person."""

    name: str
    identity: str
    image: np.ndarray
    face: Face


@dataclass(frozen=True)
class Clip:
    """Rendered RGB frames (T, S, S, 3) uint8, 5 landmarks (T, 5, 2) and face box (T, 4) per frame.

    ``points`` and ``boxes`` are the photo's MTCNN landmarks and box carried through the camera
    motion (the box as the axis-aligned hull of the rotated box).
    """

    frames: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    photo: str


@functools.lru_cache(maxsize=1)
def load_photos() -> tuple[Photo, ...]:
    """The demo photos shipped in ``fakeproof/assets/faces``, sorted by name, with their faces."""
    folder = importlib.resources.files("fakeproof") / "assets" / "faces"
    entries = sorted((e for e in folder.iterdir() if e.name.lower().endswith(PHOTO_SUFFIXES)),
                     key=lambda e: e.name)
    if not entries:
        raise DemoAssetError("fakeproof/assets/faces: no demo photos found; reinstall fakeproof "
                             "with its package data (pip install -e .)")
    photos = []
    for e in entries:
        where = f"fakeproof/assets/faces/{e.name}"
        try:
            image = np.asarray(Image.open(io.BytesIO(e.read_bytes())).convert("RGB"))
        except OSError as err:
            raise DemoAssetError(f"{where}: not a readable image ({err})") from None
        stem = e.name.rsplit(".", 1)[0]
        # A portrait's face is at least a tenth of the photo's shorter side: skip smaller scales.
        face = detect_face(image, where, max(20, min(image.shape[:2]) // 10))
        photos.append(Photo(stem, re.sub(r"\d+$", "", stem), image, face))
    return tuple(photos)


@dataclass(frozen=True)
class _Camera:
    """Per-frame camera: anchor position in the frame, roll (radians), zoom; the photo anchor."""

    center: np.ndarray  # (T, 2) frame position of the photo anchor
    theta: np.ndarray   # (T,)
    zoom: np.ndarray    # (T,)
    anchor: np.ndarray  # (2,) photo (resized) point shown at ``center``

    def to_photo(self, i: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s, z = np.cos(self.theta[i]), np.sin(self.theta[i]), self.zoom[i]
        dx, dy = xs - self.center[i, 0], ys - self.center[i, 1]
        return (self.anchor[0] + (c * dx + s * dy) / z, self.anchor[1] + (-s * dx + c * dy) / z)

    def to_frame(self, i: int, pts: np.ndarray) -> np.ndarray:
        c, s, z = np.cos(self.theta[i]), np.sin(self.theta[i]), self.zoom[i]
        d = np.asarray(pts, np.float64) - self.anchor
        return self.center[i] + z * np.stack([c * d[..., 0] - s * d[..., 1],
                                              s * d[..., 0] + c * d[..., 1]], axis=-1)


def _camera(rng: np.random.Generator, t: np.ndarray, size: int, anchor: np.ndarray,
            talk: np.ndarray, motion: float = 1.0) -> _Camera:
    """Hand-held camera path; ``motion`` scales translation, roll and zoom drift together."""
    m = motion
    cx = size * (0.5 + m * rng.uniform(-0.04, 0.04))
    cx = cx + m * smooth_curve(rng, t, 0.025 * size, (0.2, 1.0), 0.04 * size)
    cy = size * (0.47 + m * rng.uniform(-0.04, 0.04))
    cy = cy + m * smooth_curve(rng, t, 0.02 * size, (0.2, 1.0), 0.03 * size)
    cy = cy + 0.012 * size * talk  # the head bobs a little as the jaw opens
    theta = np.deg2rad(m * (rng.uniform(-3.0, 3.0) + smooth_curve(rng, t, 2.0, (0.2, 0.8), 1.5)))
    zoom = np.exp(m * smooth_curve(rng, t, 0.025, (0.1, 0.5), 0.08))
    return _Camera(np.stack([cx, cy], 1), theta, zoom, np.asarray(anchor, np.float64))


def _talk_signal(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Jaw opening in [0, 1] at syllable rate (2-4 Hz, modulated so it is not periodic)."""
    f1, f2 = rng.uniform(2.0, 4.0), rng.uniform(0.3, 0.9)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    env = 0.6 + 0.4 * np.sin(2 * np.pi * f2 * t + p2)
    return np.clip((0.5 + 0.5 * np.sin(2 * np.pi * f1 * t + p1)) * env, 0.0, 1.0)


def _jaw_offset(points: np.ndarray, qx: np.ndarray, qy: np.ndarray, amount: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Source-coordinate shift that opens the jaw by ``amount`` px (photo coordinates).

    Pixels below the mouth corners move down along the face's vertical axis: fully from a little
    below the mouth to the chin, fading out above the mouth and down the neck, and sideways beyond
    the jaw.
    """
    eye = (points[0] + points[1]) / 2
    mouth = (points[3] + points[4]) / 2
    down = mouth - eye
    d_em = float(np.hypot(*down))
    n = down / d_em
    e = np.array([n[1], -n[0]])
    rx, ry = qx - mouth[0], qy - mouth[1]
    along = (rx * n[0] + ry * n[1]) / d_em
    lat = (rx * e[0] + ry * e[1]) / d_em
    ramp = np.clip(along / 0.3, 0.0, 1.0)
    fade = np.clip((1.15 - along) / 0.5, 0.0, 1.0)
    w = ramp * ramp * (3 - 2 * ramp) * fade * np.exp(-0.5 * (lat / 0.8) ** 2)
    return -amount * w * n[0], -amount * w * n[1]


#: Largest face share of the frame height the framing may reach for photos cropped tight.
MAX_FACE_FRACTION = 0.75


def _corners(box: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64)


def _fit_camera(rng: np.random.Generator, t: np.ndarray, size: int, photo: Photo, talk: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, _Camera]:
    """Choose the framing, resize the photo to it and keep every frame inside the photo.

    The face box starts at 36-46 % of the frame height. Where the photo is too narrow for that
    framing the camera zooms in (up to :data:`MAX_FACE_FRACTION`); where the face would leave the
    frame (a photo cut close above the head) the camera moves less. Returns the resized photo, the
    per-axis scale from the original photo, and the camera.
    """
    frac = rng.uniform(0.36, 0.46)
    motion_seed = int(rng.integers(2**63))
    motion = 1.0
    h, w = photo.image.shape[:2]
    corners_x = np.array([0.0, size - 1.0, 0.0, size - 1.0])
    corners_y = np.array([0.0, 0.0, size - 1.0, size - 1.0])
    box_pts = _corners(photo.face.box)
    for _ in range(40):
        s = frac * size / photo.face.height
        new_w, new_h = max(2, round(w * s)), max(2, round(h * s))
        scale = np.array([new_w / w, new_h / h])
        cam = _camera(np.random.default_rng(motion_seed), t, size, photo.face.center * scale, talk,
                      motion)
        qs = np.concatenate([np.stack(cam.to_photo(i, corners_x, corners_y), 1)
                             for i in range(len(t))])
        lo, hi = qs.min(0), qs.max(0)
        limit = np.array([new_w - 1.0, new_h - 1.0])
        span = hi - lo
        if not (span <= limit - 1.0).all():
            if frac < MAX_FACE_FRACTION:
                grow = max(1.03, float((span / (limit - 1.0)).max()) * 1.01)
                frac = min(frac * grow, MAX_FACE_FRACTION)
            else:
                motion *= 0.7
            continue
        shift = np.maximum(0.5 - lo, 0.0) - np.maximum(hi - (limit - 0.5), 0.0)
        cam = _Camera(cam.center, cam.theta, cam.zoom, cam.anchor + shift)
        fb = np.concatenate([cam.to_frame(i, box_pts * scale) for i in range(len(t))])
        margin = 0.01 * size
        if fb.min() >= margin and fb.max() <= size - 1 - margin:
            return resize(photo.image, (new_w, new_h)), scale, cam
        motion *= 0.7
    raise DemoAssetError(f"fakeproof/assets/faces/{photo.name}: photo too small around the face "
                         f"for a {size} px clip; use a photo with more background around the face")


def render_real(photo: Photo, n_frames: int, fps: int, size: int, rng: np.random.Generator) -> Clip:
    """Render a talking-head clip of ``photo`` (see the module docstring), drawing from ``rng``."""
    t = np.arange(n_frames, dtype=np.float64) / fps
    talk = _talk_signal(rng, t)
    image, scale, cam = _fit_camera(rng, t, size, photo, talk)
    points = photo.face.points * scale
    img = image.astype(np.float32)
    eye_to_mouth = float(np.hypot(*((points[3] + points[4] - points[0] - points[1]) / 2)))
    jaw = rng.uniform(0.05, 0.09) * eye_to_mouth  # the jaw opens by 5-9 % of that distance
    gain = np.exp(smooth_curve(rng, t, 0.06, (0.1, 0.6), 0.12))
    gamma = np.exp(smooth_curve(rng, t, 0.05, (0.1, 0.6), 0.08))
    temp = rng.uniform(-0.05, 0.05) + smooth_curve(rng, t, 0.02, (0.1, 0.6), 0.05)
    noise = rng.uniform(1.2, 3.0)
    xs, ys = grid(size, size)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    pts = np.empty((n_frames, 5, 2))
    box0 = _corners(photo.face.box) * scale
    boxes = np.empty((n_frames, 4))
    for i in range(n_frames):
        qx, qy = cam.to_photo(i, xs, ys)
        ox, oy = _jaw_offset(points, qx, qy, jaw * talk[i])
        rgb, _ = bilinear(img, qx + ox, qy + oy)
        x = np.clip(rgb / 255.0, 0.0, 1.0) ** gamma[i] * gain[i]
        x = x * np.array([1 + temp[i], 1.0, 1 - temp[i]], np.float32)
        x = np.clip(x, 0.0, 1.0) * 255.0
        sigma = noise * np.sqrt(0.4 + 0.6 * x / 255.0)
        x = x + sigma * rng.standard_normal(x.shape, dtype=np.float32)
        frames[i] = to_uint8(x)
        pts[i] = cam.to_frame(i, points)
        b = cam.to_frame(i, box0)
        boxes[i] = [b[:, 0].min(), b[:, 1].min(), b[:, 0].max(), b[:, 1].max()]
    return Clip(frames, pts, boxes, photo.name)
