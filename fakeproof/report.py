"""The pull-request report: what a change did to the headline metrics and the robustness plots.

One Markdown document, printed by ``fakeproof report --base main`` (``make report``) and posted on
each pull request by ``.github/workflows/pr-report.yaml``:

1. a list naming every changed headline metric, old -> new, read from ``dvc metrics diff --json``
   (the metrics files are those declared under ``metrics:`` in ``dvc.yaml``, so the list follows
   that declaration, not a list kept here);
2. ``dvc metrics diff --md <base>`` as DVC prints it;
3. the plots declared under ``plots:``, rendered for both revisions by
   ``dvc plots diff <base> -o <dir>`` (an ``index.html`` and the images beside it).

The workspace is compared with ``base`` (any git revision: a branch, a tag, ``HEAD~1``), the way
iterative/example-get-started's CI reports a change. DVC is run as a subprocess of this
interpreter (``python -m dvc``): its command line is the interface DVC documents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from fakeproof.errors import FakeproofError
from fakeproof.io import atomic_path

PLOTS_DIR = Path("build/report/plots")


class ReportError(FakeproofError):
    """The report cannot be made (no dvc.yaml here, an unknown base revision ...)."""


def _dvc(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("ERROR")), lines[-1] if lines else "")
        why = why.removeprefix("ERROR:").strip() or f"exit code {proc.returncode}"
        hint = ("; give a branch, tag or commit of this repo (a shallow CI clone needs "
                "fetch-depth: 0)" if "revision" in why else "")
        raise ReportError(f"dvc {' '.join(args[:2])} failed: {why}{hint}")
    return proc.stdout


def changed_metrics(diff: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Flatten ``dvc metrics diff --json`` output into rows (file, metric, old, new, change),
    keeping only the metrics whose value changed (added and removed ones included)."""
    rows = []
    for path in sorted(diff):
        for name, d in sorted(diff[path].items()):
            old, new = d.get("old"), d.get("new")
            if old != new:
                rows.append({"file": path, "metric": name, "old": old, "new": new,
                             "change": d.get("diff")})
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plot_titles(root: Path) -> list[str]:
    """The plot ids under ``plots:`` in dvc.yaml (a title, or the file path of a bare entry)."""
    plots = yaml.safe_load((root / "dvc.yaml").read_text()).get("plots") or []
    return [p if isinstance(p, str) else next(iter(p)) for p in plots]


def build_report(base: str = "main", root: Path = Path("."),
                 plots_dir: Optional[Path] = None) -> str:
    """The Markdown report of the workspace at ``root`` against git revision ``base``; renders
    the plots into ``plots_dir`` (default ``build/report/plots`` under ``root``)."""
    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        raise ReportError(f"{root / 'dvc.yaml'}: not found; run the report from the project root")
    plots_dir = Path(plots_dir) if plots_dir else root / PLOTS_DIR
    rows = changed_metrics(json.loads(_dvc("metrics", "diff", base, "--json", cwd=root) or "{}"))
    table = _dvc("metrics", "diff", base, "--md", cwd=root).strip()
    titles = _plot_titles(root)
    images: list[Path] = []
    if titles:
        with atomic_path(plots_dir, is_dir=True) as tmp:
            _dvc("plots", "diff", base, "-o", str(tmp.resolve()), cwd=root)
            images = sorted(p.relative_to(tmp) for p in (tmp / "static").glob("*") if p.is_file())

    out = [f"## fakeproof report: workspace against `{base}`", ""]
    out.append(f"### Changed headline metrics ({len(rows)})")
    out.append("")
    if rows:
        for r in rows:
            change = f" ({r['change']:+.6g})" if isinstance(r["change"], (int, float)) else ""
            out.append(f"- `{r['metric']}` in `{r['file']}`: {_fmt(r['old'])} -> "
                       f"{_fmt(r['new'])}{change}")
    else:
        out.append(f"No headline metric changed against `{base}`.")
    if not rows and len(table.splitlines()) <= 2:  # DVC prints a bare header when nothing changed
        table = ""
    out += ["", f"### `dvc metrics diff --md {base}`", "", table or "(no differences)", ""]
    out.append("### Robustness plots")
    out.append("")
    if titles:
        out.append(f"`dvc plots diff {base} -o {plots_dir}` rendered both revisions into "
                   f"`{plots_dir / 'index.html'}`:")
        out += [f"- {t}" for t in titles]
        out += [f"- image: `{plots_dir / p}`" for p in images]
    else:
        out.append("No plots are declared under `plots:` in dvc.yaml.")
    return "\n".join(out) + "\n"


def run_report(base: str = "main", plots_dir: Optional[Path] = None) -> dict:
    """Print the report of the current directory's workspace against ``base``."""
    text = build_report(base, Path("."), plots_dir)
    sys.stdout.write(text)
    return {}
