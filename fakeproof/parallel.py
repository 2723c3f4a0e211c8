"""One executor for per-video work: this process, every local core, or a Dask cluster.

The preprocessing stages cut a dataset into independent tasks (one video, or a fixed group of
videos) and hand them to :func:`executor`, which picks the backend from two params of the stage:

- ``<stage>.scheduler: null`` and ``<stage>.workers: 1``: every task in this process, in order
  (:class:`InProcess`: the serial reference run);
- ``<stage>.scheduler: null`` and ``workers: 0`` (every core, the default) or ``N``: a pool of
  local processes (:class:`LocalProcesses`), one intra-op torch thread each;
- ``<stage>.scheduler: tcp://host:8786``: an existing ``dask.distributed`` scheduler
  (:class:`DaskCluster`; Rocklin, "Dask: Parallel Computation with Blocked algorithms and Task
  Scheduling", SciPy 2015), e.g. one started by dask-jobqueue's ``SLURMCluster`` or
  dask-kubernetes. Workers must have fakeproof installed and see the data at the same absolute
  paths (a shared filesystem); ``workers`` is not used then.

:meth:`Executor.imap` returns results in task order whatever order they finish in, and keeps at
most :data:`WINDOW` tasks per slot in flight, so the caller writes outputs in one fixed order
(byte-identical to the serial run) and memory does not grow with the number of tasks.

Local processes start from a ``forkserver`` (Python's multiprocessing): the server is a fresh
interpreter that imports the modules named in ``preload`` once, and every worker forks from it.
That is as cheap as ``fork`` after the first start, yet safe when this process has already used
OpenMP threads or CUDA, which plain ``fork`` is not. Workers do not follow later changes of this
process's working directory or environment: callers pass absolute paths.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import re
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

WINDOW = 2  # tasks in flight per worker slot: one running, one queued behind it
#: What preprocessing workers import, once, in the forkserver (facenet_pytorch brings torchvision
#: and torch: seconds per worker otherwise). Both stages pass the same list, since a process that
#: runs both (tests, a notebook) starts one forkserver, with the first list it is given.
PREPROCESS_MODULES = ("fakeproof.frames", "fakeproof.faces", "facenet_pytorch")
CONNECT_TIMEOUT_S = 20
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")

_rank: Optional[int] = None  # this worker's ordinal among the pool's processes (None: not a worker)


class ParallelError(FakeproofError, RuntimeError):
    """The executor cannot run (bad scheduler address, unreachable cluster, a worker died)."""


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int, tasks: Optional[int] = None) -> int:
    """``workers`` (0 = every core), never more than ``tasks`` and at least 1."""
    n = cpu_count() if int(workers) <= 0 else int(workers)
    if tasks is not None:
        n = min(n, max(1, int(tasks)))
    return max(1, n)


def check_scheduler(address: Optional[str], key: str) -> Optional[str]:
    """The scheduler address, or None for local work; :class:`ParallelError` naming ``key`` if bad."""
    if address is None or not str(address).strip():
        return None
    address = str(address).strip()
    if not _ADDRESS.match(address):
        raise ParallelError(f"{key} = {address!r}: not a dask scheduler address; use "
                            "tcp://host:8786, or null for processes on this machine")
    return address


_DONE = object()


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` items ahead (order kept; errors re-raised).

    crop_faces reads and JPEG-decodes frame archives here (PIL releases the GIL) while MTCNN runs
    on the previous batch, which keeps a worker close to bare detection speed.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, _DONE))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))

    t = threading.Thread(target=work, name="frame-prefetch", daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.1)


# --------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------


def worker_rank() -> int:
    """This worker's ordinal (0, 1, ...) in a local pool; 0 in this process and on Dask workers."""
    return _rank or 0


def worker_setup(rank: Optional[int] = None) -> None:
    """Make this process a one-thread worker (idempotent): OpenMP/MKL pools of one thread, and
    one torch intra-op thread if torch is loaded (imported later, it reads the variables)."""
    global _rank
    if rank is not None:
        _rank = rank
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def forkserver_context(preload: Sequence[str] = ()) -> Any:
    """The ``forkserver`` multiprocessing context, its server started with ``preload`` imported.

    Only the first call in a process starts the server (later lists are ignored); ``"__main__"``
    is preloaded too, which each worker would otherwise import again. Where the OS has no
    forkserver (Windows), ``spawn``: every worker imports what it needs itself.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover - Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "fakeproof.parallel", *preload])
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return ctx


def _pool_init(counter: Any) -> None:
    with counter.get_lock():
        rank = counter.value
        counter.value += 1
    worker_setup(rank)


def _dask_call(fn: Callable[[Any], Any], item: Any) -> Any:
    worker_setup()
    return fn(item)


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------


class Executor:
    """Runs ``fn`` over tasks; see :meth:`imap`. ``description`` is for the stage's log line."""

    description = ""
    slots = 1
    in_process = False

    def __init__(self, key: str) -> None:
        self.key = key  # the params section, for error messages ("faces")

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, yielded in the items' order; at most ``WINDOW * slots``
        tasks are submitted ahead of the one being yielded. ``fn`` must be a module-level
        function (it is pickled by reference)."""
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(self._submit(fn, item))
                while len(pending) >= max(1, WINDOW * self._slots_now()):
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:
            for fut in pending:
                fut.cancel()

    def _slots_now(self) -> int:
        return self.slots

    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Any:
        raise NotImplementedError

    def _result(self, fut: Any) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcess(Executor):
    """Every task in this process, one after the other (the serial reference)."""

    description = "1 process (this one)"
    in_process = True

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            yield fn(item)


class LocalProcesses(Executor):
    """A pool of ``n`` local worker processes forked from a forkserver (see module docstring)."""

    def __init__(self, key: str, n: int, preload: Sequence[str] = ()) -> None:
        super().__init__(key)
        ctx = forkserver_context(preload)
        self.slots = n
        self.description = f"{n} local processes"
        self._pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_pool_init,
                                         initargs=(ctx.Value("i", 0),))

    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Future:
        try:
            return self._pool.submit(fn, item)
        except BrokenProcessPool:
            raise self._died() from None

    def _result(self, fut: Future) -> Any:
        try:
            return fut.result()
        except BrokenProcessPool:
            raise self._died() from None

    def _died(self) -> ParallelError:
        return ParallelError(f"{self.key}.workers = {self.slots}: a worker process died (killed for "
                             f"lack of memory?); lower {self.key}.workers and re-run")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskCluster(Executor):
    """Tasks on an existing ``dask.distributed`` scheduler at ``address``."""

    def __init__(self, key: str, address: str) -> None:
        super().__init__(key)
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - a requirement
            raise ParallelError(f"{key}.scheduler = {address}: dask.distributed is not installed; "
                                "pip install 'dask[distributed]'") from None
        try:
            self._client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise ParallelError(f"{key}.scheduler = {address}: no dask scheduler answered within "
                                f"{CONNECT_TIMEOUT_S} s ({type(e).__name__}); start one there, or "
                                f"set {key}.scheduler: null") from None
        self.address = address
        self._checked_at = 0.0
        self.slots = self._slots_now()
        self.description = (f"dask {address} ({len(self._client.nthreads())} workers, "
                            f"{self.slots} threads)")

    def _slots_now(self) -> int:
        # Workers may join later (queued batch jobs): recount every few seconds.
        now = time.monotonic()
        if now - self._checked_at > 5.0:
            self._checked_at = now
            self.slots = max(1, sum(self._client.nthreads().values()))
        return self.slots

    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Any:
        return self._client.submit(_dask_call, fn, item, pure=False)

    def _result(self, fut: Any) -> Any:
        from distributed import KilledWorker

        try:
            return fut.result()
        except KilledWorker:
            raise ParallelError(f"{self.key}.scheduler = {self.address}: a task killed its dask "
                                "workers repeatedly (out of memory?); give workers more memory")
        except ModuleNotFoundError as e:
            raise ParallelError(f"{self.key}.scheduler = {self.address}: a dask worker cannot "
                                f"import {e.name!r}; install fakeproof on every worker") from None
        finally:
            fut.release()

    def close(self) -> None:
        self._client.close()


@contextlib.contextmanager
def executor(key: str, workers: int, scheduler: Optional[str], tasks: Optional[int] = None,
             preload: Sequence[str] = ()) -> Iterator[Executor]:
    """The executor the params ``<key>.workers`` and ``<key>.scheduler`` ask for (see module doc).

    ``tasks`` caps the number of local processes (no idle workers for a small job);
    ``preload`` names modules the local workers import once, in the forkserver.
    """
    address = check_scheduler(scheduler, f"{key}.scheduler")
    if address is not None:
        ex: Executor = DaskCluster(key, address)
    else:
        n = resolve_workers(workers, tasks)
        ex = InProcess(key) if n == 1 else LocalProcesses(key, n, preload)
    log.debug("%s: tasks run on %s", key, ex.description)
    try:
        yield ex
    finally:
        ex.close()
