"""The evaluate stage: clean and adversarial metrics over an epsilon sweep, with intervals and
sanity flags. The test split is read here and nowhere else.

For every model (``clean``, ``robust`` and any ``--checkpoint NAME=PATH``):

1. **Whole test split, clean**: frame- and video-level metrics (video score: mean of frame
   probabilities by default, ``eval.video_agg``), AUC ranked on logits, each headline number with
   a 95 % bootstrap interval that resamples whole videos (:mod:`fakeproof.bootstrap`).
2. **Attacked sample**: whole test videos, stratified by class and manipulation method
   (``eval.attack_videos``; null: the preset's, 9 for ``quick``, every one for ``standard``). Its clean numbers are reported beside the attacked ones,
   computed on the same sample. Every attack of ``eval.attacks`` runs at every eps of ``eval.eps``
   with the budget of ``eval.preset`` (``quick`` for demos, ``standard`` for published numbers;
   explicit keys override it). Attack seeds derive from (eval.seed, attack, eps, the batch's first
   face key), so adding an eps or an attack changes no other number.
3. **Robust accuracy per face** (AutoAttack's definition): a face counts as robust at an eps only
   when it is classified correctly clean and under every attack; ``robust`` rows use, per face,
   the most adverse logit over clean and all attacks. ``robust_acc`` <= every per-attack accuracy.
4. **Sanity flags** with their evidence (Carlini et al., "On Evaluating Adversarial Robustness",
   2019; AutoAttack's checks): eps 0 equals clean; accuracy does not rise with eps; PGD at least
   as strong as FGSM; APGD at least as strong as PGD; a gradient-free attack (Square) beating the
   gradient attacks (gradient masking); robust accuracy above chance at a large eps (>= 16/255);
   a collapsed model (logit spread far below the first model's, or most scores at the threshold).
5. **Common corruptions** (:mod:`fakeproof.corruption_sweep`): every test video under every
   corruption of ``eval.corruptions`` at every ``eval.corruption_severities`` (JPEG, real h264
   re-encoding, noise, blur, brightness, contrast, downscaling; :mod:`fakeproof.corruptions`),
   frame and video AUC and balanced accuracy with video-resampled intervals, and their mean
   ``mean_corruption_auc`` (frame AUC over every corruption and severity) with its interval (in
   the detail file, under ``models.<name>.corruptions``). A
   video ffmpeg cannot re-encode is skipped for that cell and counted (``skipped_videos``).
6. **Calibration** (:mod:`fakeproof.calibration`): ECE (15 bins), Brier score and log loss of
   P(fake) on the whole test split, with the temperature fitted on val and stored in the
   checkpoint's recipe (1.0 when it has none or ``eval.calibrate`` is false) and without it. The
   other metrics keep temperature 1 (AUC cannot change; balanced accuracy at 0.5 does not).

Outputs (paths from dvc.yaml): the headline metrics file (small, for ``dvc metrics diff`` and
``dvc exp show``: ``eps``, ``sanity_ok`` and per model the five keys of :func:`headline`), the
detail JSON, the corruption JSON (``{model: {corruption: {severity:
{auc, auc_lo, auc_hi, bacc, bacc_lo, bacc_hi, video_*, videos, skipped_videos}}}}``), plot tables
(one per corruption, AUC against severity; a reliability table per model) and a PNG gallery of
adversarial examples.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from fakeproof.attacks import Budget, check_attack_names, get_attack, resolve_budget
from fakeproof.bootstrap import video_bootstrap
from fakeproof.calibration import calibration_report, checkpoint_temperature, reliability_points
from fakeproof.config import EvalParams, Params, as_dict
from fakeproof.corruption_sweep import Sweep, corrupted_logits, mean_auc_interval
from fakeproof.corruptions import LEVELS
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.errors import EvaluationError
from fakeproof.gallery import save_gallery
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import aggregate_videos, attack_success_rate, binary_metrics, roc_points, score_spread
from fakeproof.models import load_checkpoint
from fakeproof.predict import as_logit_array, logits_of, proba
from fakeproof.runtime import frozen_on, resolve_device
from fakeproof.sanity import sanity_flags

log = logging.getLogger(__name__)
ROBUST = "robust"  # the per-face worst case over clean and every attack


def eps_label(eps: float) -> str:
    """'8/255' for multiples of 1/255 (the field's convention), else a short fraction/decimal."""
    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    f = Fraction(eps).limit_denominator(1000)
    return f"{f.numerator}/{f.denominator}" if abs(float(f) - eps) < 1e-9 else f"{eps:.4g}"


def eval_budget(ep: EvalParams) -> Budget:
    """The attack budget of ``eval.preset`` with every explicitly set ``eval.*`` key on top."""
    return resolve_budget(ep.preset, pgd_steps=ep.pgd_steps, pgd_restarts=ep.pgd_restarts,
                          apgd_steps=ep.apgd_steps, apgd_restarts=ep.apgd_restarts,
                          square_queries=ep.square_queries, pgd_alpha=ep.pgd_alpha,
                          videos=ep.attack_videos)


def attack_videos(ep: EvalParams) -> Optional[int]:
    """How many whole test videos the attacks take (``eval.attack_videos``, else the preset's);
    None: every one."""
    n = eval_budget(ep).videos
    if n == 1:
        raise EvaluationError("params.yaml: eval.attack_videos = 1: one video holds one class; "
                              "use 0 (every test video) or at least 2")
    return n or None


def attack_seed(seed: int, attack: str, eps: float, first_key: str) -> int:
    """A seed keyed by what is attacked, not by list positions (63 bits of a SHA-256)."""
    h = hashlib.sha256(f"{seed}|{attack}|{eps_label(eps)}|{first_key}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


# --------------------------------------------------------------------------------------------
# the attacked sample
# --------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """Whole test videos, stratified by class and method: positions in the dataset and rows."""

    index: np.ndarray
    frames: pd.DataFrame  # video_id, label, key (aligned with index)
    strata: dict[str, int]


def choose_sample(frames: pd.DataFrame, n_videos: Optional[int], seed: int) -> Sample:
    """Pick ``n_videos`` whole videos, allocated to strata (label, method) in proportion to their
    size (largest remainders; every stratum gets one when ``n_videos`` allows), seeded."""
    frames = frames.reset_index(drop=True)
    method = frames["method"] if "method" in frames.columns else pd.Series("", index=frames.index)
    videos = (pd.DataFrame({"video_id": frames["video_id"], "label": frames["label"],
                            "method": method.astype(str)})
              .drop_duplicates("video_id").sort_values("video_id", kind="stable"))
    videos["stratum"] = videos["label"].astype(str) + ":" + videos["method"]
    total = len(videos)
    if n_videos is None or n_videos >= total:
        chosen = videos
    else:
        sizes = videos.groupby("stratum").size().sort_index()
        quota = sizes / total * n_videos
        alloc = np.floor(quota).astype(int)
        if n_videos >= len(sizes):
            alloc = alloc.clip(lower=1)
        rest = n_videos - int(alloc.sum())
        order = (quota - np.floor(quota)).sort_values(ascending=False, kind="stable").index
        for s in order:
            if rest <= 0:
                break
            if alloc[s] < sizes[s]:
                alloc[s] += 1
                rest -= 1
        while alloc.sum() > n_videos:  # the clip to 1 overshot: take from the largest strata
            alloc[alloc.idxmax()] -= 1
        rng = np.random.default_rng(seed)
        picks = []
        for s, k in alloc.items():
            ids = videos.loc[videos["stratum"] == s, "video_id"].to_numpy()
            picks.extend(rng.permutation(ids)[:int(k)].tolist())
        chosen = videos[videos["video_id"].isin(picks)]
    keep = frames["video_id"].isin(set(chosen["video_id"]))
    idx = np.flatnonzero(keep.to_numpy())
    strata = chosen.groupby("stratum").size().to_dict()
    return Sample(idx, frames.loc[keep, ["video_id", "label", "key"]].reset_index(drop=True),
                  {str(k): int(v) for k, v in strata.items()})


# --------------------------------------------------------------------------------------------
# metrics with intervals
# --------------------------------------------------------------------------------------------
def level_metrics(frames: pd.DataFrame, logits: np.ndarray, how: str, n_boot: int = 0,
                  seed: int = 0) -> dict[str, dict]:
    """Frame- and video-level metrics for one set of logits (AUC ranked on logits; video score
    aggregated from probabilities), with video-resampled 95 % intervals when ``n_boot`` > 0."""
    probs = proba(logits)
    df = frames[["video_id", "label"]].copy()
    df["prob"] = probs
    video = aggregate_videos(df, how=how)
    y = df["label"].to_numpy()
    frame = binary_metrics(y, probs, scores=logits)
    vid = binary_metrics(video["label"].to_numpy(), video["prob"].to_numpy())
    if n_boot:
        ci = video_bootstrap(y, logits, probs > 0.5, df["video_id"].to_numpy(), n_boot=n_boot,
                             seed=seed)
        frame.update({k: ci[k] for k in ("auc_lo", "auc_hi", "bacc_lo", "bacc_hi")})
        vy, vp = video["label"].to_numpy(), video["prob"].to_numpy()
        ci = video_bootstrap(vy, vp, vp > 0.5, video["video_id"].to_numpy(), n_boot=n_boot,
                             seed=seed)
        vid.update({k: ci[k] for k in ("auc_lo", "auc_hi", "bacc_lo", "bacc_hi")})
    return {"frame": frame, "video": vid}


def worst_logits(labels: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
    """Per face, the most adverse logit among ``candidates``: the lowest for a fake, the highest
    for a real face (AutoAttack's per-sample robust flags, kept as scores)."""
    stack = np.stack(candidates)
    return np.where(np.asarray(labels) == 1, stack.min(axis=0), stack.max(axis=0))


# --------------------------------------------------------------------------------------------
# attacking
# --------------------------------------------------------------------------------------------
def _batches(ds: FaceDataset, idx: np.ndarray, batch_size: int):
    for start in range(0, len(idx), batch_size):
        items = [ds[int(i)] for i in idx[start:start + batch_size]]
        x = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items]).long()
        yield start, x, y


def attacked_logits(model: nn.Module, ds: FaceDataset, sample: Sample, attack: str, eps: float,
                    budget: Budget, ep: EvalParams, keep: np.ndarray = np.zeros(0, dtype=int)
                    ) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Logits of ``model`` on adversarial versions of the sample's faces; the adversarial images
    at positions ``keep`` are returned too (for the gallery)."""
    spec = get_attack(attack)
    wanted = set(int(k) for k in keep)
    out, kept = [], []
    device = next(model.parameters()).device
    for start, x, y in _batches(ds, sample.index, ep.batch_size):
        seed = attack_seed(ep.seed, attack, eps, str(sample.frames["key"].iloc[start]))
        x, y = x.to(device), y.to(device)
        adv = spec.fn(model, x, y, eps=eps, **spec.options(budget, seed))
        with torch.no_grad():
            out.append(as_logit_array(model(adv)))
        kept.extend(adv[i - start].detach() for i in range(start, start + len(x)) if i in wanted)
    return np.concatenate(out), kept


def gallery_positions(n: int, keep: int) -> np.ndarray:
    """Positions in the attacked sample shown in the gallery: spread evenly, so several videos."""
    if keep <= 0 or n == 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(keep, n)).round().astype(int))


def evaluate_model(name: str, model: nn.Module, ds: FaceDataset, ep: EvalParams,
                   reference_spread: Optional[float] = None, keep: int = 0) -> dict[str, Any]:
    """Clean metrics, the eps sweep, per-face robust accuracy and sanity flags for one model."""
    model.eval()
    t0 = time.perf_counter()
    budget = eval_budget(ep)
    frames = ds.frames.reset_index(drop=True)
    clean_logits, labels = logits_of(model, make_loader(ds, ep.batch_size, shuffle=False),
                                     f"{name} clean", next(model.parameters()).device)
    test_clean = level_metrics(frames, clean_logits, ep.video_agg, ep.bootstrap, ep.seed)
    sample = choose_sample(frames, attack_videos(ep), ep.seed)
    sub_labels = sample.frames["label"].to_numpy()
    sub_clean = clean_logits[sample.index]
    sample_clean = level_metrics(sample.frames, sub_clean, ep.video_agg, ep.bootstrap, ep.seed)
    spread = score_spread(clean_logits)
    rows, detail, robust, rocs, gallery = [], {}, {}, {}, {}
    rocs["clean"] = roc_points(sub_labels, proba(sub_clean))
    show = gallery_positions(len(sample.index), keep)
    for eps in tqdm(sorted(ep.eps), desc=f"{name} sweep", leave=False, disable=None):
        lab = eps_label(eps)
        headline = abs(eps - ep.headline_eps) < 1e-12
        per_attack = [sub_clean]
        for attack in ep.attacks:
            want = show if (attack == "pgd" and headline) else np.zeros(0, dtype=int)
            z, kept = attacked_logits(model, ds, sample, attack, eps, budget, ep, want)
            if kept:
                gallery["pgd"] = (kept, proba(z[show]))
            per_attack.append(z)
            m = level_metrics(sample.frames, z, ep.video_agg, ep.bootstrap if headline else 0,
                              ep.seed)
            asr = attack_success_rate(sub_labels, proba(sub_clean), proba(z))
            detail.setdefault(attack, {})[lab] = {**m, "attack_success_rate": asr}
            rows.append(_row(name, attack, eps, m, asr))
            if attack == "pgd" and headline:
                rocs["pgd"] = roc_points(sub_labels, proba(z))
            log.debug("%s %s eps %s: acc %.4f", name, attack, lab, m["frame"]["acc"])
        worst = worst_logits(sub_labels, per_attack)
        m = level_metrics(sample.frames, worst, ep.video_agg, ep.bootstrap if headline else 0,
                          ep.seed)
        robust[lab] = m
        rows.append(_row(name, ROBUST, eps, m, attack_success_rate(sub_labels, proba(sub_clean),
                                                                   proba(worst))))
    table = pd.DataFrame(rows)
    flags = sanity_flags(table, sample_clean["frame"]["acc"], len(sample.index), spread,
                         reference_spread, attacks=list(ep.attacks))
    for k, v in flags.items():
        if isinstance(v, dict) and v.get("fired"):
            log.warning("evaluate: sanity flag %s fired for model %s: %s", k, name, v["evidence"])
    log.info("evaluate %s: %d test faces / %d videos, clean frame AUC %.4f, video AUC %.4f; "
             "sample of %d videos (%d faces) x %d attacks x %d eps; %.1fs", name, len(frames),
             frames["video_id"].nunique(), test_clean["frame"]["auc"], test_clean["video"]["auc"],
             sample.frames["video_id"].nunique(), len(sample.index), len(ep.attacks), len(ep.eps),
             time.perf_counter() - t0)
    return {"test_clean": test_clean, "sample_clean": sample_clean, "attacks": detail,
            "robust": robust, "sanity": flags, "spread": spread, "table": table, "rocs": rocs,
            "gallery": gallery, "sample": sample, "sample_clean_probs": proba(sub_clean),
            "clean_logits": clean_logits,
            "budget": as_dict(budget), "n_frames": len(frames),
            "n_videos": int(frames["video_id"].nunique())}


def _row(model: str, attack: str, eps: float, m: dict, asr: float) -> dict[str, Any]:
    return {"model": model, "attack": attack, "eps": eps, "eps_label": eps_label(eps),
            "acc": m["frame"]["acc"], "bacc": m["frame"]["bacc"], "auc": m["frame"]["auc"],
            "video_acc": m["video"]["acc"], "video_bacc": m["video"]["bacc"],
            "video_auc": m["video"]["auc"], "asr": asr}


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def interval_text(lo: Optional[float], hi: Optional[float]) -> str:
    """A 95 % interval as one short string, ``"0.728-1.000"`` (``"-"`` when there is none): one
    column in ``dvc exp show`` instead of two."""
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return "-"
    return f"{lo:.3f}-{hi:.3f}"


def headline(res: dict[str, Any], ep: EvalParams) -> dict[str, Any]:
    """The numbers a paper's table shows for one model, in five short keys (``dvc exp show``
    after two experiments stays within 200 columns): clean ``auc`` with its 95 % video-resampled
    interval ``auc_ci`` and balanced accuracy ``bacc`` on the whole test split (frame level), and
    ``adv_bacc`` with ``adv_ci``: the per-face robust balanced accuracy at ``eval.headline_eps``
    (worst case over clean and every attack) on the attacked sample. Everything else (video
    level, accuracy, per-attack AUC, corruptions, calibration) is in the detail file."""
    c = res["test_clean"]["frame"]
    out: dict[str, Any] = {"auc": c["auc"], "auc_ci": interval_text(c.get("auc_lo"), c.get("auc_hi")),
                           "bacc": c["bacc"]}
    rob = res["robust"].get(eps_label(ep.headline_eps))
    if rob is not None:
        r = rob["frame"]
        out.update({"adv_bacc": r["bacc"], "adv_ci": interval_text(r.get("bacc_lo"), r.get("bacc_hi"))})
    return out


def _wide(tables: pd.DataFrame, value: str) -> pd.DataFrame:
    t = tables.copy()
    t["series"] = t["model"] + "_" + t["attack"]
    w = t.pivot_table(index="eps", columns="series", values=value, sort=True).reset_index()
    w.columns.name = None
    w.insert(1, "eps_255", (w["eps"] * 255).round(4))
    return w


def _detail(r: dict[str, Any]) -> dict[str, Any]:
    return {"test_clean": r["test_clean"], "sample_clean": r["sample_clean"],
            "attacks": r["attacks"], "robust": r["robust"], "sanity": r["sanity"],
            "spread": r["spread"], "n_test_faces": r["n_frames"], "n_test_videos": r["n_videos"],
            "sample": {"videos": int(r["sample"].frames["video_id"].nunique()),
                       "faces": int(len(r["sample"].index)), "strata": r["sample"].strata}}


# --------------------------------------------------------------------------------------------
# common corruptions and calibration
# --------------------------------------------------------------------------------------------
_CI = ("auc", "auc_lo", "auc_hi", "bacc", "bacc_lo", "bacc_hi")


def corruption_results(frames: pd.DataFrame, sweep: Sweep, results: dict[str, dict],
                       ep: EvalParams) -> tuple[dict, dict, dict[str, pd.DataFrame]]:
    """Metrics per model, corruption and severity (frame ``auc``/``bacc`` and ``video_*``, with
    video-resampled intervals; ``videos`` scored and ``skipped_videos``), the mean over the cells
    of frame AUC with its interval per model, and one plot table per corruption (severity 0: the
    clean test metrics)."""
    frames = frames.reset_index(drop=True)
    n_videos = int(frames["video_id"].nunique())
    out: dict[str, dict] = {m: {} for m in results}
    means: dict[str, dict] = {}
    tables: dict[str, pd.DataFrame] = {}
    for m, r in results.items():
        cells = []
        for c in ep.corruptions:
            for s in ep.corruption_severities:
                z = sweep.logits[(c, s)][m]
                ok = np.isfinite(z)
                skipped = len(sweep.skipped[(c, s)])
                cell: dict[str, Any] = {k: None for k in _CI + tuple(f"video_{k}" for k in _CI)}
                cell.update(videos=n_videos - skipped, skipped_videos=skipped)
                if ok.any() and frames.loc[ok, "label"].nunique() == 2:
                    lm = level_metrics(frames[ok].reset_index(drop=True), z[ok], ep.video_agg,
                                       ep.bootstrap, ep.seed)
                    cell.update({k: lm["frame"][k] for k in _CI})
                    cell.update({f"video_{k}": lm["video"][k] for k in _CI})
                out[m].setdefault(c, {})[str(s)] = cell
                cells.append(z)
        means[m] = mean_auc_interval(frames["label"].to_numpy(), frames["video_id"].to_numpy(),
                                     cells, n_boot=ep.bootstrap, seed=ep.seed)
    for c in ep.corruptions:
        rows = []
        for s in [0, *ep.corruption_severities]:
            row: dict[str, Any] = {"severity": s}
            for m, r in results.items():
                f, v = ((r["test_clean"]["frame"], r["test_clean"]["video"]) if s == 0 else
                        ({k: out[m][c][str(s)][k] for k in ("auc", "bacc")},
                         {k: out[m][c][str(s)][f"video_{k}"] for k in ("auc", "bacc")}))
                row.update({f"{m}_auc": f["auc"], f"{m}_bacc": f["bacc"],
                            f"{m}_video_auc": v["auc"], f"{m}_video_bacc": v["bacc"]})
            rows.append(row)
        tables[c] = pd.DataFrame(rows)
    return out, means, tables


def run_evaluate(params: Params, paths: DataPaths, checkpoints: dict[str, Path], out_headline: Path,
                 out_detail: Path, plots_dir: Path, cross: Optional[DataPaths] = None,
                 out_corruptions: Optional[Path] = None) -> dict[str, Any]:
    """The evaluate stage (see the module docstring)."""
    ep = params.eval
    check_attack_names(list(ep.attacks))
    torch.manual_seed(ep.seed)
    torch.set_num_threads(params.train.threads)
    device = resolve_device(params.train.device)  # attacks craft in float32 on the model's device
    t0 = time.perf_counter()
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    if len(ds) == 0:
        raise EvaluationError(f"{paths.splits_csv}: the test split holds no faces; add data or "
                              "change split.*")
    if len(np.unique(ds.labels)) < 2:
        raise EvaluationError(f"{paths.splits_csv}: the test split holds only one class; AUC and "
                              "balanced accuracy need real and fake test videos")
    results: dict[str, dict] = {}
    models: dict[str, nn.Module] = {}
    temperatures: dict[str, float] = {}
    ref_spread: Optional[float] = None
    for name, path in checkpoints.items():
        model, meta = load_checkpoint(path)
        model = models[name] = frozen_on(model, device)
        temperatures[name] = checkpoint_temperature(meta, ep.calibrate)
        results[name] = evaluate_model(name, model, ds, ep, ref_spread, keep=ep.gallery)
        ref_spread = ref_spread if ref_spread is not None else results[name]["spread"]["logit_std"]

    cross_out: dict[str, Any] = {}
    if cross is not None:
        cds = FaceDataset(cross.store, cross.faces_csv, cross.splits_csv, "test")
        if len(cds) == 0 or len(np.unique(cds.labels)) < 2:
            raise EvaluationError(f"eval.cross: {cross.splits_csv}: its test split needs real and "
                                  "fake faces")
        for name, path in checkpoints.items():
            model = frozen_on(load_checkpoint(path)[0], device)
            r = evaluate_model(f"{name}@cross", model, cds, ep)
            cross_out[name] = {"headline": headline(r, ep), **_detail(r)}

    frames = ds.frames.reset_index(drop=True)
    corr: dict[str, dict] = {name: {} for name in results}
    corr_means: dict[str, dict] = {}
    corr_tables: dict[str, pd.DataFrame] = {}
    skipped: dict[str, dict] = {}
    if ep.corruptions:
        sweep = corrupted_logits(models, ds, list(ep.corruptions), list(ep.corruption_severities),
                                 seed=ep.seed, batch_size=ep.batch_size)
        corr, corr_means, corr_tables = corruption_results(frames, sweep, results, ep)
        skipped = {c: {str(s): len(sweep.skipped[(c, s)]) for s in ep.corruption_severities}
                   for c in ep.corruptions}
    calib = {name: calibration_report(r["clean_logits"], ds.labels, temperatures[name])
             for name, r in results.items()}

    first = results[next(iter(results))]
    head: dict[str, Any] = {"eps": eps_label(ep.headline_eps)}
    head.update({name: headline(r, ep) for name, r in results.items()})
    head["sanity_ok"] = all(r["sanity"]["ok"] for r in results.values())
    if cross_out:
        head["cross"] = {n: c["headline"] for n, c in cross_out.items()}
    detail: dict[str, Any] = {
        "models": {name: {**_detail(r),
                          **{k: calib[name][k] for k in ("ece", "ece_uncalibrated", "brier",
                                                         "temperature")},
                          "calibration": calib[name],
                          "corruptions": {"mean_corruption_auc": corr_means.get(name),
                                          "skipped_videos": skipped}}
                   for name, r in results.items()},
        "corruption_levels": {c: list(LEVELS[c]) for c in ep.corruptions},
        "test_faces": first["n_frames"], "test_videos": first["n_videos"],
        "params": {k: v for k, v in as_dict(ep).items() if k != "cross"},
        "budget": first["budget"],
    }
    if cross_out:
        detail["cross"] = cross_out
    write_json(out_detail, detail)
    write_json(out_headline, head, digits=4)
    if out_corruptions is not None:
        write_json(out_corruptions, corr)

    plots_dir = Path(plots_dir)
    tables = pd.concat([r["table"] for r in results.values()], ignore_index=True)
    write_csv(plots_dir / "robust_acc.csv", _wide(tables, "acc"))
    write_csv(plots_dir / "robust_bacc.csv", _wide(tables, "bacc"))
    write_csv(plots_dir / "sweep.csv", tables)
    for name, r in results.items():
        for kind, roc in r["rocs"].items():
            write_csv(plots_dir / "roc" / f"{name}_{kind}.csv", roc)
        write_csv(plots_dir / "reliability" / f"{name}.csv",
                  reliability_points(r["clean_logits"], ds.labels, temperatures[name]))
    for c, table in corr_tables.items():
        write_csv(plots_dir / "corruptions" / f"{c}.csv", table)
    save_gallery(plots_dir / "gallery.png", ds, results, ep, gallery_positions, eps_label)
    log.info("evaluate: %d models, %d attacks x %d eps; sanity %s; %.1fs", len(results),
             len(ep.attacks), len(ep.eps), "ok" if head["sanity_ok"] else "FLAGGED",
             time.perf_counter() - t0)
    return head
