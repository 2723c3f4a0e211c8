"""Check that a params file lists every key with the code's default value.

The dataclasses in :mod:`fakeproof.config` are the one home of every default; the shipped
``params.yaml`` mirrors them so that ``dvc params diff`` shows every value in force. This is a
maintainer's check (``make check-params``), not a test: a user who commits a tuned
``params.yaml`` (``dvc exp apply`` then ``git commit``) is meant to differ from the defaults.

    python -m fakeproof.params_check [params.yaml]

prints one line per difference (a missing or extra key, a value other than the default) and
exits 1 when there is any, 0 otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from fakeproof.config import ParamsError, as_dict, default_params, params_from_dict


def leaves(d: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a nested mapping (lists are leaves)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def drift(raw: dict, source: str = "params.yaml") -> list[str]:
    """Every way ``raw`` (a parsed params file) differs from the code defaults, one line each.
    Values are compared after validation (``4/255`` equals ``0.01568...``)."""
    want_keys, have_keys = set(leaves(default_params())), set(leaves(raw))
    out = [f"{source}: {k}: missing (default {leaves(default_params())[k]!r})"
           for k in sorted(want_keys - have_keys)]
    out += [f"{source}: {k}: not a key of fakeproof/config.py" for k in sorted(have_keys - want_keys)]
    try:
        have = leaves(as_dict(params_from_dict(raw, source)))
    except ParamsError as e:
        return out + [str(e)]
    want = leaves(as_dict(params_from_dict(default_params())))
    out += [f"{source}: {k} = {have[k]!r}, default {want[k]!r}"
            for k in sorted(want) if k in have_keys and have[k] != want[k]]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "params.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        print(f"{path}: cannot read it ({type(e).__name__}); give a params file", file=sys.stderr)
        return 2
    lines = drift(raw, str(path))
    for line in lines:
        print(line)
    if not lines:
        print(f"{path}: every key, each with the code's default")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
