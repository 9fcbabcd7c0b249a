"""Admission schedulers: which pending sets of instructions may start now.

A scheduler is taylorism's: one method,
``launchable(pending_instructions, workers, report)``, splits the pending
sets into those that may start now and those that must wait::

    pending  [p1, p2, p3, p4]  ─┐
    workers  [w1, w2]  (running)├─► launchable() ─► ([p1, p2], [p3, p4])
    report   {done: result}    ─┘                    start now  wait

- **In:** ``pending_instructions``, the sets waiting to start, oldest first;
  ``workers``, the sets running now; ``report``, a read-only mapping of
  what has finished. A set of instructions is a dict with at least a
  ``name`` and, for memory-aware schedulers, ``memory`` in MiB.
- **Out:** two lists holding the very dict objects of
  ``pending_instructions`` (the caller admits them by identity), each in
  the order given, together exactly the pending sets.
- **When:** the caller (the ``Dispatcher`` or the ``Boss``) asks whenever
  something finishes while sets are pending, and when new sets arrive. A
  scheduler holds no state about the run; everything that changes comes in
  through the three arguments, so the same scheduler may serve several runs.
- **Before anything runs:** the caller passes every set once to
  ``validate``, which raises ``DefinitionError`` for a set that could never
  start (one needing more memory than the whole budget), so an impossible
  set is refused up front rather than waiting forever.
- **Progress:** when nothing is running, a scheduler must admit at least
  the first pending set that ``validate`` accepted; otherwise the run could
  never end (the ``Dispatcher`` then fails, saying that no task can start).

The same schedulers serve as admission control for task graphs
(``Dispatcher(..., scheduler=...)``, each task's ``memory`` hint) and
experiments (the ``memory`` and ``scheduler`` fields of an experiment
file).

Policy: the schedulers here are first in, first out. ``MaxMemoryScheduler``
never lets a small set overtake a large one that does not fit yet: the
large set waits only for running sets to finish, never for newcomers, so
it cannot starve; the price is memory left idle while it waits (see the
class).
"""

from __future__ import annotations

import abc
import math
from typing import Any

from .errors import DefinitionError

__all__ = [
    "BaseScheduler",
    "LaxistScheduler",
    "MaxMemoryScheduler",
    "MaxThreadsScheduler",
]

#: A total of declared memory still fits when it exceeds the budget by this
#: fraction of it at most: floating-point rounding only (``0.29 * 100`` is
#: ``28.999999999999996``), which should not refuse a 29 MiB set. It is
#: about 1 KiB of a 1 TiB budget.
_ROUNDING = 1e-9


class BaseScheduler(abc.ABC):
    """Decides which pending sets of instructions may start now.

    Subclasses implement ``launchable``; they may override ``validate`` to
    refuse, before anything runs, a set that could never start.

    Examples
    --------
    A scheduler that starts ``"report"`` only once everything else has
    finished, and anything else at once:

    >>> class ReportLast(BaseScheduler):
    ...     def launchable(self, pending_instructions, workers, report):
    ...         now, later = [], []
    ...         for instructions in pending_instructions:
    ...             last = instructions["name"] == "report"
    ...             blocked = last and (workers or len(pending_instructions) > 1)
    ...             (later if blocked else now).append(instructions)
    ...         return now, later
    >>> pending = [{"name": "report"}, {"name": "a"}]
    >>> ReportLast().launchable(pending, [], {})
    ([{'name': 'a'}], [{'name': 'report'}])
    """

    @abc.abstractmethod
    def launchable(
        self,
        pending_instructions: list[dict],
        workers: list[dict],
        report: Any,
    ) -> tuple[list[dict], list[dict]]:
        """Split ``pending_instructions`` into those to start now and those
        to keep waiting.

        Parameters
        ----------
        pending_instructions : list of dict
            The sets waiting to start, oldest first.
        workers : list of dict
            The sets running now.
        report : mapping
            What has finished so far (read-only).

        Returns
        -------
        launchable, not_yet_launchable : list of dict
            The same dict objects as ``pending_instructions``, in its order;
            together they hold each pending set exactly once.
        """

    def validate(self, instructions: dict) -> None:  # noqa: B027 (an optional hook)
        """Refuse a set of instructions that could never start.

        Called once per set before anything runs; the default accepts all.

        Raises
        ------
        DefinitionError
            The set can never be launched by this scheduler.
        """


class LaxistScheduler(BaseScheduler):
    """Everything may start at once: no admission control.

    Examples
    --------
    >>> pending = [{"name": "a"}, {"name": "b"}]
    >>> LaxistScheduler().launchable(pending, [{"name": "c"}], {})
    ([{'name': 'a'}, {'name': 'b'}], [])
    """

    def launchable(self, pending_instructions, workers, report):
        return list(pending_instructions), []

    launchable.__doc__ = BaseScheduler.launchable.__doc__

    def __repr__(self) -> str:
        return "LaxistScheduler()"


class MaxThreadsScheduler(BaseScheduler):
    """At most ``max_threads`` sets run at once, started first in, first out.

    Parameters
    ----------
    max_threads : int
        Most sets running at the same time (>= 1).

    Raises
    ------
    DefinitionError
        ``max_threads`` is not a positive integer.

    Examples
    --------
    >>> scheduler = MaxThreadsScheduler(max_threads=2)
    >>> pending = [{"name": "b"}, {"name": "c"}, {"name": "d"}]
    >>> now, later = scheduler.launchable(pending, [{"name": "a"}], {})
    >>> [i["name"] for i in now], [i["name"] for i in later]
    (['b'], ['c', 'd'])
    """

    def __init__(self, max_threads: int = 2) -> None:
        if (
            not isinstance(max_threads, int)
            or isinstance(max_threads, bool)
            or max_threads < 1
        ):
            raise DefinitionError(
                f"max_threads must be a positive integer, got {max_threads!r}",
                field="max_threads",
            )
        #: Most sets running at the same time.
        self.max_threads = max_threads

    def launchable(self, pending_instructions, workers, report):
        free = max(0, self.max_threads - len(workers))
        return list(pending_instructions[:free]), list(pending_instructions[free:])

    launchable.__doc__ = BaseScheduler.launchable.__doc__

    def __repr__(self) -> str:
        return f"MaxThreadsScheduler(max_threads={self.max_threads})"


class MaxMemoryScheduler(BaseScheduler):
    """Running sets' declared ``memory`` stays within a budget.

    The budget, in MiB, is ``max_memory_percentage * total_system_memory``.
    A set's memory is its ``memory`` instruction in MiB (0 when absent).
    Sets start first in, first out while the declared memory of the running
    sets plus theirs stays within the budget (``<=``: a set needing exactly
    what is left starts).

    Trade-off: the order is strict. Once the oldest pending set does not
    fit, no later set starts, even a small one that would. So a large set
    waits only for running sets to finish and is never starved by a stream
    of small ones -- at the price of memory left idle while it waits.
    Filling that gap safely (backfilling) would need to know how long each
    set runs.

    The declared memory is a hint, not a limit: nothing stops a set from
    using more than it declared.

    Parameters
    ----------
    max_memory_percentage : float
        The fraction of the total usable by running sets, in (0, 1].
    total_system_memory : float, optional
        The total in MiB; this machine's memory (``psutil``) when omitted.

    Raises
    ------
    DefinitionError
        ``max_memory_percentage`` is not in (0, 1], or
        ``total_system_memory`` is not a positive number.

    Examples
    --------
    >>> scheduler = MaxMemoryScheduler(0.5, total_system_memory=1000)
    >>> scheduler.budget
    500.0
    >>> pending = [
    ...     {"name": "b", "memory": 200},
    ...     {"name": "c", "memory": 300},  # would exceed 500 with a and b
    ...     {"name": "d", "memory": 10},  # would fit, but c is older
    ... ]
    >>> running = [{"name": "a", "memory": 100}]
    >>> now, later = scheduler.launchable(pending, running, {})
    >>> [i["name"] for i in now], [i["name"] for i in later]
    (['b'], ['c', 'd'])

    A set that needs more than the whole budget is refused before the run:

    >>> scheduler.validate({"name": "huge", "memory": 800})
    Traceback (most recent call last):
    ...
    alma_dag.errors.DefinitionError: set 'huge': memory 800 MiB exceeds the ...
    """

    def __init__(
        self,
        max_memory_percentage: float = 0.75,
        total_system_memory: float | None = None,
    ) -> None:
        if not (_is_number(max_memory_percentage) and 0 < max_memory_percentage <= 1):
            raise DefinitionError(
                "max_memory_percentage must be a number in (0, 1], got "
                f"{max_memory_percentage!r}",
                field="max_memory_percentage",
            )
        if total_system_memory is None:
            import psutil  # imported when needed, to keep import alma_dag light

            total_system_memory = psutil.virtual_memory().total / 2**20
        elif not (_is_number(total_system_memory) and total_system_memory > 0):
            raise DefinitionError(
                "total_system_memory must be a positive number of MiB (or None "
                f"for this machine's memory), got {total_system_memory!r}",
                field="total_system_memory",
            )
        #: The fraction of the total usable by running sets.
        self.max_memory_percentage = max_memory_percentage
        #: The total memory in MiB.
        self.total_system_memory = total_system_memory
        #: MiB of declared memory that running sets may hold together.
        self.budget = max_memory_percentage * total_system_memory

    def launchable(self, pending_instructions, workers, report):
        used = math.fsum(_memory(instructions) for instructions in workers)
        count = 0
        for instructions in pending_instructions:
            needed = _memory(instructions)
            if not self._fits(used + needed):
                # Invariant: nothing running and still no room means the
                # set was never validated; waiting would be forever.
                if not workers and not count:
                    self.validate(instructions)
                break
            used += needed
            count += 1
        return list(pending_instructions[:count]), list(pending_instructions[count:])

    launchable.__doc__ = BaseScheduler.launchable.__doc__

    def validate(self, instructions: dict) -> None:
        """Refuse a set whose ``memory`` is not a non-negative number or
        exceeds the whole budget.

        Raises
        ------
        DefinitionError
            The set's memory is invalid or over the budget; ``field`` is
            ``"memory"``.
        """
        needed = _memory(instructions)
        if not self._fits(needed):
            raise DefinitionError(
                f"set {instructions.get('name')!r}: memory {needed:g} MiB exceeds "
                f"the scheduler's budget of {self.budget:g} MiB "
                f"({self.max_memory_percentage:g} of {self.total_system_memory:g} "
                "MiB), so it could never start; lower its memory or raise "
                "max_memory_percentage or total_system_memory",
                field="memory",
            )

    def _fits(self, memory: float) -> bool:
        return memory <= self.budget * (1 + _ROUNDING)

    def __repr__(self) -> str:
        return (
            f"MaxMemoryScheduler(max_memory_percentage={self.max_memory_percentage!r}"
            f", total_system_memory={self.total_system_memory!r})"
        )


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (a bool is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _memory(instructions: dict) -> float:
    """The declared memory of a set, in MiB."""
    memory = instructions.get("memory", 0)
    if not (_is_number(memory) and memory >= 0):
        raise DefinitionError(
            f"set {instructions.get('name')!r}: memory must be a non-negative "
            f"number of MiB, got {memory!r}",
            field="memory",
        )
    return memory
