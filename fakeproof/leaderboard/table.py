"""Leaderboard rows, groups and ranks.

A row is one trained checkpoint as one experiment's evaluate stage measured it: the detector
(``model.name``), the objective (``adv.method`` for a checkpoint written by adv_finetune, ``none``
for clean training), the training eps and seed. Two experiments that share a checkpoint on the
same test set (the clean model of every cell of one detector) give one row, naming both.

Rows are ranked only against rows measured on the same test faces with the same attacks: the
group key hashes the evaluate stage's data deps in ``dvc.lock`` (face store, face index, split
table), the attack list, the eps sweep (the sanity checks read it), budget and sample, and the
headline eps. Within a group, rows whose sanity checks fail are listed and marked but not
ranked; the rest are ranked by robust balanced
accuracy at the headline eps, and each rank carries the paired difference to the row below it on
the same attacked faces (:func:`fakeproof.intervals.paired_difference`: whole videos resampled
within strata; a place is "real" only when that interval excludes zero).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from fakeproof.intervals import accuracy_interval, paired_difference
from fakeproof.leaderboard.experiments import Experiment
from fakeproof.under_attack import eps_label

log = logging.getLogger(__name__)

CLEAN_OBJECTIVE = "none"
ADVERSARIAL_STAGE = "adv_finetune"


@dataclass
class Row:
    """One checkpoint's leaderboard entry (intervals: 95 %, videos resampled)."""

    detector: str
    objective: str
    train_eps: str
    seed: int
    model: str
    experiments: list[str]
    group: str
    checkpoint: str
    clean_auc: float
    clean_auc_ci: tuple[Optional[float], Optional[float]]
    robust_bacc: float
    robust_bacc_ci: tuple[Optional[float], Optional[float]]
    robust_acc: float
    robust_acc_ci: tuple[Optional[float], Optional[float]]
    corruption_auc: Optional[float]
    corruption_auc_ci: tuple[Optional[float], Optional[float]]
    cross_auc: Optional[float]
    cross_auc_ci: tuple[Optional[float], Optional[float]]
    preset: str
    train_seconds: Optional[float]
    hardware: str
    flags: dict[str, str]
    sanity_ok: bool
    rank: Optional[int] = None
    vs_next: Optional[dict[str, Any]] = None
    seed_spread: Optional[dict[str, Any]] = None
    scores: Optional[pd.DataFrame] = field(default=None, repr=False)

    @property
    def cell(self) -> tuple[str, str, str, str, str]:
        return (self.group, self.detector, self.objective, self.train_eps, self.model)

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "scores"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


@dataclass
class Group:
    """Rows measured on one test set with one attack budget."""

    key: str
    description: str
    rows: list[Row]


def eps_text(eps: float) -> str:
    """:func:`eps_label` of an eps read back from a metrics file (rounded to 6 digits there)."""
    k = float(eps) * 255
    return eps_label(round(k) / 255 if abs(k - round(k)) < 1e-3 else float(eps))


def _ci(d: Optional[dict], lo: str, hi: str) -> tuple[Optional[float], Optional[float]]:
    d = d or {}
    return d.get(lo), d.get(hi)


def _cost(e: Experiment, path: str, seen: frozenset = frozenset()) -> tuple[Optional[float], str]:
    """Wall seconds to train the checkpoint at ``path``: its stage's cost record plus that of
    every checkpoint its stage starts from (adv_finetune's clean model)."""
    stage = e.producer(path)
    if stage is None or stage in seen:
        return None, ""
    flags = e.flags(stage)
    record = e.json(flags["--cost"][0]) if "--cost" in flags else None
    if record is None:
        return None, ""
    seconds, hardware = float(record["seconds"]), str(record.get("hardware", ""))
    for values in flags.values():
        for v in values:
            if v != path and v.endswith(".pt") and e.producer(v):
                more, _ = _cost(e, v, seen | {stage})
                seconds = seconds + more if more is not None else seconds
    return seconds, hardware


def _group_key(e: Experiment, detail: dict, checkpoints: set[str]) -> tuple[str, str]:
    deps = {p: h for p, h in e.dep_hashes("evaluate").items()
            if not p.startswith(("fakeproof", "stages")) and p not in checkpoints}
    ep = detail.get("params", {})
    first = next(iter(detail["models"].values()))
    what = {"data": deps, "attacks": ep.get("attacks"), "eps": ep.get("eps"), "preset": ep.get("preset"),
            "budget": detail.get("budget"), "headline_eps": ep.get("headline_eps"),
            "seed": ep.get("seed"), "sample": first.get("sample")}
    key = hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    b = detail.get("budget", {})
    sample = first.get("sample", {})
    desc = (f"test set {key}: {detail.get('test_videos')} videos / {detail.get('test_faces')} faces "
            f"(face store, face index and split hashed from dvc.lock); attacked sample "
            f"{sample.get('videos')} videos / {sample.get('faces')} faces; attacks "
            f"{', '.join(ep.get('attacks') or [])}, preset {ep.get('preset')} (PGD-"
            f"{b.get('pgd_steps')}, APGD-{b.get('apgd_steps')}, Square-{b.get('square_queries')}); "
            f"eps {', '.join(eps_text(e) for e in ep.get('eps') or [])} (the sanity checks read the "
            f"sweep); headline eps {eps_text(ep.get('headline_eps', 0))}")
    return key, desc


def experiment_rows(e: Experiment) -> list[tuple[Row, str]]:
    """``(row, group description)`` for each model the experiment's evaluate stage measured;
    [] when it has no evaluate results."""
    flags = e.flags("evaluate")
    detail = e.json(flags["--detail"][0]) if "--detail" in flags else None
    if not detail or not detail.get("models"):
        return []
    checkpoints = dict(c.split("=", 1) for c in flags.get("--checkpoint", []))
    group, desc = _group_key(e, detail, set(checkpoints.values()))
    ep = detail.get("params", {})
    lab = eps_text(ep.get("headline_eps", 0))
    scores = e.csv(f"{flags['--plots'][0]}/scores.csv") if "--plots" in flags else None
    p = e.params
    out = []
    for name, m in detail["models"].items():
        path = checkpoints.get(name, "")
        stage = e.producer(path) or ""
        adversarial = stage == ADVERSARIAL_STAGE
        rob = (m.get("robust", {}).get(lab) or {}).get("frame", {})
        mine = None if scores is None else scores[scores["model"] == name].reset_index(drop=True)
        acc = {"acc": rob.get("acc"), "acc_lo": None, "acc_hi": None}
        if mine is not None and len(mine):
            acc = accuracy_interval(mine, (mine["attacked"] > 0) == (mine["label"] == 1),
                                    n_boot=int(ep.get("bootstrap") or 0), seed=int(ep.get("seed", 0)),
                                    min_videos=int(ep.get("min_videos", 2)))
        corr = (m.get("corruptions") or {}).get("mean_corruption_auc") or {}
        cross = (((detail.get("cross") or {}).get(name) or {}).get("test_clean") or {}).get("frame")
        seconds, hardware = _cost(e, path)
        sanity = m.get("sanity", {})
        fired = {k: v.get("severity", "fail") for k, v in sanity.items()
                 if isinstance(v, dict) and v.get("fired")}
        row = Row(
            detector=p.model.name + (f"+{p.model.pretrained}" if p.model.pretrained else ""),
            objective=p.adv.method if adversarial else CLEAN_OBJECTIVE,
            train_eps=eps_label(p.adv.eps) if adversarial else "0", seed=int(p.train.seed),
            model=name, experiments=[e.name], group=group,
            checkpoint=e.out_md5(stage, path) or f"{e.short}:{path}",
            clean_auc=m["test_clean"]["frame"]["auc"],
            clean_auc_ci=_ci(m["test_clean"]["frame"], "auc_lo", "auc_hi"),
            robust_bacc=rob.get("bacc", float("nan")), robust_bacc_ci=_ci(rob, "bacc_lo", "bacc_hi"),
            robust_acc=acc["acc"], robust_acc_ci=(acc["acc_lo"], acc["acc_hi"]),
            corruption_auc=corr.get("auc"), corruption_auc_ci=_ci(corr, "auc_lo", "auc_hi"),
            cross_auc=(cross or {}).get("auc"), cross_auc_ci=_ci(cross, "auc_lo", "auc_hi"),
            preset=str(ep.get("preset")), train_seconds=seconds, hardware=hardware,
            flags=fired, sanity_ok=bool(sanity.get("ok", not any(
                s == "fail" for s in fired.values()))),
            scores=mine if mine is not None and len(mine) else None)
        out.append((row, desc))
    return out


def _fingerprint(row: Row) -> tuple:
    return (row.group, row.checkpoint, repr(row.robust_bacc), repr(row.clean_auc),
            tuple(sorted(row.flags)))


def collect_rows(experiments: list[Experiment]) -> list[Group]:
    """Every experiment's rows, duplicates merged (one checkpoint, one test set, one result),
    in groups of comparable rows, each group ranked (:func:`rank`)."""
    groups: dict[str, Group] = {}
    seen: dict[tuple, Row] = {}
    for e in experiments:
        for row, desc in experiment_rows(e):
            twin = seen.get(_fingerprint(row))
            if twin is not None:
                twin.experiments.append(e.name)
                continue
            seen[_fingerprint(row)] = row
            groups.setdefault(row.group, Group(row.group, desc, [])).rows.append(row)
    for g in groups.values():
        seed_spread(g.rows)
        rank(g.rows, n_boot=1000)
    return list(groups.values())


def seed_spread(rows: list[Row]) -> None:
    """Rows of one cell trained with several seeds: the spread of their robust balanced
    accuracy (training noise, beside each row's bootstrap interval of test noise)."""
    cells: dict[tuple, list[Row]] = {}
    for r in rows:
        cells.setdefault(r.cell, []).append(r)
    for members in cells.values():
        seeds = {r.seed for r in members}
        if len(seeds) < 2:
            continue
        v = np.array([r.robust_bacc for r in members], dtype=np.float64)
        spread = {"seeds": sorted(seeds), "mean": float(v.mean()), "sd": float(v.std(ddof=1)),
                  "min": float(v.min()), "max": float(v.max())}
        for r in members:
            r.seed_spread = spread


def paired(upper: Row, lower: Row, n_boot: int, seed: int = 0) -> Optional[dict[str, Any]]:
    """Upper minus lower robust balanced accuracy on the same attacked faces (paired video
    bootstrap); None when either lacks per-face scores or they scored different faces."""
    if upper.scores is None or lower.scores is None:
        return None
    a, b = lower.scores.set_index("key"), upper.scores.set_index("key")
    if set(a.index) != set(b.index):
        return None
    b = b.loc[a.index]
    frames = a[["video_id", "label", "method"]].reset_index()
    frames["method"] = frames["method"].fillna("")
    d = paired_difference(frames, a["attacked"].to_numpy(), b["attacked"].to_numpy(),
                          n_boot=n_boot, seed=seed)
    return {"bacc_diff": d["bacc_diff"], "bacc_diff_lo": d["bacc_diff_lo"],
            "bacc_diff_hi": d["bacc_diff_hi"], "significant": d["significant"],
            "faces": d["faces"], "videos": d["videos"]}


def rank(rows: list[Row], n_boot: int) -> None:
    """Sort in place: ranked rows (sanity ok) by robust balanced accuracy, then clean AUC; then
    unranked rows. Each ranked row gets its place and the paired difference to the next."""
    ok = sorted((r for r in rows if r.sanity_ok),
                key=lambda r: (-np.nan_to_num(r.robust_bacc, nan=-1.0), -r.clean_auc,
                               r.detector, r.objective, r.train_eps, r.seed))
    bad = [r for r in rows if not r.sanity_ok]
    for i, r in enumerate(ok):
        r.rank = i + 1
        r.vs_next = paired(r, ok[i + 1], n_boot) if i + 1 < len(ok) else None
    rows[:] = ok + bad


__all__ = ["CLEAN_OBJECTIVE", "Group", "Row", "collect_rows", "experiment_rows", "paired", "rank",
           "seed_spread"]
