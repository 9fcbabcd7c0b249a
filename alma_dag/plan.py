"""Plans: which process runs which task, in what order, and when.

In: a validated ``TaskGraph``, a number of processes P, optionally the
durations measured in earlier runs (``costs``, which override the tasks'
estimated costs) and the node ids already done. Out: a ``Plan`` -- one
ordered lane of node ids per process, each task's planned start and finish,
the makespan, and a lower bound on any plan's makespan beside it.

Policy: HEFT, *heterogeneous earliest finish time* (Topcuoglu, Hariri and
Wu, 2002), here on identical processes. Each task gets an upward rank: its
cost plus the largest, over its dependents, of the edge's communication
cost plus the dependent's rank -- the length of the longest path from the
task to the end if every result had to move. Tasks are placed in
decreasing rank (ties by topological position), so each comes after its
dependencies. Each goes on the process where it would *finish* earliest,
counting an edge's communication cost only between different processes,
and may be inserted into an idle gap left earlier on a process if it fits
there. On two processes (costs in brackets, communication on the edges;
one column per time unit)::

          a [1]          ranks: a 7, b 5, c 4, d 1
       1 /     \\ 1
     b [3]     c [2]     lane 0:  a b b b . d
       1 \\     / 1       lane 1:  . . c c
          d [1]          time:    0 1 2 3 4 5 6

c waits one unit on lane 1 for a's result, and d one unit for c's: the
makespan is 6. No plan can beat the lower bound ``max(critical path, total
cost / P)``: the longest chain of computation costs (communication does not
count, since a chain kept on one process never pays it), and all the work
shared perfectly. Here it is ``max(1 + 3 + 1, 7 / 2) = 5``.

Invariants of every plan: each task that is not done is in exactly one
lane, once; it starts no earlier than each of its dependencies finishes,
plus the edge's communication cost when the dependency is on another lane;
the tasks of a lane do not overlap and are listed by start time;
``finish - start`` is the task's cost. Dependencies that are done count as
finished at time 0 on every lane.

Cost: the graph becomes integer-indexed lists once; ranks take one pass
over the edges; each placement computes every lane's earliest start in
O(dependencies + P) and searches each lane's idle gaps, kept sorted in
blocks that remember their longest gap, by bisection. Lanes that cannot
beat the best finish found so far are not searched at all.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import sub
from typing import Any

import networkx as nx

from .errors import DefinitionError
from .graph import Task, TaskGraph

__all__ = [
    "Plan",
    "PlannedTask",
    "critical_path_length",
    "heft",
    "plan_from_lanes",
    "upward_ranks",
]

# Idle gaps per block. A query bisects to one block and scans at most its
# gaps; a block splits in two when it reaches twice this size. 64 keeps both
# the scan and the block list short for lanes of up to ~100,000 gaps.
_BLOCK = 64

_INF = math.inf


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """Where and when one task runs in a ``Plan``."""

    #: Node id of the task.
    node: Hashable
    #: Index of the process (lane) that runs it.
    lane: int
    #: Index of the task in its lane's order.
    position: int
    #: Planned start time, in the units of the costs.
    start: float
    #: Planned finish time: ``start`` plus the task's cost.
    finish: float


@dataclass(frozen=True, slots=True)
class Plan:
    """One ordered lane of node ids per process, with planned times.

    Build plans with ``heft`` or ``plan_from_lanes``.
    """

    #: One tuple of node ids per process, in planned order; may be empty.
    lanes: tuple[tuple[Hashable, ...], ...]
    #: ``PlannedTask`` of each planned node id.
    entries: Mapping[Hashable, PlannedTask]
    #: Finish time of the last task (0 for an empty plan).
    makespan: float
    #: Longest chain of computation costs, communication left out.
    critical_path: float
    #: Sum of the costs of the planned tasks.
    total_cost: float

    @property
    def n_processes(self) -> int:
        """Number of processes (lanes), including empty ones."""
        return len(self.lanes)

    @property
    def lower_bound(self) -> float:
        """``max(critical_path, total_cost / n_processes)``; no plan of the
        same tasks on as many processes has a shorter makespan."""
        if not self.entries:
            return 0.0
        return max(self.critical_path, self.total_cost / self.n_processes)

    def lane_of(self, node: Hashable) -> int:
        """Index of the lane that runs ``node``.

        Raises
        ------
        KeyError
            ``node`` is not in the plan.
        """
        try:
            return self.entries[node].lane
        except KeyError:
            raise KeyError(f"task {node!r} is not in the plan") from None

    def gantt(self, **kwargs: Any) -> Any:
        """Draw the lanes as a Gantt chart; returns a matplotlib ``Figure``.
        Keywords go to ``alma_dag.viz.plan_gantt``."""
        from .viz import plan_gantt

        return plan_gantt(self, **kwargs)

    def __len__(self) -> int:
        return len(self.entries)

    def _repr_html_(self) -> str:
        from .display import plan_html  # display imports this module

        return plan_html(self)

    def __repr__(self) -> str:
        return (
            f"<Plan: {len(self.entries)} tasks on {self.n_processes} lanes, "
            f"makespan {self.makespan:g}, lower bound {self.lower_bound:g}>"
        )


# -- the graph as integer-indexed lists --------------------------------------


class _Indexed:
    """The tasks still to plan, as lists indexed by topological position."""

    __slots__ = ("nodes", "index", "cost", "dependencies", "dependents")

    def __init__(self, graph: TaskGraph, costs: Mapping | None, done) -> None:
        skip = _as_set(done)
        #: Node ids, each after its dependencies.
        self.nodes = [v for v in graph.topological_order() if v not in skip]
        #: Node id -> position in ``nodes``.
        self.index = {node: i for i, node in enumerate(self.nodes)}
        #: Cost of each task: measured if known, else estimated.
        task = graph.task
        self.cost = [_cost_of(task(node), node, costs) for node in self.nodes]
        #: (dependency, communication cost) pairs of each task.
        self.dependencies: list[list[tuple[int, float]]] = [[] for _ in self.nodes]
        #: (dependent, communication cost) pairs of each task.
        self.dependents: list[list[tuple[int, float]]] = [[] for _ in self.nodes]
        index = self.index
        for u, v, comm in graph.nx.edges.data("cost", 0.0):
            iu, iv = index.get(u), index.get(v)
            if iu is not None and iv is not None:
                self.dependencies[iv].append((iu, comm))
                self.dependents[iu].append((iv, comm))


def _as_set(done: Iterable[Hashable]) -> Collection[Hashable]:
    return done if isinstance(done, (set, frozenset, Mapping)) else set(done)


def _is_cost(value: object) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    return math.isfinite(value) and value >= 0


def _cost_of(task: Task, node: Hashable, costs: Mapping | None) -> float:
    if costs is None or node not in costs:
        return float(task.cost)
    value = costs[node]
    if not _is_cost(value):
        raise DefinitionError(
            f"task {node!r}: measured cost must be a non-negative number, "
            f"got {value!r}",
            field="costs",
        )
    return float(value)


def _ranks(problem: _Indexed) -> list[float]:
    cost = problem.cost
    rank = [0.0] * len(cost)
    for i in reversed(range(len(cost))):
        tail = 0.0
        for j, comm in problem.dependents[i]:
            through = comm + rank[j]
            if through > tail:
                tail = through
        rank[i] = cost[i] + tail
    return rank


def _longest_paths(problem: _Indexed) -> list[float]:
    cost = problem.cost
    longest = [0.0] * len(cost)
    for i, dependencies in enumerate(problem.dependencies):
        head = 0.0
        for j, _ in dependencies:
            if longest[j] > head:
                head = longest[j]
        longest[i] = head + cost[i]
    return longest


# -- public analysis functions -----------------------------------------------


def upward_ranks(
    graph: TaskGraph,
    costs: Mapping[Hashable, float] | None = None,
    done: Iterable[Hashable] = (),
) -> dict[Hashable, float]:
    """HEFT upward rank of each task that is not done.

    ``rank(v) = cost(v) + max(comm(v, w) + rank(w) for each dependent w)``,
    with the max of nothing 0: the length of the longest path from ``v`` to
    the end of the graph, counting every communication cost on the way.

    Parameters
    ----------
    graph : TaskGraph
        The tasks; validated first.
    costs : mapping, optional
        Measured durations ``{node id: float}``; they replace the estimated
        ``Task.cost`` of the tasks they name.
    done : collection, optional
        Node ids already finished; they and their edges are left out.

    Returns
    -------
    dict
        ``{node id: rank}``, in topological order.

    Raises
    ------
    DefinitionError
        The graph is invalid, or a measured cost is not a non-negative number.
    CycleError
        The graph has a cycle.

    Examples
    --------
    >>> from alma_dag import Dependency, TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-1,), cost=2)
    >>> b = g.add("b", abs, (Dependency("a", cost=1),), cost=3)
    >>> c = g.add("c", abs, (b,), cost=1)
    >>> upward_ranks(g)
    {'a': 7.0, 'b': 4.0, 'c': 1.0}
    >>> upward_ranks(g, costs={"c": 10}, done={"a"})
    {'b': 13.0, 'c': 10.0}
    """
    graph.validate()
    problem = _Indexed(graph, costs, done)
    return dict(zip(problem.nodes, _ranks(problem), strict=True))


def critical_path_length(
    graph: TaskGraph,
    costs: Mapping[Hashable, float] | None = None,
    done: Iterable[Hashable] = (),
) -> float:
    """Length of the longest chain of task costs, communication left out.

    No plan on any number of processes finishes sooner: the chain's tasks
    run one after the other, while its communication can be avoided by
    running the whole chain on one process.

    Parameters
    ----------
    graph : TaskGraph
        The tasks; validated first.
    costs : mapping, optional
        Measured durations ``{node id: float}`` replacing estimated costs.
    done : collection, optional
        Node ids already finished; they are left out.

    Returns
    -------
    float
        The length; 0 when no task is left.

    Raises
    ------
    DefinitionError, CycleError
        As for ``upward_ranks``.

    Examples
    --------
    >>> from alma_dag import Dependency, TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-1,), cost=2)
    >>> b = g.add("b", abs, (Dependency("a", cost=50),), cost=3)
    >>> c = g.add("c", abs, (a,), cost=4)
    >>> critical_path_length(g)
    6.0
    """
    graph.validate()
    return max(_longest_paths(_Indexed(graph, costs, done)), default=0.0)


# -- idle gaps of a lane -------------------------------------------------------


class _Lane:
    """The idle gaps of one lane, for insertion.

    Gaps are disjoint half-open intervals ``[start, end)``, sorted by start
    (so by end too), none empty, kept in blocks. The last gap,
    ``[end, inf)`` after the lane's last task, is not stored: it always fits.
    """

    __slots__ = ("end", "starts", "ends", "longest", "last_ends")

    def __init__(self) -> None:
        #: Finish time of the lane's last task.
        self.end = 0.0
        #: starts[b][k], ends[b][k]: the k-th gap of block b.
        self.starts: list[list[float]] = []
        self.ends: list[list[float]] = []
        #: Length of each block's longest gap, to skip whole blocks.
        self.longest: list[float] = []
        #: End of each block's last gap, to bisect on time.
        self.last_ends: list[float] = []

    def find_slot(self, earliest: float, duration: float) -> tuple[float, int, int]:
        """Earliest start at or after ``earliest`` where ``duration`` fits,
        with the block and index of the gap used (-1, -1 past the end)."""
        need = earliest + duration
        # A gap ending before `need` cannot hold the task. Every gap after
        # the first one ending at or past `need` starts past `earliest`, so
        # it holds the task exactly when it is long enough.
        block = bisect_left(self.last_ends, need)
        if block < len(self.last_ends):
            starts, ends = self.starts[block], self.ends[block]
            k = bisect_left(ends, need)
            start = max(starts[k], earliest)
            if start + duration <= ends[k]:
                return start, block, k
            k = _first_fit(starts, ends, k + 1, duration)
            if k < 0:
                block, k = self._next_fit(block + 1, duration)
            if k >= 0:
                return self.starts[block][k], block, k
        return max(self.end, earliest), -1, -1

    def _next_fit(self, first: int, duration: float) -> tuple[int, int]:
        for block in range(first, len(self.longest)):
            if self.longest[block] >= duration:
                k = _first_fit(self.starts[block], self.ends[block], 0, duration)
                if k >= 0:
                    return block, k
        return -1, -1

    def insert_slot(self, start: float, duration: float, block: int, k: int) -> None:
        """Occupy ``[start, start + duration]`` in the gap ``find_slot`` gave."""
        if block < 0:
            if start > self.end:
                self._append_gap(self.end, start)
            self.end = start + duration
            return
        starts, ends = self.starts[block], self.ends[block]
        gap_start, gap_end, finish = starts[k], ends[k], start + duration
        # A task of zero cost splits the gap too: nothing may overlap it.
        left = [gap_start] if start > gap_start else []
        right = [finish] if gap_end > finish else []
        starts[k : k + 1] = left + right
        ends[k : k + 1] = ([start] if left else []) + ([gap_end] if right else [])
        if not starts:
            del self.starts[block], self.ends[block]
            del self.longest[block], self.last_ends[block]
            return
        self.last_ends[block] = ends[-1]
        if gap_end - gap_start >= self.longest[block]:
            self.longest[block] = max(map(sub, ends, starts))
        if len(starts) >= 2 * _BLOCK:
            self._split(block)

    def _append_gap(self, start: float, end: float) -> None:
        if not self.starts or len(self.starts[-1]) >= 2 * _BLOCK:
            self.starts.append([])
            self.ends.append([])
            self.longest.append(0.0)
            self.last_ends.append(end)
        self.starts[-1].append(start)
        self.ends[-1].append(end)
        self.longest[-1] = max(self.longest[-1], end - start)
        self.last_ends[-1] = end

    def _split(self, block: int) -> None:
        starts, ends = self.starts[block], self.ends[block]
        tail_starts, tail_ends = starts[_BLOCK:], ends[_BLOCK:]
        del starts[_BLOCK:], ends[_BLOCK:]
        self.starts.insert(block + 1, tail_starts)
        self.ends.insert(block + 1, tail_ends)
        self.longest[block] = max(map(sub, ends, starts))
        self.longest.insert(block + 1, max(map(sub, tail_ends, tail_starts)))
        self.last_ends[block] = ends[-1]
        self.last_ends.insert(block + 1, tail_ends[-1])


def _first_fit(
    starts: list[float], ends: list[float], first: int, duration: float
) -> int:
    """Index of the first gap from ``first`` on that is long enough, or -1."""
    for k in range(first, len(starts)):
        if starts[k] + duration <= ends[k]:
            return k
    return -1


# -- HEFT -----------------------------------------------------------------------


def _checked_processes(n_processes: object) -> int:
    if (
        not isinstance(n_processes, numbers.Integral)
        or isinstance(n_processes, bool)
        or n_processes < 1
    ):
        raise DefinitionError(
            f"n_processes must be a positive integer, got {n_processes!r}",
            field="n_processes",
        )
    return int(n_processes)


def earliest_starts(
    dependencies: list[tuple[int, float]],
    lane_of: list[int],
    finish: list[float],
    n_lanes: int,
) -> list[float]:
    """When a task could start on each lane, as far as its placed
    dependencies allow: a dependency's result reaches its own lane at its
    finish and every other lane a communication cost later."""
    if not dependencies:
        return [0.0] * n_lanes
    local: dict[int, float] = {}  # latest finish of a dependency on the lane
    sent: dict[int, float] = {}  # latest arrival elsewhere of a result from it
    for j, comm in dependencies:
        lane, done_at = lane_of[j], finish[j]
        if done_at > local.get(lane, 0.0):
            local[lane] = done_at
        if done_at + comm > sent.get(lane, 0.0):
            sent[lane] = done_at + comm
    # Results that must travel to lane l come from every lane but l: every
    # lane waits for the latest arrival, except the lane it comes from,
    # which waits for the runner-up.
    top, first, second = -1, 0.0, 0.0
    for lane, arrival in sent.items():
        if arrival > first:
            top, first, second = lane, arrival, first
        elif arrival > second:
            second = arrival
    starts = [first] * n_lanes
    if top >= 0:
        starts[top] = second
    for lane, done_at in local.items():
        if done_at > starts[lane]:
            starts[lane] = done_at
    return starts


def _best_slot(
    lanes: list[_Lane], starts: list[float], duration: float
) -> tuple[int, float, int, int]:
    """(lane, start, block, gap) of the earliest finish; ties to the lowest
    lane."""
    best = (-1, _INF, -1, -1)
    best_finish = _INF
    for lane, earliest in enumerate(starts):
        if earliest + duration >= best_finish:
            continue  # cannot finish sooner, whatever the gaps
        slots = lanes[lane]
        if slots.last_ends:
            start, block, k = slots.find_slot(earliest, duration)
        else:  # no idle gap: the task goes at the end (the common case)
            start, block, k = max(slots.end, earliest), -1, -1
        if start + duration < best_finish:
            best, best_finish = (lane, start, block, k), start + duration
    return best


def heft(
    graph: TaskGraph,
    n_processes: int,
    costs: Mapping[Hashable, float] | None = None,
    done: Iterable[Hashable] = (),
) -> Plan:
    """Plan a graph on ``n_processes`` identical processes with HEFT.

    Tasks are taken in decreasing upward rank (ties by topological
    position, never by node id) and each is placed where it finishes
    earliest (ties to the lowest lane), in the earliest idle gap of that
    lane that holds it. A dependency on another lane delays the task by the
    edge's communication cost.

    Parameters
    ----------
    graph : TaskGraph
        The tasks; validated first.
    n_processes : int
        Number of processes, at least 1.
    costs : mapping, optional
        Measured durations ``{node id: float}`` replacing the estimated
        ``Task.cost`` of the tasks they name; other node ids are ignored.
    done : collection, optional
        Node ids already finished: they are not planned, and count as
        finished at time 0 on every lane; other node ids are ignored.

    Returns
    -------
    Plan
        ``n_processes`` lanes, some possibly empty.

    Raises
    ------
    DefinitionError
        The graph is invalid, ``n_processes`` is not a positive integer, or
        a measured cost is not a non-negative number.
    CycleError
        The graph has a cycle.

    Examples
    --------
    The graph of the module docstring:

    >>> from alma_dag import Dependency, TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-1,), cost=1)
    >>> b = g.add("b", abs, (Dependency("a", cost=1),), cost=3)
    >>> c = g.add("c", abs, (Dependency("a", cost=1),), cost=2)
    >>> d = g.add("d", max, (Dependency("b", cost=1), Dependency("c", cost=1)))
    >>> plan = heft(g, 2)
    >>> plan.lanes
    (('a', 'b', 'd'), ('c',))
    >>> plan.entries["c"].start, plan.makespan, plan.lower_bound
    (2.0, 6.0, 5.0)
    """
    graph.validate()
    n_processes = _checked_processes(n_processes)
    problem = _Indexed(graph, costs, done)
    rank = _ranks(problem)
    # sorted() is stable, and positions are topological: ties keep that order.
    order = sorted(range(len(rank)), key=rank.__getitem__, reverse=True)
    lanes = [_Lane() for _ in range(n_processes)]
    lane_of = [-1] * len(rank)
    start = [0.0] * len(rank)
    finish = [0.0] * len(rank)
    for i in order:
        duration = problem.cost[i]
        earliest = earliest_starts(
            problem.dependencies[i], lane_of, finish, n_processes
        )
        lane, start[i], block, k = _best_slot(lanes, earliest, duration)
        lanes[lane].insert_slot(start[i], duration, block, k)
        lane_of[i], finish[i] = lane, start[i] + duration
    members: list[list[int]] = [[] for _ in range(n_processes)]
    for i in order:
        members[lane_of[i]].append(i)
    for lane in members:
        # Stable: tasks of zero cost at one time stay in placement order.
        lane.sort(key=lambda i: (start[i], finish[i]))
    return _make_plan(problem, members, start, finish)


def _make_plan(
    problem: _Indexed,
    members: list[list[int]],
    start: list[float],
    finish: list[float],
) -> Plan:
    nodes = problem.nodes
    entries = {}
    for lane, indices in enumerate(members):
        for position, i in enumerate(indices):
            node = nodes[i]
            entries[node] = PlannedTask(node, lane, position, start[i], finish[i])
    return Plan(
        lanes=tuple(tuple(nodes[i] for i in indices) for indices in members),
        entries=entries,
        makespan=max(finish, default=0.0),
        critical_path=max(_longest_paths(problem), default=0.0),
        total_cost=math.fsum(problem.cost),
    )


# -- plans for given lanes -------------------------------------------------------


def plan_from_lanes(
    graph: TaskGraph,
    lanes: Sequence[Iterable[Hashable]],
    costs: Mapping[Hashable, float] | None = None,
    done: Iterable[Hashable] = (),
) -> Plan:
    """Time a fixed assignment of tasks to lanes, each lane in a given order.

    Each task starts as soon as the task before it in its lane has finished
    and each dependency's result has arrived (at the dependency's finish on
    the same lane, a communication cost later from another lane).

    Parameters
    ----------
    graph : TaskGraph
        The tasks; validated first.
    lanes : sequence of sequences of node ids
        One ordered sequence per process; node ids in ``done`` are skipped.
    costs : mapping, optional
        Measured durations ``{node id: float}`` replacing estimated costs.
    done : collection, optional
        Node ids already finished; they count as finished at time 0.

    Returns
    -------
    Plan
        The lanes as given (without done tasks), with their times.

    Raises
    ------
    DefinitionError
        There is no lane; a node id is listed twice or is not a task of the
        graph; a task that is not done is missing; the order deadlocks (a
        task listed before one of its dependencies in its lane, or lanes
        waiting for each other in a circle); a measured cost is invalid; or
        the graph is invalid.
    CycleError
        The graph has a cycle.

    Examples
    --------
    >>> from alma_dag import Dependency, TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-1,), cost=2)
    >>> b = g.add("b", abs, (Dependency("a", cost=5),), cost=1)
    >>> plan_from_lanes(g, [["a"], ["b"]]).entries["b"].start
    7.0
    >>> plan_from_lanes(g, [["a", "b"], []]).makespan
    3.0
    """
    graph.validate()
    problem = _Indexed(graph, costs, done)
    members = _lane_members(graph, problem, lanes)
    start, finish = _simulate(problem, members)
    return _make_plan(problem, members, start, finish)


def _lane_members(
    graph: TaskGraph, problem: _Indexed, lanes: Sequence[Iterable[Hashable]]
) -> list[list[int]]:
    if len(lanes) == 0:
        raise DefinitionError("lanes: at least one lane is needed", field="lanes")
    index = problem.index
    lane_of: dict[int, int] = {}
    members: list[list[int]] = []
    for lane, nodes in enumerate(lanes):
        members.append([])
        for node in nodes:
            i = index.get(node)
            if i is None and node in graph:
                continue  # done
            if i is None:
                raise DefinitionError(
                    f"lane {lane} lists {node!r}, which is not a task of the graph",
                    field="lanes",
                )
            if i in lane_of:
                raise DefinitionError(
                    f"task {node!r} is listed twice (lanes {lane_of[i]} and {lane}); "
                    "list each task once",
                    field="lanes",
                )
            lane_of[i] = lane
            members[lane].append(i)
    if len(lane_of) < len(problem.nodes):
        missing = [node for i, node in enumerate(problem.nodes) if i not in lane_of]
        shown = ", ".join(map(repr, missing[:5]))
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DefinitionError(
            f"tasks missing from the lanes: {shown}{more}; every task that is "
            "not done must be in one lane",
            field="lanes",
        )
    return members


def _simulate(
    problem: _Indexed, members: list[list[int]]
) -> tuple[list[float], list[float]]:
    """Start and finish times of each task, in dependency order; raises
    DefinitionError if some tasks can never start."""
    n = len(problem.nodes)
    lane_of = [0] * n
    after = [-1] * n  # the next task in the same lane
    waiting = [len(dependencies) for dependencies in problem.dependencies]
    for lane, indices in enumerate(members):
        for i in indices:
            lane_of[i] = lane
        for i, j in pairwise(indices):
            after[i] = j
            waiting[j] += 1
    start, finish = [0.0] * n, [0.0] * n
    lane_end = [0.0] * len(members)
    ready = [i for i in range(n) if waiting[i] == 0]
    timed = 0
    while ready:
        i = ready.pop()
        lane = lane_of[i]
        start[i] = max(
            [lane_end[lane]]
            + [
                finish[j] + (comm if lane_of[j] != lane else 0.0)
                for j, comm in problem.dependencies[i]
            ]
        )
        finish[i] = lane_end[lane] = start[i] + problem.cost[i]
        timed += 1
        for j in [after[i], *(j for j, _ in problem.dependents[i])]:
            if j >= 0:
                waiting[j] -= 1
                if waiting[j] == 0:
                    ready.append(j)
    if timed < n:
        _raise_deadlock(problem, members, waiting)
    return start, finish


def _raise_deadlock(
    problem: _Indexed, members: list[list[int]], waiting: list[int]
) -> None:
    nodes = problem.nodes
    where = {
        i: f"{nodes[i]!r} (lane {lane}, position {position})"
        for lane, indices in enumerate(members)
        for position, i in enumerate(indices)
    }
    stuck = nx.DiGraph()  # an edge u -> v: v waits for u
    for indices in members:
        stuck.add_edges_from(pairwise(indices))
    for i, dependencies in enumerate(problem.dependencies):
        stuck.add_edges_from((j, i) for j, _ in dependencies)
    stuck.remove_nodes_from([i for i in range(len(nodes)) if waiting[i] <= 0])
    cycle = [u for u, _ in nx.find_cycle(stuck)]
    chain = " waits for ".join(where[i] for i in [cycle[0], *reversed(cycle)])
    raise DefinitionError(
        f"the lanes deadlock: {chain}; list each task after its dependencies "
        "in its lane, and do not make lanes wait for each other in a circle",
        field="lanes",
    )
