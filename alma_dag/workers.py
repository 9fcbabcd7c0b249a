"""taylorism's Boss and Workers, run by the dispatcher on a reusable pool.

A ``Worker`` subclass is defined *by its instructions* -- annotated class
attributes -- and its ``_task()``. A ``Boss`` takes sets of instructions,
hires for each set the Worker subclass that fits it, and has the sets run
as its scheduler admits them, collecting each worker's report::

    caller thread          Boss                     dispatcher thread       pool
    ─────────────          ────                     ─────────────────       ────
    set_instructions() ─►  hire a class per set,
                           check, queue the sets
    make_them_work()   ─►  a run: one task per  ─►  Dispatcher.start()
                           queued set               claim what the
                                                    scheduler admits  ──►  _work:
    halt()             ─►  dispatcher.pause()                              cls(**set)
    stop_them_working()─►  dispatcher.stop()        on_task_done      ◄──  ._task()
    get_report()       ◄─  entries, pending,   ◄──  record the entry;
                           aborted                  on a failure: stop
    wait_till_finished()◄─ run over, first error    on_finish: next run
                                                    from the queue

- **The caller** gives instruction sets and controls the Boss. Every check
  (lengths, hiring, names, memory, the scheduler's ``validate``) happens in
  ``set_instructions`` before any set is queued, so a bad set is an error
  there, never a hang later.
- **The Boss** keeps the queue of sets not yet handed to a run, the report
  entries in completion order, and its ``BossState``. One run (one
  ``Dispatcher``) is active at a time; sets given during a run are queued
  and start in the next run, begun as soon as the current one ends.
- **The dispatcher thread** runs each set as an independent task on the
  shared loky pool (its processes are reused: no process per set), asking
  the Boss's scheduler -- which sees the full instruction sets -- before
  each start. It reports each finished set to the Boss through
  ``Callbacks``; on the first failure the Boss stops the run (the other
  running workers are killed) and starts nothing more.

Hiring: the candidates for a set are the Worker subclasses whose required
instructions are all keys of the set; the candidate with the most declared
instructions among the keys wins. No candidate, or a tie, is a
``DefinitionError`` naming the keys. Keys the winner does not declare are
ignored. Classes marked ``_abstract = True`` are never hired.

Decisions taylorism left open:

- ``wait_till_finished()`` first ends the Boss (as taylorism's does). Called
  while the Boss is halted with work left, it raises ``InvalidStateError``
  at once instead of waiting forever.
- ``set_instructions()`` after ``end()``, a stop or a failure raises
  ``InvalidStateError``: no set is ever dropped silently.
- ``make_them_work(stop_listening=True)`` behaves as ``terminate=True``:
  alma_dag always listens to its workers, so no report is lost.
"""

from __future__ import annotations

import enum
import gc
import hashlib
import inspect
import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .backends import Backend, Batch, Outcome, get_backend
from .dispatch import Callbacks, Dispatcher, RunState
from .errors import DefinitionError, Err, InvalidStateError, TaskFailure
from .graph import TaskGraph
from .plan import plan_from_lanes

__all__ = [
    "Boss",
    "BossState",
    "Worker",
    "batch_main",
    "hire_worker",
    "run_as_server",
]

logger = logging.getLogger(__name__)

#: Lanes per pool worker in a run's plan. The dispatcher offers the
#: scheduler only the next set of each idle lane, so with one lane per
#: worker a long set would hold back every set queued behind it in its
#: lane while other workers idle. More lanes let the other sets overtake
#: it; each lane costs a few microseconds at every admission, so a run of
#: 2,000 sets on 2 workers spends about 0.1 s there with 8.
LANES_PER_WORKER = 8

#: Longest report text logged by a verbose Boss (taylorism's maxlenreport).
MAX_LOGGED_REPORT = 1024

_REQUIRED = object()  # the default of an instruction that has none

# Definition order of Worker subclasses: when two live classes share a
# module and qualified name (a notebook cell run twice), the newer wins.
_definitions = itertools.count()


# -- workers -------------------------------------------------------------------


def _declared_instructions(cls: type) -> dict[str, Any]:
    """Annotated public attributes along the MRO -> default or _REQUIRED."""
    declared: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, Worker)):
            continue
        for attr, annotation in inspect.get_annotations(klass).items():
            if attr.startswith("_") or _is_class_var(annotation):
                continue
            declared[attr] = getattr(cls, attr, _REQUIRED)
    return declared


def _is_class_var(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


class Worker:
    """A worker: instructions declared as annotated class attributes, and a
    ``_task()`` that does the work and returns its report.

    An annotated attribute without a default is a required instruction;
    with a default, an optional one. Every worker also takes ``name``
    (generated when absent) and ``memory`` (MiB, 0 by default, read by
    memory-aware schedulers). Before ``_task()`` runs, in a worker process,
    the set's instructions are the instance's attributes; keys the class
    does not declare are ignored.

    Subclasses defined inside a function or a notebook cell work: the class
    travels to the worker processes with cloudpickle. A subclass that sets
    ``_abstract = True`` in its body is a base for others and is never
    hired itself.

    Parameters
    ----------
    **instructions
        One set of instructions; each declared one becomes an attribute.

    Raises
    ------
    DefinitionError
        A required instruction is missing.

    Examples
    --------
    >>> class Sleeper(Worker):
    ...     sleeping_time: float
    ...     wakeup_sentence: str = "hello"
    ...
    ...     def _task(self):
    ...         time.sleep(self.sleeping_time)
    ...         return f"{self.wakeup_sentence} after {self.sleeping_time} s"
    >>> Sleeper(sleeping_time=0.01, colour="blue")._task()
    'hello after 0.01 s'
    """

    _abstract = True
    #: Name of the worker, unique within its Boss (generated when absent).
    name: str | None = None
    #: Memory in MiB the worker is expected to use, for memory schedulers.
    memory: float = 0.0

    # Filled per class by __init_subclass__.
    _instructions: dict[str, Any] = {}
    _required: frozenset[str] = frozenset()
    _definition = -1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instructions = _declared_instructions(cls)
        cls._required = frozenset(
            attr for attr, default in cls._instructions.items() if default is _REQUIRED
        )
        cls._definition = next(_definitions)
        if "_abstract" not in vars(cls):
            cls._abstract = False

    def __init__(self, **instructions: Any) -> None:
        for attr, default in type(self)._instructions.items():
            value = instructions.get(attr, default)
            if value is _REQUIRED:
                raise DefinitionError(
                    f"{type(self).__name__}: required instruction {attr!r} is "
                    f"missing; got {sorted(instructions)}",
                    field=attr,
                )
            setattr(self, attr, value)

    def _task(self) -> Any:
        """Do the work described by the instructions and return the report
        (any picklable value). Runs in a worker process."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _task(self), which does "
            "the work and returns the report"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', None)!r}>"


def _hirable() -> list[type[Worker]]:
    """Live, non-abstract Worker subclasses; of several sharing a module and
    qualified name, the newest."""
    newest: dict[tuple[str, str], type[Worker]] = {}
    stack = list(Worker.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if vars(cls).get("_abstract", False):
            continue
        key = (cls.__module__, cls.__qualname__)
        known = newest.get(key)
        if known is None or known._definition < cls._definition:
            newest[key] = cls
    return list(newest.values())


def _best_candidates(keys: frozenset[str]) -> tuple[list[type[Worker]], int]:
    """The candidates with the most declared instructions among ``keys``."""
    best: list[type[Worker]] = []
    score = -1
    for cls in _hirable():
        if not cls._required <= keys:
            continue
        matched = len(keys.intersection(cls._instructions))
        if matched > score:
            best, score = [cls], matched
        elif matched == score:
            best.append(cls)
    return best, score


def hire_worker(instructions: Iterable[str]) -> type[Worker]:
    """The Worker subclass that takes a set with these instruction keys.

    The candidates are the subclasses whose required instructions are all
    among the keys; the one declaring the most of the keys wins.

    Parameters
    ----------
    instructions : iterable of str
        The keys of an instruction set (a dict will do).

    Returns
    -------
    type
        The hired Worker subclass.

    Raises
    ------
    DefinitionError
        No subclass can take the keys, or several fit equally well; the
        message names the keys and the classes.

    Examples
    --------
    >>> class Adder(Worker):
    ...     left: int
    ...     right: int = 0
    ...
    ...     def _task(self):
    ...         return self.left + self.right
    >>> hire_worker({"left": 1, "colour": "red"}).__name__
    'Adder'
    """
    keys = frozenset(instructions)
    best, score = _best_candidates(keys)
    if len(best) > 1:
        # Classes from a finished function or an old notebook cell live on
        # in reference cycles until the collector runs; they are not rivals.
        best = []  # holding them here would keep them alive
        gc.collect()
        best, score = _best_candidates(keys)
    if len(best) == 1:
        return best[0]
    shown = sorted(keys)
    if not best:
        known = ", ".join(
            f"{cls.__qualname__} (requires {sorted(cls._required)})"
            for cls in sorted(_hirable(), key=lambda c: c.__qualname__)
        )
        raise DefinitionError(
            f"no Worker subclass takes the instructions {shown}: each needs "
            f"all its required instructions among the keys; known workers: "
            f"{known or 'none (define a subclass of Worker)'}",
            field="instructions",
        )
    names = ", ".join(sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in best))
    raise DefinitionError(
        f"the instructions {shown} fit several Worker subclasses equally "
        f"well ({score} declared instructions each): {names}; give one of "
        "them an instruction the others lack, or mark a base class "
        "_abstract = True",
        field="instructions",
    )


class _Portable:
    """A Worker class pickled once for all its sets.

    A class defined in ``__main__``, a notebook or a function travels by
    value: pickling and rebuilding it for every set would take about 80 us
    of each set's round trip. Its bytes are made once; a worker process
    rebuilds the class at the first set and finds it again by key after.
    """

    __slots__ = ("cls", "key", "payload")

    def __init__(self, cls: type[Worker]) -> None:
        self.cls = cls  # for backends that do not pickle (inline)
        self.payload = cloudpickle.dumps(cls)
        self.key = hashlib.blake2b(self.payload, digest_size=16).hexdigest()

    def __reduce__(self):
        return (_rebuilt_class, (self.key, self.payload))


#: Classes rebuilt in this (worker) process, by key; cleared when it grows
#: past this many, which only long sessions with many classes reach.
_REBUILT_LIMIT = 256
_rebuilt: dict[str, type[Worker]] = {}


def _rebuilt_class(key: str, payload: bytes) -> type[Worker]:
    cls = _rebuilt.get(key)
    if cls is None:
        if len(_rebuilt) >= _REBUILT_LIMIT:
            _rebuilt.clear()
        cls = _rebuilt[key] = cloudpickle.loads(payload)
    return cls


def _work(
    worker_class: type[Worker] | _Portable, instructions: Mapping[str, Any]
) -> Any:
    """Worker process side: build the worker from its set and run it."""
    if isinstance(worker_class, _Portable):
        worker_class = worker_class.cls
    worker = worker_class(**instructions)
    try:
        return worker._task()
    except Exception:
        raise
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt re-raised by wait_till_finished
        # would end the caller's program as if it had asked to exit.
        name = instructions.get("name")
        raise TaskFailure(
            f"worker {name!r} ({worker_class.__qualname__}): _task() raised "
            f"{type(exc).__name__}({exc}) instead of returning a report; "
            "return a report or raise an Exception",
            task=name,
        ) from exc


# -- the Boss's runs -----------------------------------------------------------


class BossState(enum.Enum):
    """Where a Boss is in its life."""

    #: Sets given are queued; nothing new starts (the initial state, and
    #: after ``halt()``). Workers already running finish and report.
    HALTED = "halted"
    #: Sets start as the scheduler admits them (after ``make_them_work()``).
    WORKING = "working"
    #: ``stop_them_working()`` was called: running workers were aborted and
    #: nothing more starts.
    STOPPED = "stopped"
    #: A worker failed: the others were aborted and nothing more starts.
    FAILED = "failed"


_TRANSITIONS: dict[BossState, frozenset[BossState]] = {
    BossState.HALTED: frozenset(
        {BossState.WORKING, BossState.STOPPED, BossState.FAILED}
    ),
    BossState.WORKING: frozenset(
        {BossState.HALTED, BossState.STOPPED, BossState.FAILED}
    ),
    BossState.STOPPED: frozenset(),
    BossState.FAILED: frozenset(),
}

_OVER = frozenset({BossState.STOPPED, BossState.FAILED})


class _FixedPool(Backend):
    """A backend opened with ``size`` workers whatever the number of lanes
    the dispatcher plans on."""

    def __init__(self, inner: Backend, size: int) -> None:
        self.inner = inner
        self.size = size
        self.name = inner.name

    def open(
        self, n_workers: int, report: Callable[[Outcome], None], store=None
    ) -> None:
        self.inner.open(self.size, report, store)

    def submit(self, batch: Batch) -> None:
        self.inner.submit(batch)

    def drive(self, timeout: float | None) -> bool:
        return self.inner.drive(timeout)

    def started(self, batch_id: int) -> float | None:
        return self.inner.started(batch_id)

    def kill(self) -> None:
        self.inner.kill()

    def close(self) -> None:
        self.inner.close()


class _Admission:
    """The Boss's scheduler as the dispatcher sees it.

    The dispatcher offers ``{"name", "memory"}`` dicts; the scheduler sees
    the full instruction sets instead, and what it admits is capped at the
    pool's size, so a set admitted is a set running (``halt()`` then holds
    back everything else). Called under the dispatcher's lock: it must not
    take the Boss's.
    """

    def __init__(
        self, scheduler: Any, sets: Mapping[Hashable, dict], limit: int
    ) -> None:
        self.scheduler = scheduler
        self.sets = sets
        self.limit = limit
        #: Why the run cannot go on: the scheduler raised, or admitted
        #: nothing while nothing ran. Read by the Boss when the run ends.
        self.error: BaseException | None = None

    def launchable(
        self, pending: list[dict], running: list[dict], results: Mapping
    ) -> tuple[list[dict], list[dict]]:
        full = [self.sets[offer["name"]] for offer in pending]
        workers = [self.sets[offer["name"]] for offer in running]
        free = max(0, self.limit - len(workers))
        if self.scheduler is None:
            chosen = full[:free]
        else:
            try:
                chosen, _ = self.scheduler.launchable(full, workers, results)
            except BaseException as exc:
                self.error = exc
                raise
            chosen = list(chosen)[:free]
        admitted = {id(instructions) for instructions in chosen}
        now = [o for o, f in zip(pending, full, strict=True) if id(f) in admitted]
        if pending and not now and not running:
            self.error = self._stalled(full, chosen)
        later = [o for o, f in zip(pending, full, strict=True) if id(f) not in admitted]
        return now, later

    def _stalled(self, full: list[dict], chosen: list[dict]) -> DefinitionError:
        names = [instructions["name"] for instructions in full[:5]]
        hint = (
            "it returned sets that are not the pending dicts themselves; "
            "return the very objects it was given"
            if chosen
            else "a scheduler must admit at least one set when none is running"
        )
        return DefinitionError(
            f"scheduler {self.scheduler!r} admitted none of the "
            f"{len(full)} pending instruction sets (first: {names}) while no "
            f"worker was running, so they could never start; {hint}",
            field="scheduler",
        )


@dataclass(slots=True)
class _Run:
    """One dispatcher run over the sets queued when it began."""

    #: The sets of the run by name, in the order they were given.
    sets: dict[str, dict]
    #: What the dispatcher asks before starting a set.
    admission: _Admission
    #: The run's dispatcher; set before it starts.
    dispatcher: Dispatcher | None = None
    #: Names of the sets started and not finished.
    running: set[str] = field(default_factory=set)
    #: Names of the finished sets.
    finished: set[str] = field(default_factory=set)
    #: Whether ``halt()`` paused the dispatcher (a paused run never ends).
    paused: bool = False


class _Listener(Callbacks):
    """Forwards a run's dispatcher events to its Boss."""

    def __init__(self, boss: Boss, run: _Run) -> None:
        self.boss = boss
        self.run = run

    def on_task_start(self, node: Hashable) -> None:
        self.boss._started(self.run, node)

    def on_task_done(self, node: Hashable, result: Any) -> None:
        self.boss._done(self.run, node, result)

    def on_finish(self, failed: bool) -> None:
        self.boss._run_over(self.run)


class _WorkerTraceback(Exception):
    """The traceback text of an exception raised in a worker process; the
    cause of the exception ``wait_till_finished`` re-raises."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


def _entry(name: str, result: Any) -> dict[str, Any]:
    """A report entry for a finished set."""
    if isinstance(result, Err):
        exc = result.exception
        return {
            "name": name,
            "report": exc,
            "exception": exc,
            "traceback": result.traceback,
        }
    return {"name": name, "report": result}


def _pool_size(scheduler: Any, workers: int | None) -> int:
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise DefinitionError(
                f"workers must be a positive integer, got {workers!r}",
                field="workers",
            )
        return workers
    max_threads = getattr(scheduler, "max_threads", None)
    if isinstance(max_threads, int) and not isinstance(max_threads, bool):
        if max_threads >= 1:
            return max_threads
    return os.cpu_count() or 1


def _memory_of(instructions: Mapping[str, Any]) -> float:
    memory = instructions.get("memory", 0.0)
    is_number = isinstance(memory, (int, float)) and not isinstance(memory, bool)
    if not (is_number and math.isfinite(memory) and memory >= 0):
        raise DefinitionError(
            f"set {instructions.get('name')!r}: instruction 'memory' must be a "
            f"non-negative number of MiB, got {memory!r}",
            field="memory",
        )
    return float(memory)


def _instruction_mapping(value: Any, what: str) -> dict[str, Any]:
    """``value`` (None: no instruction) as a dict with string keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise DefinitionError(
            f"{what} must be a dict of instruction name -> value, got "
            f"{type(value).__name__} {value!r}",
            field=what,
        )
    for key in value:
        if not isinstance(key, str):
            raise DefinitionError(
                f"{what}: instruction names must be strings, got {key!r}",
                field=what,
            )
    return dict(value)


def _combine(
    common: Mapping[str, Any], individual: Mapping[str, Sequence]
) -> list[dict[str, Any]]:
    """taylorism's instruction sets: ``common`` merged with the i-th value
    of each ``individual`` list."""
    for key, values in individual.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, Sequence
        ):
            raise DefinitionError(
                f"individual_instructions[{key!r}] must be a list with one value "
                f"per set, got {type(values).__name__}",
                field=str(key),
            )
    lengths = {key: len(values) for key, values in individual.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{key!r}: {n}" for key, n in lengths.items())
        raise DefinitionError(
            "the lists of individual_instructions must have the same length, "
            f"one value per set; got {shown}",
            field="individual_instructions",
        )
    if not individual:
        if common:
            raise DefinitionError(
                f"common_instructions {sorted(common)} without "
                "individual_instructions make no set; give at least one list, "
                "e.g. {'name': ['first']}",
                field="individual_instructions",
            )
        return []
    count = next(iter(lengths.values()))
    return [
        {**common, **{key: values[i] for key, values in individual.items()}}
        for i in range(count)
    ]


class Boss:
    """Hands out instruction sets to workers and collects their reports.

    A Boss starts halted: sets given with ``set_instructions`` wait until
    ``make_them_work()``. Each set runs as one task on a shared pool of
    worker processes, as the scheduler admits it; ``get_report()`` tells
    what has been done at any moment.

    Parameters
    ----------
    scheduler : BaseScheduler, optional
        Decides which pending sets may start now (``alma_dag.schedulers``);
        it sees the full instruction sets. None: as many sets at once as
        the pool has workers.
    name : str, optional
        The Boss's name, used in logs.
    verbose : bool
        Log each worker's start and report (logger ``alma_dag.workers``).
    workers : int, optional
        Worker processes in the pool, which caps how many sets run at once:
        by default the scheduler's ``max_threads`` if it has one, else the
        number of CPUs.
    backend : str or Backend
        ``"loky"`` (default) or ``"inline"`` (one set at a time in the
        dispatcher thread, for debugging), or a ``Backend``.

    Raises
    ------
    DefinitionError
        The scheduler has no ``launchable`` method, ``workers`` is not a
        positive integer, or the backend is unknown.

    Examples
    --------
    >>> class Doubler(Worker):
    ...     number: int
    ...
    ...     def _task(self):
    ...         return 2 * self.number
    >>> boss = Boss(backend="inline")
    >>> boss.set_instructions({}, {"number": [1, 2], "name": ["a", "b"]})
    >>> boss.make_them_work()
    >>> boss.wait_till_finished()
    >>> report = boss.get_report()
    >>> entries = report["workers_report"]
    >>> report["status"], sorted((e["name"], e["report"]) for e in entries)
    ('finished', [('a', 2), ('b', 4)])
    """

    def __init__(
        self,
        scheduler: Any = None,
        name: str | None = None,
        verbose: bool = False,
        *,
        workers: int | None = None,
        backend: str | Backend = "loky",
    ) -> None:
        if scheduler is not None and not callable(
            getattr(scheduler, "launchable", None)
        ):
            raise DefinitionError(
                f"scheduler must have a launchable(pending_instructions, workers, "
                f"report) method, got {scheduler!r}; use one of "
                "alma_dag.schedulers or subclass BaseScheduler",
                field="scheduler",
            )
        #: The scheduler, or None.
        self.scheduler = scheduler
        #: The Boss's name, for logs.
        self.name = name
        #: Whether each worker's start and report are logged.
        self.verbose = verbose
        #: Worker processes in the pool: most sets running at once.
        self.workers = _pool_size(scheduler, workers)
        self._backend = _FixedPool(get_backend(backend), self.workers)
        # _lock guards every field below; _changed signals each change of
        # them to wait_till_finished. Lock order: the Boss's lock, then a
        # dispatcher's -- never the reverse (see _Admission).
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = BossState.HALTED
        self._ended = False
        self._names: set[str] = set()
        #: (set, Worker class) pairs given and not yet handed to a run.
        self._queue: list[tuple[dict, type[Worker]]] = []
        self._run: _Run | None = None
        self._last: Dispatcher | None = None
        self._entries: list[dict[str, Any]] = []
        #: Sets never launched by a run that was stopped or failed.
        self._left: list[dict] = []
        #: Sets launched and aborted before they reported.
        self._aborted: list[dict] = []
        #: The first failure (raised by wait_till_finished) and its
        #: worker traceback text.
        self._error: BaseException | None = None
        self._error_traceback = ""

    # -- state machine ---------------------------------------------------------

    @property
    def state(self) -> BossState:
        """The Boss's current ``BossState``."""
        return self._state

    def _transition(self, new: BossState) -> None:
        """Change state; the caller holds the lock."""
        old = self._state
        if new not in _TRANSITIONS[old]:
            allowed = ", ".join(sorted(s.value for s in _TRANSITIONS[old])) or "none"
            fix = "; create a new Boss" if old in _OVER else ""
            raise InvalidStateError(
                f"boss {self.name!r}: cannot go from {old.value} to {new.value}; "
                f"allowed from {old.value}: {allowed}{fix}"
            )
        self._state = new
        self._changed.notify_all()

    # -- instructions ------------------------------------------------------------

    def set_instructions(
        self,
        common_instructions: Mapping[str, Any] | None = None,
        individual_instructions: Mapping[str, Sequence] | None = None,
    ) -> None:
        """Give instruction sets to be worked on.

        Set ``i`` is ``common_instructions`` updated with the ``i``-th value
        of each list of ``individual_instructions``. Each set is hired a
        Worker class, named (when it has no ``name``) and checked by the
        scheduler's ``validate`` before any is queued. Calls accumulate; a
        working Boss starts the sets at once, or when its current run ends.

        Parameters
        ----------
        common_instructions : dict, optional
            Instructions shared by every set.
        individual_instructions : dict of lists, optional
            One list per instruction, one value per set; equal lengths.

        Raises
        ------
        DefinitionError
            The lists differ in length (the message names each key and
            length), no Worker or several fit a set, a ``name`` is used
            twice or is not a string, a ``memory`` is not a non-negative
            number, or the scheduler refuses a set (``field="memory"`` for
            one that needs more memory than the budget). ``DefinitionError``
            is a ``ValueError``.
        InvalidStateError
            The Boss was ended, stopped or failed: it takes no more sets.
        """
        common = _instruction_mapping(common_instructions, "common_instructions")
        individual = _instruction_mapping(
            individual_instructions, "individual_instructions"
        )
        sets = _combine(common, individual)
        hired = self._hire_all(sets)
        with self._lock:
            self._check_open()
            self._check_names(sets)
            self._names.update(s["name"] for s in sets)
            self._queue.extend(zip(sets, hired, strict=True))
            if self._state is BossState.WORKING and self._run is None:
                self._start_run()
            self._changed.notify_all()

    def _hire_all(self, sets: list[dict]) -> list[type[Worker]]:
        """Hire a class per set, then fill and validate each set in place."""
        by_keys: dict[frozenset, type[Worker]] = {}
        hired = []
        validate = getattr(self.scheduler, "validate", None)
        for instructions in sets:
            keys = frozenset(instructions)
            cls = by_keys.get(keys)
            if cls is None:
                cls = by_keys[keys] = hire_worker(keys)
            hired.append(cls)
            if instructions.get("name") is None:
                instructions["name"] = f"{cls.__name__}-{uuid.uuid4().hex}"
            elif not isinstance(instructions["name"], str):
                raise DefinitionError(
                    f"instruction 'name' must be a string, got "
                    f"{instructions['name']!r}",
                    field="name",
                )
            instructions["memory"] = _memory_of(instructions)
            if validate is not None:
                validate(instructions)
        return hired

    def _check_open(self) -> None:
        if self._ended:
            raise InvalidStateError(
                f"boss {self.name!r} was ended (by end(), wait_till_finished() or "
                "make_them_work(terminate=True)) and takes no more instructions; "
                "create another Boss"
            )
        if self._state in _OVER:
            raise InvalidStateError(
                f"boss {self.name!r} is {self._state.value} and takes no more "
                "instructions; create another Boss"
            )

    def _check_names(self, sets: list[dict]) -> None:
        seen: set[str] = set()
        for instructions in sets:
            name = instructions["name"]
            if name in seen or name in self._names:
                raise DefinitionError(
                    f"two instruction sets are named {name!r}; names identify "
                    "the sets in reports and must be unique within a Boss",
                    field="name",
                )
            seen.add(name)

    # -- control -----------------------------------------------------------------

    def make_them_work(
        self, terminate: bool = False, stop_listening: bool = False
    ) -> None:
        """Start the queued sets, or resume a halted Boss.

        Parameters
        ----------
        terminate : bool
            Then ``end()``: no more instructions will be given.
        stop_listening : bool
            Accepted for taylorism's sake; behaves as ``terminate`` (every
            worker's report is still collected).

        Raises
        ------
        InvalidStateError
            The Boss was stopped or a worker failed.
        """
        with self._lock:
            if self._state is BossState.HALTED:
                self._transition(BossState.WORKING)
                self._resume_or_start()
            elif self._state in _OVER:
                self._transition(BossState.WORKING)  # raises, naming the state
        if terminate or stop_listening:
            self.end()

    def _resume_or_start(self) -> None:
        run = self._run
        if run is None:
            if self._queue:
                self._start_run()
            return
        if run.paused:
            run.paused = False
            try:
                run.dispatcher.resume()
            except InvalidStateError:
                pass  # the run was stopped meanwhile

    def halt(self) -> None:
        """Start nothing new until ``make_them_work()``; running workers
        finish and their reports are collected. When it returns, no other
        set starts. Does nothing to a stopped or failed Boss."""
        with self._lock:
            if self._state is not BossState.WORKING:
                return
            self._transition(BossState.HALTED)
            run = self._run
            # A run with no set left to start is left alone, so that it can
            # end: a paused run never does. (Its sets' starts reach us after
            # the fact, so a set seen pending may in truth be running: then
            # pausing is merely unneeded.)
            if run is not None and self._pending_in_run(run):
                try:
                    run.dispatcher.pause()
                    run.paused = True
                except InvalidStateError:
                    pass  # the run is over or stopping: it starts nothing

    def stop_them_working(self) -> None:
        """Abort the running workers at once (their processes are killed)
        and start nothing more; returns once they are gone. Their sets are
        reported under ``'aborted'``, the sets never launched under
        ``'pending'``."""
        with self._lock:
            if self._state not in _OVER:
                self._transition(BossState.STOPPED)
            self._left += [instructions for instructions, _ in self._queue]
            self._queue.clear()
            run = self._run
        if run is not None:
            run.dispatcher.stop()

    def end(self) -> None:
        """No more instructions will be given: ``set_instructions`` raises
        from now on. The sets already given are still worked on."""
        with self._lock:
            self._ended = True
            self._changed.notify_all()

    def wait_till_finished(self, timeout: float | None = None) -> None:
        """End the Boss and wait until every set given has been worked on.

        Parameters
        ----------
        timeout : float, optional
            Most seconds to wait; None waits as long as it takes.

        Raises
        ------
        Exception
            The first exception a worker's ``_task()`` raised, re-raised
            with its type, the worker's traceback text as its cause; or
            ``WorkerDied`` (its process died), ``SerializationError`` (its
            report could not be pickled), ``TaskFailure`` (it called
            ``sys.exit``), or the scheduler's error.
        InvalidStateError
            The Boss is halted with work left: it would wait forever. Call
            ``make_them_work()`` (or ``stop_them_working()``) first.
        TimeoutError
            ``timeout`` passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_not_halted()
            self._ended = True
            while not self._is_over():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"boss {self.name!r}: work not finished after {timeout} s"
                    )
                self._changed.wait(remaining)
                self._check_not_halted()
            last, error = self._last, self._error
        if last is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                last.wait(remaining)  # its thread is ending: join it
            except Exception:  # already recorded as the Boss's error
                pass
        if error is not None:
            self._raise(error)

    def _check_not_halted(self) -> None:
        run = self._run
        if self._state is BossState.HALTED and (
            self._queue or (run is not None and run.paused)
        ):
            waiting = len(self._queue)
            if run is not None:
                waiting += len(self._pending_in_run(run))
            raise InvalidStateError(
                f"boss {self.name!r} is halted with {waiting} instruction sets "
                "not started: waiting would never end; call make_them_work() "
                "first, or stop_them_working() to give them up"
            )

    def _is_over(self) -> bool:
        if self._run is not None:
            return False
        return not self._queue or self._state in _OVER

    def _raise(self, error: BaseException) -> None:
        if self._error_traceback:
            raise error from _WorkerTraceback(self._error_traceback)
        raise error

    # -- reports -----------------------------------------------------------------

    def get_report(self, interim: bool = True) -> dict[str, Any] | None:
        """The report of the work done so far; never blocks.

        ``{'status', 'workers_report', 'pending', 'aborted'}``: the status is
        ``'interim'`` while work remains, ``'finished'`` when every set
        reported, ``'pending'`` when the Boss stopped with sets left, and
        ``'workers exception'`` after a failure. ``workers_report`` lists
        the entries ``{'name', 'report'}`` in completion order (a failure
        also has ``'exception'`` and ``'traceback'``, the worker's
        traceback text); ``pending`` the sets never launched; ``aborted``
        the sets launched and killed before they reported.

        Parameters
        ----------
        interim : bool
            When false, return None unless the work is over.
        """
        with self._lock:
            over = self._is_over()
            if not interim and not over:
                return None
            pending = [instructions for instructions, _ in self._queue]
            if self._run is not None:
                pending = self._pending_in_run(self._run) + pending
            if self._error is not None:
                status = "workers exception"
            elif not over:
                status = "interim"
            elif self._left or self._aborted or pending:
                status = "pending"
            else:
                status = "finished"
            return {
                "status": status,
                "workers_report": list(self._entries),
                "pending": self._left + pending,
                "aborted": list(self._aborted),
            }

    @staticmethod
    def _pending_in_run(run: _Run) -> list[dict]:
        return [
            instructions
            for name, instructions in run.sets.items()
            if name not in run.running and name not in run.finished
        ]

    def __repr__(self) -> str:
        return (
            f"<Boss {self.name!r} {self._state.value}: {len(self._entries)} "
            f"reported, {len(self._queue)} queued>"
        )

    # -- runs (under the lock, or from a run's dispatcher thread) ----------------

    def _start_run(self) -> None:
        """Hand the queued sets to a new run; the caller holds the lock."""
        queued, self._queue = self._queue, []
        sets = {instructions["name"]: instructions for instructions, _ in queued}
        try:
            graph = TaskGraph()
            portable: dict[type[Worker], _Portable] = {}
            for instructions, cls in queued:
                if cls not in portable:
                    portable[cls] = _Portable(cls)
                graph.add(
                    instructions["name"],
                    _work,
                    (portable[cls], instructions),
                    memory=instructions["memory"],
                )
            n_lanes = max(1, min(len(queued), LANES_PER_WORKER * self.workers))
            names = list(sets)
            plan = plan_from_lanes(graph, [names[i::n_lanes] for i in range(n_lanes)])
            run = _Run(sets, _Admission(self.scheduler, sets, self.workers))
            run.dispatcher = Dispatcher(
                graph,
                workers=n_lanes,
                backend=self._backend,
                plan=plan,
                callbacks=[_Listener(self, run)],
                scheduler=run.admission,
            )
            self._run = run
            run.dispatcher.start()
        except BaseException as exc:
            logger.exception("boss %r could not start a run", self.name)
            self._run = None
            self._left += list(sets.values())
            self._fail(exc, "")

    def _fail(self, error: BaseException, traceback: str) -> bool:
        """Record the first failure; returns whether this was it."""
        if self._error is not None:
            return False
        self._error, self._error_traceback = error, traceback
        if self._state not in _OVER:
            self._transition(BossState.FAILED)
        self._left += [instructions for instructions, _ in self._queue]
        self._queue.clear()
        self._changed.notify_all()
        return True

    def _started(self, run: _Run, name: Hashable) -> None:
        with self._lock:
            run.running.add(name)
        if self.verbose:
            logger.info("boss %r: worker %r started", self.name, name)

    def _done(self, run: _Run, name: Hashable, result: Any) -> None:
        entry = _entry(name, result)
        with self._lock:
            run.running.discard(name)
            run.finished.add(name)
            self._entries.append(entry)
            first = isinstance(result, Err) and self._fail(
                result.exception, result.traceback
            )
            self._changed.notify_all()
        if isinstance(result, Err):
            logger.error(
                "boss %r: worker %r failed: %s",
                self.name,
                name,
                result.message_with_traceback,
            )
        elif self.verbose:
            text = str(result)
            if len(text) > MAX_LOGGED_REPORT:
                text = text[:MAX_LOGGED_REPORT] + " ..."
            logger.info("boss %r: worker %r reported: %s", self.name, name, text)
        if first:
            run.dispatcher.stop(timeout=0)  # from its own thread: never wait

    def _run_over(self, run: _Run) -> None:
        """The run's dispatcher thread is ending: settle the run, and start
        the sets queued meanwhile."""
        error = run.admission.error or _internal_error(run.dispatcher)
        with self._lock:
            try:
                if error is not None:
                    self._fail(error, "")
                unfinished = [
                    s for name, s in run.sets.items() if name not in run.finished
                ]
                self._aborted += [s for s in unfinished if s["name"] in run.running]
                self._left += [s for s in unfinished if s["name"] not in run.running]
                self._last = run.dispatcher
            finally:
                self._run = None
                if self._state is BossState.WORKING and self._queue:
                    self._start_run()
                self._changed.notify_all()


def _internal_error(dispatcher: Dispatcher) -> BaseException | None:
    """The dispatcher thread's own error, if it failed outside any task.
    Called from that thread once the run is over, so wait() returns at
    once."""
    if dispatcher.state is not RunState.FAILED:
        return None
    try:
        dispatcher.wait(timeout=0)
    except BaseException as exc:
        return exc
    return None


# -- taylorism's entry points --------------------------------------------------


def run_as_server(
    common_instructions: Mapping[str, Any] | None = None,
    individual_instructions: Mapping[str, Sequence] | None = None,
    scheduler: Any = None,
    verbose: bool = False,
    **boss_options: Any,
) -> Boss:
    """A working Boss: built, given the instructions and set to work.

    Call its ``wait_till_finished()`` (or ``end()``) when no more
    instructions will come.

    Parameters
    ----------
    common_instructions, individual_instructions
        As for ``Boss.set_instructions``.
    scheduler, verbose
        As for ``Boss``.
    **boss_options
        Further keyword arguments of ``Boss`` (``name``, ``workers``,
        ``backend``).

    Raises
    ------
    DefinitionError
        As ``Boss`` and ``Boss.set_instructions``; nothing has started then.
    """
    boss = Boss(scheduler=scheduler, verbose=verbose, **boss_options)
    boss.set_instructions(common_instructions, individual_instructions)
    boss.make_them_work()
    return boss


def batch_main(
    common_instructions: Mapping[str, Any] | None = None,
    individual_instructions: Mapping[str, Sequence] | None = None,
    scheduler: Any = None,
    verbose: bool = False,
    print_report: Callable[[Any], Any] = print,
    **boss_options: Any,
) -> dict[str, Any]:
    """Run the instruction sets to the end, print each worker's report and
    return the final report.

    Parameters are those of ``run_as_server``; ``print_report`` prints one
    report (after a header naming its worker).

    Raises
    ------
    Exception
        As ``Boss.wait_till_finished``. An interruption (Ctrl-C) stops the
        workers before it propagates.
    """
    boss = run_as_server(
        common_instructions, individual_instructions, scheduler, verbose, **boss_options
    )
    try:
        boss.wait_till_finished()
    except BaseException:
        boss.stop_them_working()
        raise
    report = boss.get_report()
    for entry in report["workers_report"]:
        header = f"WORKER NAME: {entry['name']}"
        print("=" * len(header))
        print(header)
        print("-" * len(header))
        print_report(entry["report"])
    return report
