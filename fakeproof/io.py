"""Atomic writes: outputs appear whole or not at all (write to a temp path, then rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd


@contextlib.contextmanager
def atomic_path(dest: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; on success rename it over ``dest``.

    On error the temporary path is removed and ``dest`` (if it existed) is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    target = tmp / dest.name
    if is_dir:
        target.mkdir()
    try:
        yield target
        if dest.is_dir() and not dest.is_symlink():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(target, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(dest: str | Path, obj: Any, digits: int = 6) -> None:
    """Write JSON atomically: sorted keys, floats rounded to ``digits``, nan/inf as null (stable,
    diff-friendly output for ``dvc metrics diff``)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(tidy(obj, digits), indent=2, sort_keys=True, default=_jsonable)
                       + "\n")


def tidy(obj: Any, digits: int = 6) -> Any:
    """Round floats and turn non-finite ones into None, recursively; numpy scalars to Python."""
    if isinstance(obj, dict):
        return {str(k): tidy(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [tidy(v, digits) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return round(v, digits) if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_csv(dest: str | Path, df: pd.DataFrame) -> None:
    """Write a CSV atomically with a stable float format."""
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


def read_stage_csv(path: str | Path, stage: str, error: type[Exception],
                   columns: Sequence[str] = (), **kw: Any) -> pd.DataFrame:
    """A CSV that the stage ``stage`` writes (``kw`` to :func:`pandas.read_csv`; empty fields stay
    empty strings unless ``keep_default_na=True``), with ``columns`` present; anything else raises a one-line ``error``
    naming the file and the stage to run."""
    try:
        df = pd.read_csv(path, **{"keep_default_na": False, **kw})
    except FileNotFoundError:
        raise error(f"{path}: not found; run the {stage} stage first (dvc repro {stage})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError,
            IsADirectoryError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path}: not readable ({reason}); run the {stage} stage again") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise error(f"{path}: missing columns {missing}; run the {stage} stage again")
    return df


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
