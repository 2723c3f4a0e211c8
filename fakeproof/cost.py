"""What a training stage cost: wall time and the hardware it ran on.

``metrics/cost/<stage>.json`` (a DVC out of pretrain and adv_finetune) is the one output that
differs between two runs of the same params and data: it holds a wall time. It lives in its own
file so that every other output stays byte-identical, and so that ``fakeproof leaderboard`` can
show each experiment's training cost beside its numbers (DVC commits the file with the
experiment; the run cache restores it with the outputs it describes, so it always reports the
run that made them).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from fakeproof.io import write_json


def cpu_name() -> str:
    """The CPU model as the kernel names it (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def resolved(device: str) -> str:
    """``train.device`` as it ran: ``auto`` becomes ``cuda`` or ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def hardware(device: str) -> str:
    """One line naming where a stage ran: the GPU(s) for a CUDA device, else the CPU model with
    its core count and torch's thread count."""
    device = resolved(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return f"{torch.cuda.get_device_name(index)} ({torch.cuda.device_count()} visible)"
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def write_cost(path: str | Path, stage: str, seconds: float, device: str, nproc: int = 1
               ) -> dict[str, Any]:
    """Write (atomically) and return a stage's cost record."""
    record = {"stage": stage, "seconds": round(float(seconds), 1), "device": resolved(device),
              "hardware": hardware(device), "nproc": int(nproc)}
    write_json(path, record)
    return record


__all__ = ["cpu_name", "hardware", "resolved", "write_cost"]
