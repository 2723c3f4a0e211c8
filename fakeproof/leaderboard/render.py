"""The leaderboard written out: Markdown for a README or a pull request, JSON for scripts, and a
plot of clean AUC against robust balanced accuracy with interval bars and the Pareto front."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from fakeproof.intervals import interval_text
from fakeproof.io import atomic_path, write_json
from fakeproof.leaderboard.table import Group, Row


def _num(x: Optional[float]) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _with_ci(x: Optional[float], ci: tuple[Optional[float], Optional[float]]) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f} [{interval_text(*ci)}]"


def _vs_next(row: Row) -> str:
    d = row.vs_next
    if row.rank is None:
        return ""
    if d is None:
        return "-"
    lo, hi = d.get("bacc_diff_lo"), d.get("bacc_diff_hi")
    if lo is not None and lo == hi == d["bacc_diff"] == 0:
        return "+0.000 tie (same decision on every face)"
    bounds = "n/e" if lo is None or hi is None else f"{lo:+.3f}, {hi:+.3f}"
    verdict = {True: "**real**", False: "tie", None: "n/e"}[d.get("significant")]
    return f"{d['bacc_diff']:+.3f} [{bounds}] {verdict}"


def _spread(row: Row) -> str:
    s = row.seed_spread
    return "-" if not s else f"sd {s['sd']:.3f} ({len(s['seeds'])} seeds)"


def _cost(row: Row) -> str:
    if row.train_seconds is None:
        return "-"
    return f"{row.train_seconds / 60:.1f} min"


def _sanity(row: Row) -> str:
    if row.sanity_ok and not row.flags:
        return "ok"
    marks = ", ".join(f"{k} ({v})" for k, v in sorted(row.flags.items()))
    return marks if row.sanity_ok else f"**FAILS**: {marks}"


HEADER = ("rank", "detector", "objective", "train eps", "seed", "robust bacc [95% CI]",
          "vs next (paired)", "clean AUC [95% CI]", "robust acc [95% CI]",
          "corruption AUC [95% CI]", "cross AUC", "seed spread", "train time", "sanity",
          "experiments")


def _cells(row: Row) -> list[str]:
    return [str(row.rank) if row.rank else "not ranked", row.detector, row.objective,
            row.train_eps, str(row.seed), _with_ci(row.robust_bacc, row.robust_bacc_ci),
            _vs_next(row), _with_ci(row.clean_auc, row.clean_auc_ci),
            _with_ci(row.robust_acc, row.robust_acc_ci),
            _with_ci(row.corruption_auc, row.corruption_auc_ci),
            _with_ci(row.cross_auc, row.cross_auc_ci), _spread(row), _cost(row), _sanity(row),
            ", ".join(row.experiments)]


def markdown(groups: list[Group]) -> str:
    """The leaderboard as Markdown: one table per group of comparable rows."""
    lines = ["# Robust-detector leaderboard", ""]
    if len(groups) > 1:
        lines += [f"{len(groups)} groups: rows measured on different test sets or with different "
                  "attacks are never ranked together.", ""]
    for g in groups:
        hardware = sorted({r.hardware for r in g.rows if r.hardware})
        lines += [f"## {g.description}", "",
                  "Ranked by robust balanced accuracy at the headline eps (per face, worst case "
                  "over every attack, at each model's deployed boundary). *vs next*: this row "
                  "minus the next ranked one on the same attacked faces, paired video bootstrap; "
                  "**real** when its 95 % interval excludes 0, else a tie. Rows whose sanity "
                  "checks fail are listed, not ranked. Train time includes pretraining"
                  + (f"; measured on {'; '.join(hardware)}." if hardware else "."), "",
                  "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in g.rows]
        lines.append("")
    return "\n".join(lines)


def as_json(groups: list[Group]) -> dict[str, Any]:
    return {"groups": [{"key": g.key, "description": g.description,
                        "rows": [r.as_json() for r in g.rows]} for g in groups]}


def pareto(rows: list[Row]) -> list[Row]:
    """Rows no other row beats on both clean AUC and robust balanced accuracy."""
    pts = [r for r in rows if not math.isnan(r.robust_bacc)]
    return [r for r in pts if not any(
        o is not r and o.clean_auc >= r.clean_auc and o.robust_bacc >= r.robust_bacc
        and (o.clean_auc > r.clean_auc or o.robust_bacc > r.robust_bacc) for o in pts)]


def plot(groups: list[Group], dest: Path) -> None:
    """Clean AUC (x) against robust balanced accuracy (y), 95 % interval bars, one panel per
    group; the Pareto front of the ranked rows drawn as a line, unranked rows hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6.4 * len(groups), 5.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for r in g.rows:
            if math.isnan(r.robust_bacc):
                continue
            xe = _err(r.clean_auc, r.clean_auc_ci)
            ye = _err(r.robust_bacc, r.robust_bacc_ci)
            ax.errorbar(r.clean_auc, r.robust_bacc, xerr=xe, yerr=ye, fmt="o", capsize=3,
                        mfc="none" if not r.sanity_ok else None, alpha=0.85,
                        label=f"{r.detector} {r.objective} {r.train_eps} s{r.seed}"
                        + ("" if r.sanity_ok else " (not ranked)"))
        front = sorted(pareto([r for r in g.rows if r.sanity_ok]), key=lambda r: r.clean_auc)
        if front:
            ax.plot([r.clean_auc for r in front], [r.robust_bacc for r in front], "k--", lw=1,
                    label="Pareto front")
        ax.set_xlabel("clean AUC (test)")
        ax.set_ylabel("robust balanced accuracy")
        ax.set_title(f"test set {g.key}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _err(x: float, ci: tuple[Optional[float], Optional[float]]) -> Optional[list[list[float]]]:
    lo, hi = ci
    if lo is None or hi is None:
        return None
    return [[max(x - lo, 0.0)], [max(hi - x, 0.0)]]


def write_outputs(groups: list[Group], out_dir: Path) -> dict[str, Path]:
    """``leaderboard.md``, ``leaderboard.json`` and ``leaderboard.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"md": out_dir / "leaderboard.md", "json": out_dir / "leaderboard.json",
             "png": out_dir / "leaderboard.png"}
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(markdown(groups) + "\n")
    write_json(paths["json"], as_json(groups))
    if groups:
        plot(groups, paths["png"])
    return paths


__all__ = ["as_json", "markdown", "pareto", "plot", "write_outputs"]
