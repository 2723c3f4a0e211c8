"""The leaderboard's grid: cells of params overrides, each one DVC experiment, never run twice.

A cell is the set of ``-S key=value`` overrides one ``dvc exp run`` gets: the product of the
``--grid`` axes, the ``--set`` values every cell shares, and with ``--seeds N`` the training seeds
``train.seed = adv.seed = 0 .. N-1``. A cell whose typed params (params.yaml with its overrides,
through the one params loader, so ``2/255`` and ``0.00784`` agree) equal those of an experiment
that already has results is not queued again; the rest are queued with ``dvc exp run --queue``
and run by ``dvc exp run --run-all -j N`` (the queue's workers, ``dvc queue start -j N``, and a
wait for them to finish).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import yaml

from fakeproof.config import as_dict, params_from_dict
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

SEED_KEYS = ("train.seed", "adv.seed")


class LeaderboardError(FakeproofError, ValueError):
    """A grid or an experiment the leaderboard cannot use (bad --grid, dvc failed ...)."""


@dataclass(frozen=True)
class Cell:
    """One experiment of the grid: its overrides in command-line form, in order."""

    overrides: tuple[tuple[str, str], ...]

    def args(self) -> list[str]:
        return [a for k, v in self.overrides for a in ("-S", f"{k}={v}")]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides)


def split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` -> ``["a", "b", "[c,d]"]``: commas split values except inside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return [v for v in out if v]


def parse_assignment(spec: str, flag: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise LeaderboardError(f"{flag} {spec!r}: use KEY=VALUE, e.g. {flag} adv.eps=2/255"
                               + (",4/255" if flag == "--grid" else ""))
    return key.strip(), value.strip()


def build_cells(grid: Iterable[str], fixed: Iterable[str] = (), seeds: Optional[int] = None
                ) -> list[Cell]:
    """The grid's cells: every combination of the ``--grid`` axes (``KEY=V1,V2``), each with the
    ``--set`` overrides (``KEY=V``) and, for ``seeds``, one cell per training seed."""
    fixed_pairs = [parse_assignment(s, "--set") for s in fixed]
    axes = [(k, split_values(v)) for k, v in (parse_assignment(s, "--grid") for s in grid)]
    keys = [k for k, _ in fixed_pairs] + [k for k, _ in axes]
    if seeds is not None:
        if seeds < 1:
            raise LeaderboardError(f"--seeds {seeds}: give at least 1")
        axes.append(("|".join(SEED_KEYS), [str(s) for s in range(seeds)]))
        keys += list(SEED_KEYS)
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise LeaderboardError(f"{', '.join(twice)}: given more than once (in --grid, --set or by "
                               "--seeds); give each key once")
    cells = []
    for combo in itertools.product(*[[(k, v) for v in vs] for k, vs in axes]):
        pairs = list(fixed_pairs)
        for k, v in combo:
            pairs += [(kk, v) for kk in k.split("|")]
        cells.append(Cell(tuple(pairs)))
    return cells


def with_overrides(raw: dict, cell: Cell) -> dict:
    """A deep copy of params ``raw`` with the cell's overrides set (values parsed as YAML, as
    ``dvc exp run -S`` does)."""
    out = json.loads(json.dumps(raw))
    for key, value in cell.overrides:
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise LeaderboardError(f"{key}: no such params section {p!r} in params.yaml")
            node = node[p]
        if leaf not in node:
            raise LeaderboardError(f"{key}: no such key in params.yaml; `fakeproof models` and "
                                   "params.yaml list what a cell may set")
        node[leaf] = yaml.safe_load(value)
    return out


def typed_key(raw: dict, source: str) -> str:
    """The params' identity: every value typed by the params loader, as sorted JSON."""
    return json.dumps(as_dict(params_from_dict(raw, source)), sort_keys=True, default=str)


def dvc_bin() -> str:
    """The ``dvc`` beside this interpreter (a virtual environment's), else the one on PATH."""
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else "dvc"


def run_dvc(root: Path, *args: str, check: bool = True, env: Optional[dict] = None
            ) -> subprocess.CompletedProcess:
    # This interpreter's folder leads PATH: the queue's workers start `dvc`, stages `python`.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    proc = subprocess.run([dvc_bin(), *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path, **(env or {})})
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise LeaderboardError(f"dvc {' '.join(args[:3])} failed in {root}: {tail[0]}")
    return proc


def queue_cells(root: Path, cells: list[Cell], targets: list[str]) -> list[str]:
    """``dvc exp run --queue`` each cell; the queued tasks' names."""
    names = []
    for cell in cells:
        out = run_dvc(root, "exp", "run", "--queue", *cell.args(), *targets).stdout
        found = re.findall(r"[Qq]ueued experiment '?([\w-]+)'?", out)
        names += found
        log.info("leaderboard: queued %s (%s)", cell.label, found[0] if found else "?")
    return names


def run_queue(root: Path, jobs: int) -> dict[str, str]:
    """Start ``jobs`` queue workers and wait until the queue is empty (``dvc exp run --run-all``).
    Stages import the experiment's own copy of the code (``PYTHONPATH=.``: each stage runs in the
    experiment's temporary workspace), not an editable install of the workspace. Returns
    ``{task: status}`` from ``dvc queue status``."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")]))}
    proc = run_dvc(root, "exp", "run", "--run-all", "-j", str(jobs), check=False, env=env)
    status = queue_status(root)
    if proc.returncode != 0 and not status:
        raise LeaderboardError(f"dvc exp run --run-all failed in {root}: "
                               f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return status


def queue_status(root: Path) -> dict[str, str]:
    """``{task name (or rev): Queued | Running | Success | Failed}`` of the DVC experiment queue."""
    from dvc.repo import Repo  # heavy: only when the grid runs

    with Repo(str(root)) as repo:
        return {t.get("name") or t["rev"][:7]: t["status"]
                for t in repo.experiments.celery_queue.status()}


__all__ = ["Cell", "LeaderboardError", "SEED_KEYS", "build_cells", "dvc_bin", "queue_cells",
           "queue_status", "run_dvc", "run_queue", "split_values", "typed_key", "with_overrides"]
