"""The experiments a leaderboard reads: the workspace, its git baseline and every DVC experiment
of that baseline (what ``dvc exp show --json`` lists), each with its params and a reader for the
files it produced.

Nothing is re-run and no DVC cache is touched: the files read are the ones DVC keeps in git
(``cache: false`` outs: ``metrics/``, the plot tables and ``dvc.lock``), read with ``git show``
from an experiment's commit, or from disk for the workspace. Paths come from the experiment's own
``dvc.yaml`` (``vars`` and the stages' command lines), never from constants here.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import yaml

from fakeproof.config import ParamsError, params_from_dict
from fakeproof.dvcfile import stage_flags
from fakeproof.leaderboard.grid import LeaderboardError, run_dvc, typed_key

log = logging.getLogger(__name__)

WORKSPACE = "workspace"
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class Experiment:
    """One row source: a name, the commit (or the workspace) and its typed params."""

    name: str
    rev: str
    raw_params: dict
    root: Path
    baseline: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def short(self) -> str:
        return self.rev[:7] if _SHA.match(self.rev) else self.rev

    def text(self, path: str) -> Optional[str]:
        """The file's text at this experiment (None when absent)."""
        if path in self._cache:
            return self._cache[path]
        if self.rev == WORKSPACE:
            f = self.root / path
            out = f.read_text() if f.is_file() else None
        else:
            proc = subprocess.run(["git", "show", f"{self.rev}:{path}"], cwd=self.root,
                                  capture_output=True, text=True)
            out = proc.stdout if proc.returncode == 0 else None
        self._cache[path] = out
        return out

    def json(self, path: str) -> Optional[Any]:
        t = self.text(path)
        return json.loads(t) if t else None

    def csv(self, path: str) -> Optional[pd.DataFrame]:
        t = self.text(path)
        return pd.read_csv(io.StringIO(t)) if t else None

    @cached_property
    def dvc_yaml(self) -> dict:
        return yaml.safe_load(self.text("dvc.yaml") or "") or {}

    @cached_property
    def lock(self) -> dict:
        return yaml.safe_load(self.text("dvc.lock") or "") or {}

    @cached_property
    def params(self) -> Any:
        return params_from_dict(self.raw_params, f"{self.name}: params.yaml")

    @cached_property
    def identity(self) -> str:
        return typed_key(self.raw_params, f"{self.name}: params.yaml")

    def flags(self, stage: str) -> dict[str, list[str]]:
        return stage_flags(self.dvc_yaml, stage)

    def producer(self, path: str) -> Optional[str]:
        """The stage whose command writes ``path`` (``--out`` and the like)."""
        for stage in self.dvc_yaml.get("stages") or {}:
            flags = self.flags(stage)
            if any(path in v for k, v in flags.items() if k in ("--out",)):
                return stage
        return None

    def out_md5(self, stage: str, path: str) -> Optional[str]:
        for o in ((self.lock.get("stages") or {}).get(stage) or {}).get("outs", []) or []:
            if o.get("path") == path:
                return o.get("md5") or o.get("hash")
        return None

    def dep_hashes(self, stage: str) -> dict[str, str]:
        return {d["path"]: d.get("md5") or d.get("hash", "")
                for d in ((self.lock.get("stages") or {}).get(stage) or {}).get("deps", []) or []}


def _params_of(data: dict) -> Optional[dict]:
    p = ((data or {}).get("params") or {}).get("params.yaml") or {}
    return p.get("data")


def list_experiments(root: Path, revs: Sequence[str] = (), all_commits: bool = False,
                     states: Sequence[Optional[str]] = (None, "success")) -> list[Experiment]:
    """The workspace, the baseline commit(s) and their experiments in one of ``states`` (None:
    done, or never queued; ``"queued"``, ``"running"``, ``"failed"``: queue tasks, which have
    no results of their own), from ``dvc exp show --json`` (``--rev``, ``-A`` as given)."""
    extra = [a for r in revs for a in ("--rev", r)] + (["-A"] if all_commits else [])
    try:
        show = json.loads(run_dvc(root, "exp", "show", "--json", *extra).stdout or "[]")
    except json.JSONDecodeError as e:
        raise LeaderboardError(f"dvc exp show --json in {root}: not JSON ({e})") from None
    out: list[Experiment] = []
    for row in show:
        rev = row.get("rev", "")
        baseline = row.get("name") or rev[:7]
        if None in states and row.get("data") and _params_of(row["data"]) is not None:
            name = WORKSPACE if rev == WORKSPACE else baseline
            out.append(Experiment(name, rev, _params_of(row["data"]), Path(root), baseline))
        for exp in row.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") not in states:
                continue
            for r in exp.get("revs") or []:
                params = _params_of(r.get("data"))
                if params is None or not _SHA.match(r.get("rev", "")):
                    continue
                out.append(Experiment(r.get("name") or r["rev"][:7], r["rev"], params, Path(root),
                                      baseline))
    usable = []
    for e in out:
        try:
            e.params
        except ParamsError as err:
            log.warning("leaderboard: skipped %s (%s): its params do not load: %s", e.name,
                        e.short, err)
            continue
        usable.append(e)
    return usable


__all__ = ["Experiment", "WORKSPACE", "list_experiments"]
