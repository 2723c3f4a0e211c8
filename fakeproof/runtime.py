"""Where and how training runs: device, precision, determinism, and data-parallel processes.

Resolved once per stage from ``train.*`` and handed down (after torchvision's classification
reference, ``references/classification/train.py`` and ``utils.init_distributed_mode``):

- ``train.device``: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
- ``train.amp``: ``auto`` (bf16 on a CUDA device that supports it, fp16 on older CUDA devices, off
  on the CPU), ``off``, ``bf16`` or ``fp16`` (fp16 uses a GradScaler). Autocast covers the
  training forward pass and loss only. Attacks (the PGD examples of adversarial training, every
  evaluation attack) run in float32 (the training attack under autocast only with
  ``adv.craft_precision: amp``, which bench_train.py gpu checks): an fp16 input gradient
  underflows to zero for confident samples (the loss gradient of a logit near 10 is about
  4.5e-5, near fp16's smallest normal 6.1e-5), which would make an attack silently weaker and
  a model look robust.
- ``train.deterministic``: seeded, deterministic algorithms. On the CPU the same params and data
  give byte-identical weights (on the same CPU model). On CUDA it sets
  ``torch.use_deterministic_algorithms`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and turns
  ``cudnn.benchmark`` off, in warn-only mode: an op without a deterministic CUDA kernel warns
  instead of failing (none did for mobilenet_v3_small with bf16 on an H200 with torch 2.11, whose
  two runs gave identical weights: ``benchmarks/bench_train.py gpu``). Runs repeat on the same GPU
  model, driver and library versions, never across them, and not with ``deterministic: false``
  (cudnn.benchmark picks kernels by timing).
- ``train.nproc: N > 1``: the stage re-launches itself through torch's elastic launcher
  (``python -m torch.distributed.run --standalone --nproc-per-node N``) and trains with
  DistributedDataParallel (gloo on the CPU, NCCL on CUDA); rank 0 validates, logs and writes. The
  same stage scripts run under a multi-machine ``torchrun --nnodes ... --rdzv-endpoint ...``: a
  process that already has ``RANK``/``WORLD_SIZE`` in its environment joins that group instead.
- Memory format: models and image batches are channels-last on every device. On the CPU too:
  oneDNN's convolutions and max-pooling are faster on NHWC (``smallcnn`` at 128 px on 2 threads:
  an attack sweep 1.8x faster, 42 s instead of 76 s for four attacks at one eps on 144 faces;
  a forward+backward pass 5.7 instead of 9.4 ms per face). The same logits up to float rounding,
  deterministic on the same hardware like every other kernel choice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist

from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)


class RuntimeConfigError(FakeproofError):
    """A device, precision or process setting cannot be honoured here (one line)."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: full precision
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type,
                                    enabled=self.amp_dtype == torch.float16)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x


def named_seed(*parts: Any) -> int:
    """A seed keyed by names, not by list positions: 63 bits of the SHA-256 of ``parts`` joined
    by ``|`` (the attacks' and the corruptions' per-run seeds)."""
    h = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def resolve_device(spec: str | torch.device, local_rank: int = 0, what: str = "train.device",
                   error: type[FakeproofError] = RuntimeConfigError) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` to a device, the one resolver of ``train.device``,
    ``faces.device`` and detect's ``--device``: ``auto`` is CUDA when torch sees a GPU, else
    the CPU; ``cuda`` is GPU ``local_rank`` mod the GPU count. CUDA asked for but absent, an
    index past the last GPU or another name raise ``error`` naming ``what``."""
    spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise error(f"{what} = {spec!r}: no CUDA device here; use auto or cpu")
        if spec == "cuda":
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        index = spec.split(":", 1)[1] if ":" in spec else ""
        if not index.isdigit():
            raise error(f"{what} = {spec!r}: use auto, cpu, cuda or cuda:N")
        if int(index) >= torch.cuda.device_count():
            raise error(f"{what} = {spec!r}: only {torch.cuda.device_count()} CUDA devices here")
        return torch.device("cuda", int(index))
    if spec != "cpu":
        raise error(f"{what} = {spec!r}: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def frozen_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, channels-last, in eval mode, its parameters not requiring
    gradients: ready to be scored and attacked (attacks need only the input gradient)."""
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def resolve_amp(spec: str, device: torch.device) -> Optional[torch.dtype]:
    if spec == "off" or (spec == "auto" and device.type != "cuda"):
        return None
    if spec == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[spec]


def setup(tp: Any, seed: int) -> Runtime:
    """Seed, fix threads and algorithms, join a process group if one was launched, pick the
    device and precision. Called once at the start of a training stage."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in
                          (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    device = resolve_device(tp.device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    torch.manual_seed(seed)
    torch.set_num_threads(tp.threads)
    if tp.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # CUDA: warn, not fail, on an op without a deterministic CUDA kernel (a model a user
        # registers may have one); such a run is not bit-reproducible, and the warning says so
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not tp.deterministic
    amp = resolve_amp(tp.amp, device)
    rt = Runtime(device, amp, channels_last=True, rank=rank, world_size=world,
                 local_rank=local)
    if rt.main:
        log.info("runtime: device %s, amp %s, %d process(es), deterministic %s", device,
                 {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp], world,
                 tp.deterministic)
    return rt


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_flags(rt: Runtime, *flags: bool) -> list[bool]:
    """Rank 0's decisions (improved, stop) to every rank, so all stop at the same epoch."""
    if not rt.distributed:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=rt.device if rt.device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return [bool(v) for v in t.tolist()]


def launch_data_parallel(nproc: int, argv: list[str]) -> int:
    """Re-run this stage under torch's elastic launcher with ``nproc`` processes on this machine;
    returns the launcher's exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *argv]
    log.info("train.nproc = %d: launching %s", nproc, " ".join(cmd[1:]))
    return subprocess.call(cmd)


def in_process_group() -> bool:
    """True inside a launched worker (torchrun sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ
