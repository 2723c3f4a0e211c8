"""``fakeproof detect``: real mp4 and PNG inputs, real ffmpeg and MTCNN, a smallcnn checkpoint that
carries its inference recipe (no params.yaml anywhere).

The clip is made from the demo photo ``obama.jpg`` (``helpers_video.make_face_clip``: 128 px, 8
frames, the face's box known by construction). The recipe samples 4 frames and stores 64 px crops
as JPEG (so the face store's encode/decode round trip matters). The central check runs the
pipeline's own stages (extract_frames, crop_faces, the training loader) on the same clip and
requires the same crops byte for byte and the same scores.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fakeproof.boundary import Boundary
from fakeproof.cli import main
from fakeproof.data import FaceDataset
from fakeproof.detect import DetectError, collect_inputs, load_detector, robustness, score_paths
from fakeproof.faces import run_crop_faces
from fakeproof.frames import run_extract_frames
from fakeproof.metrics import aggregate_videos
from fakeproof.models import create_model, load_checkpoint, save_checkpoint
from fakeproof.predict import proba
from fakeproof.recipe import RECIPE_VERSION, REFRESH, RecipeError, build_recipe
from fakeproof.runtime import frozen_on, resolve_device
from fakeproof.store import FaceStore
from _models import spread_smallcnn
from helpers_video import face_clip_frames, iou, make_blank_clip, make_face_clip, make_params, video_table

CROP = 64
RECIPE_PARAMS = dict(frames={"count": 4}, faces={"image_size": CROP, "encoding": "jpeg",
                                                 "jpeg_quality": 90},
                     model={"name": "smallcnn"})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_checkpoint(path: Path, threshold: float = 0.5, a: float = 1.0, b: float = 0.0,
                     **recipe) -> Path:
    params = make_params(**RECIPE_PARAMS)
    meta = {"stage": "test", "recipe": {**build_recipe(params, Boundary(a, b, threshold)),
                                        **recipe}}
    save_checkpoint(path, spread_smallcnn(), meta)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["detect", *argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A face clip, a face PNG, a blank clip, a text file, a corrupt PNG, a checkpoint."""
    root = tmp_path_factory.mktemp("detect")
    boxes = make_face_clip(root / "clip.mp4", size=128, n_frames=8, fps=8)
    frames, _ = face_clip_frames("obama.jpg", size=128, n_frames=8)
    Image.fromarray(frames[0]).save(root / "face.png")
    make_blank_clip(root / "blank.mp4", size=96, n_frames=8)
    (root / "notes.txt").write_text("not a video\n")
    (root / "corrupt.png").write_bytes(b"not a png at all")
    return dict(root=root, video=root / "clip.mp4", image=root / "face.png",
                blank=root / "blank.mp4", text=root / "notes.txt", corrupt=root / "corrupt.png",
                missing=root / "missing.mp4", ckpt=write_checkpoint(root / "model.pt"),
                boxes=boxes, frame0=frames[0])


@pytest.fixture(scope="module")
def bundle(inputs):
    return load_detector(inputs["ckpt"], "cpu")


@pytest.fixture(scope="module")
def detected(inputs) -> tuple[int, list[dict], str]:
    """``fakeproof detect --json`` on every kind of input, from a folder with no params.yaml."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(inputs["root"])
        code, out, err = run_cli("--checkpoint", str(inputs["ckpt"]), "--json", "--device", "cpu",
                                 *(str(inputs[k]) for k in ("video", "image", "blank", "text",
                                                            "corrupt", "missing")))
    return code, json.loads(out), err


@pytest.fixture(scope="module")
def pipeline(inputs, tmp_path_factory) -> dict:
    """The same clip through the pipeline: extract_frames, crop_faces, the training loader."""
    root = tmp_path_factory.mktemp("pipeline")
    params = make_params(**RECIPE_PARAMS)
    videos = video_table(root / "videos.csv", [{"video_id": "clip", "path": str(inputs["video"])}])
    run_extract_frames(params, videos, root / "frames")
    run_crop_faces(params, videos, root / "frames", root / "faces.lmdb", root / "faces.csv")
    pd.DataFrame([{"video_id": "clip", "label": 0, "split": "test", "group": "clip",
                   "method": "real", "source": "test"}]).to_csv(root / "splits.csv", index=False)
    ds = FaceDataset(root / "faces.lmdb", root / "faces.csv", root / "splits.csv", "test")
    model = frozen_on(load_checkpoint(inputs["ckpt"])[0], torch.device("cpu"))  # as evaluate scores
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        probs = proba(model(x))
    df = ds.frames[["video_id", "label"]].copy()
    df["prob"] = probs
    store = FaceStore(root / "faces.lmdb")
    crops = torch.stack([store.get_tensor(k) for k in ds.frames["key"]])
    return dict(faces=pd.read_csv(root / "faces.csv"), crops=crops, probs=probs,
                video=float(aggregate_videos(df, how="mean")["prob"].iloc[0]))


# --------------------------------------------------------------------------------------------------
# One code path with the pipeline
# --------------------------------------------------------------------------------------------------


def test_detect_crops_and_scores_equal_the_pipelines(inputs, bundle, pipeline) -> None:
    (res,) = score_paths(bundle, [inputs["video"]], keep_crops=True)
    assert res.status == "scored" and res.frames == 4 and res.faces == 4
    assert res.crops is not None and res.crops.dtype == torch.uint8
    assert res.crops.shape == (4, 3, CROP, CROP)
    assert torch.equal(res.crops, pipeline["crops"])  # byte for byte, after the JPEG round trip
    faces = pipeline["faces"]
    assert [s.frame for s in res.scores] == faces["frame"].tolist() == [1, 3, 5, 7]
    for s, row in zip(res.scores, faces.itertuples()):
        assert s.box == pytest.approx((row.x1, row.y1, row.x2, row.y2), abs=1e-9)
        assert iou(np.array(s.box), inputs["boxes"][s.frame]) > 0.5
    p = np.array([s.p_fake for s in res.scores])
    assert p == pytest.approx(pipeline["probs"], abs=1e-7)
    assert np.ptp(p) > 1e-3  # frames differ, so the mean is a real check
    assert res.p_fake == pytest.approx(pipeline["video"], abs=1e-7)  # eval.video_agg: mean


def test_crops_batched_across_files_score_the_same(inputs, bundle) -> None:
    alone = [score_paths(bundle, [inputs[k]])[0].p_fake for k in ("video", "image")]
    together = score_paths(bundle, [inputs["video"], inputs["image"]], batch_size=3)
    assert [r.p_fake for r in together] == pytest.approx(alone, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# The command: JSON, table, errors
# --------------------------------------------------------------------------------------------------


def test_json_has_one_entry_per_input_with_the_promised_fields(inputs, detected) -> None:
    code, results, _ = detected
    assert code == 0
    assert [r["path"] for r in results] == [str(inputs[k]) for k in
                                            ("video", "image", "blank", "text", "corrupt", "missing")]
    for r in results:
        assert {"path", "p_fake", "label", "faces", "frames", "status", "error", "threshold",
                "scores"} <= set(r)
    video, image = results[0], results[1]
    assert video["status"] == "scored" and video["kind"] == "video"
    assert video["frames"] == 4 and video["faces"] == 4 and video["frames_with_face"] == 4
    assert [s["frame"] for s in video["scores"]] == [1, 3, 5, 7]
    p = np.array([s["p_fake"] for s in video["scores"]])
    assert ((p > 0) & (p < 1)).all() and all(s["det_prob"] >= 0.9 for s in video["scores"])
    assert video["p_fake"] == pytest.approx(p.mean(), abs=1e-6)
    assert video["label"] == ("fake" if video["p_fake"] > 0.5 else "real")
    assert video["threshold"] == 0.5 and video["error"] is None
    assert image["kind"] == "image" and image["frames"] == 1 and image["faces"] == 1
    assert image["p_fake"] == pytest.approx(image["scores"][0]["p_fake"], abs=1e-6)
    assert iou(np.array(image["scores"][0]["box"]), inputs["boxes"][0]) > 0.5


def test_each_bad_input_is_one_line_and_never_scored(inputs, detected) -> None:
    _, results, err = detected
    blank, text, corrupt, missing = results[2:]
    assert blank["status"] == "no_face" and blank["frames"] == 4 and blank["faces"] == 0
    assert "no face found in 4 sampled frames" in blank["error"]
    assert "neither a video nor an image" in text["error"]
    assert "not a readable image" in corrupt["error"]
    assert "no such file or folder" in missing["error"]
    for r in (blank, text, corrupt, missing):
        assert r["p_fake"] is None and r["label"] is None and r["scores"] == []
        assert "\n" not in r["error"] and r["status"] in ("no_face", "error")
    lines = [ln for ln in err.splitlines() if ln.startswith("fakeproof detect:")]
    assert lines == [f"fakeproof detect: {r['error']}" for r in (blank, text, corrupt, missing)]
    assert "Traceback" not in err


def test_exit_code_is_nonzero_when_nothing_is_scored(inputs) -> None:
    code, out, err = run_cli("--checkpoint", str(inputs["ckpt"]), "--device", "cpu",
                             str(inputs["blank"]), str(inputs["missing"]))
    assert code == 2
    table = out.splitlines()
    assert table[0].split() == ["path", "frames", "faces", "p_fake", "label"]
    assert table[1].split()[-2:] == ["no", "face"] and table[2].split()[-1] == "error"
    assert err.strip().splitlines()[-1].startswith("fakeproof detect: error: nothing scored")
    assert "Traceback" not in err


def test_folders_are_scored_recursively(inputs, bundle, tmp_path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "clip.mp4").write_bytes(inputs["video"].read_bytes())
    (tmp_path / "a" / "face.PNG").write_bytes(inputs["image"].read_bytes())
    (tmp_path / "a" / "readme.txt").write_text("skipped: not a video or image by suffix")
    (tmp_path / "a" / ".hidden.mp4").write_bytes(b"skipped: hidden")
    (tmp_path / "empty").mkdir()
    found = collect_inputs([tmp_path / "a", tmp_path / "empty"])
    assert [(Path(i.shown).relative_to(tmp_path).as_posix(), i.kind) for i in found[:2]] == \
        [("a/b/clip.mp4", "video"), ("a/face.PNG", "image")]
    assert found[2].error.endswith("folder holds no videos or images; give files or another folder")
    results = score_paths(bundle, [tmp_path / "a"])
    direct = score_paths(bundle, [inputs["video"], inputs["image"]])
    assert [r.p_fake for r in results] == pytest.approx([r.p_fake for r in direct], abs=1e-6)


def test_exif_orientation_is_applied_to_images(inputs, bundle, tmp_path) -> None:
    """A photo stored sideways with an EXIF 'rotate 90' tag scores as the upright photo."""
    upright = Image.fromarray(inputs["frame0"])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    a, b = score_paths(bundle, [inputs["image"], tmp_path / "sideways.png"], keep_crops=True)
    assert b.status == "scored" and torch.equal(a.crops, b.crops)
    assert b.p_fake == pytest.approx(a.p_fake, abs=1e-6)


# --------------------------------------------------------------------------------------------------
# The checkpoint and its recipe
# --------------------------------------------------------------------------------------------------


def test_threshold_and_platt_calibration_come_from_the_recipe(inputs, bundle, tmp_path) -> None:
    (base,) = score_paths(bundle, [inputs["video"]])
    p = base.p_fake
    below = load_detector(write_checkpoint(tmp_path / "lo.pt", threshold=p - 1e-4), "cpu")
    above = load_detector(write_checkpoint(tmp_path / "hi.pt", threshold=p + 1e-4), "cpu")
    assert score_paths(below, [inputs["video"]])[0].label == "fake"
    assert score_paths(above, [inputs["video"]])[0].label == "real"
    platt = load_detector(write_checkpoint(tmp_path / "t2.pt", a=0.5, b=0.3), "cpu")
    (res,) = score_paths(platt, [inputs["video"]])
    logits = np.log(np.array([s.p_fake for s in base.scores])) - \
        np.log1p(-np.array([s.p_fake for s in base.scores]))
    expected = 1.0 / (1.0 + np.exp(-(0.5 * logits + 0.3)))
    assert [s.p_fake for s in res.scores] == pytest.approx(expected, abs=1e-6)
    assert res.p_fake == pytest.approx(expected.mean(), abs=1e-6)


@pytest.mark.parametrize("meta, words", [
    ({"stage": "pretrain"}, "has no inference recipe"),
    ({"recipe": {"version": 0}}, f"recipe version 0 is older than this fakeproof reads ({RECIPE_VERSION})"),
    ({"recipe": {"version": None}}, "recipe version None is older"),
])
def test_checkpoints_without_a_current_recipe_say_how_to_refresh(inputs, tmp_path, meta,
                                                                 words) -> None:
    save_checkpoint(tmp_path / "old.pt", create_model("smallcnn"), meta)
    code, out, err = run_cli("--checkpoint", str(tmp_path / "old.pt"), str(inputs["video"]))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert words in line and REFRESH in line and str(tmp_path / "old.pt") in line


def test_a_newer_recipe_asks_for_an_upgrade(inputs, tmp_path) -> None:
    path = write_checkpoint(tmp_path / "new.pt", version=RECIPE_VERSION + 1)
    want = rf"recipe version {RECIPE_VERSION + 1} is newer than this fakeproof reads \({RECIPE_VERSION}\)"
    with pytest.raises(RecipeError, match=want + "; upgrade fakeproof"):
        load_detector(path, "cpu")


@pytest.mark.parametrize("make", ["text", "state_dict", "missing"])
def test_files_that_are_not_fakeproof_checkpoints(inputs, tmp_path, make) -> None:
    path = tmp_path / "model.pt"
    if make == "text":
        path.write_text("not a checkpoint")
    elif make == "state_dict":
        torch.save(create_model("smallcnn").state_dict(), path)
    code, out, err = run_cli("--checkpoint", str(path), str(inputs["video"]))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    want = "checkpoint not found" if make == "missing" else "not a fakeproof model checkpoint"
    assert line.startswith(f"fakeproof detect: error: {path}: {want}")


def test_recipe_values_are_checked(inputs, tmp_path) -> None:
    params = make_params(**RECIPE_PARAMS)
    recipe = build_recipe(params, Boundary(0.8, -0.2, 0.3))
    assert recipe["version"] == RECIPE_VERSION and recipe["model"] == "smallcnn"
    assert recipe["input_size"] == CROP and recipe["faces"]["encoding"] == "jpeg"
    assert recipe["frames"]["count"] == 4 and recipe["video_agg"] == "mean"
    assert recipe["mean"] == [0.5, 0.5, 0.5] and recipe["threshold"] == 0.3
    assert (recipe["platt_a"], recipe["platt_b"]) == (0.8, -0.2)
    # The recipe survives the weights-only loader (plain types only).
    save_checkpoint(tmp_path / "m.pt", create_model("smallcnn"), {"recipe": recipe})
    assert load_checkpoint(tmp_path / "m.pt")[1]["recipe"] == recipe
    with pytest.raises(ValueError, match="threshold"):
        build_recipe(params, Boundary(1.0, 0.0, 1.5))
    with pytest.raises(ValueError, match="Platt slope"):
        build_recipe(params, Boundary(0.0, 0.0, 0.5))
    for key, value in (("platt_a", -1.0), ("platt_b", float("nan"))):
        with pytest.raises(RecipeError, match=f"recipe {key} = .* is out of range"):
            load_detector(write_checkpoint(tmp_path / f"{key}.pt", **{key: value}), "cpu")
    bad = write_checkpoint(tmp_path / "bad.pt", video_agg="median")
    with pytest.raises(RecipeError, match="eval.video_agg"):
        load_detector(bad, "cpu")
    other = write_checkpoint(tmp_path / "other.pt", model="resnet18")
    with pytest.raises(RecipeError, match="names model 'resnet18' but the weights are 'smallcnn'"):
        load_detector(other, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_flag_without_a_gpu(inputs) -> None:
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DetectError, match="--device = 'cuda': no CUDA device here"):
        resolve_device("cuda", what="--device", error=DetectError)
    code, _, err = run_cli("--checkpoint", str(inputs["ckpt"]), "--device", "cuda",
                           str(inputs["video"]))
    assert code == 2 and "--device = 'cuda': no CUDA device here; use auto or cpu" in err


# --------------------------------------------------------------------------------------------------
# The robustness check of the web page
# --------------------------------------------------------------------------------------------------


def test_robustness_moves_the_score_only_with_eps(inputs, bundle) -> None:
    (res,) = score_paths(bundle, [inputs["video"]], keep_crops=True)
    still = robustness(bundle, res, eps=0.0, steps=3)
    assert still["faces"] == 4 and still["frames"] == [1, 3, 5, 7]
    assert still["p_fake_clean"] == pytest.approx(res.p_fake, abs=1e-9)
    assert still["p_fake_attacked"] == pytest.approx(res.p_fake, abs=1e-9)
    moved = robustness(bundle, res, eps=8 / 255, steps=5)
    # PGD pushes away from the file's own label.
    if res.label == "fake":
        assert moved["p_fake_attacked"] < res.p_fake - 1e-3
    else:
        assert moved["p_fake_attacked"] > res.p_fake + 1e-3
    assert moved == robustness(bundle, res, eps=8 / 255, steps=5)  # seeded
    with pytest.raises(DetectError, match="keep_crops=True"):
        robustness(bundle, score_paths(bundle, [inputs["video"]])[0])
