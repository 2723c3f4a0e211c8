"""Reading a project's ``dvc.yaml`` (the one place that names paths): its ``vars`` flattened as
DVC interpolates them, and a stage's command-line flags with those vars filled in. Used by
``fakeproof compare`` (default test data, an experiment's checkpoint) and ``fakeproof
leaderboard`` (each experiment's outputs, read from its own ``dvc.yaml``)."""

from __future__ import annotations

import re
import shlex
from typing import Any


def flatten_vars(spec: dict) -> dict[str, Any]:
    """``vars`` of a parsed dvc.yaml as DVC interpolates them: ``{"path.store": ...}``."""
    out: dict[str, Any] = {}
    for v in spec.get("vars", []) or []:
        if isinstance(v, dict):
            for k, val in v.items():
                if isinstance(val, dict):
                    out.update({f"{k}.{kk}": vv for kk, vv in val.items()})
                else:
                    out[k] = val
    return out


def stage_flags(spec: dict, stage: str) -> dict[str, list[str]]:
    """``{--flag: [values]}`` of a stage's command line with its ``${vars}`` filled in (how
    every path reaches a fakeproof stage)."""
    variables = flatten_vars(spec)
    cmd = ((spec.get("stages") or {}).get(stage) or {}).get("cmd", "")
    cmd = re.sub(r"\$\{([^}]+)\}",
                 lambda m: str(variables.get(m.group(1).strip(), m.group(0))), cmd)
    words, flags = shlex.split(cmd), {}
    for i, w in enumerate(words[:-1]):
        if w.startswith("--"):
            flags.setdefault(w, []).append(words[i + 1])
    return flags


__all__ = ["flatten_vars", "stage_flags"]
