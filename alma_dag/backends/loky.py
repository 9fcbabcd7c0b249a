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
import pickle
import threading
from collections.abc import Sequence
from functools import partial

import cloudpickle
import loky
from loky.process_executor import (
    BrokenProcessPool,
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
from .base import Backend, Batch, Outcome, TaskOutcome, as_calls, execute_calls

__all__ = ["LokyBackend", "map_pool_error", "shutdown_pool"]

#: Seconds an idle worker waits for work before loky lets it exit; long
#: enough that consecutive runs of a session reuse warm workers.
IDLE_TIMEOUT = 300

# (loky or concurrent.futures error, alma_dag error, what it means); the
# first matching row wins, so subclasses come before their bases.
_POOL_ERRORS: tuple[tuple[type[BaseException], type[TaskFailure], str], ...] = (
    (TerminatedWorkerError, WorkerDied, "its worker process died"),
    (BrokenProcessPool, WorkerDied, "the worker pool broke"),
    (cf.BrokenExecutor, WorkerDied, "the worker pool broke"),
    (ShutdownExecutorError, TaskCancelled, "the worker pool was shut down"),
    (cf.CancelledError, TaskCancelled, "it was cancelled"),
    (pickle.PicklingError, SerializationError, "it could not be pickled"),
)


def map_pool_error(exc: BaseException) -> TaskFailure:
    """The alma_dag error for a failure of the pool to run a batch."""
    ours, meaning = next(
        ((o, m) for foreign, o, m in _POOL_ERRORS if isinstance(exc, foreign)),
        (WorkerDied, "the worker pool failed"),
    )
    error = ours(f"batch lost: {meaning} ({type(exc).__name__}: {exc})")
    error.__cause__ = exc
    if isinstance(error, TaskCancelled):
        error.reason = meaning
    return error


# _pool_lock guards _pool: the process pool shared by every loky backend
# of this process, so consecutive runs -- from any thread -- reuse warm
# workers. (loky's own get_reusable_executor keeps one pool per thread, and
# each run has its own dispatcher thread.)
_pool_lock = threading.Lock()
_pool: loky.ProcessPoolExecutor | None = None


def shared_pool(n_workers: int, *, fresh: bool = False) -> loky.ProcessPoolExecutor:
    """The shared pool with ``n_workers`` workers, made anew when it has
    another size, or when ``fresh`` (the old one is broken or shut down)."""
    global _pool
    with _pool_lock:
        if fresh or _pool is None or _pool._max_workers != n_workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = loky.ProcessPoolExecutor(
                max_workers=n_workers, timeout=IDLE_TIMEOUT
            )
        return _pool


def shutdown_pool(kill_workers: bool = False) -> None:
    """Shut the shared pool down, if there is one; its workers exit."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, kill_workers=kill_workers)


def _dump_outcomes(calls: Sequence[tuple], outcomes: list[TaskOutcome]) -> bytes:
    try:
        return cloudpickle.dumps(outcomes)
    except BaseException:
        pass
    portable = []
    for call, (result, start, finish) in zip(calls, outcomes, strict=True):
        node = call[0]
        try:
            cloudpickle.dumps(result)
        except BaseException as exc:
            message = (
                f"task {node!r} returned a {type(result).__qualname__} that "
                f"cannot be pickled: {type(exc).__name__}: {exc}"
            )
            result = Err(SerializationError(message, task=node))
        portable.append((result, start, finish))
    return cloudpickle.dumps(portable)


def run_payload(payload: bytes) -> tuple[bool, bytes | str]:
    """Worker side: unpickle a batch, run it, pickle its outcomes."""
    try:
        calls, inputs = cloudpickle.loads(payload)
    except BaseException as exc:
        return False, f"the batch could not be unpickled: {type(exc).__name__}: {exc}"
    return True, _dump_outcomes(calls, execute_calls(calls, inputs))


class LokyBackend(Backend):
    """Run batches on a loky ``ProcessPoolExecutor`` shared by the process."""

    name = "loky"

    def open(self, n_workers, report) -> None:
        super().open(n_workers, report)
        self._pool: loky.ProcessPoolExecutor | None = None

    def submit(self, batch: Batch) -> None:
        try:
            payload = cloudpickle.dumps((as_calls(batch.items), batch.inputs))
        except BaseException as exc:
            error = SerializationError(
                f"batch could not be pickled: {type(exc).__name__}: {exc}"
            )
            self._report(Outcome(batch.id, error=error))
            return
        pool = shared_pool(self.n_workers)
        try:
            future = pool.submit(run_payload, payload)
        except (cf.BrokenExecutor, RuntimeError):  # broken or shut down
            pool = shared_pool(self.n_workers, fresh=True)
            future = pool.submit(run_payload, payload)
        self._pool = pool
        future.add_done_callback(partial(self._done, batch.id))

    def _done(self, batch_id: int, future: cf.Future) -> None:
        try:
            ok, data = future.result()
        except BaseException as exc:
            self._report(Outcome(batch_id, error=map_pool_error(exc)))
            return
        if not ok:
            self._report(Outcome(batch_id, error=SerializationError(data)))
            return
        try:
            outcomes = cloudpickle.loads(data)
        except BaseException as exc:
            error = SerializationError(
                f"batch results could not be unpickled: {type(exc).__name__}: {exc}"
            )
            self._report(Outcome(batch_id, error=error))
            return
        self._report(Outcome(batch_id, outcomes))

    def kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, kill_workers=True)

    def close(self) -> None:
        self._pool = None
