"""Common corruptions (fakeproof/corruptions/) and their sweep in evaluate (fakeproof/corruption_sweep.py),
on real face photos and real ffmpeg: severity 0 is the identity byte for byte, PSNR against the
clean crop falls with severity for every corruption, h264 really re-encodes the crop sequence,
the params loader refuses unknown names and severities with one line naming the key, seeds are
keyed by names, and a video ffmpeg cannot re-encode is skipped and counted."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from _params import default_params_raw
from _tinydata import build_store
from fakeproof.config import CORRUPTION_NAMES, EvalParams, ParamsError, params_from_dict
from fakeproof.corruption_sweep import corrupted_logits, corruption_seed, mean_auc_interval
from fakeproof.corruptions import CORRUPTIONS, LEVELS, CorruptionError, get_corruption
from fakeproof.corruptions import h264 as h264_module
from fakeproof.data import FaceDataset
from fakeproof.boundary import Boundary
from fakeproof.evaluate import corruption_results
from fakeproof.intervals import level_metrics

FACES = Path(__file__).resolve().parents[1] / "fakeproof" / "assets" / "faces"
RANDOM = ("gaussian_noise", "salt_pepper")


def _video(size: int = 64, frames: int = 6) -> torch.Tensor:
    """A 'video' of face crops: the shipped photos, each drifting by a pixel per frame."""
    out = []
    for k in range(frames):
        name = ("obama.jpg", "biden.jpg", "astronaut.jpg")[k % 3]
        img = Image.open(FACES / name).convert("RGB").resize((size + 8, size + 8), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32)[k:k + size, k:k + size] / 255.0
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
    return torch.stack(out)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_registry_matches_the_names_and_levels() -> None:
    assert tuple(CORRUPTIONS) == CORRUPTION_NAMES == tuple(LEVELS)
    assert all(len(v) == 5 for v in LEVELS.values())
    assert LEVELS["h264"] == (23, 28, 33, 38, 43)
    with pytest.raises(CorruptionError, match="'fog' is not registered"):
        get_corruption("fog")


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_severity_zero_is_the_identity_byte_for_byte(name: str) -> None:
    x = _video(size=33, frames=3)
    out = CORRUPTIONS[name](x, severity=0, generator=torch.Generator().manual_seed(0))
    assert out.dtype == x.dtype and out.shape == x.shape
    assert out.numpy().tobytes() == x.numpy().tobytes()
    assert out.data_ptr() != x.data_ptr()  # a copy: the caller's crops are never written to


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_psnr_falls_with_severity(name: str) -> None:
    x = _video()
    psnr = []
    for s in range(1, 6):
        out = CORRUPTIONS[name](x, severity=s, generator=torch.Generator().manual_seed(7))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
        assert torch.equal(torch.round(out * 255) / 255, out)  # 8-bit values, as a delivered frame
        psnr.append(_psnr(out, x))
    assert psnr[0] < 40.0, psnr  # severity 1 is a visible change
    assert all(a > b for a, b in zip(psnr, psnr[1:])), psnr


@pytest.mark.parametrize("name", RANDOM)
def test_random_corruptions_follow_their_generator(name: str) -> None:
    x = _video(size=32, frames=2)
    fn = CORRUPTIONS[name]
    a = fn(x, severity=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, fn(x, severity=3, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, fn(x, severity=3, generator=torch.Generator().manual_seed(2)))
    state = torch.random.get_rng_state()
    fn(x, severity=3)  # no generator: a fixed one, never the global RNG
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("severity", [-1, 6, 2.5, True, "3"])
def test_a_bad_severity_is_refused(severity) -> None:
    with pytest.raises(CorruptionError, match="use an integer 1-5"):
        CORRUPTIONS["jpeg"](_video(size=16, frames=1), severity=severity)


def test_h264_reencodes_the_sequence_with_ffmpeg() -> None:
    x = _video(size=63, frames=5)  # odd size: padded to even for 4:2:0, cut back
    frames = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = CORRUPTIONS["h264"](x, severity=1)
    assert out.shape == x.shape
    assert 25.0 < _psnr(out, x) < 60.0  # CRF 23: good quality, not lossless
    again = CORRUPTIONS["h264"](x, severity=1)
    assert torch.equal(out, again)  # one-thread x264: deterministic
    # a clip, not per-image coding: the same crops encoded one at a time decode differently
    single = torch.cat([CORRUPTIONS["h264"](x[i:i + 1], severity=3) for i in range(len(x))])
    assert not torch.equal(single, CORRUPTIONS["h264"](x, severity=3))
    even = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    assert h264_module.encode_decode(even, 33).shape == even.shape


def test_an_ffmpeg_failure_is_a_one_line_corruption_error(monkeypatch) -> None:
    monkeypatch.setattr(h264_module, "ffmpeg_exe", lambda: "/bin/false")
    with pytest.raises(CorruptionError) as e:
        CORRUPTIONS["h264"](_video(size=16, frames=2), severity=2)
    assert "ffmpeg encode at CRF 28 failed" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key, value, where", [
    ("corruptions", ["jpeg", "fog"], "eval.corruptions[1] = 'fog': not allowed"),
    ("corruption_severities", [1, 6], "eval.corruption_severities[1] = 6: out of range"),
    ("corruption_severities", [0, 3], "eval.corruption_severities[0] = 0: out of range"),
    ("corruptions", ["jpeg", "h264", "jpeg"], "eval.corruptions: 'jpeg' is listed twice"),
    ("corruption_severities", [1, 3, 3], "eval.corruption_severities: 3 is listed twice"),
])
def test_the_params_loader_refuses_bad_names_and_severities(key, value, where) -> None:
    with pytest.raises(ParamsError) as e:
        params_from_dict(default_params_raw(eval={key: value}))
    msg = str(e.value)
    assert where in msg and "\n" not in msg
    ok = params_from_dict(default_params_raw(eval={"corruptions": ["h264"], "corruption_severities": [1, 5]}))
    assert ok.eval.corruptions == ["h264"] and ok.eval.corruption_severities == [1, 5]
    assert params_from_dict(default_params_raw()).eval.corruptions == list(CORRUPTION_NAMES)


# --------------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------------
class Redness(nn.Module):
    """logit = k * (mean red - 0.5): the tiny store's fakes are redder."""

    def __init__(self, k: float = 20.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.k * (x[:, 0].mean(dim=(1, 2)) - 0.5)).reshape(-1, 1)


@pytest.fixture(scope="module")
def test_ds(tmp_path_factory) -> FaceDataset:
    p = build_store(tmp_path_factory.mktemp("corr"), {"train": 2, "val": 2, "test": 8}, frames=3,
                    size=16, shift=0.08)
    return FaceDataset(p.store, p.faces_csv, p.splits_csv, "test")


def _ep(**kw) -> EvalParams:
    base = dict(corruptions=["gaussian_noise", "h264"], corruption_severities=[1, 5], bootstrap=50,
                min_videos=2, batch_size=7)
    base.update(kw)
    return EvalParams(**base)


def test_seeds_are_keyed_by_names(test_ds) -> None:
    models = {"a": Redness().eval(), "b": Redness(5.0).eval()}
    one = corrupted_logits(models, test_ds, ["gaussian_noise"], [3], seed=0, batch_size=5)
    two = corrupted_logits(models, test_ds, ["jpeg", "gaussian_noise", "salt_pepper"], [1, 3],
                           seed=0, batch_size=11)
    for m in models:
        assert np.array_equal(one.logits[("gaussian_noise", 3)][m], two.logits[("gaussian_noise", 3)][m])
    assert corruption_seed(0, "gaussian_noise", "v1", 3) != corruption_seed(0, "gaussian_noise", "v2", 3)
    assert corruption_seed(0, "gaussian_noise", "v1", 3) != corruption_seed(1, "gaussian_noise", "v1", 3)
    other = corrupted_logits(models, test_ds, ["gaussian_noise"], [3], seed=1, batch_size=5)
    assert not np.array_equal(one.logits[("gaussian_noise", 3)]["a"], other.logits[("gaussian_noise", 3)]["a"])
    assert np.isfinite(one.logits[("gaussian_noise", 3)]["a"]).all()


def _results(ds: FaceDataset, models: dict[str, nn.Module], ep: EvalParams) -> dict:
    frames = ds.frames.reset_index(drop=True)
    out = {}
    for name, m in models.items():
        with torch.no_grad():
            z = m(torch.stack([ds[i][0] for i in range(len(ds))])).reshape(-1).double().numpy()
        out[name] = SimpleNamespace(test_clean=level_metrics(frames, z, Boundary(), ep.video_agg,
                                                             ep.bootstrap, ep.seed),
                                    boundary=Boundary())
    return out


def test_a_video_that_cannot_be_reencoded_is_skipped_and_counted(test_ds, monkeypatch, caplog) -> None:
    import fakeproof.corruptions as corruptions

    frames = test_ds.frames.reset_index(drop=True)
    victim = sorted(frames["video_id"].unique())[3]
    rows = np.flatnonzero(frames["video_id"] == victim)
    victim_crops = torch.stack([test_ds[int(i)][0] for i in rows])
    real = corruptions.CORRUPTIONS["h264"]

    def h264_failing_on_one_video(images, *, severity, generator=None):
        if torch.equal(images, victim_crops):
            raise CorruptionError("h264: ffmpeg encode failed (planted)")
        return real(images, severity=severity, generator=generator)

    monkeypatch.setitem(corruptions.CORRUPTIONS, "h264", h264_failing_on_one_video)
    ep = _ep()
    models = {"clean": Redness().eval()}
    with caplog.at_level(logging.WARNING):
        sweep = corrupted_logits(models, test_ds, ep.corruptions, ep.corruption_severities,
                                 seed=ep.seed, batch_size=ep.batch_size)
    assert sweep.skipped[("h264", 1)] == [victim] and sweep.skipped[("h264", 5)] == [victim]
    assert sweep.skipped[("gaussian_noise", 1)] == []
    z = sweep.logits[("h264", 1)]["clean"]
    assert np.isnan(z[rows]).all() and np.isfinite(np.delete(z, rows)).all()
    assert f"video {victim} skipped under h264 severity 1" in caplog.text

    per_model, means, tables = corruption_results(frames, sweep, _results(test_ds, models, ep), ep)
    cell = per_model["clean"]["h264"]["1"]
    assert cell["skipped_videos"] == 1 and cell["videos"] == 7
    assert per_model["clean"]["gaussian_noise"]["5"]["skipped_videos"] == 0
    for c in ep.corruptions:
        for s in ("1", "5"):
            e = per_model["clean"][c][s]
            assert set(e) >= {"auc", "auc_lo", "auc_hi", "bacc", "bacc_lo", "bacc_hi", "video_auc",
                              "video_auc_lo", "video_auc_hi", "video_bacc"}
            assert e["auc_lo"] <= e["auc"] <= e["auc_hi"] and e["bacc_lo"] <= e["bacc_hi"]
    m = means["clean"]
    assert m["auc_lo"] <= m["auc"] <= m["auc_hi"] and m["cells"] == 4
    assert m["auc"] == pytest.approx(np.mean([per_model["clean"][c][s]["auc"]
                                              for c in ep.corruptions for s in ("1", "5")]))
    t = tables["h264"]
    assert t["severity"].tolist() == [0, 1, 5] and list(t.columns)[:2] == ["severity", "clean_auc"]


def test_when_ffmpeg_fails_for_every_video_all_are_counted(test_ds, monkeypatch) -> None:
    monkeypatch.setattr(h264_module, "ffmpeg_exe", lambda: "/bin/false")
    ep = _ep(corruption_severities=[2])
    models = {"clean": Redness().eval()}
    sweep = corrupted_logits(models, test_ds, ep.corruptions, ep.corruption_severities, seed=0,
                             batch_size=ep.batch_size)
    frames = test_ds.frames.reset_index(drop=True)
    per_model, means, _ = corruption_results(frames, sweep, _results(test_ds, models, ep), ep)
    cell = per_model["clean"]["h264"]["2"]
    assert cell["skipped_videos"] == 8 and cell["videos"] == 0 and cell["auc"] is None
    assert per_model["clean"]["gaussian_noise"]["2"]["auc"] is not None
    assert means["clean"]["cells"] == 1  # the mean is over cells that were scored


def test_mean_auc_interval_of_a_perfect_and_a_useless_cell() -> None:
    y = np.array([0, 1] * 10)
    vids = np.repeat(np.arange(10), 2)  # each video holds one real and one fake face
    perfect, useless = y * 2.0 - 1.0, np.zeros(20)
    r = mean_auc_interval(y, vids, [perfect, useless], n_boot=200, seed=0)
    # the mean is 0.75 in every draw: no spread to read, so an exact interval at 10 videos
    assert r["auc"] == pytest.approx(0.75) and r["method"] == "clopper-pearson (degenerate bootstrap)"
    assert r["auc_lo"] < 0.75 < r["auc_hi"] and r["cells"] == 2 and r["n_boot"] == 200


def test_mean_auc_interval_is_bca_over_videos_within_each_class() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12) % 2, 5)
    vids = np.repeat(np.arange(12), 5)
    cells = [y + rng.normal(0, 1, y.size) + np.repeat(rng.normal(0, 1, 12), 5) for _ in range(3)]
    cells[2][:5] = np.nan  # one video skipped in one cell
    r = mean_auc_interval(y, vids, cells, n_boot=300, seed=1)
    assert r["method"] == "bca" and r["cells"] == 3
    assert 0.0 <= r["auc_lo"] < r["auc"] < r["auc_hi"] <= 1.0
    assert r == mean_auc_interval(y, vids, cells, n_boot=300, seed=1)
    assert r != mean_auc_interval(y, vids, cells, n_boot=300, seed=1, strata=vids % 3)
