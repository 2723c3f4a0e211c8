"""``fakeproof detect``: real mp4 and PNG inputs, real MTCNN, an (untrained) smallcnn checkpoint.

The clip is made from the demo photo ``obama.jpg`` (``helpers_video.face_clip_frames``: 128 px,
6 frames, the face's box known by construction) and encoded with libx264. With ``frames.count: 3``
the frames scored are 1, 3 and 5. Scores are checked against a hand computation: the same frames
decoded with ffmpeg, MTCNN boxes and crops from :class:`fakeproof.faces.FaceCropper`, and the model
loaded from the checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from _tinydata import project_params_raw
from fakeproof.cli import main
from fakeproof.config import load_params
from fakeproof.faces import FaceCropper
from fakeproof.models import create_model, load_checkpoint, save_checkpoint
from fakeproof.video import probe, read_frames, sample_indices, write_mp4
from helpers_video import face_clip_frames, iou

CROP = 64


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A face clip, a face PNG, a blank PNG, a missing path, a smallcnn checkpoint, params.yaml."""
    root = tmp_path_factory.mktemp("detect")
    frames, boxes = face_clip_frames("obama.jpg", size=128, n_frames=6)
    write_mp4(root / "clip.mp4", frames, fps=6)
    Image.fromarray(frames[0]).save(root / "face.png")
    yy, xx = np.mgrid[0:128, 0:128]
    grey = (80 + xx + yy // 2).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(root / "blank.png")

    torch.manual_seed(0)
    model = create_model("smallcnn")
    with torch.no_grad():  # spread the untrained model's outputs, so that frames differ
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.05, 0.2)
    model.eval()
    save_checkpoint(root / "model.pt", model, {"image_size": CROP, "stage": "test"})

    raw = project_params_raw()
    raw["frames"]["count"] = 3
    raw["faces"]["image_size"] = CROP
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dict(root=root, video=root / "clip.mp4", image=root / "face.png",
                blank=root / "blank.png", missing=root / "missing.mp4", ckpt=root / "model.pt",
                boxes=boxes)


@pytest.fixture(scope="module")
def hand(inputs) -> dict:
    """Frame probabilities computed by hand: ffmpeg frames, MTCNN crops, the checkpoint's model."""
    params = load_params(inputs["root"] / "params.yaml")
    model, meta = load_checkpoint(inputs["ckpt"])
    cropper = FaceCropper(replace(params.faces, image_size=int(meta["image_size"])))
    info = probe(inputs["video"])
    fp = params.frames
    idx = sample_indices(info.n_frames, info.fps, fp.mode, fp.count, fp.fps, fp.max_frames)
    idx, frames = read_frames(inputs["video"], idx, info, fp.max_side)
    with Image.open(inputs["image"]) as im:
        photo = np.asarray(im.convert("RGB"))[None]

    def probs(batch: np.ndarray) -> tuple[np.ndarray, list]:
        faces = cropper.detect(batch)
        assert all(len(f) == 1 for f in faces)  # select: largest
        crops = np.stack([cropper.crop(fr, f[0]) for fr, f in zip(batch, faces)])
        assert crops.shape[1:] == (CROP, CROP, 3)
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            return torch.sigmoid(model(x).reshape(-1)).numpy().astype(float), faces

    video_p, video_faces = probs(frames)
    image_p, _ = probs(photo)
    return dict(indices=list(idx), video=video_p, video_faces=video_faces, image=image_p)


@pytest.fixture(scope="module")
def detected(inputs) -> tuple[int, list[dict]]:
    """Run ``fakeproof detect --json`` from the folder holding params.yaml; parse its stdout."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(buf):
        mp.chdir(inputs["root"])
        code = main(["detect", "--checkpoint", str(inputs["ckpt"]), "--json", str(inputs["video"]),
                     str(inputs["image"]), str(inputs["blank"]), str(inputs["missing"])])
    return code, json.loads(buf.getvalue())


def test_detect_exit_code_and_one_entry_per_input(inputs, detected) -> None:
    code, results = detected
    assert code == 0
    assert [r["file"] for r in results] == [str(inputs[k]) for k in
                                            ("video", "image", "blank", "missing")]


def test_detect_scores_the_video_as_the_mean_of_its_frames(inputs, detected, hand) -> None:
    video = detected[1][0]
    assert video["frames"] == 3 and video["faces"] == 3
    detail = video["faces_detail"]
    assert [d["frame"] for d in detail] == hand["indices"] == [1, 3, 5]
    p = np.array([d["p_fake"] for d in detail])
    assert ((p >= 0) & (p <= 1)).all()
    assert video["score"] == pytest.approx(p.mean(), abs=1e-4)  # eval.video_agg: mean
    assert video["verdict"] == ("fake" if video["score"] >= 0.5 else "real")
    # The same numbers by hand (FaceCropper + model on the same frames).
    assert p == pytest.approx(hand["video"], abs=1e-4)
    assert video["score"] == pytest.approx(hand["video"].mean(), abs=1e-4)
    assert np.ptp(hand["video"]) > 1e-3  # frames differ, so the mean is a real check
    # The boxes are the face, where the clip was built to have it.
    for d, face in zip(detail, hand["video_faces"]):
        assert d["box"] == pytest.approx(list(face[0].box), abs=0.051)
        assert iou(np.array(d["box"]), inputs["boxes"][d["frame"]]) > 0.5
        assert d["det_prob"] >= 0.9


def test_detect_scores_an_image(inputs, detected, hand) -> None:
    image = detected[1][1]
    assert image["frames"] == 1 and image["faces"] == 1
    (d,) = image["faces_detail"]
    assert d["frame"] == 0 and 0.0 <= d["p_fake"] <= 1.0
    assert image["score"] == pytest.approx(d["p_fake"], abs=1e-4)
    assert image["score"] == pytest.approx(hand["image"][0], abs=1e-4)
    assert iou(np.array(d["box"]), inputs["boxes"][0]) > 0.5


def test_detect_reports_no_face_and_missing_files(detected) -> None:
    blank, missing = detected[1][2], detected[1][3]
    assert blank["verdict"] == "no face found"
    assert blank["frames"] == 1 and blank["faces"] == 0 and blank["score"] is None
    assert blank["faces_detail"] == []
    assert missing["verdict"].startswith("error:") and "no such file" in missing["verdict"]
    assert missing["score"] is None and missing["faces"] == 0


def test_detect_table_output(inputs, capsys, monkeypatch) -> None:
    """Without --json: a header and one line per input (the blank image and the missing file here)."""
    monkeypatch.chdir(inputs["root"])
    code = main(["detect", "--checkpoint", str(inputs["ckpt"]), str(inputs["blank"]),
                 str(inputs["missing"])])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["file", "frames", "faces", "p(fake)", "verdict"]
    assert len(out) == 3
    assert out[1].endswith("no face found") and "error:" in out[2]


def test_detect_uses_the_checkpoint_crop_size_and_reports_unreadable_files(inputs, detected,
                                                                           capsys) -> None:
    """params say 128 px crops, the checkpoint says 64: detect crops at 64 (the same score as
    above). A PNG that is not an image is an error entry, not a crash."""
    root = inputs["root"]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["faces"]["image_size"] = 128
    (root / "params128.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "corrupt.png").write_bytes(b"not a png at all")
    code = main(["detect", "--params", str(root / "params128.yaml"), "--checkpoint",
                 str(inputs["ckpt"]), "--json", str(inputs["image"]), str(root / "corrupt.png")])
    image, corrupt = json.loads(capsys.readouterr().out)
    assert code == 0
    assert image["score"] == detected[1][1]["score"]
    assert corrupt["verdict"].startswith("error:") and "not a readable image" in corrupt["verdict"]
    assert corrupt["score"] is None
