"""Task graphs: what runs, and what each task needs from the others.

In: tasks, each a function with its arguments, an estimated cost and
resource hints, added one by one (``TaskGraph.add``) or read from the dict
format ``{node_id: (function, args, cost)}`` (``TaskGraph.from_dict``).
``Dependency(task, key, cost)`` objects anywhere inside the arguments --
nested in lists, tuples and dicts -- name the tasks whose results are
needed; each becomes an edge ``task -> dependent`` of a
``networkx.DiGraph`` carrying the communication cost (the largest of the
dependency costs between the two tasks).

Out: a validated ``TaskGraph``: every dependency names a task of the graph,
every function is callable, every cost and hint is a non-negative number,
and there is no cycle. Validation happens once, before anything runs;
errors are ``DefinitionError`` naming the task, and ``CycleError`` naming
the cycle's nodes in order.

At run time ``resolve`` puts the results of dependencies in place of the
``Dependency`` objects, extracting the dependency's key from the result: a
single key, index or slice, or a sequence of them applied in turn. A string
key that is not a key of the value falls back to the attribute of that name.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import CycleError, DefinitionError

__all__ = [
    "Dependency",
    "Task",
    "TaskGraph",
    "extract",
    "prefix",
    "remove_duplicates",
    "resolve",
    "to_dot",
]


@dataclass(frozen=True, slots=True)
class Dependency:
    """A placeholder, inside a task's arguments, for another task's result.

    Parameters
    ----------
    task : hashable
        Node id of the task whose result is needed.
    key : optional
        What to take from that result: ``None`` for all of it, a single key,
        index or slice, or a tuple or list of them applied in turn.
    cost : float, optional
        Communication cost of moving the result to another process, in the
        same units as task costs. Defaults to 0.

    Examples
    --------
    >>> extract({"values": [1, 3, 5]}, Dependency("t", ("values", 2)).key)
    5
    >>> Dependency("t")["values"][2]
    Dependency(task='t', key=('values', 2), cost=0.0)
    """

    #: Node id of the task whose result is needed.
    task: Hashable
    #: What to take from the result (None: the whole result).
    key: Any = None
    #: Communication cost of moving the result between processes.
    cost: float = 0.0

    def __post_init__(self) -> None:
        try:
            hash(self.task)
        except TypeError:
            raise DefinitionError(
                f"dependency on {self.task!r}: a node id must be hashable",
                field="task",
            ) from None
        if self.task is None:
            raise DefinitionError(
                "dependency on None: None cannot be a node id", field="task"
            )

    def __getitem__(self, key: Any) -> Dependency:
        """A dependency on part of this one: ``dep["a"][0]``."""
        path = () if self.key is None else _key_path(self.key)
        return Dependency(self.task, (*path, key), self.cost)

    # ampeg's names for the fields.
    @property
    def task_id(self) -> Hashable:
        """Alias of ``task``."""
        return self.task

    @property
    def communication_cost(self) -> float:
        """Alias of ``cost``."""
        return self.cost


def _key_path(key: Any) -> tuple:
    return tuple(key) if isinstance(key, (tuple, list)) else (key,)


@dataclass(frozen=True, slots=True)
class Task:
    """What runs for one node: ``function(*args, **kwargs)``.

    Dependencies inside ``args`` and ``kwargs`` are replaced by results
    before the call. Construct tasks through ``TaskGraph.add``, which
    validates them.
    """

    #: The callable to run; it travels to workers with cloudpickle.
    function: Callable
    #: Positional arguments, possibly holding ``Dependency`` objects.
    args: tuple = ()
    #: Keyword arguments, possibly holding ``Dependency`` objects.
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: Estimated cost (any unit, the same for all tasks of a graph).
    cost: float = 1.0
    #: Memory hint in MiB, used by admission schedulers.
    memory: float = 0.0
    #: How many times a failed attempt is retried.
    retries: int = 0
    #: Seconds the task may run before it is stopped; None: no limit.
    timeout: float | None = None
    #: Node ids of tasks that must succeed first, their results not passed.
    after: tuple = ()
    #: Node ids of the tasks whose results this one needs (derived).
    inputs: tuple = field(init=False, default=())
    #: Node ids of every task this one waits for: inputs, then after (derived).
    dependencies: tuple = field(init=False, default=())

    def __post_init__(self) -> None:
        found = find_dependencies((self.args, self.kwargs))
        inputs = dict.fromkeys(dep.task for dep in found)
        object.__setattr__(self, "inputs", tuple(inputs))
        waits = {**inputs, **dict.fromkeys(self.after)}
        object.__setattr__(self, "dependencies", tuple(waits))


def find_dependencies(obj: Any) -> Iterator[Dependency]:
    """Yield every ``Dependency`` inside nested lists, tuples and dicts."""
    if isinstance(obj, Dependency):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from find_dependencies(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from find_dependencies(item)


def _rebuild_like(obj: Any, items: Iterable) -> Any:
    if type(obj) is list:
        return list(items)
    if isinstance(obj, list):  # a subclass: keep its type and attributes
        new = copy.copy(obj)
        new[:] = items
        return new
    if hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*items)
    return type(obj)(items)


def map_dependencies(obj: Any, function: Callable[[Dependency], Any]) -> Any:
    """Copy ``obj``, replacing every ``Dependency`` ``d`` inside it by
    ``function(d)``; containers without dependencies are shared, not copied."""
    if isinstance(obj, Dependency):
        return function(obj)
    if isinstance(obj, (list, tuple)):
        items = [map_dependencies(item, function) for item in obj]
        if all(new is old for new, old in zip(items, obj, strict=True)):
            return obj
        return _rebuild_like(obj, items)
    if isinstance(obj, dict):
        items = {k: map_dependencies(v, function) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        if type(obj) is dict:
            return items
        new = copy.copy(obj)  # keeps a subclass's state: defaultdict's factory
        new.update(items)
        return new
    return obj


def extract(value: Any, key: Any) -> Any:
    """Take ``key`` out of ``value`` as a ``Dependency`` does.

    ``None`` gives ``value``; a tuple or list is a path applied in turn; a
    string that is not a key of the value falls back to the attribute of
    that name.

    Examples
    --------
    >>> extract({"values": [1, 3, 5]}, ("values", 2))
    5
    >>> extract([0, 1, 2, 3], slice(1, 3))
    [1, 2]
    """
    if key is None:
        return value
    for step in _key_path(key):
        try:
            value = value[step]
        except (TypeError, IndexError, KeyError):
            if not isinstance(step, str) or not hasattr(value, step):
                raise
            value = getattr(value, step)
    return value


def resolve(obj: Any, results: Mapping[Hashable, Any]) -> Any:
    """Replace each ``Dependency`` inside ``obj`` by its extracted result.

    ``results`` maps node ids to results; a missing node id raises KeyError.
    """
    return map_dependencies(obj, lambda dep: extract(results[dep.task], dep.key))


def _check_number(value: Any, what: str, node: Hashable, *, positive: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        ok = ok and math.isfinite(value) and (value > 0 if positive else value >= 0)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        kind = "a positive" if positive else "a non-negative"
        raise DefinitionError(
            f"task {node!r}: {what} must be {kind} number, got {value!r}", field=what
        )


def _check_task(node: Hashable, task: Task) -> None:
    if not callable(task.function):
        raise DefinitionError(
            f"task {node!r}: function must be callable, got "
            f"{type(task.function).__name__} {task.function!r}",
            field="function",
        )
    if not isinstance(task.args, tuple):
        raise DefinitionError(f"task {node!r}: args must be a tuple", field="args")
    if not isinstance(task.kwargs, Mapping) or not all(
        isinstance(k, str) for k in task.kwargs
    ):
        raise DefinitionError(
            f"task {node!r}: kwargs must be a dict with string keys", field="kwargs"
        )
    _check_number(task.cost, "cost", node)
    _check_number(task.memory, "memory", node)
    if (
        not isinstance(task.retries, int)
        or isinstance(task.retries, bool)
        or (task.retries < 0)
    ):
        raise DefinitionError(
            f"task {node!r}: retries must be a non-negative integer, "
            f"got {task.retries!r}",
            field="retries",
        )
    if task.timeout is not None:
        _check_number(task.timeout, "timeout", node, positive=True)
    for dep in find_dependencies((task.args, task.kwargs)):
        _check_number(dep.cost, "dependency cost", node)


def split_arguments(args: Any) -> tuple[tuple, dict]:
    """ampeg's argument forms: a dict is keyword arguments, a tuple or list
    is positional arguments, anything else is the single argument."""
    if isinstance(args, dict):
        return (), args
    if isinstance(args, (tuple, list)) and not hasattr(args, "_fields"):
        return tuple(args), {}
    return (args,), {}


class TaskGraph:
    """A DAG of tasks on a ``networkx.DiGraph``.

    Node ids are any hashable values; ``task(node)`` gives a node's ``Task``.
    In ``nx``, an edge ``u -> v`` means v needs u's result, and holds the
    communication cost under ``"cost"``.

    Examples
    --------
    >>> g = TaskGraph()
    >>> a = g.add("a", pow, (3, 2), cost=2)
    >>> b = g.add("b", lambda x, y: x + y, (a, 1))
    >>> g.validate()
    >>> list(g.dependencies("b"))
    ['a']
    """

    def __init__(self) -> None:
        #: The structure: one node per task id, an edge u -> v (with the
        #: communication cost under "cost") when v needs u's result.
        self.nx = nx.DiGraph()
        # node id -> Task, in the order tasks were defined. A dependency on
        # a task not (yet) defined is a node of self.nx missing from here.
        self._tasks: dict[Hashable, Task] = {}
        # Set by validate(), reset by any change.
        self._validated = False
        self._order: list[Hashable] = []

    # -- building -----------------------------------------------------------

    def add(
        self,
        node: Hashable,
        function: Callable,
        args: tuple | list = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        cost: float = 1.0,
        memory: float = 0.0,
        retries: int = 0,
        timeout: float | None = None,
        after: Iterable[Hashable] = (),
    ) -> Dependency:
        """Add a task and return a ``Dependency`` on its result.

        Parameters
        ----------
        node : hashable
            The task's node id, unique in the graph.
        function : callable
            What to run.
        args, kwargs : optional
            Arguments; ``Dependency`` objects anywhere inside them are
            replaced by results of other tasks.
        cost : float
            Estimated cost, used by the planner until durations are measured.
        memory : float
            Memory hint in MiB for admission schedulers.
        retries : int
            Times a failing attempt is retried.
        timeout : float, optional
            Seconds an attempt may run; past it the task gives
            ``Err(TaskTimeoutError)``.
        after : iterable of node ids, optional
            Tasks that must succeed before this one, without passing their
            results (an ordering, not a data dependency).

        Raises
        ------
        DefinitionError
            The node id is already used, or a field is invalid.
        """
        if isinstance(args, list):
            args = tuple(args)
        task = Task(
            function,
            args,
            dict(kwargs or {}),
            cost,
            memory,
            retries,
            timeout,
            tuple(after),
        )
        self.add_task(node, task)
        return Dependency(node)

    def add_task(self, node: Hashable, task: Task) -> None:
        """Add an already built ``Task`` under ``node``.

        Raises
        ------
        DefinitionError
            The node id is already used or unhashable, or a field is invalid.
        """
        try:
            known = node in self._tasks
        except TypeError:
            raise DefinitionError(
                f"node id {node!r} is not hashable", field="node"
            ) from None
        if known:
            raise DefinitionError(f"task {node!r} is defined twice", field=str(node))
        if node is None or None in task.after:
            raise DefinitionError(
                f"task {node!r}: None cannot be a node id (networkx refuses it)",
                field="node",
            )
        _check_task(node, task)
        self._tasks[node] = task
        self.nx.add_node(node)
        if task.inputs:
            for dep in find_dependencies((task.args, task.kwargs)):
                data = self.nx.get_edge_data(dep.task, node)
                if data is None:
                    self.nx.add_edge(dep.task, node, cost=dep.cost)
                else:
                    data["cost"] = max(data["cost"], dep.cost)
        for before in task.after:
            if not self.nx.has_edge(before, node):
                self.nx.add_edge(before, node, cost=0.0)
        self._validated = False

    @classmethod
    def from_dict(cls, graph: Mapping[Hashable, Any]) -> TaskGraph:
        """Build a graph from ``{node_id: (function, args, cost)}``.

        ``args`` is a single argument, a tuple or list of positional
        arguments, or a dict of keyword arguments (so a lone tuple argument
        must be wrapped: ``(sum, ([1, 2],), 1)``). The cost may be left out.

        Raises
        ------
        DefinitionError
            An entry is not such a tuple, or a field is invalid.
        """
        if isinstance(graph, TaskGraph):
            return graph
        if not isinstance(graph, Mapping):
            raise DefinitionError(
                f"a task graph must be a dict of node id -> (function, args, cost), "
                f"got {type(graph).__name__}"
            )
        self = cls()
        for node, entry in graph.items():
            if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
                raise DefinitionError(
                    f"task {node!r}: expected (function, args, cost), got {entry!r}",
                    field=str(node),
                )
            function, args, *rest = entry
            positional, keywords = split_arguments(args)
            cost = rest[0] if rest else 1.0
            self.add(node, function, positional, keywords, cost=cost)
        return self

    # -- reading ------------------------------------------------------------

    def validate(self) -> None:
        """Check that every dependency is known and there is no cycle.

        Raises
        ------
        DefinitionError
            A task depends on an unknown task (both are named).
        CycleError
            The graph has a cycle (its nodes are named in order).
        """
        if self._validated:
            return
        for node in self.nx:
            if node not in self._tasks:
                dependent = next(iter(self.nx.successors(node)))
                raise DefinitionError(
                    f"task {dependent!r} depends on unknown task {node!r}",
                    field=str(dependent),
                )
        # find_cycle takes quadratic time on a large DAG; the linear
        # topological sort runs first (and is kept), find_cycle only to
        # name a cycle.
        try:
            self._order = list(nx.topological_sort(self.nx))
        except nx.NetworkXUnfeasible:
            pass
        else:
            self._validated = True
            return
        cycle = nx.find_cycle(self.nx)
        raise CycleError([u for u, _ in cycle] + [cycle[0][0]])

    def task(self, node: Hashable) -> Task:
        """The ``Task`` of ``node``."""
        return self._tasks[node]

    def dependencies(self, node: Hashable) -> Iterator[Hashable]:
        """Node ids of the tasks ``node`` needs."""
        return self.nx.predecessors(node)

    def dependents(self, node: Hashable) -> Iterable[Hashable]:
        """Node ids of the tasks that need ``node`` (a read-only view)."""
        # networkx's own adjacency dict: the dispatcher calls this once per
        # finished task, and successors() builds an iterator object each time.
        return self.nx._succ[node]

    def topological_order(self) -> list[Hashable]:
        """Node ids, each after all its dependencies (validates first)."""
        self.validate()
        return list(self._order)

    def items(self) -> Iterator[tuple[Hashable, Task]]:
        """``(node id, Task)`` pairs in insertion order."""
        return iter(self._tasks.items())

    def to_dict(self) -> dict[Hashable, tuple[Callable, Any, float]]:
        """The dict format, ``{node_id: (function, args, cost)}``."""
        out = {}
        for node, task in self.items():
            if task.kwargs and task.args:
                raise DefinitionError(
                    f"task {node!r} has both positional and keyword arguments, "
                    "which the dict format cannot hold",
                    field=str(node),
                )
            args = task.kwargs if task.kwargs else task.args
            out[node] = (task.function, args, task.cost)
        return out

    def draw(self, **kwargs: Any) -> Any:
        """Draw the graph layered by topological generation; returns a
        matplotlib ``Figure``. Keywords go to ``alma_dag.viz.draw_graph``."""
        from .viz import draw_graph

        return draw_graph(self, **kwargs)

    def __contains__(self, node: object) -> bool:
        try:
            return node in self._tasks
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._tasks)

    def __repr__(self) -> str:
        return (
            f"<TaskGraph: {len(self)} tasks, {self.nx.number_of_edges()} dependencies>"
        )


# -- transformations (ampeg's helpers) ---------------------------------------


def _as_graph(graph: TaskGraph | Mapping) -> TaskGraph:
    return graph if isinstance(graph, TaskGraph) else TaskGraph.from_dict(graph)


def _same_form(original: TaskGraph | Mapping, result: TaskGraph) -> Any:
    return result if isinstance(original, TaskGraph) else result.to_dict()


def _relabelled(task: Task, labels: Mapping[Hashable, Hashable]) -> Task:
    def relabel(dep: Dependency) -> Dependency:
        new = labels.get(dep.task, dep.task)
        return dep if new == dep.task else Dependency(new, dep.key, dep.cost)

    args = map_dependencies(task.args, relabel)
    kwargs = map_dependencies(task.kwargs, relabel)
    after = tuple(labels.get(node, node) for node in task.after)
    if args is task.args and kwargs is task.kwargs and after == task.after:
        return task
    return dataclasses.replace(task, args=args, kwargs=kwargs, after=after)


def _signature(obj: Any) -> Hashable:
    """A hashable value equal for equal arguments of equal types (1, True
    and 1.0 differ); raises TypeError for values that cannot be compared."""
    if isinstance(obj, Dependency):
        key = obj.key
        if isinstance(key, slice):
            key = (slice, key.start, key.stop, key.step)
        return (Dependency, obj.task, _signature(key))
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(_signature(item) for item in obj))
    if isinstance(obj, dict):
        pairs = frozenset((_signature(k), _signature(v)) for k, v in obj.items())
        return (type(obj), pairs)
    if isinstance(obj, slice):
        return (slice, obj.start, obj.stop, obj.step)
    hash(obj)
    return (type(obj), obj)


def _merged_tasks(
    graph: TaskGraph,
) -> tuple[dict[Hashable, Task], dict[Hashable, list[Hashable]]]:
    kept: dict[Hashable, Task] = {}
    seen: dict[Hashable, Hashable] = {}
    labels: dict[Hashable, Hashable] = {}
    for node in graph.topological_order():
        task = _relabelled(graph.task(node), labels)
        try:
            key = (
                id(task.function),
                _signature((task.args, task.kwargs)),
                frozenset(task.after),
            )
        except TypeError:
            key = None
        if key is None or key not in seen:
            if key is not None:
                seen[key] = node
            kept[node] = task
            continue
        original = seen[key]
        labels[node] = original
        if task.cost > kept[original].cost:
            kept[original] = dataclasses.replace(kept[original], cost=task.cost)
    multiplexing: dict[Hashable, list[Hashable]] = {}
    for duplicate, original in labels.items():
        multiplexing.setdefault(original, []).append(duplicate)
    return kept, multiplexing


def remove_duplicates(
    graph: TaskGraph | Mapping,
) -> tuple[TaskGraph | dict, dict[Hashable, list[Hashable]]]:
    """Merge tasks that would compute the same thing.

    Two tasks are duplicates when they call the same function object with
    equal arguments of equal types (``1``, ``True`` and ``1.0`` differ)
    after their own dependencies have been merged. The merged task keeps the
    first node id (in topological order) and the largest cost.

    Parameters
    ----------
    graph : TaskGraph or dict
        A ``TaskGraph`` or the dict format.

    Returns
    -------
    reduced : TaskGraph or dict
        The graph without duplicates, in the form it was given.
    multiplexing_keys : dict
        ``{kept node id: [merged node ids]}``.

    Raises
    ------
    DefinitionError, CycleError
        The graph is invalid.

    Examples
    --------
    >>> g = {"a": (abs, -1, 1), "b": (abs, -1, 1), "c": (abs, -1.0, 1)}
    >>> reduced, keys = remove_duplicates(g)
    >>> sorted(reduced), keys
    (['a', 'c'], {'a': ['b']})
    """
    source = _as_graph(graph)
    kept, multiplexing = _merged_tasks(source)
    reduced = TaskGraph()
    for node in source:
        if node in kept:
            reduced.add_task(node, kept[node])
    return _same_form(graph, reduced), multiplexing


def _prefixed(node: Hashable, key: Hashable) -> tuple:
    return (key, *node) if isinstance(node, tuple) else (key, node)


def prefix(graph: TaskGraph | Mapping, prefix_key: Hashable) -> TaskGraph | dict:
    """Prefix every node id (and every dependency) with ``prefix_key``.

    ``"a"`` becomes ``(prefix_key, "a")`` and ``("a", 1)`` becomes
    ``(prefix_key, "a", 1)``, so graphs can be combined without clashes.

    Examples
    --------
    >>> g = prefix({"a": (abs, -1, 1)}, "run1")
    >>> list(g)
    [('run1', 'a')]
    """
    source = _as_graph(graph)
    # Over source.nx, not source: unknown dependencies are prefixed too.
    labels = {node: _prefixed(node, prefix_key) for node in source.nx}
    result = TaskGraph()
    for node, task in source.items():
        result.add_task(labels[node], _relabelled(task, labels))
    return _same_form(graph, result)


def _dot_id(node: Hashable) -> str:
    text = ", ".join(map(str, node)) if isinstance(node, tuple) else str(node)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: TaskGraph | Mapping, fill_color: str = "lightblue") -> str:
    """Describe the graph in Graphviz's DOT language.

    Examples
    --------
    >>> print(to_dot({"a": (abs, -1, 1), "b": (abs, Dependency("a"), 1)}))
    digraph G {
        node [style=filled, fillcolor=lightblue]
        "a"
        "b"
        "a" -> "b"
    }
    """
    source = _as_graph(graph)
    source.validate()
    lines = ["digraph G {", f"    node [style=filled, fillcolor={fill_color}]"]
    lines += [f"    {_dot_id(node)}" for node in source]
    lines += [f"    {_dot_id(u)} -> {_dot_id(v)}" for u, v in source.nx.edges]
    lines.append("}")
    return "\n".join(lines)
