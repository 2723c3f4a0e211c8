"""fakeproof's web page: upload a video or an image, see whether the detector calls it a deepfake.

Run it with ``make app`` (http://localhost:8501, bound to 127.0.0.1; ``make app PORT=8600``) or
``streamlit run app/streamlit_app.py``. The page owns the widgets only: every score, crop,
threshold and the robustness check come from :mod:`fakeproof.detect`, the code path of
``fakeproof detect`` (which reuses the pipeline's own frame, face and store functions).

- Checkpoints: the ``*.pt`` files of ``models/`` (or of the folder named by ``FAKEPROOF_MODELS``),
  each carrying its inference recipe and the threshold chosen on val.
- Uploads are capped at :data:`MAX_UPLOAD_MB` megabytes and written to a temporary file that is
  deleted after scoring.
- Live robustness check: L-inf PGD (Madry et al., ICLR 2018) at a small eps on the file's faces,
  pushing away from the model's own verdict; the page shows P(fake) clean -> attacked.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from fakeproof.config import DEFAULT_CHECKPOINT
from fakeproof.detect import IMAGE_SUFFIXES, VIDEO_SUFFIXES, load_detector, robustness, score_paths
from fakeproof.errors import FakeproofError

MAX_UPLOAD_MB = 200
MODELS = Path(os.environ.get("FAKEPROOF_MODELS", "models"))
GALLERY = 24  # face crops shown at most
EPS_CHOICES = (1, 2, 4, 8)  # PGD radius choices, in 1/255 steps


@st.cache_resource(max_entries=4, show_spinner="Loading the detector ...")
def detector(path: str, mtime: float):
    """One loaded detector per checkpoint file version (``mtime`` invalidates a rewritten file)."""
    return load_detector(path, "auto")


@st.cache_resource
def scoring_lock() -> threading.Lock:
    """One scoring at a time per server: sessions share the model and MTCNN (global torch threads)."""
    return threading.Lock()


@st.cache_data(max_entries=16, show_spinner=False)
def analyse(data: bytes, name: str, checkpoint: str, mtime: float, eps_255: int) -> dict[str, Any]:
    """Score one upload through fakeproof.detect and run the robustness check; plain data only.
    ``name`` is the user's file name: results and errors name it, never the server's temporary
    copy."""
    bundle = detector(checkpoint, mtime)
    with scoring_lock(), tempfile.TemporaryDirectory(prefix="fakeproof-upload-") as tmp:
        path = Path(tmp) / f"upload{Path(name).suffix.lower()}"
        path.write_bytes(data)
        (res,) = score_paths(bundle, [path], keep_crops=True, progress=False)
        res.path = name
        if res.error:
            res.error = res.error.replace(str(path), name)
        out = {"result": res.to_json(), "model": bundle.model.name, "device": str(bundle.device),
               "video_agg": bundle.video_agg, "crops": None, "robust": None}
        if res.status == "scored":
            out["crops"] = res.crops[:GALLERY].permute(0, 2, 3, 1).numpy()
            out["robust"] = robustness(bundle, res, eps=eps_255 / 255)
    return out


def frame_chart(result: dict, robust: dict | None, threshold: float) -> alt.Chart:
    rows = [{"frame": s["frame"], "P(fake)": s["p_fake"], "series": "clean"}
            for s in result["scores"]]
    if robust:
        rows += [{"frame": f, "P(fake)": p, "series": "under PGD"}
                 for f, p in zip(robust["frames"], robust["face_p_attacked"])]
    df = pd.DataFrame(rows)
    lines = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X("frame:Q", title="frame index", axis=alt.Axis(format="d", tickMinStep=1)),
        y=alt.Y("P(fake):Q", title="P(fake)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None))
    rule = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[4, 4]).encode(
        y=alt.Y("threshold:Q", title="P(fake)"))
    return (lines + rule).properties(height=260)


def show(out: dict) -> None:
    r = out["result"]
    if r["status"] == "no_face":
        st.warning(f"No face found in {r['frames']} sampled frames: not scored (never called real).")
        return
    if r["status"] != "scored":
        st.error(r["error"])
        return
    verdict = "FAKE" if r["label"] == "fake" else "REAL"
    c1, c2, c3 = st.columns(3)
    c1.metric("P(fake)", f"{r['p_fake']:.4f}",
              help=f"{out['video_agg']} of the per-face probabilities, as the evaluate stage "
                   "scores a video")
    c2.metric("Verdict", verdict, help="fake when P(fake) is above the checkpoint's threshold")
    c3.metric("Threshold", f"{r['threshold']:.4f}", help="chosen on the validation split")
    st.caption(f"{r['frames']} frames sampled, {r['faces']} faces scored "
               f"({r['frames_with_face']} frames with a face) by {out['model']} on {out['device']}.")

    rb = out["robust"]
    if rb:
        st.subheader("Live robustness check")
        moved = rb["p_fake_attacked"] - rb["p_fake_clean"]
        st.metric(f"P(fake) under PGD, eps {round(rb['eps'] * 255)}/255", f"{rb['p_fake_attacked']:.4f}",
                  delta=f"{moved:+.4f}", delta_color="off")
        flip = "the verdict flips" if rb["flipped"] else "the verdict holds"
        st.write(f"P(fake) {rb['p_fake_clean']:.4f} → {rb['p_fake_attacked']:.4f} on "
                 f"{rb['faces']} faces after {rb['steps']} PGD steps pushing away from "
                 f"{r['label']}: {flip}.")

    st.subheader("Per-frame scores")
    st.altair_chart(frame_chart(r, rb, r["threshold"]), width="stretch")
    st.caption("One point per face crop; dashed line: the checkpoint's threshold.")

    st.subheader("Detected faces")
    crops, scores = out["crops"], r["scores"][:GALLERY]
    st.image(list(crops), width=96,
             caption=[f"frame {s['frame']}: {s['p_fake']:.3f}" for s in scores])
    if r["faces"] > GALLERY:
        st.caption(f"first {GALLERY} of {r['faces']} faces shown")


def main() -> None:
    st.set_page_config(page_title="fakeproof", page_icon=":mag:", layout="centered")
    st.title("fakeproof: is this a deepfake?")
    checkpoints = sorted(MODELS.glob("*.pt"))
    if not checkpoints:
        st.info(f"No checkpoints in {MODELS}/: train them with `make demo` (or `dvc repro`), or "
                "point FAKEPROOF_MODELS at a folder of .pt files.")
        return
    names = [p.name for p in checkpoints]
    with st.sidebar:
        robust = Path(DEFAULT_CHECKPOINT).name
        default = names.index(robust) if robust in names else 0
        name = st.selectbox("Checkpoint", names, index=default)
        eps_255 = st.select_slider("PGD eps (/255)", options=EPS_CHOICES, value=2,
                                   help="radius of the live robustness check, in pixel units")
    ckpt = MODELS / name
    try:
        detector(str(ckpt), ckpt.stat().st_mtime)
    except FakeproofError as e:
        st.error(str(e).splitlines()[0])
        return
    upload = st.file_uploader("A video or an image",
                              type=[s.lstrip(".") for s in VIDEO_SUFFIXES + IMAGE_SUFFIXES],
                              max_upload_size=MAX_UPLOAD_MB)
    if upload is None:
        st.caption(f"Videos and images up to {MAX_UPLOAD_MB} MB; faces are found with MTCNN and "
                   "scored with the checkpoint's own preprocessing.")
        return
    with st.spinner("Scoring ..."):
        out = analyse(upload.getvalue(), Path(upload.name).name, str(ckpt),
                      ckpt.stat().st_mtime, eps_255)
    show(out)


main()
