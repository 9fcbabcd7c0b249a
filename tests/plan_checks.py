"""Shared helpers for planner tests: the plan invariant checker, a compact
way to build drawn graphs, and the relabellings every planner test runs
under."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping

from alma_dag.graph import Dependency, TaskGraph
from alma_dag.plan import Plan

__all__ = [
    "RELABELLINGS",
    "assert_valid_plan",
    "make_graph",
    "relabel_plan",
]

#: A graph spec: ``{letter: (cost, {dependency letter: communication cost})}``,
#: tasks added in the spec's order.
GraphSpec = Mapping[str, tuple[float, Mapping[str, float]]]


def _mirror(name: str) -> str:
    """'a' <-> 'z', '0' <-> '9': sorting by name is reversed."""
    return "".join(
        chr(219 - ord(ch))
        if "a" <= ch <= "z"
        else chr(105 - ord(ch))
        if "0" <= ch <= "9"
        else ch
        for ch in name
    )


def _number(name: str) -> int:
    return int.from_bytes(name.encode(), "big")


#: Ways to turn the letters of a drawn graph into node ids. Each gives a
#: different order of ids (same, reversed, mixed types), so a test passing
#: under all of them does not depend on tie-breaking by name.
RELABELLINGS: dict[str, Callable[[str], Hashable]] = {
    "str": lambda name: name,
    "mirrored-str": _mirror,
    "int": _number,
    "negative-int": lambda name: -_number(name),
    "tuple": lambda name: ("task", _mirror(name), len(name)),
}


def _nothing(*args: object) -> None:
    return None


def make_graph(
    spec: GraphSpec, name: Callable[[str], Hashable] = lambda x: x
) -> TaskGraph:
    """A ``TaskGraph`` for ``spec``, node ids ``name(letter)``."""
    graph = TaskGraph()
    for letter, (cost, dependencies) in spec.items():
        args = tuple(
            Dependency(name(dep), cost=comm) for dep, comm in dependencies.items()
        )
        graph.add(name(letter), _nothing, args, cost=cost)
    return graph


def relabel_plan(plan: Plan, name: Callable[[Hashable], Hashable]) -> tuple:
    """The plan's lanes and times with node ids mapped by ``name``, for
    comparing plans of relabelled graphs."""
    return (
        tuple(tuple(name(node) for node in lane) for lane in plan.lanes),
        {
            name(node): (e.lane, e.position, e.start, e.finish)
            for node, e in plan.entries.items()
        },
        plan.makespan,
        plan.critical_path,
        plan.total_cost,
    )


def _costs_of(
    graph: TaskGraph, nodes: Iterable[Hashable], costs: Mapping | None
) -> dict:
    costs = costs or {}
    return {v: float(costs[v]) if v in costs else graph.task(v).cost for v in nodes}


def _longest_chain(graph: TaskGraph, cost: Mapping[Hashable, float]) -> float:
    longest: dict[Hashable, float] = {}
    for v in graph.topological_order():
        if v in cost:
            before = [longest[u] for u in graph.dependencies(v) if u in longest]
            longest[v] = max(before, default=0.0) + cost[v]
    return max(longest.values(), default=0.0)


def assert_valid_plan(
    graph: TaskGraph,
    plan: Plan,
    n_processes: int,
    costs: Mapping[Hashable, float] | None = None,
    done: Iterable[Hashable] = (),
) -> None:
    """Assert every invariant a plan of ``graph`` must keep.

    Every task not in ``done`` is planned exactly once, with an entry that
    matches its lane and position; each runs for its cost (measured if in
    ``costs``); each starts after its dependencies finish, plus the
    communication cost across lanes; a lane's tasks are sorted by start and
    never overlap; the makespan is the last finish and is not below the
    lower bound, whose parts are recomputed here independently.
    """
    done = set(done)
    expected = {v for v in graph if v not in done}
    cost = _costs_of(graph, expected, costs)
    tolerance = 1e-9 * max(1.0, plan.makespan)

    assert plan.n_processes == n_processes == len(plan.lanes)
    listed = [v for lane in plan.lanes for v in lane]
    assert len(listed) == len(set(listed)), f"a task is listed twice: {listed}"
    assert set(listed) == expected
    assert set(plan.entries) == expected
    assert len(plan) == len(expected)

    for index, lane in enumerate(plan.lanes):
        previous = None
        for position, v in enumerate(lane):
            entry = plan.entries[v]
            assert (entry.node, entry.lane, entry.position) == (v, index, position)
            assert plan.lane_of(v) == index
            assert entry.start >= 0
            assert math.isclose(entry.finish - entry.start, cost[v], abs_tol=1e-9)
            if previous is not None:
                assert entry.start >= previous.start
                assert entry.start >= previous.finish - tolerance, (
                    f"{previous.node!r} and {v!r} overlap on lane {index}"
                )
            previous = entry

    for u, v, comm in graph.nx.edges.data("cost"):
        if u in done or v in done:
            continue
        before, after = plan.entries[u], plan.entries[v]
        delay = comm if before.lane != after.lane else 0.0
        assert after.start >= before.finish + delay - tolerance, (
            f"{v!r} starts at {after.start} before {u!r}'s result arrives "
            f"at {before.finish + delay}"
        )

    finishes = [e.finish for e in plan.entries.values()]
    assert plan.makespan == max(finishes, default=0.0)
    assert math.isclose(plan.total_cost, math.fsum(cost.values()), abs_tol=1e-9)
    assert math.isclose(
        plan.critical_path, _longest_chain(graph, cost), abs_tol=tolerance
    )
    assert plan.makespan >= plan.lower_bound - tolerance
