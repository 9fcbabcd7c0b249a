"""The ``loky`` backend: batches run on a shared loky process pool.

Each batch travels as one cloudpickle payload, so functions, lambdas and
closures defined in ``__main__`` or a notebook run in the workers, and
nothing depends on ``fork``: it behaves the same on Windows. Pickling the
payload once per batch shares each function and input across the batch's
tasks.

Failures of the pool itself are mapped to alma_dag's errors in one place,
``map_pool_error``: a dead worker breaks loky's pool, every batch in flight
is reported with ``WorkerDied``, and the next submit gets a fresh pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import mmap
import os
import pickle
import re
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Hashable, Mapping, Sequence
from functools import partial
from typing import Any

import cloudpickle
import loky
import psutil
from loky.process_executor import (
    BrokenProcessPool,
    LokyRecursionError,
    ShutdownExecutorError,
    TerminatedWorkerError,
)

from ..errors import (
    Err,
    SerializationError,
    TaskCancelled,
    TaskFailure,
    WorkerDied,
)
from .base import (
    Backend,
    Batch,
    Outcome,
    TaskOutcome,
    dump_batch,
    execute_calls,
    lost_batch_error,
)

__all__ = [
    "LokyBackend",
    "map_pool_error",
    "payload_outcome",
    "run_payload",
    "shutdown_pool",
]

#: Seconds an idle worker waits for work before loky lets it exit; long
#: enough that consecutive runs of a session reuse warm workers.
IDLE_TIMEOUT = 300

# (loky or concurrent.futures error, alma_dag error, what it means); the
# first matching row wins, so subclasses come before their bases.
_POOL_ERRORS: tuple[tuple[type[BaseException], type[TaskFailure], str], ...] = (
    (TerminatedWorkerError, WorkerDied, "its worker process died"),
    (LokyRecursionError, WorkerDied, "loky refused to nest another pool"),
    (BrokenProcessPool, WorkerDied, "the worker pool broke"),
    (cf.BrokenExecutor, WorkerDied, "the worker pool broke"),
    (ShutdownExecutorError, TaskCancelled, "the worker pool was shut down"),
    (cf.CancelledError, TaskCancelled, "it was cancelled"),
    (pickle.PicklingError, SerializationError, "it could not be pickled"),
)


def map_pool_error(exc: BaseException) -> TaskFailure:
    """The alma_dag error for a failure of the pool to run a batch."""
    error = lost_batch_error(exc, _POOL_ERRORS, "the worker pool failed")
    if isinstance(error, WorkerDied):
        error.exitcode = _exit_code(str(exc))
    return error


def _exit_code(message: str) -> int | None:
    """The exit code in loky's message, as ``subprocess`` gives it: 3 for
    "{EXIT(3)}", -11 (killed by signal 11) for "{SIGSEGV(-11)}"; None when
    there is none, or several."""
    codes = re.findall(r"\b[A-Z]+\((-?\d+)\)", message)
    return int(codes[0]) if len(codes) == 1 else None


#: Batches with a timeout whose start can be watched at once, per pool.
CLOCK_SLOTS = 1024

# Set in each worker by _init_worker: where a batch with a timeout writes
# the time it starts, so the dispatcher starts its clock then and not at
# submission (the batch may wait in the queue behind another run's work).
_worker_clocks = None


#: Seconds between a worker's looks at whether its dispatcher's process is
#: still alive.
PARENT_POLL = 0.5


def _init_worker(clocks, parent: int) -> None:
    global _worker_clocks
    _worker_clocks = clocks
    threading.Thread(
        target=_exit_with_parent,
        args=(parent,),
        name="alma_dag-parent-watch",
        daemon=True,
    ).start()


def _exit_with_parent(parent: int) -> None:
    """Exit the worker once the process that made its pool is gone.

    loky's workers wait on their call queue, whose pipe they hold both
    ends of, so they never see their parent die: without this, a killed
    dispatcher's workers would go on running the batches queued for them
    -- beside the ones a restarted run hands out again -- and linger for
    the pool's idle timeout.
    """
    while psutil.pid_exists(parent) and os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


class _Clocks:
    """Start times of batches, in a small file that every worker maps.

    Written without locks, so a worker killed at any moment leaves nothing
    locked; the pool's owner removes the file when the pool goes.
    """

    def __init__(self, path: str, slots: int = CLOCK_SLOTS) -> None:
        self.path = path
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), 8 * slots)

    @classmethod
    def create(cls) -> _Clocks:
        fd, path = tempfile.mkstemp(prefix="alma_dag-clocks-")
        with os.fdopen(fd, "wb") as file:
            file.write(bytes(8 * CLOCK_SLOTS))
        clocks = cls(path)
        weakref.finalize(clocks, _remove_clocks, clocks._map, path)
        return clocks

    def __getitem__(self, slot: int) -> float:
        return struct.unpack_from("d", self._map, 8 * slot)[0]

    def __setitem__(self, slot: int, value: float) -> None:
        struct.pack_into("d", self._map, 8 * slot, value)

    def __reduce__(self):
        return (_Clocks, (self.path,))


def _remove_clocks(mapping: mmap.mmap, path: str) -> None:
    mapping.close()
    try:
        os.remove(path)
    except OSError:  # Windows: a worker still maps it; the OS cleans up
        pass


class _Pool:
    """A loky pool and the start clocks of its batches with a timeout."""

    def __init__(self, n_workers: int) -> None:
        self.clocks = _Clocks.create()
        self.executor = loky.ProcessPoolExecutor(
            max_workers=n_workers,
            timeout=IDLE_TIMEOUT,
            initializer=_init_worker,
            initargs=(self.clocks, os.getpid()),
        )
        # _lock guards _free.
        self._lock = threading.Lock()
        self._free = list(range(CLOCK_SLOTS))

    def take_slot(self) -> int:
        """A free clock slot, reset, or -1 when all are taken."""
        with self._lock:
            if not self._free:
                return -1
            slot = self._free.pop()
        self.clocks[slot] = 0.0
        return slot

    def give_slot(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)


# _pool_lock guards _pools: the process pools shared by every loky backend
# of this process, one per size, so consecutive runs -- from any thread --
# reuse warm workers. (loky's own get_reusable_executor keeps one pool per
# thread, and each run has its own dispatcher thread.)
_pool_lock = threading.Lock()
_pools: dict[int, _Pool] = {}


def shared_pool(n_workers: int, *, fresh: bool = False) -> _Pool:
    """The shared pool with ``n_workers`` workers, made anew when there is
    none or when ``fresh`` (the old one is broken or shut down)."""
    with _pool_lock:
        pool = _pools.get(n_workers)
        if fresh or pool is None:
            if pool is not None:
                pool.executor.shutdown(wait=False)
            pool = _pools[n_workers] = _Pool(n_workers)
        return pool


def shutdown_pool(kill_workers: bool = False) -> None:
    """Shut the shared pools down; their workers exit."""
    with _pool_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.executor.shutdown(wait=True, kill_workers=kill_workers)


class _Pickler(cloudpickle.CloudPickler):
    """Pickles exceptions by their own ``__reduce_ex__``, past the
    ``copyreg`` entries tblib installs in dask workers (which lose
    ``SystemExit.code``)."""

    def reducer_override(self, obj):
        if isinstance(obj, BaseException):
            return obj.__reduce_ex__(cloudpickle.DEFAULT_PROTOCOL)
        return super().reducer_override(obj)


def _dumps(obj: object) -> bytes:
    with io.BytesIO() as file:
        _Pickler(file, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(obj)
        return file.getvalue()


def _dump_outcomes(calls: Sequence[tuple], outcomes: list[TaskOutcome]) -> bytes:
    try:
        return _dumps(outcomes)
    except BaseException:
        pass
    portable = []
    for call, (result, start, finish) in zip(calls, outcomes, strict=True):
        node = call[0]
        try:
            _dumps(result)
        except BaseException as exc:
            message = (
                f"task {node!r} returned a {type(result).__qualname__} that "
                f"cannot be pickled: {type(exc).__name__}: {exc}"
            )
            result = Err(SerializationError(message, task=node))
        portable.append((result, start, finish))
    return _dumps(portable)


def run_payload(
    payload: bytes, slot: int = -1, upstream: Mapping[Hashable, Any] | None = None
) -> tuple[bool, bytes | str]:
    """Worker side: unpickle a batch, run it, pickle its outcomes. A batch
    with a timeout first writes its start time in its clock ``slot``;
    ``upstream`` holds results of chained batches, inputs too."""
    if slot >= 0 and _worker_clocks is not None:
        _worker_clocks[slot] = time.time()
    try:
        calls, inputs = cloudpickle.loads(payload)
    except BaseException as exc:
        return False, f"the batch could not be unpickled: {type(exc).__name__}: {exc}"
    if upstream:
        inputs = {**upstream, **inputs}
    return True, _dump_outcomes(calls, execute_calls(calls, inputs))


def payload_outcome(batch_id: int, ok: bool, data: bytes | str) -> Outcome:
    """The ``Outcome`` of what ``run_payload`` returned for a batch."""
    if not ok:
        return Outcome(batch_id, error=SerializationError(data))
    try:
        return Outcome(batch_id, cloudpickle.loads(data))
    except BaseException as exc:
        error = SerializationError(
            f"batch results could not be unpickled: {type(exc).__name__}: {exc}"
        )
        return Outcome(batch_id, error=error)


class LokyBackend(Backend):
    """Run batches on a loky ``ProcessPoolExecutor`` shared by the process."""

    name = "loky"

    def open(self, n_workers, report, store=None) -> None:
        super().open(n_workers, report, store)
        self._pool: _Pool | None = None
        # _lock guards _slots: batch id -> (pool, clock slot) of batches
        # with a timeout still running.
        self._lock = threading.Lock()
        self._slots: dict[int, tuple[_Pool, int]] = {}

    def submit(self, batch: Batch) -> None:
        try:
            payload = dump_batch(batch)
        except SerializationError as error:
            self._report(Outcome(batch.id, error=error))
            return
        pool = shared_pool(self.n_workers)
        try:
            future = self._submit(pool, batch, payload)
        except (cf.BrokenExecutor, RuntimeError):  # broken or shut down
            pool = shared_pool(self.n_workers, fresh=True)
            future = self._submit(pool, batch, payload)
        self._pool = pool
        future.add_done_callback(partial(self._done, batch.id))

    def _submit(self, pool: _Pool, batch: Batch, payload: bytes) -> cf.Future:
        slot = pool.take_slot() if batch.timeout is not None else -1
        if slot >= 0:
            with self._lock:
                self._slots[batch.id] = (pool, slot)
        return pool.executor.submit(run_payload, payload, slot)

    def started(self, batch_id: int) -> float | None:
        with self._lock:
            pool, slot = self._slots.get(batch_id, (None, -1))
        if pool is None:
            return None
        began = pool.clocks[slot]
        return began if began > 0 else None

    def _done(self, batch_id: int, future: cf.Future) -> None:
        with self._lock:
            pool, slot = self._slots.pop(batch_id, (None, -1))
        if pool is not None:
            pool.give_slot(slot)
        try:
            ok, data = future.result()
        except BaseException as exc:
            self._report(Outcome(batch_id, error=map_pool_error(exc)))
            return
        self._report(payload_outcome(batch_id, ok, data))

    def kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.executor.shutdown(wait=True, kill_workers=True)

    def close(self) -> None:
        self._pool = None
