"""Inference on your own videos and images with a trained checkpoint (``fakeproof detect``).

The same preprocessing as the pipeline: ``frames.*`` picks the frames of a video (N evenly spaced
or a fixed rate), ``faces.*`` the MTCNN policy and crop, and ``eval.video_agg`` turns frame
probabilities into the video score (mean by default). Images are scored face by face; a file with
no face is reported as such, not guessed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError

from fakeproof.config import Params
from fakeproof.faces import FaceCropper
from fakeproof.metrics import aggregate_videos
from fakeproof.models import load_checkpoint
from fakeproof.video import VideoError, probe, read_frames, sample_indices

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_frames(path: Path, params: Params) -> tuple[list[int], np.ndarray]:
    """RGB uint8 frames of an image (one frame) or a video (sampled by ``frames.*``)."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file; check the path")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:
                return [0], np.asarray(im.convert("RGB"))[None]
        except (UnidentifiedImageError, OSError) as e:
            raise VideoError(f"{path}: not a readable image ({e})") from None
    info = probe(path)
    fp = params.frames
    idx = sample_indices(info.n_frames, info.fps, fp.mode, fp.count, fp.fps, fp.max_frames)
    return read_frames(path, idx, info, fp.max_side)


@torch.no_grad()
def score_file(path: Path, model: torch.nn.Module, cropper: FaceCropper, params: Params
               ) -> dict[str, Any]:
    """Per-face fake probabilities and the file's score."""
    indices, frames = load_frames(path, params)
    crops, rows = [], []
    bs = params.faces.batch_size
    for start in range(0, len(frames), bs):
        batch = frames[start:start + bs]
        for k, faces in enumerate(cropper.detect(batch)):
            for j, face in enumerate(faces):
                crops.append(cropper.crop(batch[k], face))
                rows.append({"frame": indices[start + k], "face": j,
                             "box": [round(v, 1) for v in face.box], "det_prob": round(face.prob, 4)})
    if not crops:
        return {"file": str(path), "frames": len(frames), "faces": 0, "score": None,
                "verdict": "no face found", "faces_detail": []}
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    probs = torch.sigmoid(model(x).reshape(-1)).numpy()
    for r, p in zip(rows, probs):
        r["p_fake"] = round(float(p), 4)
    df = pd.DataFrame({"video_id": str(path), "label": 0, "prob": probs})
    score = float(aggregate_videos(df, how=params.eval.video_agg)["prob"].iloc[0])
    return {"file": str(path), "frames": len(frames), "faces": len(crops), "score": round(score, 4),
            "verdict": "fake" if score >= 0.5 else "real", "faces_detail": rows}


def detect(inputs: Sequence[str], checkpoint: Path, params: Params, as_json: bool = False
           ) -> dict[str, Any]:
    """Score every input; print a table (or JSON) and return the results."""
    model, meta = load_checkpoint(checkpoint)
    size = int(meta.get("image_size") or params.faces.image_size)
    if size != params.faces.image_size:
        log.info("detect: checkpoint was trained on %d px crops; using that size", size)
    from dataclasses import replace

    cropper = FaceCropper(replace(params.faces, image_size=size))
    results = []
    for item in inputs:
        try:
            results.append(score_file(Path(item), model, cropper, params))
        except VideoError as e:
            results.append({"file": item, "frames": 0, "faces": 0, "score": None,
                            "verdict": f"error: {e}", "faces_detail": []})
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'file':40s} {'frames':>6s} {'faces':>5s} {'p(fake)':>8s}  verdict")
        for r in results:
            s = "-" if r["score"] is None else f"{r['score']:.4f}"
            print(f"{r['file'][-40:]:40s} {r['frames']:6d} {r['faces']:5d} {s:>8s}  {r['verdict']}")
    return {"files": len(results), "results": results}
