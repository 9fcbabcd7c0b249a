"""The task-list front end: ampeg's functions on alma_dag's engine.

``earliest_finish_time`` turns a task graph (ampeg's dict or a
``TaskGraph``) into one task list per process -- ``(function, args)`` pairs
in the order the process runs them -- and the task ids of the entries;
``execute_task_lists`` runs such lists and returns ``{task_id: result}``;
``run`` does both.

Inside a task list, a ``Dependency`` refers to a position instead of a task
id: an ``int`` is the index of an earlier task of the same list (ampeg's
form, for hand-written lists) and a ``Position(list, index)`` is a task of
any list. Lists are run by the dispatcher as a plan with fixed lanes, so a
list's tasks run in order on one lane, each as soon as what it needs is
done, and failures follow the engine's rules: an ``Err`` for a task that
raised, ``Err(DependencyError)`` for its dependents, ``Err(WorkerDied)``
for a task whose worker process died, ``Err(TaskTimeoutError)`` for one
past ``timeout``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

from .backends import Backend
from .dispatch import Dispatcher
from .errors import DefinitionError
from .graph import (
    Dependency,
    Task,
    TaskGraph,
    map_dependencies,
    remove_duplicates,
    split_arguments,
)
from .plan import Plan, heft, plan_from_lanes

__all__ = [
    "Position",
    "TaskLists",
    "earliest_finish_time",
    "execute_task_lists",
    "run",
]


class Position(NamedTuple):
    """A task in a set of task lists: the ``index``-th task of list ``list``."""

    #: Index of the task list (the process).
    list: int
    #: Index of the task in that list.
    index: int


class TaskLists(list):
    """The task lists made by ``earliest_finish_time``: a list of lists of
    ``(function, args)`` pairs that also remembers the ``timeout`` asked for
    when it was made."""

    def __init__(self, lists: Sequence[list] = (), timeout: float | None = None):
        super().__init__(lists)
        self.timeout = timeout


def _check_processes(n_processes: Any) -> None:
    if (
        not isinstance(n_processes, int)
        or isinstance(n_processes, bool)
        or (n_processes < 1)
    ):
        raise DefinitionError(
            f"n_processes must be a positive integer, got {n_processes!r}",
            field="n_processes",
        )


def _check_timeout(timeout: Any) -> None:
    ok = timeout is None or (
        isinstance(timeout, (int, float))
        and not isinstance(timeout, bool)
        and timeout > 0
    )
    if not ok:
        raise DefinitionError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}",
            field="timeout",
        )


def _output_ids(
    graph: TaskGraph,
    multiplexing: Mapping[Hashable, list[Hashable]],
    output_tasks: Sequence[Hashable] | None,
) -> dict[Hashable, list[Hashable]]:
    """Kept node id -> the task ids its result is reported under."""
    ids = {node: [node, *multiplexing.get(node, ())] for node in graph}
    if output_tasks is None:
        return ids
    wanted = set(output_tasks)
    known = set().union(*ids.values()) if ids else set()
    unknown = [t for t in output_tasks if t not in known]
    if unknown:
        raise DefinitionError(
            f"output_tasks names unknown task {unknown[0]!r}", field="output_tasks"
        )
    return {node: [t for t in names if t in wanted] for node, names in ids.items()}


def _reduced(
    graph: TaskGraph | Mapping, output_tasks: Sequence[Hashable] | None
) -> tuple[TaskGraph, dict[Hashable, list[Hashable]]]:
    source = TaskGraph.from_dict(graph)
    reduced, multiplexing = remove_duplicates(source)
    return reduced, _output_ids(reduced, multiplexing, output_tasks)


def earliest_finish_time(
    graph: TaskGraph | Mapping,
    n_processes: int,
    output_tasks: Sequence[Hashable] | None = None,
    timeout: float | None = None,
) -> tuple[TaskLists, list[list[Any]]]:
    """Plan ``graph`` on ``n_processes`` processes as task lists.

    Duplicate tasks are merged first (``remove_duplicates``), then the
    graph is planned by HEFT (see ``alma_dag.plan``).

    Parameters
    ----------
    graph : dict or TaskGraph
        ``{task_id: (function, args, cost)}`` with ``Dependency`` objects in
        the arguments, or a ``TaskGraph``.
    n_processes : int
        Number of processes.
    output_tasks : list, optional
        Task ids whose results are wanted; None (default) wants all.
    timeout : float, optional
        Seconds each task may run; kept with the lists for
        ``execute_task_lists``.

    Returns
    -------
    task_lists : TaskLists
        One list of ``(function, args)`` pairs per process.
    task_ids : list of lists
        For each entry, its task id, a list of ids when duplicates were
        merged into it, or None when its result is not wanted.

    Raises
    ------
    DefinitionError
        The graph or an argument is invalid.
    CycleError
        The graph has a cycle.
    """
    _check_processes(n_processes)
    _check_timeout(timeout)
    reduced, ids = _reduced(graph, output_tasks)
    plan = heft(reduced, n_processes)
    where = {
        node: Position(lane, index)
        for lane, nodes in enumerate(plan.lanes)
        for index, node in enumerate(nodes)
    }
    task_lists = TaskLists([], timeout=timeout)
    task_ids: list[list[Any]] = []
    for lane, nodes in enumerate(plan.lanes):
        task_lists.append([_list_entry(reduced, node, where, lane) for node in nodes])
        task_ids.append([_id_entry(ids[node]) for node in nodes])
    return task_lists, task_ids


def _id_entry(names: list[Hashable]) -> Any:
    if not names:
        return None
    return names[0] if len(names) == 1 else list(names)


def _list_entry(
    graph: TaskGraph, node: Hashable, where: Mapping[Hashable, Position], lane: int
) -> tuple[Callable, Any]:
    task = graph.task(node)
    if task.args and task.kwargs:
        raise DefinitionError(
            f"task {node!r} has both positional and keyword arguments, which a "
            "task list cannot hold; run the graph with run() or a Dispatcher",
            field=str(node),
        )

    def relabel(dep: Dependency) -> Dependency:
        pos = where[dep.task]
        return Dependency(pos.index if pos.list == lane else pos, dep.key, dep.cost)

    args = map_dependencies(task.kwargs or task.args, relabel)
    return task.function, args


def _graph_from_lists(
    task_lists: Sequence[Sequence[Any]], timeout: float | None
) -> TaskGraph:
    graph = TaskGraph()
    if not isinstance(task_lists, (list, tuple)):
        raise DefinitionError(
            f"task_lists must be a list of lists, got {type(task_lists).__name__}",
            field="task_lists",
        )
    for lane, entries in enumerate(task_lists):
        if not isinstance(entries, (list, tuple)):
            raise DefinitionError(
                f"task list {lane} must be a list of (function, args) pairs, "
                f"got {type(entries).__name__}",
                field="task_lists",
            )
    shape = [len(entries) for entries in task_lists]
    for lane, entries in enumerate(task_lists):
        for index, entry in enumerate(entries):
            _add_list_entry(graph, lane, index, entry, timeout, shape)
    return graph


def _add_list_entry(graph, lane, index, entry, timeout, shape) -> None:
    where = f"task list {lane}, entry {index}"
    if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise DefinitionError(
            f"{where}: expected a (function, args) pair, got {entry!r}",
            field="task_lists",
        )

    def relabel(dep: Dependency) -> Dependency:
        ref = dep.task
        if isinstance(ref, Position):
            exists = 0 <= ref.list < len(shape) and 0 <= ref.index < shape[ref.list]
            if exists and ref != (lane, index):
                return Dependency(tuple(ref), dep.key, dep.cost)
            what = "itself" if exists else "no entry"
            raise DefinitionError(
                f"{where}: Dependency({ref!r}) refers to {what}; task lists "
                f"have lengths {shape}",
                field="task_lists",
            )
        if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref < index:
            return Dependency((lane, ref), dep.key, dep.cost)
        raise DefinitionError(
            f"{where}: Dependency({ref!r}) must refer to an earlier entry of the "
            "same list by its int index, or to any entry by Position(list, index)",
            field="task_lists",
        )

    function, args = entry
    positional, keywords = split_arguments(map_dependencies(args, relabel))
    try:
        graph.add_task(
            (lane, index), Task(function, positional, keywords, timeout=timeout)
        )
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc.args[0]}", field="task_lists") from None


def _execute(
    graph: TaskGraph,
    plan: Plan,
    ids: Mapping[Hashable, list[Hashable]],
    inflate: bool,
    costs: bool,
    backend: str | Backend,
) -> dict[Hashable, Any]:
    dispatcher = Dispatcher(graph, plan.n_processes, backend, plan=plan)
    dispatcher.run()
    finished = dispatcher.results
    results = {name: finished[node] for node, names in ids.items() for name in names}
    if costs:
        key = _costs_key(results)
        table = _costs(graph, plan, dispatcher.timings, ids)
        results[key] = _inflated(table) if inflate else table
    return _inflated(results) if inflate else results


def _costs_key(results: Mapping[Hashable, Any]) -> str:
    if "costs" not in results:
        return "costs"
    k = 0
    while f"costs_{k}" in results:
        k += 1
    warnings.warn(
        f"'costs' is already a task id; the costs are under 'costs_{k}'",
        UserWarning,
        stacklevel=4,
    )
    return f"costs_{k}"


def _costs(
    graph: TaskGraph,
    plan: Plan,
    timings: Mapping[Hashable, tuple[float, float]],
    ids: Mapping[Hashable, list[Hashable]],
) -> dict[Hashable, tuple[float, dict[Hashable, float]]]:
    """Measured ``(computation seconds, {predecessor: communication seconds})``.

    The communication time from ``u`` to ``v`` is how long ``v`` waited for
    ``u``'s result beyond waiting for its own lane: ``start(v) - max(finish(u),
    finish of the task before v in its lane)``, at least 0.
    """
    lane_free: dict[Hashable, float] = {}
    for lane in plan.lanes:
        free = 0.0
        for node in lane:
            lane_free[node] = free
            if node in timings:
                free = timings[node][1]
    table = {}
    for node, names in ids.items():
        if node not in timings or not names:
            continue
        start, finish = timings[node]
        comm = {}
        for pred in graph.dependencies(node):
            if pred in timings and ids.get(pred):
                waited = start - max(timings[pred][1], lane_free[node])
                comm[ids[pred][0]] = max(0.0, waited)
        for name in names:
            table[name] = (finish - start, dict(comm))
    return table


def _inflated(results: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Nest tuple ids: ``{("sq", 0): 1}`` becomes ``{"sq": {0: 1}}``."""
    nested: dict[Hashable, Any] = {}
    for key, value in results.items():
        if not isinstance(key, tuple) or not key:
            nested[key] = value
            continue
        level = nested
        for part in key[:-1]:
            level = level.setdefault(part, {})
        level[key[-1]] = value
    return nested


def execute_task_lists(
    task_lists: Sequence[Sequence[tuple[Callable, Any]]],
    task_ids: Sequence[Sequence[Any]] | None = None,
    inflate: bool = False,
    costs: bool = False,
    timeout: float | None = None,
    *,
    backend: str | Backend = "loky",
) -> dict[Hashable, Any]:
    """Run task lists, one per process, and collect their results.

    Parameters
    ----------
    task_lists : list of lists of (function, args)
        From ``earliest_finish_time``, or written by hand: in each list a
        ``Dependency(i, key)`` refers to the ``i``-th task of that list, and
        ``Dependency(Position(list, index), key)`` to a task of any list.
    task_ids : list of lists, optional
        The id each entry's result is reported under: an id, a list of ids
        that all receive the result, or None to leave it out. Without it,
        results are keyed ``(list, position)``.
    inflate : bool
        Nest tuple ids into dicts: ``("sq", 0)`` becomes ``result["sq"][0]``.
    costs : bool
        Add a ``"costs"`` entry: ``{task_id: (computation seconds,
        {predecessor id: communication seconds})}``, measured.
    timeout : float, optional
        Seconds each task may run before it gives ``Err(TaskTimeoutError)``;
        defaults to the one given to ``earliest_finish_time``.
    backend : str or Backend
        Where tasks run: ``"loky"`` (processes, default) or ``"inline"``.

    Returns
    -------
    dict
        ``{task_id: result}``; a failed task's result is an ``Err``.

    Raises
    ------
    DefinitionError
        The lists, ids or an argument are malformed.

    Examples
    --------
    >>> lists = [[(abs, -2), (pow, (Dependency(0), 3))]]
    >>> execute_task_lists(lists, backend="inline")
    {(0, 0): 2, (0, 1): 8}
    """
    if timeout is None:
        timeout = getattr(task_lists, "timeout", None)
    _check_timeout(timeout)
    graph = _graph_from_lists(task_lists, timeout)
    lanes = [
        [(lane, i) for i in range(len(entries))]
        for lane, entries in enumerate(task_lists)
    ]
    if not lanes:
        return {}
    plan = plan_from_lanes(graph, lanes)
    ids = _ids_from_lists(task_lists, task_ids)
    return _execute(graph, plan, ids, inflate, costs, backend)


def _ids_from_lists(task_lists, task_ids) -> dict[Hashable, list[Hashable]]:
    if task_ids is None:
        return {
            (lane, i): [(lane, i)]
            for lane, entries in enumerate(task_lists)
            for i in range(len(entries))
        }
    shape = [len(entries) for entries in task_lists]
    if (
        not isinstance(task_ids, (list, tuple))
        or [
            len(names) if isinstance(names, (list, tuple)) else None
            for names in task_ids
        ]
        != shape
    ):
        raise DefinitionError(
            "task_ids must have one list per task list, each as long as its "
            f"task list (lengths {shape})",
            field="task_ids",
        )
    ids = {}
    for lane, names in enumerate(task_ids):
        for i, name in enumerate(names):
            if name is None:
                ids[(lane, i)] = []
            elif isinstance(name, list):
                ids[(lane, i)] = [n for n in name if n is not None]
            else:
                ids[(lane, i)] = [name]
    return ids


def run(
    graph: TaskGraph | Mapping,
    n_processes: int,
    output_tasks: Sequence[Hashable] | None = None,
    timeout: float | None = None,
    inflate: bool = False,
    costs: bool = False,
    *,
    backend: str | Backend = "loky",
) -> dict[Hashable, Any]:
    """Plan and run ``graph`` on ``n_processes`` processes; return results.

    The same as ``execute_task_lists(*earliest_finish_time(graph,
    n_processes, output_tasks, timeout), inflate, costs, timeout)``, without
    building the lists.

    Examples
    --------
    >>> g = {0: (lambda x: x ** 2, 3, 10.8),
    ...      1: (lambda x: x ** 2, 4, 10.8),
    ...      2: (lambda x: x / 2, 10, 11),
    ...      3: (lambda x, y: x + y, (Dependency(0, None, 1),
    ...                               Dependency(1, None, 1)), 10.7),
    ...      4: (lambda x, y: x * y, (Dependency(0, None, 1),
    ...                               Dependency(2, None, 1)), 10.8),
    ...      5: (lambda x, y: x - y, (Dependency(3, None, 1),
    ...                               Dependency(4, None, 1)), 10.9)}
    >>> run(g, 3, backend="inline")
    {0: 9, 1: 16, 2: 5.0, 3: 25, 4: 45.0, 5: -20.0}
    """
    _check_processes(n_processes)
    _check_timeout(timeout)
    reduced, ids = _reduced(graph, output_tasks)
    if timeout is not None:
        reduced = _with_timeout(reduced, timeout)
    plan = heft(reduced, n_processes)
    return _execute(reduced, plan, ids, inflate, costs, backend)


def _with_timeout(graph: TaskGraph, timeout: float) -> TaskGraph:
    timed = TaskGraph()
    for node, task in graph.items():
        if task.timeout is None:
            task = dataclasses.replace(task, timeout=timeout)
        timed.add_task(node, task)
    return timed
