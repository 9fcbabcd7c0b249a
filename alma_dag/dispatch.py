"""The dispatcher: runs a plan's lanes on a backend.

::

    caller threads              dispatcher thread                    backend
    ──────────────              ─────────────────                    ───────
    start() ──► spawns ───────► _run: plan, open backend
    pause()/resume()/stop() ─┐    loop:
      (state change under    │      claim ready batches ──submit──► workers
       the lock + wakeup)    ├──►   wait for an event
                             │      apply outcomes: record results,
    backend report(Outcome) ─┘        release dependents, retry,
      (any thread) ─► events          isolate suspects, enforce timeouts
    progress()/results ◄─ lock ──   counts and results

- **Callers** change the run's state with ``start``, ``pause``, ``resume``
  and ``stop`` (each a guarded transition of ``RunState``) and read
  ``progress()`` and ``results`` at any moment.
- **The dispatcher thread** owns the ledger (the run's bookkeeping). It
  hands out work at one claim point, under the lock, only while the run is
  ``RUNNING``: each lane's tasks in plan order, a task as soon as its
  dependencies are done, several consecutive tasks of a lane in one batch
  when their measured durations are small.
- **The backend** runs batches and reports each ``Outcome`` through the
  events queue from whatever thread it uses.

Task selection policy: a lane runs its own tasks in plan order and waits
when its next task waits. A batch grows while the next task of the lane is
ready (its dependencies are finished or earlier in the batch) and the
batch's estimated duration stays under ``TARGET_BATCH_SECONDS``; a task
whose duration is not yet known, or that has a timeout or retries, runs
alone. While a lane's batch runs, the lane may prefetch one more batch of
tasks that are already ready, which waits in the pool's queue and so
hides the round trip to a worker.

Chaining: with a backend that ``chains`` (dask, whose round trip through
the scheduler is ~10 ms), a task is also handed out while its unfinished
dependencies run, in batches it is chained to (``Batch.after``), and a
lane keeps up to ``CHAINED_DEPTH`` batches in flight. An outcome that
comes back before that of a batch it was chained to waits for it, so a
node is still never recorded before its dependencies; a chained batch
lost with its upstream one runs again without being suspected. Nothing is
chained to, or chained as, a task that runs alone (timeout or retries).

Failures: a task's exception is its result (an ``Err``); its dependents get
``Err(DependencyError)`` at once, without running. When a worker dies, every
task of the batches it took down becomes a *suspect*; suspects then run
alone, one at a time with nothing else in flight, so the task that kills
its worker is found and fails with ``WorkerDied`` while the others succeed.
A task past its timeout is stopped by killing the pool; the batches in
flight beside it are run again.

Memory: the ledger's bookkeeping of unfinished nodes is made when a run
starts and only shrinks. Without a store every result stays in memory (it
is the only copy). With one, a result leaves memory once it is committed and no
unfinished task takes it as an input, and is read back from the store when
asked for; times and attempt counts leave with the commit; failures stay.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable, Container, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, Batch, Outcome, get_backend
from .backends.base import failed_dependency
from .errors import (
    DefinitionError,
    Err,
    InvalidStateError,
    SerializationError,
    TaskCancelled,
    TaskTimeoutError,
    WorkerDied,
)
from .graph import TaskGraph
from .plan import Plan, heft
from .store import NodeRecord, Store

__all__ = ["Callbacks", "Dispatcher", "Progress", "RunState"]

logger = logging.getLogger(__name__)

#: A batch grows while its estimated duration stays under this many
#: seconds: long enough to amortize a round trip to a worker process (about
#: 0.3 ms), short enough not to hold back dependents in other lanes.
TARGET_BATCH_SECONDS = 0.005

#: A lane prefetches its next batch only when that batch's first task is
#: expected to take at most this many seconds; for longer tasks the round
#: trip saved is negligible, and a queued batch would only look "running".
PREFETCH_SECONDS = 0.1

#: Batches in flight per lane with a backend that chains: those queued on
#: the cluster hold no worker, and each hides one round trip.
CHAINED_DEPTH = 4

#: Most tasks in one batch, whatever their durations.
MAX_BATCH_TASKS = 4096

#: Seconds of per-task overhead in a worker, added to measured durations
#: when sizing batches.
TASK_OVERHEAD_SECONDS = 5e-6

#: Seconds between looks at whether a batch past its nominal deadline has
#: begun running at all.
_CLOCK_POLL = 0.02

#: Stands for the result of a finished node that is not kept in memory: it
#: is committed to the store (by an earlier run, or by this one and no
#: unfinished task needs it as an input), and loaded from there each time it
#: is read, never cached.
_STORED = object()

#: A task with more inputs than this has them looked up in a set (made when
#: first needed, dropped when it finishes) when results are let go.
_SCANNED_INPUTS = 16

#: Weight of the newest measurement in a function's duration estimate.
_SMOOTHING = 0.3


class RunState(enum.Enum):
    """Where a run is in its life."""

    #: Created; ``start()`` or ``run()`` not yet called.
    PENDING = "pending"
    #: Handing out work and collecting results.
    RUNNING = "running"
    #: ``pause()`` was called: nothing new starts, running tasks finish.
    PAUSED = "paused"
    #: ``stop()`` was called: running tasks are being aborted.
    STOPPING = "stopping"
    #: Every task finished and none failed.
    FINISHED = "finished"
    #: Every task finished or gave up, and at least one failed.
    FAILED = "failed"
    #: Stopped before the end; ``start()`` continues with what is left.
    STOPPED = "stopped"


_OVER = frozenset({RunState.FINISHED, RunState.FAILED, RunState.STOPPED})

_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.STOPPED}),
    RunState.RUNNING: frozenset(
        {RunState.PAUSED, RunState.STOPPING, RunState.FINISHED, RunState.FAILED}
    ),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.STOPPING}),
    RunState.STOPPING: frozenset({RunState.STOPPED}),
    RunState.FINISHED: frozenset({RunState.RUNNING}),
    RunState.FAILED: frozenset({RunState.RUNNING}),
    RunState.STOPPED: frozenset({RunState.RUNNING}),
}


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a run's progress."""

    #: The run's state when the snapshot was taken.
    state: RunState
    #: Tasks in the graph.
    total: int
    #: Tasks finished with a result.
    done: int
    #: Tasks finished with an ``Err`` (dependents of failures included).
    failed: int
    #: Tasks handed to the backend and not yet finished.
    running: int
    #: Seconds since the run (this ``start``) began.
    elapsed: float
    #: Planned makespan of what this ``start`` planned, in cost units.
    planned: float
    #: Estimated seconds until the end, from the plan scaled by measured
    #: durations; None until something has been measured.
    eta: float | None

    @property
    def pending(self) -> int:
        """Tasks not started yet."""
        return self.total - self.done - self.failed - self.running


class Callbacks:
    """Hooks called by the dispatcher thread; override the ones you need.

    They run outside the dispatcher's lock. An exception they raise is
    logged, not propagated. ``on_finish`` is always called, from a
    ``finally``.
    """

    def on_start(self, dispatcher: Dispatcher) -> None:
        """The run began (or resumed with a new ``start``)."""

    def on_task_start(self, node: Hashable) -> None:
        """``node`` was handed to the backend."""

    def on_task_done(self, node: Hashable, result: Any) -> None:
        """``node`` finished with ``result`` (an ``Err`` if it failed)."""

    def on_finish(self, failed: bool) -> None:
        """The run ended; ``failed`` tells whether any task failed or the
        run was stopped."""


# -- the ledger: a run's bookkeeping, plain data and plain functions ----------


@dataclass(slots=True)
class Ledger:
    """The dispatcher thread's view of one ``start``: lanes and results."""

    #: The graph being run.
    graph: TaskGraph
    #: One ordered node-id list per lane, from the plan.
    lanes: list[list[Hashable]]
    #: Per lane, the index of its first unfinished node.
    positions: list[int]
    #: Per lane, how many of its batches are in flight.
    inflight: list[int]
    #: Count of unfinished dependencies per unfinished node: a node of the
    #: graph is finished exactly when it is not in here.
    waiting: dict[Hashable, int]
    #: Results of finished nodes kept in memory (values or ``Err``): all of
    #: them without a store. With one, a value leaves once it is committed
    #: and no unfinished node takes it as an input (``Dispatcher._let_go``);
    #: failures stay.
    results: dict[Hashable, Any]
    #: Nodes in flight.
    running: set[Hashable] = field(default_factory=set)
    #: Nodes that must run alone (their batch failed as a whole).
    solo: set[Hashable] = field(default_factory=set)
    #: Nodes that must run alone with nothing else in flight (their batch
    #: was lost with a dead worker).
    suspects: set[Hashable] = field(default_factory=set)
    #: Attempts made so far per unfinished node, for retries (a finished
    #: node's count is dropped once it is recorded in the store, if any).
    attempts: dict[Hashable, int] = field(default_factory=dict)
    #: Per finished node whose value is kept for its dependents: how many
    #: unfinished dependents take it as an input (with a store only).
    consumers: dict[Hashable, int] = field(default_factory=dict)
    #: The inputs, as a set, of unfinished tasks with many of them.
    input_sets: dict[Hashable, frozenset] = field(default_factory=dict)


def start_ledger(
    graph: TaskGraph, plan: Plan, results: Mapping[Hashable, Any]
) -> Ledger:
    """A ledger for running ``plan``; ``results`` holds the nodes already
    done, each with its result or ``_STORED`` (then not kept in memory).

    Every other node of the graph waits; one that ``plan`` does not hold
    can never start (the dispatcher then says so), rather than pass for
    finished.
    """
    waiting = {}
    task = graph.task
    for node in graph:
        if node not in results:
            waiting[node] = sum(1 for d in task(node).dependencies if d not in results)
    kept = {n: r for n, r in results.items() if r is not _STORED}
    n = len(plan.lanes)
    return Ledger(
        graph, [list(lane) for lane in plan.lanes], [0] * n, [0] * n, waiting, kept
    )


def is_ready(ledger: Ledger, node: Hashable) -> bool:
    """Whether every dependency of ``node`` is finished."""
    return ledger.waiting.get(node, 0) == 0


def _head_index(ledger: Ledger, lane: int) -> int:
    """Index of the lane's first node neither finished nor in flight."""
    nodes, pos, waiting = ledger.lanes[lane], ledger.positions[lane], ledger.waiting
    while pos < len(nodes) and nodes[pos] not in waiting:
        pos += 1
    ledger.positions[lane] = pos
    running = ledger.running
    while pos < len(nodes) and (nodes[pos] in running or nodes[pos] not in waiting):
        pos += 1
    return pos


def lane_head(ledger: Ledger, lane: int) -> Hashable | None:
    """The lane's next node to hand out, or None when there is none."""
    pos = _head_index(ledger, lane)
    nodes = ledger.lanes[lane]
    return nodes[pos] if pos < len(nodes) else None


def claim_batch(
    ledger: Ledger,
    lane: int,
    estimate: Callable[[Hashable], float],
    budget: float = TARGET_BATCH_SECONDS,
    *,
    alone: bool = False,
    depth: int = 1,
    free_worker: bool = True,
    chained: bool = False,
) -> list[Hashable]:
    """Take the next batch of ``lane``, or [] if its next task is not ready.

    The batch starts with the lane's next task and goes on with following
    tasks that are ready once the batch's earlier tasks are done, while the
    sum of ``estimate(node)`` stays within ``budget``. Solo and suspect
    nodes, and any batch when ``alone`` is true, hold one task.

    A lane has at most ``depth`` batches in flight. A second one
    (``depth=2``) is a prefetch: it starts as soon as a worker is free, so
    it never holds a task that runs alone. A task with a timeout is taken
    only when a worker is free (``free_worker``), so its clock starts when
    it does.

    With ``chained`` (a backend that chains batches), a task is also taken
    when its unfinished dependencies are all in flight, and none of them
    nor it runs alone: the backend starts it once they end.
    """
    if ledger.inflight[lane] >= depth:
        return []
    pos = _head_index(ledger, lane)
    nodes = ledger.lanes[lane]
    if pos >= len(nodes) or not _can_start(ledger, nodes[pos], (), chained):
        return []
    head = nodes[pos]
    task = ledger.graph.task
    if _runs_alone(ledger, head) and (
        ledger.inflight[lane] or (task(head).timeout is not None and not free_worker)
    ):
        return []
    batch = [head]
    if not (alone or _runs_alone(ledger, head)):
        _extend(ledger, batch, nodes, pos + 1, estimate, budget, chained)
    ledger.inflight[lane] += 1
    ledger.running.update(batch)
    return batch


def _can_start(
    ledger: Ledger, node: Hashable, members: Container[Hashable], chained: bool
) -> bool:
    """Whether ``node`` may go in a batch with ``members`` before it: each
    dependency finished or among them -- or, ``chained``, in flight in a
    batch the new one can be chained to."""
    waiting = ledger.waiting
    needed = ledger.graph.task(node).dependencies
    if all(d not in waiting or d in members for d in needed):
        return True
    if not chained or _runs_alone(ledger, node):
        return False
    running = ledger.running
    return all(
        d not in waiting
        or d in members
        or (d in running and not _runs_alone(ledger, d))
        for d in needed
    )


def _extend(ledger, batch, nodes, pos, estimate, budget, chained=False) -> None:
    """Add to ``batch`` the following nodes that can run after it."""
    waiting, running = ledger.waiting, ledger.running
    members = set(batch)
    spent = estimate(batch[0])
    while pos < len(nodes) and len(batch) < MAX_BATCH_TASKS:
        node = nodes[pos]
        pos += 1
        if node not in waiting or node in running:
            continue
        spent += estimate(node)
        if spent > budget or _runs_alone(ledger, node):
            return
        if not _can_start(ledger, node, members, chained):
            return
        batch.append(node)
        members.add(node)


def _runs_alone(ledger: Ledger, node: Hashable) -> bool:
    task = ledger.graph.task(node)
    return (
        task.timeout is not None
        or task.retries > 0
        or node in ledger.solo
        or node in ledger.suspects
    )


def finish(ledger: Ledger, node: Hashable, result: Any) -> list[Hashable]:
    """Record ``result`` for ``node`` and release its dependents.

    Returns the finished nodes: ``node``, and when ``result`` is an ``Err``
    every unfinished node downstream of it, each given an
    ``Err(DependencyError)``.
    """
    finished = []
    stack = [(node, result)]
    dependents, results, waiting = (
        ledger.graph.dependents,
        ledger.results,
        ledger.waiting,
    )
    while stack:
        node, result = stack.pop()
        if node not in waiting:
            continue  # finished already
        results[node] = result
        del waiting[node]
        finished.append(node)
        failed = isinstance(result, Err)
        for dependent in dependents(node):
            if dependent in waiting:
                waiting[dependent] -= 1
                if failed:
                    task = ledger.graph.task(dependent)
                    err = failed_dependency(dependent, task.dependencies, results)
                    stack.append((dependent, err))
    return finished


def release(ledger: Ledger, lane: int, batch: list[Hashable]) -> None:
    """A batch of ``lane`` is back: its unfinished nodes (lost or to be
    retried) are again the lane's next ones to hand out."""
    ledger.inflight[lane] -= 1
    ledger.running.difference_update(batch)


def is_complete(ledger: Ledger) -> bool:
    """Whether every planned node is finished."""
    return not ledger.waiting


# -- the dispatcher -----------------------------------------------------------


@dataclass(slots=True)
class _InFlight:
    lane: int
    nodes: list[Hashable]
    #: time.monotonic() past which the batch may be late, or None.
    deadline: float | None
    #: Whether the batch runs with nothing else in flight (a suspect).
    isolated: bool
    #: Whether the deadline was set from the batch's real start.
    clocked: bool = False
    #: Ids of the batches in flight it was chained to (``Batch.after``).
    after: tuple[int, ...] = ()


class Dispatcher:
    """Runs a ``TaskGraph`` on ``workers`` processes, following a plan.

    Parameters
    ----------
    graph : TaskGraph
        What to run; validated here.
    workers : int
        Number of lanes and of worker processes.
    backend : str or Backend
        ``"loky"`` (default) or ``"inline"``, or a ``Backend`` instance.
    plan : Plan, optional
        The plan for the first ``start``; planned with ``heft`` when
        omitted. Later ``start`` calls re-plan what is unfinished.
    callbacks : iterable of Callbacks, optional
        Progress hooks.
    scheduler : BaseScheduler, optional
        Admission control: before a task is handed out, the scheduler's
        ``launchable(pending, running, results)`` must admit it (see
        ``alma_dag.schedulers``); tasks then run one per batch.
    store : Store, optional
        Where finished nodes are recorded. Nodes it records done are not
        run again, and each batch of finished nodes is committed before
        their dependents are handed out. Committed results that no
        unfinished task needs are not kept in memory: ``results`` reads
        them back from the store. Node ids must be strings.

    Raises
    ------
    DefinitionError
        The graph is invalid, ``workers`` is not a positive integer, the
        backend is unknown, the plan does not cover the graph, or a node id
        is not a string while there is a store.

    Examples
    --------
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-3,))
    >>> _ = g.add("b", pow, (a, 2))
    >>> d = Dispatcher(g, workers=1, backend="inline")
    >>> d.run()
    <RunState.FINISHED: 'finished'>
    >>> d.results
    {'a': 3, 'b': 9}
    """

    def __init__(
        self,
        graph: TaskGraph,
        workers: int = 1,
        backend: str | Backend = "loky",
        *,
        plan: Plan | None = None,
        callbacks: Iterable[Callbacks] = (),
        store: Store | None = None,
        scheduler: Any = None,
    ) -> None:
        if not isinstance(graph, TaskGraph):
            raise DefinitionError(
                f"graph must be a TaskGraph, got {type(graph).__name__}; "
                "build one with TaskGraph() or TaskGraph.from_dict()",
                field="graph",
            )
        graph.validate()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise DefinitionError(
                f"workers must be a positive integer, got {workers!r}",
                field="workers",
            )
        if plan is not None and plan.n_processes != workers:
            raise DefinitionError(
                f"the plan has {plan.n_processes} lanes but workers={workers}",
                field="plan",
            )
        if store is not None:
            named = next((n for n in graph if not isinstance(n, str)), None)
            if named is not None:
                raise DefinitionError(
                    f"task {named!r}: with a store, node ids must be strings",
                    field="store",
                )
        self.graph = graph
        self.workers = workers
        #: The checkpoint store, or None.
        self.store = store
        #: The admission scheduler (see ``alma_dag.schedulers``), or None.
        self.scheduler = scheduler
        if scheduler is not None:
            validate = getattr(scheduler, "validate", None)
            for node in graph if validate is not None else ():
                validate(self.instructions(node))
        self._run_lock = contextlib.ExitStack()
        self._backend = get_backend(backend)
        self._next_plan = plan
        self._callbacks = list(callbacks)
        # _lock guards: _state, the ledger's changes (its results among
        # them), the claim point, and _started.
        self._lock = threading.RLock()
        self._state = RunState.PENDING
        self._state_changed = threading.Condition(self._lock)
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # The last start's bookkeeping; its results are the finished ones.
        self._ledger: Ledger | None = None
        self.plan: Plan | None = None
        # (start, finish) of finished tasks: all of them without a store;
        # with one, only those not yet committed (see the timings property).
        self._timings: dict[Hashable, tuple[float, float]] = {}
        # Tasks timed, their seconds and their planned cost, for the ETA.
        self._timed = 0
        self._measured = self._measured_cost = 0.0
        self._speed: dict[int, float] = {}
        self._inflight: dict[int, _InFlight] = {}
        self._batch_ids = 0
        # With a backend that chains: the batch in flight of each running
        # node, outcomes put aside until those of the batches they were
        # chained to are applied, and the batches lost in this start.
        self._chains = self._backend.chains
        self._depth = CHAINED_DEPTH if self._chains else 2
        self._batch_of: dict[Hashable, int] = {}
        self._parked: dict[int, Outcome] = {}
        self._lost_batches: set[int] = set()
        self._started = 0.0
        self._error: BaseException | None = None

    # -- state machine -------------------------------------------------------

    @property
    def state(self) -> RunState:
        """The run's current ``RunState``."""
        return self._state

    def _transition(self, new: RunState, *, only_from: RunState | None = None) -> None:
        with self._lock:
            old = self._state
            allowed = _TRANSITIONS[old]
            if only_from is not None and old is not only_from:
                raise InvalidStateError(
                    f"cannot go from {old.value} to {new.value}: only a "
                    f"{only_from.value} run can; the run is {old.value}"
                    + ("; call start() to begin it" if old is RunState.PENDING else "")
                )
            if new not in allowed:
                names = ", ".join(sorted(s.value for s in allowed)) or "none"
                raise InvalidStateError(
                    f"cannot go from {old.value} to {new.value}; "
                    f"allowed from {old.value}: {names}"
                )
            self._state = new
            self._state_changed.notify_all()
        self._events.put(None)  # wake the dispatcher thread

    # -- public control ------------------------------------------------------

    def start(self) -> Dispatcher:
        """Start (or continue) the run in a background thread; returns at once.

        Raises
        ------
        InvalidStateError
            The run is already running, paused or stopping.
        LockedError
            Another dispatcher is running the same store.
        """
        with self._lock:
            self._begin()
            self._thread = threading.Thread(
                target=self._run, name="alma_dag-dispatcher", daemon=True
            )
            self._thread.start()
        return self

    def run(self) -> RunState:
        """Run to the end in the calling thread and return the final state.

        Raises
        ------
        InvalidStateError
            The run is already running, paused or stopping.
        LockedError
            Another dispatcher is running the same store.
        """
        self._begin()
        self._run()
        if self._error is not None:
            raise self._error
        return self._state

    def _begin(self) -> None:
        """Take the store's run lock, then go to RUNNING."""
        if self.store is not None and self._state not in (
            RunState.RUNNING,
            RunState.PAUSED,
            RunState.STOPPING,
        ):
            self._run_lock.enter_context(self.store.locked())
        try:
            self._transition(RunState.RUNNING)
        except BaseException:
            self._run_lock.close()
            raise

    def pause(self) -> None:
        """Start nothing new; running tasks finish. When it returns, no
        further task starts until ``resume()``."""
        self._transition(RunState.PAUSED)

    def resume(self) -> None:
        """Continue a paused run."""
        self._transition(RunState.RUNNING, only_from=RunState.PAUSED)

    def stop(self, timeout: float | None = None) -> bool:
        """Abort running tasks (their workers are killed) and stop.

        Returns once nothing is running and every finished task is
        recorded, or after ``timeout`` seconds; returns whether the run
        stopped. A stopped run continues with ``start()``.
        """
        with self._lock:
            if self._state is RunState.PENDING:
                self._transition(RunState.STOPPED)
                return True
            if self._state in _OVER:
                return True
            if self._state is not RunState.STOPPING:
                self._transition(RunState.STOPPING)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run is over; return whether it is.

        Re-raises an internal error of the dispatcher thread, if any.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._state not in _OVER or self._is_thread_alive():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._state_changed.wait(
                    0.05 if remaining is None else min(remaining, 0.05)
                )
        if self._error is not None:
            raise self._error
        return True

    def _is_thread_alive(self) -> bool:
        thread = self._thread
        return (
            thread is not None
            and thread is not threading.current_thread()
            and thread.is_alive()
        )

    # -- reading -------------------------------------------------------------

    @property
    def results(self) -> dict[Hashable, Any]:
        """A copy of the finished results by node id (``Err`` for failures).

        With a store, a result is kept in memory only while an unfinished
        task needs it; the others are loaded from the store here (so keep
        the store open to read them).
        """
        with self._lock:
            ledger = self._ledger
            if ledger is None:
                return {}
            if self.store is None:  # every result is in memory
                return dict(ledger.results)
            kept, waiting = ledger.results, ledger.waiting
            finished = {n: kept.get(n, _STORED) for n in self.graph if n not in waiting}
        load = self.store.result  # outside the lock: the run goes on meanwhile
        return {
            node: load(node) if result is _STORED else result
            for node, result in finished.items()
        }

    @property
    def _results(self) -> Mapping[Hashable, Any]:
        """The finished nodes and their results, as a read-only mapping that
        loads from the store the results not kept in memory."""
        return _Results(self)

    def _is_finished(self, node: Hashable) -> bool:
        ledger = self._ledger
        return ledger is not None and node in self.graph and node not in ledger.waiting

    def _result(self, node: Hashable) -> Any:
        """The result of finished ``node``, loaded from the store when it is
        not in memory (and not kept there after: memory stays flat)."""
        ledger = self._ledger
        result = _STORED if ledger is None else ledger.results.get(node, _STORED)
        if result is _STORED:
            if self.store is None or not self._is_finished(node):
                raise KeyError(node)
            return self.store.result(node)
        return result

    def _failures(self) -> dict[Hashable, Err]:
        """The finished nodes that failed, with their ``Err`` (always kept in
        memory: no store read)."""
        with self._lock:
            ledger = self._ledger
            results = ledger.results if ledger is not None else {}
            return {n: r for n, r in results.items() if isinstance(r, Err)}

    def _count_finished(self) -> tuple[int, int]:
        """How many nodes finished, and how many of them failed."""
        ledger = self._ledger
        if ledger is None:
            return 0, 0
        failed = sum(1 for r in ledger.results.values() if isinstance(r, Err))
        return len(self.graph) - len(ledger.waiting), failed

    @property
    def timings(self) -> dict[Hashable, tuple[float, float]]:
        """``(start, finish)`` wall-clock seconds of each finished task.

        Without a store, the dispatcher keeps them all; with one, they are
        read from the store (``Store.timings``), which also holds the times
        of this graph's tasks recorded by earlier runs.
        """
        if self.store is None:
            return self._timings
        with self._lock:
            pending = dict(self._timings)
        graph = self.graph
        timings = {n: t for n, t in self.store.timings().items() if n in graph}
        timings.update(pending)
        return timings

    def progress(self) -> Progress:
        """A ``Progress`` snapshot; safe from any thread."""
        with self._lock:
            total = len(self.graph)
            finished, failed = self._count_finished()
            done = finished - failed
            elapsed = time.monotonic() - self._started if self._started else 0.0
            return Progress(
                self._state,
                total,
                done,
                failed,
                len(self._ledger.running) if self._ledger else 0,
                elapsed,
                self.plan.makespan if self.plan else 0.0,
                self._eta(),
            )

    def _eta(self) -> float | None:
        if self.plan is None or not self._timed:
            return None
        task, waiting = self.graph.task, self._ledger.waiting
        remaining = sum(task(n).cost for n in self.plan.entries if n in waiting)
        planned = self._measured_cost
        rate = self._measured / planned if planned else 0.0
        return remaining * rate / self.workers

    def gantt(self, **kwargs: Any) -> Any:
        """Draw the plan above what ran; returns a matplotlib ``Figure``.

        Keywords go to ``alma_dag.viz.run_gantt``; needs matplotlib
        (``pip install 'alma_dag[plots]'``).
        """
        from .viz import run_gantt

        return run_gantt(self, **kwargs)

    def _repr_html_(self) -> str:
        from .display import dispatcher_html  # display imports this module

        return dispatcher_html(self)

    def __repr__(self) -> str:
        done = f"{self._count_finished()[0]}/{len(self.graph)}"
        return f"<Dispatcher {self._state.value}: {done} tasks>"

    # -- the dispatcher thread -----------------------------------------------

    def _run(self) -> None:
        failed = True
        try:
            self._prepare()
            self._call("on_start", self)
            while not self._is_over():
                self._claim()
                self._wait_for_events()
            failed = self._state is not RunState.FINISHED
        except BaseException as exc:
            logger.exception("alma_dag dispatcher failed")
            self._error = exc
            with self._lock:
                self._state = RunState.FAILED
                self._state_changed.notify_all()
        finally:
            self._backend.close()
            self._run_lock.close()
            self._call("on_finish", failed)
            with self._lock:
                self._state_changed.notify_all()

    def _prepare(self) -> None:
        with self._lock:
            # done: what finished before (failures run again), and with a
            # store what it records done, not kept in memory then.
            kept = self._ledger.results if self._ledger is not None else {}
            done = {n: r for n, r in kept.items() if not isinstance(r, Err)}
            if self.store is not None:
                recorded = self.store.done_ids()
                for node in self.graph:
                    if node in recorded:
                        done[node] = _STORED
        plan = self._next_plan
        self._next_plan = None
        if plan is None:
            plan = heft(self.graph, self.workers, done=done)
        self._error = None
        self._inflight.clear()
        self._batch_of.clear()
        self._parked.clear()
        self._lost_batches.clear()
        with self._lock:
            self.plan = plan
            self._ledger = start_ledger(self.graph, plan, done)
            self._started = time.monotonic()
        self._backend.open(self.workers, self._events.put, self.store)

    def _is_over(self) -> bool:
        with self._lock:
            state = self._state
        if state is RunState.STOPPING:
            self._abort_inflight("the run was stopped")
            self._transition(RunState.STOPPED)
            return True
        if (
            state is RunState.RUNNING
            and not self._inflight
            and is_complete(self._ledger)
        ):
            failed = any(isinstance(r, Err) for r in self._ledger.results.values())
            self._transition(RunState.FAILED if failed else RunState.FINISHED)
            return True
        return False

    def _claim(self) -> None:
        started: list[Hashable] = []
        with self._lock:
            if self._state is not RunState.RUNNING:
                return
            ledger = self._ledger
            if ledger.suspects and self._has_suspect_ready(ledger):
                started = self._claim_suspect(ledger)
            elif any(flight.isolated for flight in self._inflight.values()):
                pass  # a suspect runs alone
            elif self.scheduler is not None:
                started = self._claim_admitted(ledger)
            else:
                started = self._claim_lanes(ledger)
            if not started and not self._inflight and not is_complete(ledger):
                heads = [lane_head(ledger, i) for i in range(len(ledger.lanes))]
                raise RuntimeError(
                    "alma_dag dispatcher: no task can start and none is running; "
                    f"lane heads: {heads}"
                )
        if self._callbacks:
            for node in started:
                self._call("on_task_start", node)

    def _claim_lanes(self, ledger: Ledger) -> list[Hashable]:
        """Each idle lane's next batch, then a prefetched second batch per
        lane, which hides the round trip to a worker (about 0.6 ms)."""
        started: list[Hashable] = []
        for depth in range(1, self._depth + 1):
            for lane in range(len(ledger.lanes)):
                if depth == 2 and not self._may_prefetch(ledger, lane):
                    continue
                free_worker = len(self._inflight) < self.workers
                nodes = claim_batch(
                    ledger,
                    lane,
                    self._estimate,
                    depth=depth,
                    free_worker=free_worker,
                    chained=self._chains,
                )
                if nodes:
                    self._submit(lane, nodes, isolated=False)
                    started += nodes
        return started

    def _claim_admitted(self, ledger: Ledger) -> list[Hashable]:
        """With a scheduler: the ready next task of each idle lane is a
        candidate, in plan order; the scheduler admits some of them given
        the tasks in flight, and each admitted task runs alone."""
        heads = []
        for lane in range(len(ledger.lanes)):
            node = None if ledger.inflight[lane] else lane_head(ledger, lane)
            if node is not None and is_ready(ledger, node):
                heads.append((self.plan.entries[node].start, lane, node))
        if not heads:
            return []
        heads.sort(key=lambda head: head[:2])
        pending = [self.instructions(node) for _, _, node in heads]
        running = [self.instructions(node) for node in ledger.running]
        report = ledger.results if self.store is None else _Results(self)
        launchable, _ = self.scheduler.launchable(pending, running, report)
        admitted = {id(instructions) for instructions in launchable}
        started: list[Hashable] = []
        for (_, lane, _node), instructions in zip(heads, pending, strict=True):
            if id(instructions) in admitted:
                nodes = claim_batch(ledger, lane, self._estimate, alone=True)
                self._submit(lane, nodes, isolated=False)
                started += nodes
        return started

    def instructions(self, node: Hashable) -> dict[str, Any]:
        """What a scheduler sees of a task: its ``name`` (the node id) and
        its ``memory`` hint in MiB."""
        return {"name": node, "memory": self.graph.task(node).memory}

    def _may_prefetch(self, ledger: Ledger, lane: int) -> bool:
        # A prefetched batch waits in the pool's queue: worth it for short
        # tasks only, and never while a timeout's clock runs (its task must
        # not wait behind it).
        head = lane_head(ledger, lane)
        return (
            head is not None
            and self._estimate(head) <= PREFETCH_SECONDS
            and len(self._inflight) < self._depth * self.workers
            and not any(flight.deadline for flight in self._inflight.values())
        )

    def _has_suspect_ready(self, ledger: Ledger) -> bool:
        heads = (lane_head(ledger, lane) for lane in range(len(ledger.lanes)))
        return any(h in ledger.suspects and is_ready(ledger, h) for h in heads)

    def _claim_suspect(self, ledger: Ledger) -> list[Hashable]:
        """One suspect, alone, once nothing else is in flight: if its worker
        dies now, it is the task that killed it."""
        if self._inflight:
            return []
        for lane in range(len(ledger.lanes)):
            if lane_head(ledger, lane) in ledger.suspects:
                nodes = claim_batch(ledger, lane, self._estimate, alone=True)
                if nodes:
                    self._submit(lane, nodes, isolated=True)
                    return nodes
        return []

    def _submit(self, lane: int, nodes: list[Hashable], isolated: bool) -> None:
        ledger = self._ledger
        graph = self.graph
        items = tuple((node, graph.task(node)) for node in nodes)
        members = set(nodes)
        waiting = ledger.waiting
        inputs = {
            d: self._result(d)
            for _, task in items
            for d in task.inputs
            if d not in members and d not in waiting
        }
        timeout = items[0][1].timeout if len(items) == 1 else None
        for node in nodes:
            ledger.attempts[node] = ledger.attempts.get(node, 0) + 1
        self._batch_ids += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        after: tuple[int, ...] = ()
        if self._chains:
            upstream = {
                self._batch_of[d]: None
                for _, task in items
                for d in task.dependencies
                if d in waiting and d not in members
            }
            after = tuple(upstream)
            for node in nodes:
                self._batch_of[node] = self._batch_ids
        self._inflight[self._batch_ids] = _InFlight(
            lane, nodes, deadline, isolated, after=after
        )
        chained = tuple((b, tuple(self._inflight[b].nodes)) for b in after)
        self._backend.submit(Batch(self._batch_ids, items, inputs, timeout, chained))

    def _estimate(self, node: Hashable) -> float:
        seconds = self._speed.get(id(self.graph.task(node).function))
        return float("inf") if seconds is None else seconds + TASK_OVERHEAD_SECONDS

    def _wait_for_events(self) -> None:
        """Wait for the backend's events and apply them all; settle what
        they finished."""
        finished: list[Hashable] = []
        if not self._backend.drive(0):
            try:
                event = self._events.get(timeout=self._next_deadline())
            except queue.Empty:
                event = None
            finished += self._apply(event)
        while True:
            try:
                finished += self._apply(self._events.get_nowait())
            except queue.Empty:
                break
        finished += self._enforce_timeouts()
        self._settle(finished)

    def _next_deadline(self) -> float | None:
        deadlines = [f.deadline for f in self._inflight.values() if f.deadline]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    # -- applying outcomes ---------------------------------------------------

    def _apply(self, event: Outcome | None) -> list[Hashable]:
        """Apply a backend's event; returns the nodes it finished."""
        if event is None:
            return []
        flight = self._inflight.get(event.batch)
        if flight is None:
            return []  # a batch this dispatcher already gave up on
        if any(b in self._inflight for b in flight.after):
            # Chained, and back before a batch it runs after: applied after
            # it, so no node is recorded before a dependency of its own.
            self._parked[event.batch] = event
            return []
        del self._inflight[event.batch]
        if self._chains:
            for node in flight.nodes:
                if self._batch_of.get(node) == event.batch:
                    del self._batch_of[node]
        with self._lock:
            if event.error is None:
                finished = self._record(flight, event.results)
            else:
                finished = self._lost(event.batch, flight, event.error)
        for batch in list(self._parked):
            parked = self._inflight.get(batch)
            if parked is None or not any(a in self._inflight for a in parked.after):
                event = self._parked.pop(batch, None)  # None: applied already
                if event is not None:
                    finished += self._apply(event)
        return finished

    def _settle(self, finished: list[Hashable]) -> None:
        """Commit finished nodes to the store -- before the next claim hands
        out their dependents -- then tell the callbacks, then (with a store)
        let go of what no unfinished task needs."""
        if not finished:
            return
        attempts = self._ledger.attempts
        if self.store is not None:
            results, timings = self._ledger.results, self._timings
            untimed = (None, None)
            self.store.record(
                NodeRecord(
                    node,
                    results[node],
                    attempts.get(node, 0),
                    *timings.get(node, untimed),
                )
                for node in finished
            )
            for node in finished:  # committed: read from the store now
                timings.pop(node, None)
        for node in finished:
            attempts.pop(node, None)
        if self._callbacks:
            for node in finished:
                self._call("on_task_done", node, self._ledger.results.get(node))
        if self.store is not None:
            self._let_go(finished)

    def _let_go(self, finished: list[Hashable]) -> None:
        """Let go of the committed results no unfinished task takes as an
        input: the inputs of ``finished`` whose last consumer this was, and
        each of ``finished`` that no unfinished dependent needs (the others
        get a count of their consumers). They are read from the store from
        now on. A failure (an ``Err``) stays in memory."""
        ledger = self._ledger
        consumers, waiting, results = ledger.consumers, ledger.waiting, ledger.results
        task, dependents = self.graph.task, self.graph.dependents
        input_sets = ledger.input_sets
        unneeded = []
        if consumers:
            for node in finished:
                for needed in task(node).inputs:
                    left = consumers.get(needed)
                    if left is None:
                        continue
                    if left > 1:
                        consumers[needed] = left - 1
                    else:
                        del consumers[needed]
                        unneeded.append(needed)
        if input_sets:
            for node in finished:
                input_sets.pop(node, None)
        for node in finished:
            count = 0
            for dependent in dependents(node):
                if dependent not in waiting:
                    continue
                inputs = task(dependent).inputs
                if len(inputs) > _SCANNED_INPUTS:
                    inputs = input_sets.get(dependent)
                    if inputs is None:
                        inputs = frozenset(task(dependent).inputs)
                        input_sets[dependent] = inputs
                if node in inputs:
                    count += 1
            if count:
                consumers[node] = count
            else:
                unneeded.append(node)
        with self._lock:
            for node in unneeded:
                if not isinstance(results[node], Err):
                    del results[node]

    def _record(self, flight: _InFlight, outcomes) -> list[Hashable]:
        ledger = self._ledger
        finished: list[Hashable] = []
        for node, (result, start, end) in zip(flight.nodes, outcomes, strict=True):
            if node not in ledger.waiting:
                continue  # a chained task whose dependency failed meanwhile
            task = self.graph.task(node)
            self._measure(task.function, end - start)
            if isinstance(result, Err) and ledger.attempts[node] <= task.retries:
                continue  # released below, it is the lane's next task again
            ledger.suspects.discard(node)
            self._timings[node] = (start, end)
            self._timed += 1
            self._measured += end - start
            self._measured_cost += task.cost
            finished += finish(ledger, node, result)
        release(ledger, flight.lane, flight.nodes)
        return finished

    def _measure(self, function: Callable, seconds: float) -> None:
        key = id(function)
        old = self._speed.get(key)
        self._speed[key] = (
            seconds if old is None else (old + _SMOOTHING * (seconds - old))
        )

    def _lost(
        self, batch: int, flight: _InFlight, error: BaseException
    ) -> list[Hashable]:
        ledger = self._ledger
        node = flight.nodes[0]
        if self._chains:
            self._lost_batches.add(batch)
            if any(b in self._lost_batches for b in flight.after):
                self._unclaim(flight)  # lost with a batch it ran after
                return []
        blamed = (
            len(flight.nodes) == 1
            and not isinstance(error, TaskCancelled)
            and (flight.isolated or not isinstance(error, WorkerDied))
        )
        if not blamed:
            self._unclaim(flight)
            if isinstance(error, WorkerDied):
                ledger.suspects.update(flight.nodes)
            elif not isinstance(error, TaskCancelled):
                ledger.solo.update(flight.nodes)
            return []
        release(ledger, flight.lane, flight.nodes)
        if ledger.attempts[node] <= self.graph.task(node).retries:
            return []
        ledger.suspects.discard(node)
        return finish(ledger, node, Err(_task_error(node, error)))

    def _unclaim(self, flight: _InFlight) -> None:
        """Put a batch back, not counting this attempt against its tasks."""
        ledger = self._ledger
        release(ledger, flight.lane, flight.nodes)
        for node in flight.nodes:
            if node in ledger.waiting:  # not failed meanwhile by a dependency
                ledger.attempts[node] -= 1

    def _enforce_timeouts(self) -> list[Hashable]:
        """Stop batches past their timeout; returns the nodes it finished."""
        late = [b for b in self._inflight if self._is_late(b)]
        if not late:
            return []
        with self._lock:
            timed_out = [self._inflight.pop(b) for b in late]
            self._backend.kill()  # the only way to stop a running task
            self._abort_inflight("a task beside it timed out")
            finished = []
            for flight in timed_out:
                release(self._ledger, flight.lane, flight.nodes)
                node = flight.nodes[0]
                task = self.graph.task(node)
                if self._ledger.attempts[node] <= task.retries:
                    continue
                self._ledger.suspects.discard(node)
                error = TaskTimeoutError(
                    f"task {node!r} ran past its timeout of {task.timeout} s",
                    task=node,
                    timeout=task.timeout,
                )
                finished += finish(self._ledger, node, Err(error))
        return finished

    def _is_late(self, batch: int) -> bool:
        """Whether a batch ran past its timeout. Its deadline is first set
        from submission; once passed, the backend tells when the batch
        really began (it may have waited for a worker), and the deadline
        moves there."""
        flight = self._inflight[batch]
        now = time.monotonic()
        if flight.deadline is None or flight.deadline > now:
            return False
        began = self._backend.started(batch)
        if began is None:
            if flight.clocked:
                return True  # the backend does not watch starts
            flight.deadline = now + _CLOCK_POLL
            return False
        flight.clocked = True
        timeout = self.graph.task(flight.nodes[0]).timeout
        remaining = began + timeout - time.time()
        if remaining <= 0:
            return True
        flight.deadline = now + remaining
        return False

    def _abort_inflight(self, reason: str) -> None:
        """Kill the backend's work; the batches in flight run again later."""
        with self._lock:
            if not self._inflight:
                return
            self._backend.kill()
            for flight in self._inflight.values():
                self._unclaim(flight)
            logger.debug("aborted %d batches: %s", len(self._inflight), reason)
            self._inflight.clear()
            self._parked.clear()

    def _call(self, hook: str, *args: Any) -> None:
        for callbacks in self._callbacks:
            try:
                getattr(callbacks, hook)(*args)
            except Exception:
                logger.exception("alma_dag callback %s failed", hook)


class _Results(Mapping):
    """A read-only view of a dispatcher's finished nodes and their results
    (for a scheduler's report, and ``ExperimentRun``): a result not kept in
    memory is loaded from the store each time it is read."""

    __slots__ = ("_dispatcher",)

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def __getitem__(self, node: Hashable) -> Any:
        return self._dispatcher._result(node)

    def __contains__(self, node: object) -> bool:
        return self._dispatcher._is_finished(node)

    def __iter__(self) -> Iterator[Hashable]:
        dispatcher = self._dispatcher
        with dispatcher._lock:
            ledger = dispatcher._ledger
            if ledger is None:
                return iter(())
            if dispatcher.store is None:
                return iter(list(ledger.results))
            waiting = ledger.waiting
            return iter([n for n in dispatcher.graph if n not in waiting])

    def __len__(self) -> int:
        return self._dispatcher._count_finished()[0]


def _task_error(node: Hashable, error: BaseException) -> BaseException:
    """The error a task gets when its batch was lost with ``error``."""
    if isinstance(error, WorkerDied):
        code = f" (exit code {error.exitcode})" if error.exitcode is not None else ""
        return WorkerDied(
            f"task {node!r}: its worker process died while running it{code}",
            task=node,
            exitcode=error.exitcode,
        )
    if isinstance(error, SerializationError):
        return SerializationError(f"task {node!r}: {error.args[0]}", task=node)
    return error
