"""The evaluate stage: clean and adversarial metrics over an epsilon sweep, with sanity flags.

For every model (``models/clean.pt``, ``models/robust.pt`` and any checkpoint given with
``--checkpoint NAME=PATH``) on the **test** split:

1. clean frame-level and video-level metrics on every test face (video score: mean of frame
   probabilities by default, ``eval.video_agg``);
2. for each attack of ``eval.attacks`` and each eps of ``eval.eps`` (pixel units, fractions
   allowed, 0 included), the same metrics plus the attack success rate, on a fixed subset of whole
   test videos capped at ``eval.max_samples`` faces (so video-level metrics stay meaningful and the
   cost is bounded);
3. sanity flags (Carlini et al., "On Evaluating Adversarial Robustness", 2019): accuracy at eps 0
   equals clean accuracy; accuracy does not rise with eps; PGD is at least as strong as FGSM; a
   gradient-free attack (Square) that beats every gradient attack flags likely gradient masking.
   A flag that fires logs a warning.

Outputs: ``metrics/eval.json`` (headline numbers at the top level for ``dvc metrics diff``, the full
table under ``detail``), plot tables under ``metrics/plots/`` (accuracy and AUC vs eps per model and
attack, ROC curves clean and at ``eval.roc_eps``) and a PNG gallery of adversarial examples.
"""

from __future__ import annotations

import logging
import math
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

from fakeproof.attacks import get_attack
from fakeproof.config import EvalParams, Params, as_dict
from fakeproof.data import FaceDataset, make_loader
from fakeproof.io import atomic_path, write_csv, write_json
from fakeproof.metrics import aggregate_videos, attack_success_rate, binary_metrics, roc_points
from fakeproof.models import load_checkpoint
from fakeproof.train import DataPaths, predict

log = logging.getLogger(__name__)
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd")
HEADLINE_KEYS = ("auc", "bacc", "acc", "ap", "eer")


def eps_label(eps: float) -> str:
    """'8/255' for multiples of 1/255 (the field's convention), else a short decimal."""
    if eps == 0:
        return "0"
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    f = Fraction(eps).limit_denominator(1000)
    return f"{f.numerator}/{f.denominator}" if abs(float(f) - eps) < 1e-9 else f"{eps:.4g}"


def attack_options(name: str, ep: EvalParams, seed: int, eps: float) -> dict[str, Any]:
    """Per-attack options from params ``eval.*`` (PGD's step defaults to 2.5 * eps / steps)."""
    if name == "fgsm":
        return {}
    if name == "pgd":
        alpha = ep.pgd_alpha if ep.pgd_alpha is not None else 2.5 * eps / ep.pgd_steps
        return {"alpha": alpha, "steps": ep.pgd_steps, "restarts": ep.pgd_restarts,
                "random_start": True, "seed": seed}
    if name == "apgd":
        return {"steps": ep.apgd_steps, "seed": seed}
    if name == "square":
        return {"queries": ep.square_queries, "seed": seed}
    raise ValueError(f"eval.attacks: unknown attack {name!r}")


@dataclass
class Sample:
    """The attacked subset: whole test videos, capped at eval.max_samples faces."""

    index: np.ndarray          # dataset positions
    frames: pd.DataFrame       # video_id, label rows aligned with index


def choose_subset(ds: FaceDataset, max_samples: int, seed: int) -> Sample:
    frames = ds.frames.reset_index(drop=True)
    videos = frames["video_id"].drop_duplicates().to_numpy()
    order = np.random.default_rng(seed).permutation(len(videos))
    chosen: list[int] = []
    by_video = frames.groupby("video_id", sort=False).indices
    for i in order:
        rows = list(by_video[videos[i]])
        if chosen and len(chosen) + len(rows) > max_samples:
            continue
        chosen.extend(rows[:max_samples])
        if len(chosen) >= max_samples:
            break
    idx = np.array(sorted(chosen), dtype=int)
    return Sample(idx, frames.iloc[idx][["video_id", "label"]].reset_index(drop=True))


def _batches(ds: FaceDataset, idx: np.ndarray, batch_size: int):
    for start in range(0, len(idx), batch_size):
        items = [ds[int(i)] for i in idx[start:start + batch_size]]
        x = torch.stack([it[0] for it in items])
        y = torch.stack([torch.as_tensor(it[1]) for it in items]).long()
        yield x, y


def attacked_probs(model: nn.Module, ds: FaceDataset, idx: np.ndarray, attack: str, eps: float,
                   ep: EvalParams, seed: int, keep: int = 0
                   ) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Fake probabilities of ``model`` on adversarial versions of ``ds[idx]``; the first ``keep``
    adversarial images are returned too (for the gallery)."""
    fn = get_attack(attack)
    opts = attack_options(attack, ep, seed, eps)
    wanted = set(gallery_positions(len(idx), keep).tolist())
    probs, kept = [], []
    for start, (x, y) in zip(range(0, len(idx), ep.batch_size), _batches(ds, idx, ep.batch_size)):
        adv = fn(model, x, y, eps=eps, **opts)
        with torch.no_grad():
            probs.append(torch.sigmoid(model(adv).reshape(-1)).numpy())
        kept.extend(adv[i - start] for i in range(start, start + len(x)) if i in wanted)
    return np.concatenate(probs), kept


def gallery_positions(n: int, keep: int) -> np.ndarray:
    """Positions in the attacked subset shown in the gallery: spread evenly, so several videos."""
    if keep <= 0 or n == 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(keep, n)).round().astype(int))


def level_metrics(frames: pd.DataFrame, probs: np.ndarray, how: str) -> dict[str, dict]:
    """Frame-level and video-level metrics for one set of probabilities."""
    df = frames[["video_id", "label"]].copy()
    df["prob"] = probs
    video = aggregate_videos(df, how=how)
    return {"frame": binary_metrics(df["label"].to_numpy(), probs),
            "video": binary_metrics(video["label"].to_numpy(), video["prob"].to_numpy())}


def sanity_flags(table: pd.DataFrame, clean_acc: float, n: int) -> dict[str, Any]:
    """Flags for one model from its sweep table (columns attack, eps, acc).

    Tolerance: one sample (1/n) for the monotonicity and FGSM-vs-PGD checks, since random starts
    make single flips possible; none for eps 0, which must reproduce clean accuracy exactly.
    """
    tol = 1.0 / max(n, 1) + 1e-9
    zero = table[table["eps"] == 0]
    eps0_ok = bool(np.all(np.abs(zero["acc"].to_numpy() - clean_acc) < 1e-9))
    non_monotone: list[str] = []
    for attack, t in table.groupby("attack"):
        acc = t.sort_values("eps")["acc"].to_numpy()
        if np.any(np.diff(acc) > tol):
            non_monotone.append(str(attack))
    pgd_weaker: list[str] = []
    if {"fgsm", "pgd"} <= set(table["attack"]):
        m = table.pivot_table(index="eps", columns="attack", values="acc")
        pgd_weaker = [eps_label(e) for e, r in m.iterrows() if r["pgd"] > r["fgsm"] + tol]
    masking: list[str] = []
    grads = [a for a in GRADIENT_ATTACKS if a in set(table["attack"])]
    if "square" in set(table["attack"]) and grads:
        m = table.pivot_table(index="eps", columns="attack", values="acc")
        masking = [eps_label(e) for e, r in m.iterrows()
                   if e > 0 and r["square"] < min(r[a] for a in grads) - tol]
    return {
        "eps0_equals_clean": eps0_ok,
        "monotone_in_eps": not non_monotone,
        "non_monotone_attacks": non_monotone,
        "pgd_at_least_fgsm": not pgd_weaker,
        "pgd_weaker_at_eps": pgd_weaker,
        "gradient_masking_suspected": bool(masking),
        "square_beats_gradient_at_eps": masking,
        "ok": eps0_ok and not non_monotone and not pgd_weaker and not masking,
    }


def evaluate_model(name: str, model: nn.Module, ds: FaceDataset, ep: EvalParams,
                   keep: int = 0) -> dict[str, Any]:
    """Clean metrics, the eps sweep and sanity flags for one model on one test set."""
    model.eval()
    t0 = time.perf_counter()
    clean_probs, labels = predict(model, make_loader(ds, ep.batch_size, shuffle=False), f"{name} clean")
    frames = ds.frames.reset_index(drop=True)
    clean = level_metrics(frames, clean_probs, ep.video_agg)
    sub = choose_subset(ds, ep.max_samples, ep.seed)
    sub_clean = clean_probs[sub.index]
    sub_clean_metrics = level_metrics(sub.frames, sub_clean, ep.video_agg)
    sub_labels = sub.frames["label"].to_numpy()
    rows, detail, rocs, gallery = [], {}, {}, {}
    rocs["clean"] = roc_points(labels, clean_probs)
    jobs = [(a, e) for a in ep.attacks for e in ep.eps]
    for attack, eps in tqdm(jobs, desc=f"{name} sweep", leave=False, disable=None):
        seed = ep.seed + 1000 * ep.attacks.index(attack) + ep.eps.index(eps)
        want = keep if (attack == "pgd" and eps == ep.roc_eps) else 0
        probs, kept = attacked_probs(model, ds, sub.index, attack, eps, ep, seed, want)
        if kept:
            gallery["pgd"] = (kept, probs[gallery_positions(len(sub.index), want)])
        m = level_metrics(sub.frames, probs, ep.video_agg)
        asr = attack_success_rate(sub_labels, sub_clean, probs)
        detail.setdefault(attack, {})[eps_label(eps)] = {**m, "attack_success_rate": asr}
        rows.append({"model": name, "attack": attack, "eps": eps, "eps_label": eps_label(eps),
                     "acc": m["frame"]["acc"], "bacc": m["frame"]["bacc"], "auc": m["frame"]["auc"],
                     "video_acc": m["video"]["acc"], "video_auc": m["video"]["auc"], "asr": asr})
        if attack == "pgd" and abs(eps - ep.roc_eps) < 1e-12:
            rocs["pgd"] = roc_points(sub_labels, probs)
    table = pd.DataFrame(rows)
    flags = sanity_flags(table, sub_clean_metrics["frame"]["acc"], len(sub.index)) if rows else {}
    for k, v in flags.items():
        if isinstance(v, bool) and k != "ok" and (v if k == "gradient_masking_suspected" else not v):
            log.warning("evaluate: sanity flag %s fired for model %s (%s)", k, name,
                        {kk: vv for kk, vv in flags.items() if isinstance(vv, list) and vv})
    log.info("evaluate %s: %d test faces / %d videos, clean frame AUC %.4f, video AUC %.4f; "
             "%d attacked faces x %d runs; %.1fs", name, len(frames), frames["video_id"].nunique(),
             clean["frame"]["auc"], clean["video"]["auc"], len(sub.index), len(jobs),
             time.perf_counter() - t0)
    return {"clean": clean, "subset_clean": sub_clean_metrics, "attacks": detail, "sanity": flags,
            "table": table, "rocs": rocs, "gallery": gallery, "subset": sub, "clean_probs_sub": sub_clean,
            "n_frames": len(frames),
            "n_videos": int(frames["video_id"].nunique()), "n_attacked": int(len(sub.index))}


def headline(res: dict[str, Any], ep: EvalParams) -> dict[str, Any]:
    """Top-level numbers for one model: clean frame/video metrics and the worst case at max eps."""
    out: dict[str, Any] = {}
    for k in HEADLINE_KEYS:
        out[k] = res["clean"]["frame"][k]
        out[f"video_{k}"] = res["clean"]["video"][k]
    table = res["table"]
    if len(table):
        top = table[table["eps"] == max(ep.eps)]
        for attack, r in top.set_index("attack").iterrows():
            out[f"{attack}_acc"] = r["acc"]
            out[f"{attack}_bacc"] = r["bacc"]
            out[f"{attack}_auc"] = r["auc"]
        out["worst_acc"] = float(top["acc"].min())
        out["sanity_ok"] = res["sanity"].get("ok", True)
    return out


def _wide(tables: pd.DataFrame, value: str) -> pd.DataFrame:
    t = tables.copy()
    t["series"] = t["model"] + "_" + t["attack"]
    w = t.pivot_table(index="eps", columns="series", values=value, sort=True).reset_index()
    w.columns.name = None
    w.insert(1, "eps_255", (w["eps"] * 255).round(4))
    return w


def save_gallery(path: Path, ds: FaceDataset, results: dict[str, dict], ep: EvalParams) -> None:
    """A PNG grid: test face, PGD example per model with its prediction, amplified perturbation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in results if results[n]["gallery"].get("pgd")]
    first = results[names[0]] if names else None
    with atomic_path(path) as tmp:
        if first is None or ep.gallery == 0:
            fig = plt.figure(figsize=(3, 1))
            fig.text(0.5, 0.5, "gallery disabled (eval.gallery: 0 or no pgd at eval.roc_eps)",
                     ha="center", va="center", fontsize=6)
        else:
            pos = gallery_positions(len(first["subset"].index), ep.gallery)
            idx = first["subset"].index[pos]
            cols = 1 + 2 * len(names)
            fig, axes = plt.subplots(len(idx), cols, figsize=(2 * cols, 2.1 * len(idx)), squeeze=False)
            for r, i in enumerate(idx):
                x, y, _ = ds[int(i)]
                lab = "fake" if int(y) == 1 else "real"
                axes[r][0].imshow(x.permute(1, 2, 0).numpy())
                axes[r][0].set_title(f"test face ({lab})", fontsize=7)
                for j, n in enumerate(names):
                    adv, probs = results[n]["gallery"]["pgd"]
                    p_clean = float(results[n]["clean_probs_sub"][pos[r]])
                    a = adv[r].detach()
                    axes[r][1 + 2 * j].imshow(a.permute(1, 2, 0).numpy())
                    axes[r][1 + 2 * j].set_title(
                        f"{n}: p(fake) {p_clean:.2f}->{float(probs[r]):.2f}", fontsize=7)
                    delta = (a - x) / (2 * max(ep.roc_eps, 1e-12)) + 0.5
                    axes[r][2 + 2 * j].imshow(delta.clamp(0, 1).permute(1, 2, 0).numpy())
                    axes[r][2 + 2 * j].set_title(f"{n}: perturbation x{0.5 / max(ep.roc_eps, 1e-12):.0f}",
                                                 fontsize=7)
            for ax in np.ravel(axes):
                ax.axis("off")
            fig.suptitle(f"PGD-{ep.pgd_steps} at eps {eps_label(ep.roc_eps)}", fontsize=9)
            fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
        plt.close(fig)


def run_evaluate(params: Params, paths: DataPaths, checkpoints: dict[str, Path], out_metrics: Path,
                 plots_dir: Path, cross: Optional[DataPaths] = None) -> dict[str, Any]:
    """The evaluate stage (see the module docstring)."""
    ep = params.eval
    torch.manual_seed(ep.seed)
    torch.set_num_threads(params.train.threads)
    t0 = time.perf_counter()
    ds = FaceDataset(paths.store, paths.faces_csv, paths.splits_csv, "test")
    if len(ds) == 0:
        raise ValueError(f"{paths.splits_csv}: the test split holds no faces")
    results: dict[str, dict] = {}
    for name, path in checkpoints.items():
        model, _ = load_checkpoint(path)
        for p in model.parameters():
            p.requires_grad_(False)
        results[name] = evaluate_model(name, model, ds, ep, keep=ep.gallery)

    cross_out: dict[str, Any] = {}
    if cross is not None:
        cds = FaceDataset(cross.store, cross.faces_csv, cross.splits_csv, "test")
        for name, path in checkpoints.items():
            model, _ = load_checkpoint(path)
            r = evaluate_model(f"{name}@cross", model, cds, ep)
            cross_out[name] = {"headline": headline(r, ep), "clean": r["clean"],
                               "attacks": r["attacks"], "sanity": r["sanity"]}

    report: dict[str, Any] = {name: headline(r, ep) for name, r in results.items()}
    report["max_eps"] = eps_label(max(ep.eps))
    report["sanity_ok"] = all(r["sanity"].get("ok", True) for r in results.values())
    report["test_faces"] = results[next(iter(results))]["n_frames"]
    report["test_videos"] = results[next(iter(results))]["n_videos"]
    report["attacked_faces"] = results[next(iter(results))]["n_attacked"]
    report["detail"] = {name: {"clean": r["clean"], "attacked_subset_clean": r["subset_clean"],
                               "attacks": r["attacks"], "sanity": r["sanity"]}
                        for name, r in results.items()}
    report["params"] = {k: v for k, v in as_dict(ep).items() if k not in ("cross",)}
    if cross_out:
        report["cross"] = {n: c["headline"] for n, c in cross_out.items()}
        report["detail"]["cross"] = cross_out
    write_json(out_metrics, _clean_json(report))

    plots_dir = Path(plots_dir)
    tables = pd.concat([r["table"] for r in results.values()], ignore_index=True)
    if len(tables):
        write_csv(plots_dir / "robust_acc.csv", _wide(tables, "acc"))
        write_csv(plots_dir / "robust_auc.csv", _wide(tables, "auc"))
        write_csv(plots_dir / "sweep.csv", tables)
    for name, r in results.items():
        for kind, roc in r["rocs"].items():
            write_csv(plots_dir / "roc" / f"{name}_{kind}.csv", roc)
    save_gallery(plots_dir / "gallery.png", ds, results, ep)
    log.info("evaluate: %d models, %d attacks x %d eps; sanity %s; %.1fs", len(results),
             len(ep.attacks), len(ep.eps), "ok" if report["sanity_ok"] else "FLAGGED",
             time.perf_counter() - t0)
    return report


def _clean_json(obj: Any) -> Any:
    """Round floats to 6 digits and turn nan into null, recursively (stable, diff-friendly JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if not math.isfinite(v) else round(v, 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
