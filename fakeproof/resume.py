"""Kill-safe training: a resume state after every epoch, outside DVC's outs.

After detectron2's split of *resume* (all training state, continue at the next epoch) from *load*
(weights only): every completed epoch writes, atomically, the model, optimiser, scheduler, AMP
scaler, epoch, best score and best weights, stale count, curve so far, and every RNG state, to a
scratch file (``runs/resume/<stage>.pt``, git-ignored and not a DVC out: DVC deletes declared
outs before a run, and ``persist: true`` would lose the run cache). Re-running a killed stage
continues from its last completed epoch; since every epoch reseeds its shuffle, augmentation and
attack starts from ``(seed, epoch)``, the resumed run ends with the same bytes as an uninterrupted
one (CPU). The state is keyed by a fingerprint of the stage's params and inputs: a change of
params or data discards it, so a run never resumes into a different experiment. It is deleted
when the stage finishes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from fakeproof.io import atomic_path

log = logging.getLogger(__name__)

#: Test hook: the process SIGKILLs itself right after writing the resume state of this epoch
#: (1-based), the way a pre-empted job dies. Used by tests/test_resume.py; never set it otherwise.
KILL_AFTER_EPOCH_ENV = "FAKEPROOF_KILL_AFTER_EPOCH"


def fingerprint(params: Any, files: list[Path]) -> str:
    """SHA-256 over the params (JSON) and each input file: content for files up to 64 MiB, size
    and mtime for larger ones (an LMDB store of a full dataset is tens of GB)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for f in files:
        f = Path(f)
        paths = sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]
        for p in paths:
            if p.name == "lock.mdb":
                continue
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}".encode())
            if st.st_size <= 64 << 20:
                h.update(hashlib.sha256(p.read_bytes()).digest())
            else:
                h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def rng_states() -> dict[str, Any]:
    out = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.info("resume state: epoch %d saved to %s", state["epoch"], path)
    kill_at = os.environ.get(KILL_AFTER_EPOCH_ENV)
    if kill_at and int(kill_at) == state["epoch"]:
        os.kill(os.getpid(), signal.SIGKILL)


def load_state(path: Optional[Path], fp: str) -> Optional[dict[str, Any]]:
    """The saved state if it exists and belongs to this experiment; a stale one is deleted."""
    if path is None or not Path(path).is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a torn or foreign file: start over
        log.warning("resume state %s unreadable (%s): starting from epoch 1", path, type(e).__name__)
        Path(path).unlink(missing_ok=True)
        return None
    if state.get("fingerprint") != fp:
        log.info("resume state %s belongs to other params or data: discarded", path)
        Path(path).unlink(missing_ok=True)
        return None
    log.info("resuming from %s after epoch %d", path, state["epoch"])
    return state


def clear(path: Optional[Path]) -> None:
    if path is not None:
        Path(path).unlink(missing_ok=True)
