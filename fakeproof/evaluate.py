"""The evaluate stage: clean and adversarial metrics over an epsilon sweep, with intervals and
sanity flags, every number at the boundary each checkpoint ships with. The test split is read
here and nowhere else.

For every model (``clean``, ``robust`` and any ``--checkpoint NAME=PATH``), behind its deployed
boundary (:class:`fakeproof.boundary.Deployed`: the Platt calibration and val threshold of its
recipe; the attacks aim at it and every balanced accuracy is taken at it):

1. **Whole test split, clean**: frame- and video-level metrics (video score: the aggregate of
   calibrated frame probabilities, ``eval.video_agg``, against the threshold), AUC ranked on
   logits, each with a 95 % BCa interval resampling whole videos within label x method strata
   (:mod:`fakeproof.intervals`); "not estimable" below ``eval.min_videos`` videos per class.
2. **Attacked sample**: whole test videos, stratified by class and manipulation method
   (``eval.attack_videos``; null: the preset's). Every attack of ``eval.attacks`` runs at every
   eps of ``eval.eps`` with the budget of ``eval.preset`` (explicit keys override it), through
   the one attack-scoring function (:func:`fakeproof.under_attack.score_under_attack`), every
   attack for its whole budget. Video-level attacked numbers are aggregates of frame-level
   attacks (``video_of_frame_attacks``).
3. **Robust accuracy per face** (AutoAttack's definition): a face counts as robust at an eps only
   when it is classified correctly clean and under every attack; ``robust`` rows use, per face,
   the most adverse logit over clean and all attacks.
4. **Paired differences**, never overlapping intervals: each model's clean-to-attacked drop at
   ``eval.headline_eps`` (``clean_to_attacked``) and every pair of models (``pairs``), with paired
   bootstrap intervals and DeLong's test.
5. **Sanity flags** (:mod:`fakeproof.sanity`), including ``one_class``, the unbounded check (PGD
   at 64/255 must reach about 0 robust accuracy) and ``selection_failed`` from training.
6. **Common corruptions** (:mod:`fakeproof.corruption_sweep`): every test video under every
   corruption of ``eval.corruptions`` at every ``eval.corruption_severities``, frame and video
   AUC and balanced accuracy with intervals, and ``mean_corruption_auc`` with its interval (in
   the detail file, under ``models.<name>.corruptions``).
7. **Calibration** (:mod:`fakeproof.calibration`): ECE (15 bins, with an interval), Brier score
   and log loss of the Platt-calibrated P(fake) on the whole test split, beside the uncalibrated.

Outputs (paths from dvc.yaml): the headline metrics file (small, for ``dvc metrics diff`` and
``dvc exp show``: ``eps``, ``sanity_ok`` and per model the five keys of :func:`headline`), the
detail JSON, the corruption JSON, plot tables, a PNG gallery of adversarial examples, and
``scores.csv``: every attacked face's decision logit clean and at the headline eps per model
(:func:`attacked_scores`), which ``fakeproof leaderboard`` pairs, and ``logits.csv``
(:mod:`fakeproof.face_scores`: every model on every model's PGD examples; the ensemble reads it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from fakeproof.attacks import Budget, check_attack_names, resolve_budget
from fakeproof.bootstrap import ece_interval
from fakeproof.boundary import Boundary, Deployed, class_recalls
from fakeproof.calibration import calibration_report, reliability_points
from fakeproof.config import EvalParams, Params, as_dict
from fakeproof.corruption_sweep import Sweep, corrupted_logits, mean_auc_interval
from fakeproof.corruptions import LEVELS
from fakeproof.data import DataPaths, FaceDataset, make_loader
from fakeproof.errors import EvaluationError
from fakeproof.gallery import gallery_positions, save_gallery
from fakeproof.intervals import interval_text, level_metrics, paired_difference
from fakeproof.io import write_csv, write_json
from fakeproof.metrics import attack_success_rate, roc_points, score_spread
from fakeproof.models import load_checkpoint
from fakeproof.models.fold import fold_batchnorm
from fakeproof.predict import logits_of, proba
from fakeproof.recipe import deployed_boundary
from fakeproof.runtime import frozen_on, resolve_device
from fakeproof.sampling import Sample, choose_sample, video_strata
from fakeproof.sanity import UNBOUNDED_EPS, sanity_flags
from fakeproof.face_scores import TRANSFER_ATTACK, Crafted, attacked_scores, logits_frame
from fakeproof.under_attack import dataset_batches, eps_label, score_under_attack

log = logging.getLogger(__name__)
ROBUST = "robust"  # the per-face worst case over clean and every attack


def eval_budget(ep: EvalParams) -> Budget:
    """The attack budget of ``eval.preset`` with every explicitly set ``eval.*`` key on top."""
    return resolve_budget(ep.preset, pgd_steps=ep.pgd_steps, pgd_restarts=ep.pgd_restarts,
                          apgd_steps=ep.apgd_steps, apgd_restarts=ep.apgd_restarts,
                          square_queries=ep.square_queries, pgd_alpha=ep.pgd_alpha,
                          videos=ep.attack_videos)


def attack_sample(frames: pd.DataFrame, ep: EvalParams) -> Sample:
    """The attacked sample of a test split (``frames`` in dataset order): whole videos,
    stratified, ``eval.attack_videos`` of them (:func:`attack_videos`), seeded by ``eval.seed``;
    every stage and command that attacks the test split attacks these faces."""
    return choose_sample(frames, attack_videos(ep), ep.seed)


def attack_videos(ep: EvalParams) -> Optional[int]:
    """How many whole test videos the attacks take (``eval.attack_videos``, else the preset's);
    None: every one."""
    n = eval_budget(ep).videos
    if n == 1:
        raise EvaluationError("params.yaml: eval.attack_videos = 1: one video holds one class; "
                              "use 0 (every test video) or at least 2")
    return n or None


# --------------------------------------------------------------------------------------------
# one model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scored:
    """What a paired comparison of two models needs (:func:`model_pairs`): clean logits on the
    whole test split, the attacked sample and the per-face worst logits per eps label."""

    clean_logits: np.ndarray
    sample: Sample
    worst: dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelResult(Scored):
    """One model's evaluation (:func:`evaluate_model`), every number at its deployed boundary."""

    boundary: Boundary
    test_clean: dict[str, Any]  # level_metrics on the whole test split
    sample_clean: dict[str, Any]  # level_metrics on the attacked sample
    attacks: dict[str, dict]  # attack -> eps label -> metrics and attack_success_rate
    robust: dict[str, dict]  # eps label -> per-face worst-case metrics
    clean_to_attacked: dict[str, Any]
    unbounded: dict[str, Any]
    sanity: dict[str, Any]
    spread: dict[str, Any]
    table: pd.DataFrame  # one row per attack (and robust) and eps: the plot tables
    rocs: dict[str, pd.DataFrame]
    gallery: dict[str, tuple]  # "pgd" -> (adversarial images kept, their P(fake))
    sample_clean_probs: np.ndarray
    budget: dict[str, Any]
    n_frames: int
    n_videos: int
    crafted: Optional[Crafted] = None  # PGD at the headline eps, scored by ``also_score``

    def detail(self) -> dict[str, Any]:
        """The per-model part of the detail file."""
        return {"boundary": self.boundary.to_recipe(), "test_clean": self.test_clean,
                "sample_clean": self.sample_clean, "attacks": self.attacks, "robust": self.robust,
                "clean_to_attacked": self.clean_to_attacked, "unbounded": self.unbounded,
                "sanity": self.sanity, "spread": self.spread, "n_test_faces": self.n_frames,
                "n_test_videos": self.n_videos,
                "sample": {"videos": int(self.sample.frames["video_id"].nunique()),
                           "faces": int(len(self.sample.index)), "strata": self.sample.strata}}


def evaluate_model(name: str, model: Deployed, ds: FaceDataset, ep: EvalParams,
                   reference_spread: Optional[float] = None, keep: int = 0,
                   selection: Optional[dict] = None,
                   also_score: Optional[Mapping[str, Deployed]] = None) -> ModelResult:
    """Clean metrics, the eps sweep, per-face robust accuracy and sanity flags for one model
    behind its deployed boundary (every number at that boundary; attacks aim at it).
    ``also_score``: other models that score its PGD examples at the headline eps (transfer)."""
    model.eval()
    t0 = time.perf_counter()
    budget = eval_budget(ep)
    boundary = model.boundary
    frames = ds.frames.reset_index(drop=True)
    device = next(model.parameters()).device
    clean_logits, labels = logits_of(model, make_loader(ds, ep.batch_size, shuffle=False),
                                     f"{name} clean", device)
    test_clean = level_metrics(frames, clean_logits, boundary, ep.video_agg, ep.bootstrap,
                               ep.seed, ep.min_videos)
    sample = attack_sample(frames, ep)
    sub_labels = sample.frames["label"].to_numpy()
    sub_clean = clean_logits[sample.index]
    sample_clean = level_metrics(sample.frames, sub_clean, boundary, ep.video_agg, ep.bootstrap,
                                 ep.seed, ep.min_videos)
    keys = sample.frames["key"].tolist()
    rows, detail, robust, worst_at, rocs, gallery, crafted = [], {}, {}, {}, {}, {}, None
    rocs["clean"] = roc_points(sub_labels, proba(sub_clean))
    show = gallery_positions(len(sample.index), keep)
    for eps in tqdm(sorted(ep.eps), desc=f"{name} sweep", leave=False, disable=None):
        lab = eps_label(eps)
        headline_eps = abs(eps - ep.headline_eps) < 1e-12
        n_boot = ep.bootstrap if headline_eps else 0
        res = score_under_attack(model, dataset_batches(ds, sample.index, ep.batch_size, keys),
                                 list(ep.attacks), eps, budget, ep.seed,
                                 keep=show if headline_eps else (),
                                 also_score=also_score if headline_eps else None)
        if headline_eps and TRANSFER_ATTACK in res.by_attack:
            crafted = Crafted(res.by_attack[TRANSFER_ATTACK],
                              {o: t[TRANSFER_ATTACK] for o, t in res.transfer.items()})
        if res.kept.get("pgd"):
            gallery["pgd"] = (res.kept["pgd"], proba(res.by_attack["pgd"][show]))
        for attack, z in res.by_attack.items():
            m = _attacked_metrics(sample.frames, z, boundary, ep, n_boot)
            asr = attack_success_rate(sub_labels, proba(sub_clean), proba(z))
            detail.setdefault(attack, {})[lab] = {**m, "attack_success_rate": asr}
            rows.append(_row(name, attack, eps, m, asr))
            if attack == "pgd" and headline_eps:
                rocs["pgd"] = roc_points(sub_labels, proba(z))
        m = _attacked_metrics(sample.frames, res.worst, boundary, ep, n_boot)
        robust[lab] = m
        worst_at[lab] = res.worst
        rows.append(_row(name, ROBUST, eps, m, attack_success_rate(sub_labels, proba(sub_clean),
                                                                   proba(res.worst))))
    unbounded = score_under_attack(model, dataset_batches(ds, sample.index, ep.batch_size, keys),
                                   ["pgd"], UNBOUNDED_EPS, budget, ep.seed)
    unbounded_acc = float(np.mean((unbounded.worst > 0) == (sub_labels == 1)))
    drop = {}
    head_lab = eps_label(ep.headline_eps)
    if head_lab in worst_at:
        drop = paired_difference(sample.frames, sub_clean, worst_at[head_lab],
                                 n_boot=ep.bootstrap, seed=ep.seed, min_videos=ep.min_videos)
    spread = score_spread(clean_logits)
    table = pd.DataFrame(rows)
    flags = sanity_flags(table, sample_clean["frame"]["acc"], len(sample.index), spread,
                         reference_spread, attacks=list(ep.attacks),
                         recalls=class_recalls(frames["label"].to_numpy(), clean_logits),
                         unbounded_acc=unbounded_acc, selection=selection)
    for k, v in flags.items():
        if isinstance(v, dict) and v.get("fired"):
            log.warning("evaluate: sanity flag %s fired for model %s: %s", k, name, v["evidence"])
    log.info("evaluate %s: %d test faces / %d videos, clean frame AUC %.4f, video AUC %.4f; "
             "sample of %d videos (%d faces) x %d attacks x %d eps; %.1fs", name, len(frames),
             frames["video_id"].nunique(), test_clean["frame"]["auc"], test_clean["video"]["auc"],
             sample.frames["video_id"].nunique(), len(sample.index), len(ep.attacks), len(ep.eps),
             time.perf_counter() - t0)
    return ModelResult(
        clean_logits=clean_logits, sample=sample, worst=worst_at, boundary=boundary,
        test_clean=test_clean, sample_clean=sample_clean, attacks=detail, robust=robust,
        clean_to_attacked=drop, unbounded={"eps": eps_label(UNBOUNDED_EPS), "robust_acc": unbounded_acc},
        sanity=flags, spread=spread, table=table, rocs=rocs, gallery=gallery,
        sample_clean_probs=proba(sub_clean), budget=as_dict(budget), n_frames=len(frames),
        n_videos=int(frames["video_id"].nunique()), crafted=crafted)


def _attacked_metrics(frames: pd.DataFrame, z: np.ndarray, boundary: Boundary, ep: EvalParams,
                      n_boot: int) -> dict[str, dict]:
    """:func:`level_metrics` of attacked logits; the video level is named for what it is: the
    aggregate of frame-level attacks (no attack aimed at the video score)."""
    m = level_metrics(frames, z, boundary, ep.video_agg, n_boot, ep.seed, ep.min_videos)
    return {"frame": m["frame"], "video_of_frame_attacks": m["video"]}


def _row(model: str, attack: str, eps: float, m: dict, asr: float) -> dict[str, Any]:
    v = m["video_of_frame_attacks"]
    return {"model": model, "attack": attack, "eps": eps, "eps_label": eps_label(eps),
            "acc": m["frame"]["acc"], "bacc": m["frame"]["bacc"], "auc": m["frame"]["auc"],
            "video_acc": v["acc"], "video_bacc": v["bacc"], "video_auc": v["auc"], "asr": asr}


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------
def headline(res: ModelResult, ep: EvalParams) -> dict[str, Any]:
    """The numbers a paper's table shows for one model, in five short keys (``dvc exp show``
    after two experiments stays within 200 columns): clean ``auc`` with its 95 % video-resampled
    interval ``auc_ci`` and balanced accuracy ``bacc`` on the whole test split (frame level), and
    ``adv_bacc`` with ``adv_ci``: the per-face robust balanced accuracy at ``eval.headline_eps``
    (worst case over clean and every attack) on the attacked sample. Balanced accuracies are at
    the checkpoint's deployed boundary (Platt calibration and val threshold), which the attacks
    aim at; an interval is ``"n/e"`` (not estimable) below ``eval.min_videos`` videos per class.
    Everything else (video level, accuracy, per-attack AUC, paired differences, corruptions,
    calibration) is in the detail file."""
    c = res.test_clean["frame"]
    out: dict[str, Any] = {"auc": c["auc"], "auc_ci": interval_text(c.get("auc_lo"), c.get("auc_hi")),
                           "bacc": c["bacc"]}
    rob = res.robust.get(eps_label(ep.headline_eps))
    if rob is not None:
        r = rob["frame"]
        out.update({"adv_bacc": r["bacc"], "adv_ci": interval_text(r.get("bacc_lo"), r.get("bacc_hi"))})
    return out


def wide_by_eps(tables: pd.DataFrame, value: str) -> pd.DataFrame:
    """One row per eps (and ``eps_255``), one column ``<model>_<attack>`` of ``value``: a plot
    table of the sweep rows."""
    t = tables.copy()
    t["series"] = t["model"] + "_" + t["attack"]
    w = t.pivot_table(index="eps", columns="series", values=value, sort=True).reset_index()
    w.columns.name = None
    w.insert(1, "eps_255", (w["eps"] * 255).round(4))
    return w


# --------------------------------------------------------------------------------------------
# common corruptions and calibration
# --------------------------------------------------------------------------------------------
_CI = ("auc", "auc_lo", "auc_hi", "bacc", "bacc_lo", "bacc_hi")


def corruption_results(frames: pd.DataFrame, sweep: Sweep, results: Mapping[str, ModelResult],
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
                    lm = level_metrics(frames[ok].reset_index(drop=True), z[ok], r.boundary,
                                       ep.video_agg, ep.bootstrap, ep.seed, ep.min_videos)
                    cell.update({k: lm["frame"][k] for k in _CI})
                    cell.update({f"video_{k}": lm["video"][k] for k in _CI})
                out[m].setdefault(c, {})[str(s)] = cell
                cells.append(z)
        means[m] = mean_auc_interval(frames["label"].to_numpy(), frames["video_id"].to_numpy(),
                                     cells, n_boot=ep.bootstrap, seed=ep.seed,
                                     strata=video_strata(frames))
    for c in ep.corruptions:
        rows = []
        for s in [0, *ep.corruption_severities]:
            row: dict[str, Any] = {"severity": s}
            for m, r in results.items():
                f, v = ((r.test_clean["frame"], r.test_clean["video"]) if s == 0 else
                        ({k: out[m][c][str(s)][k] for k in ("auc", "bacc")},
                         {k: out[m][c][str(s)][f"video_{k}"] for k in ("auc", "bacc")}))
                row.update({f"{m}_auc": f["auc"], f"{m}_bacc": f["bacc"],
                            f"{m}_video_auc": v["auc"], f"{m}_video_bacc": v["bacc"]})
            rows.append(row)
        tables[c] = pd.DataFrame(rows)
    return out, means, tables


def calibration_summary(r: ModelResult, frames: pd.DataFrame, ep: EvalParams
                        ) -> dict[str, Any]:
    """ECE (with a stratified video-resampled interval), Brier score and log loss of the
    checkpoint's Platt-calibrated P(fake) on the whole test split, beside the uncalibrated
    ``sigmoid(z)``."""
    b = r.boundary
    calibrated = r.clean_logits + b.offset  # a z + b
    raw = (calibrated - b.b) / b.a
    labels = frames["label"].to_numpy()
    out = calibration_report(raw, labels, b.a, b.b)
    ci = ece_interval(proba(calibrated), labels, frames["video_id"].to_numpy(),
                      strata=video_strata(frames), n_boot=ep.bootstrap, seed=ep.seed,
                      min_videos=ep.min_videos)
    out["ece_ci"] = interval_text(ci.get("ece_lo"), ci.get("ece_hi"))
    out["ece_interval"] = ci
    return out


def model_pairs(results: Mapping[str, Scored], frames: pd.DataFrame, ep: EvalParams
                ) -> dict[str, Any]:
    """Every pair of models, B minus A on the same faces: clean on the whole test split and the
    per-face worst case at ``eval.headline_eps`` on the attacked sample (paired bootstrap
    intervals and DeLong; :func:`fakeproof.intervals.paired_difference`)."""
    names = list(results)
    lab = eps_label(ep.headline_eps)
    out: dict[str, Any] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = results[a], results[b]
            pair = {"clean": paired_difference(frames, ra.clean_logits, rb.clean_logits,
                                               n_boot=ep.bootstrap, seed=ep.seed,
                                               min_videos=ep.min_videos)}
            if lab in ra.worst and lab in rb.worst:
                pair[f"robust@{lab}"] = paired_difference(
                    ra.sample.frames, ra.worst[lab], rb.worst[lab], n_boot=ep.bootstrap,
                    seed=ep.seed, min_videos=ep.min_videos)
            out[f"{b}-{a}"] = pair
    return out


def _write_plots(plots_dir: Path, results: Mapping[str, ModelResult], ds: FaceDataset,
                 corr_tables: Mapping[str, pd.DataFrame], ep: EvalParams) -> None:
    """The plot tables (sweep, ROC, reliability, corruptions) and the gallery."""
    tables = pd.concat([r.table for r in results.values()], ignore_index=True)
    write_csv(plots_dir / "robust_acc.csv", wide_by_eps(tables, "acc"))
    write_csv(plots_dir / "robust_bacc.csv", wide_by_eps(tables, "bacc"))
    write_csv(plots_dir / "sweep.csv", tables)
    write_csv(plots_dir / "scores.csv", attacked_scores(results, ep.headline_eps))
    for name, r in results.items():
        for kind, roc in r.rocs.items():
            write_csv(plots_dir / "roc" / f"{name}_{kind}.csv", roc)
        write_csv(plots_dir / "reliability" / f"{name}.csv",
                  reliability_points(r.clean_logits + r.boundary.offset, ds.labels))
    for c, table in corr_tables.items():
        write_csv(plots_dir / "corruptions" / f"{c}.csv", table)
    save_gallery(plots_dir / "gallery.png", ds, results, ep)


def _test_split(paths: DataPaths) -> FaceDataset:
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    if len(ds) == 0:
        raise EvaluationError(f"{paths.splits_csv}: the test split holds no faces; add data or "
                              "change split.*")
    if len(np.unique(ds.labels)) < 2:
        raise EvaluationError(f"{paths.splits_csv}: the test split holds only one class; AUC and "
                              "balanced accuracy need real and fake test videos")
    return ds


def _load(checkpoints: Mapping[str, Path], device: torch.device
          ) -> tuple[dict[str, Deployed], dict[str, dict]]:
    """Each checkpoint behind its deployed boundary, BatchNorm folded (scored and attacked here,
    never saved), and its metadata."""
    models, metas = {}, {}
    for name, path in checkpoints.items():
        model, metas[name] = load_checkpoint(path)
        models[name] = Deployed(fold_batchnorm(frozen_on(model, device)),
                                deployed_boundary(metas[name]))
    return models, metas


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
    ds = _test_split(paths)
    results: dict[str, ModelResult] = {}
    models, metas = _load(checkpoints, device)
    ref_spread: Optional[float] = None
    for name, model in models.items():
        results[name] = evaluate_model(name, model, ds, ep, ref_spread, keep=ep.gallery,
                                       selection=metas[name].get("selection"),
                                       also_score={o: m for o, m in models.items() if o != name})
        ref_spread = ref_spread if ref_spread is not None else results[name].spread["logit_std"]

    cross_out: dict[str, Any] = {}
    if cross is not None:
        cds = FaceDataset(cross.store, cross.faces_csv, cross.splits_csv, "test")
        if len(cds) == 0 or len(np.unique(cds.labels)) < 2:
            raise EvaluationError(f"eval.cross: {cross.splits_csv}: its test split needs real and "
                                  "fake faces")
        for name in checkpoints:
            r = evaluate_model(f"{name}@cross", models[name], cds, ep)
            cross_out[name] = {"headline": headline(r, ep), **r.detail()}

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
    calib = {name: calibration_summary(r, frames, ep) for name, r in results.items()}
    pairs = model_pairs(results, frames, ep)

    first = results[next(iter(results))]
    head: dict[str, Any] = {"eps": eps_label(ep.headline_eps)}
    head.update({name: headline(r, ep) for name, r in results.items()})
    head["sanity_ok"] = all(r.sanity["ok"] for r in results.values())
    if cross_out:
        head["cross"] = {n: c["headline"] for n, c in cross_out.items()}
    detail: dict[str, Any] = {
        "models": {name: {**r.detail(),
                          **{k: calib[name][k] for k in ("ece", "ece_ci", "ece_uncalibrated",
                                                         "brier", "platt_a", "platt_b")},
                          "calibration": calib[name],
                          "corruptions": {"mean_corruption_auc": corr_means.get(name),
                                          "skipped_videos": skipped}}
                   for name, r in results.items()},
        "corruption_levels": {c: list(LEVELS[c]) for c in ep.corruptions},
        "test_faces": first.n_frames, "test_videos": first.n_videos,
        "params": {k: v for k, v in as_dict(ep).items() if k != "cross"},
        "budget": first.budget,
    }
    if pairs:
        detail["pairs"] = pairs
    if cross_out:
        detail["cross"] = cross_out
    write_json(out_detail, detail)
    write_json(out_headline, head, digits=4)
    if out_corruptions is not None:
        write_json(out_corruptions, corr)

    _write_plots(Path(plots_dir), results, ds, corr_tables, ep)
    if all(r.crafted is not None for r in results.values()):
        write_csv(Path(plots_dir) / "logits.csv", logits_frame(
            frames, first.sample.frames, results, eps_label(ep.headline_eps), checkpoints))
    log.info("evaluate: %d models, %d attacks x %d eps; sanity %s; %.1fs", len(results),
             len(ep.attacks), len(ep.eps), "ok" if head["sanity_ok"] else "FLAGGED",
             time.perf_counter() - t0)
    return head
