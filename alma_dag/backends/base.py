"""What every backend shares: batches, outcomes, and the code a worker runs.

The dispatcher hands a backend ``Batch`` es: consecutive tasks of one lane,
each depending only on tasks finished earlier (whose results travel with
the batch as ``inputs``) or on tasks earlier in the same batch. A worker
runs the tasks in order with ``execute_batch``, passing results along, and
the backend reports one ``Outcome`` per batch through the callback it was
opened with, from whatever thread it likes.

A task that raises gives an ``Err``; a task whose dependency failed gives
``Err(DependencyError)`` without running. An ``Outcome`` carries an
``error`` instead of results only when the batch as a whole was lost: its
worker died (``WorkerDied``), it could not be pickled or unpickled
(``SerializationError``), or the pool was shut down under it
(``TaskCancelled``). The dispatcher decides what to run again.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ..errors import (
    DependencyError,
    Err,
    SerializationError,
    TaskCancelled,
    TaskFailure,
    WorkerDied,
)
from ..graph import Task, resolve
from ..store import Store

__all__ = [
    "Backend",
    "Batch",
    "Call",
    "Outcome",
    "as_calls",
    "dump_batch",
    "execute_batch",
    "execute_calls",
    "failed_dependency",
    "lost_batch_error",
]


@dataclass(frozen=True, slots=True)
class Batch:
    """Tasks of one lane handed to a backend together."""

    #: Identifies the batch in its ``Outcome``.
    id: int
    #: ``(node id, Task)`` pairs in the order they run.
    items: tuple[tuple[Hashable, Task], ...]
    #: Results of dependencies finished before the batch, by node id.
    inputs: Mapping[Hashable, Any]
    #: Seconds the batch may run before it is stopped (None: no limit).
    timeout: float | None = None
    #: Batches still in flight that this one must run after, with results
    #: its tasks need: ``(batch id, its node ids in order)`` pairs. Only a
    #: backend that ``chains`` is given any; it starts the batch once those
    #: have run, and adds their results to ``inputs`` itself.
    after: tuple[tuple[int, tuple[Hashable, ...]], ...] = ()


#: One task's outcome: its result (a value or an ``Err``) and when it ran,
#: as wall-clock seconds from ``time.time()`` on the worker.
TaskOutcome = tuple[Any, float, float]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a batch."""

    #: The batch's ``Batch.id``.
    batch: int
    #: One ``(result, start, finish)`` per task, in batch order, or None
    #: when the batch was lost.
    results: Sequence[TaskOutcome] | None = None
    #: Why the batch was lost (``WorkerDied``, ``SerializationError``,
    #: ``TaskCancelled``); None when it ran.
    error: BaseException | None = None


#: How a task travels to a worker: ``(node id, function, args, kwargs,
#: dependencies)``. Plain tuples pickle ten times faster than ``Task``s.
Call = tuple[Hashable, Callable, tuple, Mapping[str, Any], tuple]


def as_calls(items: Sequence[tuple[Hashable, Task]]) -> list[Call]:
    """The ``Call`` tuples of ``(node id, Task)`` pairs."""
    return [(n, t.function, t.args, t.kwargs, t.dependencies) for n, t in items]


def dump_batch(batch: Batch) -> bytes:
    """What travels to a worker process: one cloudpickle payload per batch,
    so a function or input shared by its tasks is pickled once.

    Raises
    ------
    SerializationError
        Something in the batch cannot be pickled.
    """
    try:
        return cloudpickle.dumps((as_calls(batch.items), batch.inputs))
    except BaseException as exc:
        raise SerializationError(
            f"batch could not be pickled: {type(exc).__name__}: {exc}"
        ) from exc


#: How a backend maps a foreign failure: rows of (foreign error type,
#: alma_dag error type, what it means), the first match winning.
ErrorTable = Sequence[tuple[type[BaseException], type[TaskFailure], str]]


def lost_batch_error(
    exc: BaseException, table: ErrorTable, otherwise: str
) -> TaskFailure:
    """The alma_dag error for ``exc``, a backend's failure to run a batch,
    by the first row of ``table`` it matches (else ``WorkerDied`` with the
    meaning ``otherwise``); the foreign error is its ``__cause__``."""
    ours, meaning = next(
        ((o, m) for foreign, o, m in table if isinstance(exc, foreign)),
        (WorkerDied, otherwise),
    )
    error = ours(f"batch lost: {meaning} ({type(exc).__name__}: {exc})")
    error.__cause__ = exc
    if isinstance(error, TaskCancelled):
        error.reason = meaning
    return error


def failed_dependency(
    node: Hashable, dependencies: Sequence[Hashable], results: Mapping[Hashable, Any]
) -> Err | None:
    """The ``Err(DependencyError)`` ``node`` gets if a dependency failed.

    Its ``dependency`` names the task that actually failed, even when that
    is a dependency's dependency.
    """
    for dependency in dependencies:
        result = results.get(dependency)
        if not isinstance(result, Err):
            continue
        exc = result.exception
        if isinstance(exc, DependencyError):
            root = exc.dependency
            message = (
                f"task {node!r} not run: its dependency {dependency!r} was not "
                f"run because task {root!r} failed"
            )
        else:
            root = dependency
            message = (
                f"task {node!r} not run: its dependency {dependency!r} failed "
                f"with {result.err_type.__name__}: {result}"
            )
        return Err(DependencyError(message, task=node, dependency=root))
    return None


def run_call(call: Call, results: Mapping[Hashable, Any]) -> TaskOutcome:
    """Run one task with its dependencies' results; never raises."""
    node, function, args, kwargs, dependencies = call
    start = time.time()
    if dependencies:
        err = failed_dependency(node, dependencies, results)
        if err is not None:
            return err, start, start
    try:
        if dependencies:
            args = resolve(args, results)
            kwargs = resolve(kwargs, results)
        result = function(*args, **kwargs)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too
        result = Err.from_current(exc)
    return result, start, time.time()


def execute_calls(
    calls: Sequence[Call], inputs: Mapping[Hashable, Any]
) -> list[TaskOutcome]:
    """Run calls in order, passing results along; what a worker runs."""
    results = dict(inputs)
    outcomes = []
    for call in calls:
        outcome = run_call(call, results)
        results[call[0]] = outcome[0]
        outcomes.append(outcome)
    return outcomes


def execute_batch(
    items: Sequence[tuple[Hashable, Task]], inputs: Mapping[Hashable, Any]
) -> list[TaskOutcome]:
    """Run a batch's tasks in order, passing results along.

    Examples
    --------
    >>> from alma_dag.graph import TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-2,))
    >>> _ = g.add("b", pow, (a, 3))
    >>> [r for r, _, _ in execute_batch(list(g.items()), {})]
    [2, 8]
    """
    return execute_calls(as_calls(items), inputs)


class Backend(abc.ABC):
    """Where batches run.

    A backend is opened once per run with the number of workers and a
    ``report`` callback, takes batches with ``submit``, and calls
    ``report(Outcome)`` once for each batch, from any thread. ``kill``
    stops everything running at once: each batch not yet reported is then
    reported lost, or not at all -- the dispatcher forgets batches it
    killed.
    """

    #: The name used in ``backend="..."``.
    name: str = ""

    #: Whether the backend takes batches that depend on batches still in
    #: flight (``Batch.after``): it then starts each as soon as those end,
    #: without a round trip through the dispatcher. Worth it where that
    #: round trip is long (a cluster's scheduler).
    chains: bool = False

    def open(
        self,
        n_workers: int,
        report: Callable[[Outcome], None],
        store: Store | None = None,
    ) -> None:
        """Prepare to run up to ``n_workers`` batches at once.

        ``store`` is the run's checkpoint store, if any: a backend whose
        workers may not share the dispatcher's disk serves the states they
        ``save()`` and read through it (see ``alma_dag.store.StateRoute``).
        """
        self._report = report
        self.n_workers = n_workers
        self.store = store

    @abc.abstractmethod
    def submit(self, batch: Batch) -> None:
        """Start ``batch``; its ``Outcome`` is reported later."""

    def drive(self, timeout: float | None) -> bool:
        """Lend the dispatcher thread to the backend for up to ``timeout``
        seconds; returns whether it did any work (only ``inline`` does)."""
        return False

    def started(self, batch_id: int) -> float | None:
        """Wall-clock time (``time.time()``) a batch with a timeout began
        running, or None if it has not begun -- or the backend cannot tell,
        in which case it enforces timeouts itself."""
        return None

    @abc.abstractmethod
    def kill(self) -> None:
        """Abort every running batch, killing its worker if need be."""

    def close(self) -> None:  # noqa: B027 -- a hook, empty by default
        """Release what ``open`` took. The backend may be opened again."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
