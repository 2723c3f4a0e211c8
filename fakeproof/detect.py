"""Inference with a trained checkpoint: ``fakeproof detect`` and the web page score through here.

:func:`load_detector` reads a checkpoint and its inference recipe (:mod:`fakeproof.recipe`: frame
sampling, MTCNN settings and crop policy, video aggregation, Platt calibration, threshold), so no
``params.yaml`` is read. :func:`score_paths` scores videos, images and folders of them (recursive)
with the pipeline's own code path:

1. frames: a video goes through :func:`fakeproof.frames.extract_video` into a temporary folder
   (probe, damaged-stream check, ``frames.*`` sampling, ffmpeg decode and downscale, JPEG at
   ``frames.jpeg_quality`` into a tar), an image is oriented by its EXIF tag, downscaled the same
   way and written to the same kind of tar; both are read back with
   :func:`fakeproof.frames.iter_frame_batches` in batches of ``faces.batch_size``, as crop_faces
   reads them, so the frames are the stored frames byte for byte;
2. faces: :class:`fakeproof.faces.FaceCropper` (MTCNN on the CPU, deterministic, one thread) and
   the crop policy, each crop encoded and decoded as the face store does
   (:func:`fakeproof.store.encode_image` / :func:`~fakeproof.store.decode_tensor`);
3. scores: crops of several files are batched together through the model (on the GPU when there
   is one), P(fake) per face calibrated by the recipe's Platt scaling
   (:class:`fakeproof.boundary.Boundary`), and
   per file by :func:`fakeproof.metrics.aggregate_videos` with the recipe's ``video_agg``, as the
   evaluate stage scores a test video. ``label`` is ``fake`` when P(fake) is above the recipe's
   threshold.

A file that cannot be scored (missing, neither video nor image, damaged, no face found) gets a
result with ``status`` ``error`` or ``no_face`` and a one-line ``error``; it is never scored as
real, and the other files are still scored. :func:`robustness` re-scores a file's faces under a
small L-inf PGD perturbation (Madry et al., ICLR 2018) for the web page's live robustness check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from fakeproof.boundary import Boundary, Deployed
from fakeproof.config import FacesParams, FramesParams
from fakeproof.errors import FakeproofError
from fakeproof.faces import FaceCropper, prefetch
from fakeproof.frames import extract_video, iter_frame_batches, tar_path, write_frames_tar
from fakeproof.metrics import aggregate_videos
from fakeproof.models import Detector, ModelError, load_checkpoint
from fakeproof.recipe import REFRESH, Recipe, RecipeError, read_recipe, recipe_params
from fakeproof.runtime import frozen_on, resolve_device
from fakeproof.store import decode_tensor, encode_image
from fakeproof.video import VIDEO_SUFFIXES

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Crops per model call: across files, so short clips still fill a batch.
BATCH_CPU, BATCH_GPU = 64, 256
#: The frames' tar name inside each file's temporary folder.
_VID = "input"
#: Pixel scale of the face store's reader (fakeproof.data.FaceDataset: uint8 * float32(1/255)).
_UNIT = float(np.float32(1.0 / 255.0))


class DetectError(FakeproofError, RuntimeError):
    """An input cannot be scored, or a detect run cannot start (one-line message)."""


class CheckpointError(DetectError):
    """The checkpoint is missing or not a fakeproof model."""


@dataclass
class Bundle:
    """A loaded detector and everything inference needs, all from the checkpoint."""

    model: Detector
    recipe: Recipe
    frames: FramesParams
    faces: FacesParams
    device: torch.device
    checkpoint: Path
    cropper: FaceCropper

    @property
    def boundary(self) -> Boundary:
        """The deployed decision boundary: Platt calibration and the val threshold."""
        return self.recipe.boundary

    @property
    def threshold(self) -> float:
        return self.recipe.threshold

    @property
    def video_agg(self) -> str:
        return self.recipe.video_agg


@dataclass
class FaceScore:
    """One scored face crop: frame index, face number in that frame, box (frame pixels)."""

    frame: int
    face: int
    box: tuple[float, float, float, float]
    det_prob: float
    p_fake: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "face": self.face, "box": [round(v, 2) for v in self.box],
                "det_prob": round(self.det_prob, 6), "p_fake": round(self.p_fake, 6)}


@dataclass
class Result:
    """What detect says about one input. ``status``: ``scored``, ``no_face`` or ``error``."""

    path: str
    kind: Optional[str]
    status: str = "error"
    error: Optional[str] = None
    p_fake: Optional[float] = None
    label: Optional[str] = None
    threshold: Optional[float] = None
    frames: int = 0
    scores: list[FaceScore] = field(default_factory=list)
    crops: Optional[torch.Tensor] = None  # uint8 (faces, 3, H, W), kept on request

    @property
    def faces(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "status": self.status,
                "p_fake": None if self.p_fake is None else round(self.p_fake, 6),
                "label": self.label, "threshold": self.threshold, "frames": self.frames,
                "faces": self.faces,
                "frames_with_face": len({s.frame for s in self.scores}),
                "error": self.error, "scores": [s.to_json() for s in self.scores]}


# -- Loading ---------------------------------------------------------------------------------------


def load_detector(checkpoint: str | Path, device: str | torch.device = "auto") -> Bundle:
    """Load a checkpoint and its recipe; raise a one-line :class:`FakeproofError` if unusable."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; train one (dvc repro) or pass "
                              "--checkpoint models/<name>.pt")
    try:
        model, meta = load_checkpoint(path)
    except ModelError as e:
        cause = e.__context__
        why = f"{type(cause).__name__}" if cause is not None else str(e).splitlines()[0][:200]
        raise CheckpointError(f"{path}: not a fakeproof model checkpoint ({why}); pass a .pt "
                              "written by the pretrain or adv_finetune stage") from None
    recipe = read_recipe(meta, str(path))
    if recipe.model != model.name:
        raise RecipeError(f"{path}: recipe names model {recipe.model!r} but the weights are "
                          f"{model.name!r}; refresh it with `{REFRESH}`")
    for key in ("mean", "std"):
        have = getattr(model.normalize, key).reshape(-1).tolist()
        want = getattr(recipe, key)
        if not np.allclose(have, want, atol=1e-6):
            raise RecipeError(f"{path}: recipe {key} {list(want)} differs from the model's "
                              f"normalisation {have}; refresh it with `{REFRESH}`")
    frames, faces = recipe_params(recipe, str(path))
    dev = resolve_device(device, what="--device", error=DetectError)
    if "device" in {f.name for f in dataclasses.fields(faces)}:  # MTCNN follows --device too
        faces = dataclasses.replace(faces, device=dev.type)
    return Bundle(frozen_on(model, dev), recipe, frames, faces, dev, path, FaceCropper(faces))


# -- Inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Input:
    shown: str
    path: Optional[Path]
    kind: Optional[str]  # "video", "image", or None with an error
    error: Optional[str] = None


def _kind(path: Path) -> str:
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def collect_inputs(paths: Iterable[str | Path]) -> list[_Input]:
    """Files to score, in the given order; folders expand to their videos and images (recursive,
    sorted, hidden names skipped). A missing path or an empty folder is an error entry."""
    out: list[_Input] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found, other = [], 0
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if not f.is_file() or any(part.startswith(".") for part in rel):
                    continue
                if f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                    found.append(_Input(str(f), f, _kind(f)))
                else:
                    other += 1
            if other:
                log.info("detect: %s: skipped %d files that are neither videos nor images by "
                         "their suffix", p, other)
            out.extend(found or [_Input(str(raw), p, None, f"{p}: folder holds no videos or "
                                        "images; give files or another folder")])
        elif p.is_file():
            out.append(_Input(str(raw), p, _kind(p)))
        else:
            out.append(_Input(str(raw), p, None, f"{p}: no such file or folder; check the path"))
    return out


# -- Frames: the stored-frames round trip of extract_frames ----------------------------------------


def _stored_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Frame size after ``frames.max_side`` (as :func:`fakeproof.video.read_frames` computes it)."""
    if max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def _image_frame(path: Path, fp: FramesParams) -> np.ndarray:
    """An image as one RGB frame: EXIF orientation applied, downscaled (area) to ``max_side``."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DetectError(f"{path}: not a readable image ({why})") from None
    size = _stored_size(im.width, im.height, fp.max_side)
    if size != (im.width, im.height):
        im = im.resize(size, Image.Resampling.BOX)
    return np.asarray(im)


def _store_frames(item: _Input, fp: FramesParams, folder: Path) -> int:
    """Write the input's frames as extract_frames stores them; return how many."""
    assert item.path is not None
    if item.kind == "image":
        frame = _image_frame(item.path, fp)
        write_frames_tar(tar_path(folder, _VID), [0], frame[None], fp.jpeg_quality)
        return 1
    rows, problem = extract_video({"video_id": _VID, "path": str(item.path)}, fp, folder)
    if problem is not None:
        reason = problem["reason"]
        if item.path.suffix.lower() not in VIDEO_SUFFIXES and reason.startswith("not a readable"):
            raise DetectError(f"{item.path}: neither a video nor an image ({reason})")
        raise DetectError(f"{item.path}: {reason}")
    return len(rows)


def _frame_stream(items: Sequence[_Input], fp: FramesParams, batch_size: int,
                  timings: dict[str, float]) -> Iterator[tuple[int, str, Any]]:
    """``(input number, event, payload)``: ``batch`` (indices, frames), then ``end`` (frame count),
    or a single ``error`` (message). Runs in a background thread (ffmpeg and JPEG work)."""
    for i, item in enumerate(items):
        if item.error is not None:
            yield i, "error", item.error
            continue
        with tempfile.TemporaryDirectory(prefix="fakeproof-detect-") as tmp:
            t0 = time.perf_counter()
            try:
                n = _store_frames(item, fp, Path(tmp))
            except FakeproofError as e:
                timings["decode"] += time.perf_counter() - t0
                yield i, "error", str(e).splitlines()[0]
                continue
            batches = iter_frame_batches(tmp, _VID, batch_size)
            while True:
                batch = next(batches, None)
                timings["decode"] += time.perf_counter() - t0
                if batch is None:
                    break
                yield i, "batch", batch
                t0 = time.perf_counter()
        yield i, "end", n


# -- Scoring ---------------------------------------------------------------------------------------


def face_crops(cropper: FaceCropper, faces: FacesParams, indices: Sequence[int], frames: np.ndarray
               ) -> tuple[list[FaceScore], list[torch.Tensor]]:
    """Detected faces of one batch of frames and their crops, as the face store returns them
    (uint8 (3, H, W) after the store's encode/decode round trip)."""
    scores, crops = [], []
    for fi, frame, found in zip(indices, frames, cropper.detect(frames)):
        for j, face in enumerate(found):
            value = encode_image(cropper.crop(frame, face), faces.encoding, faces.jpeg_quality)
            crops.append(decode_tensor(value))
            scores.append(FaceScore(int(fi), j, face.box, float(face.prob)))
    return scores, crops


def to_unit(crops: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 crops (N, 3, H, W) as float32 in [0, 1], computed as the training loader does."""
    return crops.to(device, non_blocking=True).to(torch.float32).mul_(_UNIT)


@torch.no_grad()
def face_logits(bundle: Bundle, crops: torch.Tensor, batch_size: int) -> np.ndarray:
    """The model's fake logits (float64) for uint8 crops, ``batch_size`` crops per call."""
    out = [bundle.model(to_unit(chunk, bundle.device)).reshape(-1).detach().to("cpu", torch.float64)
           for chunk in crops.split(batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def _aggregate(probs: np.ndarray, how: str) -> float:
    df = pd.DataFrame({"video_id": "file", "label": 0, "prob": probs})
    return float(aggregate_videos(df, how=how)["prob"].iloc[0])


def _finish(bundle: Bundle, res: Result, probs: np.ndarray) -> None:
    for s, p in zip(res.scores, probs):
        s.p_fake = float(p)
    res.p_fake = _aggregate(probs, bundle.video_agg)
    res.label = "fake" if res.p_fake > bundle.threshold else "real"
    res.status = "scored"


def score_paths(bundle: Bundle, paths: Iterable[str | Path], *, batch_size: Optional[int] = None,
                keep_crops: bool = False, timings: Optional[dict[str, float]] = None,
                progress: Optional[bool] = None) -> list[Result]:
    """Score videos, images and folders (see the module docstring); one result per file.

    Args:
        bundle: from :func:`load_detector`.
        paths: files or folders; folders expand recursively.
        batch_size: crops per model call (across files); default 64 on the CPU, 256 on a GPU.
        keep_crops: keep each result's uint8 crops (``Result.crops``) for display or attacks.
        timings: if given, seconds are added under ``decode`` (frames to stored frames and back),
            ``detect`` (MTCNN, crops and their store round trip) and ``classify`` (the model).
        progress: a progress bar on stderr (default: when stderr is a terminal).
    """
    items = collect_inputs(paths)
    bs = batch_size or (BATCH_GPU if bundle.device.type == "cuda" else BATCH_CPU)
    t = defaultdict(float)
    results = [Result(it.shown, it.kind, threshold=bundle.threshold) for it in items]
    crops_of: dict[int, list[torch.Tensor]] = defaultdict(list)
    pending: list[int] = []  # results whose crops await the model

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        stacked = torch.stack([c for i in pending for c in crops_of[i]])
        probs = bundle.boundary.p_fake(face_logits(bundle, stacked, bs))
        start = 0
        for i in pending:
            n = len(crops_of[i])
            _finish(bundle, results[i], probs[start:start + n])
            start += n
            if keep_crops:
                results[i].crops = torch.stack(crops_of[i])
            del crops_of[i]
        pending.clear()
        t["classify"] += time.perf_counter() - t0

    bar = tqdm(total=len(items), desc="detect", unit="file", file=sys.stderr,
               disable=None if progress is None else not progress)
    stream = prefetch(_frame_stream(items, bundle.frames, bundle.faces.batch_size, t))
    try:
        for i, event, payload in stream:
            res = results[i]
            if event == "batch":
                t0 = time.perf_counter()
                scores, crops = face_crops(bundle.cropper, bundle.faces, *payload)
                res.scores.extend(scores)
                crops_of[i].extend(crops)
                t["detect"] += time.perf_counter() - t0
                continue
            bar.update(1)
            if event == "error":
                res.status, res.error = "error", payload
                continue
            res.frames = int(payload)
            if not res.scores:
                res.status = "no_face"
                res.error = (f"{res.path}: no face found in {res.frames} sampled frame"
                             f"{'s' if res.frames != 1 else ''} (MTCNN, min_prob "
                             f"{bundle.faces.min_prob:g}); not scored")
                continue
            pending.append(i)
            if sum(len(crops_of[j]) for j in pending) >= bs:
                flush()
        flush()
    finally:
        stream.close()
        bar.close()
    if timings is not None:
        for k in ("decode", "detect", "classify"):
            timings[k] = timings.get(k, 0.0) + t[k]
    return results


# -- Robustness check (the web page) ---------------------------------------------------------------


def robustness(bundle: Bundle, result: Result, *, eps: float = 2 / 255, steps: int = 10,
               max_faces: int = 16, seed: int = 0) -> dict[str, Any]:
    """How far a scored file's P(fake) moves under L-inf PGD on its face crops.

    PGD (Madry et al., ICLR 2018; ``steps`` steps of ``2.5 * eps / steps``, random start, seeded
    from ``seed``) pushes every face away from the file's own label (toward real for a file
    labelled fake, and back) across the checkpoint's deployed boundary, through the one
    attack-scoring function (:func:`fakeproof.under_attack.score_under_attack`), on up to
    ``max_faces`` faces spread evenly over the file. Both P(fake) values are
    aggregated over that same subset with the recipe's ``video_agg``. Needs ``keep_crops=True``.
    """
    from fakeproof.attacks import Budget
    from fakeproof.under_attack import score_under_attack

    if result.status != "scored" or result.crops is None:
        raise DetectError(f"{result.path}: no kept face crops to attack; score it with "
                          "keep_crops=True first")
    n = len(result.crops)
    idx = np.unique(np.linspace(0, n - 1, min(max_faces, n)).round().astype(int))
    x = to_unit(result.crops[torch.from_numpy(idx)], bundle.device)
    y = torch.full((len(idx),), int(result.label == "fake"), dtype=torch.long, device=bundle.device)
    deployed = Deployed(bundle.model, bundle.boundary)
    res = score_under_attack(deployed, [(x, y, "file")], ["pgd"], eps, Budget.pgd_only(steps), seed)
    clean = bundle.boundary.p_from_decision(res.clean)
    attacked = bundle.boundary.p_from_decision(res.by_attack["pgd"])
    p0, p1 = _aggregate(clean, bundle.video_agg), _aggregate(attacked, bundle.video_agg)
    label = "fake" if p1 > bundle.threshold else "real"
    return {"eps": float(eps), "steps": int(steps), "faces": int(len(idx)), "p_fake_clean": p0,
            "p_fake_attacked": p1, "label_attacked": label, "flipped": label != result.label,
            "frames": [result.scores[k].frame for k in idx.tolist()],
            "face_p_clean": clean.tolist(), "face_p_attacked": attacked.tolist()}


# -- The command -----------------------------------------------------------------------------------


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width table, one line per input."""
    lines = [f"{'path':48s} {'frames':>6s} {'faces':>5s} {'p_fake':>8s}  label"]
    for r in results:
        p = "-" if r.p_fake is None else f"{r.p_fake:.4f}"
        label = r.label or ("no face" if r.status == "no_face" else "error")
        lines.append(f"{r.path[-48:]:48s} {r.frames:6d} {r.faces:5d} {p:>8s}  {label}")
    return "\n".join(lines)


def run_detect(inputs: Sequence[str], checkpoint: Path, device: str = "auto",
               as_json: bool = False) -> dict[str, Any]:
    """``fakeproof detect``: results on stdout (table or JSON), one line per problem on stderr.

    Raises :class:`DetectError` (exit code 2) when no input could be scored.
    """
    t0 = time.perf_counter()
    bundle = load_detector(checkpoint, device)
    log.info("detect: %s (%s, threshold %.4f, %s) on %s", checkpoint, bundle.model.name,
             bundle.threshold, bundle.video_agg, bundle.device)
    timings: dict[str, float] = {}
    results = score_paths(bundle, inputs, timings=timings)
    print(json.dumps([r.to_json() for r in results], indent=2) if as_json else format_table(results))
    sys.stdout.flush()
    for r in results:
        if r.error:
            print(f"fakeproof detect: {r.error}", file=sys.stderr)
    scored = sum(r.status == "scored" for r in results)
    log.info("detect: %d of %d files scored in %.1fs (decode %.1fs, detect %.1fs, classify %.1fs)",
             scored, len(results), time.perf_counter() - t0, timings["decode"], timings["detect"],
             timings["classify"])
    if not scored:
        raise DetectError(f"nothing scored: none of the {len(results)} inputs could be scored "
                          "(see the lines above)")
    return {"files": len(results), "scored": scored}
