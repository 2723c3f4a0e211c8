"""``fakeproof leaderboard``: detectors x objectives x eps, ranked by robust balanced accuracy.

Two ways in:

- ``--from-exps`` (the default): the experiments that exist. The workspace (when ``dvc status``
  shows it reproduced), its git baseline and every experiment ``dvc exp show --json`` lists
  (``--rev`` / ``--all-commits`` widen that, as they do for ``dvc exp show``).
- ``--grid KEY=V1,V2`` (repeatable, with ``--set KEY=V`` shared by every cell and ``--seeds N``):
  the cells not already measured are queued (``dvc exp run --queue``) and run by ``-j`` queue
  workers; a cell whose params equal an experiment's that has results is never run again. The
  table then shows the grid's cells.

Each row (:mod:`fakeproof.leaderboard.table`) comes from an experiment's own files (evaluate's
detail JSON and per-face scores, the training stages' cost records, ``dvc.lock``); outputs
(:mod:`fakeproof.leaderboard.render`): ``leaderboard.md``, ``leaderboard.json`` and
``leaderboard.png`` under ``--out``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

from fakeproof.leaderboard.experiments import WORKSPACE, Experiment, list_experiments
from fakeproof.leaderboard.grid import (LeaderboardError, build_cells, queue_cells, run_dvc,
                                        run_queue, typed_key, with_overrides)
from fakeproof.leaderboard.render import write_outputs
from fakeproof.leaderboard.table import Group, collect_rows

log = logging.getLogger(__name__)


def _has_results(e: Experiment) -> bool:
    flags = e.flags("evaluate")
    return "--detail" in flags and e.text(flags["--detail"][0]) is not None


def _workspace_current(root: Path) -> bool:
    """True when ``dvc status`` finds nothing to reproduce (the workspace's files are its
    params' results)."""
    proc = run_dvc(root, "status", "--json", check=False)
    try:
        return proc.returncode == 0 and not json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return False


def experiments(root: Path, revs: Sequence[str] = (), all_commits: bool = False
                ) -> list[Experiment]:
    """Experiments with evaluate results; the workspace only when it is reproduced."""
    found = list_experiments(root, revs=revs, all_commits=all_commits)
    out = []
    for e in found:
        if not _has_results(e):
            continue
        if e.rev == WORKSPACE and not _workspace_current(root):
            log.info("leaderboard: the workspace is left out: dvc status shows stages to "
                     "reproduce, so its metrics are not its params' results (dvc repro)")
            continue
        out.append(e)
    return out


def run_grid(root: Path, grid: Sequence[str], fixed: Sequence[str], seeds: Optional[int],
             jobs: int, targets: Sequence[str], revs: Sequence[str], all_commits: bool,
             queue_only: bool = False) -> list[str]:
    """Queue and (unless ``queue_only``: workers you start, e.g. one per GPU) run the grid's
    cells that no experiment has measured; the cells' identities."""
    cells = build_cells(grid, fixed, seeds)
    base = root / "params.yaml"
    raw = yaml.safe_load(base.read_text()) if base.is_file() else None
    if not isinstance(raw, dict):
        raise LeaderboardError(f"{base}: no params to build the grid's cells from")
    wanted = {typed_key(with_overrides(raw, c), f"cell {c.label}"): c for c in cells}
    have = {e.identity for e in experiments(root, revs, all_commits)}
    # The queue is the repo's, whatever baseline a task was queued on: never queue a cell twice.
    pending = {e.identity for e in list_experiments(root, all_commits=True,
                                                    states=("queued", "running"))}
    todo = [c for k, c in wanted.items() if k not in have and k not in pending]
    waiting = sum(1 for k in wanted if k in pending and k not in have)
    log.info("leaderboard: grid of %d cells: %d already measured, %d already queued, %d to run",
             len(wanted), len(wanted) - len(todo) - waiting, waiting, len(todo))
    if todo or waiting:
        t0 = time.perf_counter()
        queue_cells(root, todo, list(targets))
        if queue_only:
            log.info("leaderboard: %d cells queued; start workers (dvc queue start -j N), then "
                     "run this command again to build the table", len(todo))
            return list(wanted)
        status = run_queue(root, jobs)
        failed = sorted(n for n, s in status.items() if s == "Failed")
        log.info("leaderboard: ran %d cells in %.1f min%s", len(todo) + waiting,
                 (time.perf_counter() - t0) / 60,
                 f"; FAILED: {', '.join(failed)} (dvc queue logs NAME)" if failed else "")
    return list(wanted)


def run_leaderboard(root: Path, out_dir: Path, grid: Sequence[str] = (),
                    fixed: Sequence[str] = (), seeds: Optional[int] = None, jobs: int = 1,
                    targets: Sequence[str] = ("evaluate",), revs: Sequence[str] = (),
                    all_commits: bool = False, queue_only: bool = False) -> list[Group]:
    """Build (and, with ``grid``, first run) the leaderboard; write it under ``out_dir``."""
    root = Path(root)
    cells = (run_grid(root, grid, fixed, seeds, jobs, targets, revs, all_commits, queue_only)
             if grid else None)
    exps = experiments(root, revs, all_commits)
    if cells is not None:
        exps = [e for e in exps if e.identity in set(cells)]
    if not exps and queue_only:
        return []
    if not exps:
        raise LeaderboardError(f"{root}: no experiment with evaluate results; run `dvc repro` or "
                               "give --grid")
    groups = collect_rows(exps)
    paths = write_outputs(groups, out_dir)
    log.info("leaderboard: %d rows from %d experiments in %d group(s); wrote %s",
             sum(len(g.rows) for g in groups), len(exps), len(groups),
             ", ".join(str(p) for p in paths.values()))
    return groups


__all__ = ["LeaderboardError", "experiments", "run_grid", "run_leaderboard"]
