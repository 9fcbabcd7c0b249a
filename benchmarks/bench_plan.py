"""Planner benchmark: alma_dag's HEFT against ampeg and a textbook HEFT.

Run by hand, not by CI::

    python benchmarks/bench_plan.py --sizes 50 200 1000 10000 --seed 0

Each size is a seeded random layered DAG (about sqrt(n) layers; the result
of each task is needed by 1 to 5 tasks of the next two layers, so the mean
out-degree is 3 except in the last layers; task costs uniform in [1, 100],
communication costs uniform in [0, 20]), planned on 4 and 16 processes by

- alma_dag: ``alma_dag.plan.heft`` (validation included);
- ampeg: the steps of ``ampeg.earliest_finish_time`` up to its schedule
  (``remove_duplicates``, ``costs``, ``predecessor_graph``, ``upward_rank``,
  ``add_task_eft``), leaving out only the making of task lists and queues;
  skipped where its measured growth predicts more than ``--ampeg-budget``
  seconds (and above 500 tasks when no smaller size was measured);
- textbook: a plain quadratic HEFT written below (upward ranks, insertion-
  based earliest finish time, the same tie-breaking as alma_dag), for
  sizes up to ``--textbook-max``.

Every task gets distinct arguments, so ampeg's duplicate removal merges
nothing and all three plan the same graph. The table gives planning times,
ampeg's time over alma_dag's, and each makespan over the lower bound
``max(critical path, total cost / P)``. alma_dag and the textbook should
agree exactly; ampeg ranks tasks differently (it sums the ranks of the
dependents and averages communication), so its makespans differ.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from alma_dag.graph import Dependency, TaskGraph
from alma_dag.plan import heft

__all__ = ["RandomDag", "main", "random_layered_dag", "textbook_heft"]


@dataclass(frozen=True, slots=True)
class RandomDag:
    """A DAG over tasks 0..n-1, in topological order."""

    #: Cost of each task.
    costs: tuple[float, ...]
    #: For each task, ``{dependency: communication cost}``.
    dependencies: tuple[dict[int, float], ...]

    @property
    def n_edges(self) -> int:
        return sum(map(len, self.dependencies))

    def tasks(self) -> Iterator[tuple[int, float, dict[int, float]]]:
        """``(task, cost, dependencies)`` for each task, in order."""
        for task, cost in enumerate(self.costs):
            yield task, cost, self.dependencies[task]


def random_layered_dag(n: int, seed: int) -> RandomDag:
    """A seeded random layered DAG of ``n`` tasks, mean out-degree about 3."""
    rng = random.Random(seed)
    n_layers = max(2, round(math.sqrt(n)))
    layer_of = sorted(rng.randrange(n_layers) for _ in range(n))
    members: dict[int, list[int]] = {}
    for task, layer in enumerate(layer_of):
        members.setdefault(layer, []).append(task)
    dependencies: list[dict[int, float]] = [{} for _ in range(n)]
    for task, layer in enumerate(layer_of):
        later = members.get(layer + 1, []) + members.get(layer + 2, [])
        for dependent in rng.sample(later, min(rng.randint(1, 5), len(later))):
            dependencies[dependent][task] = rng.uniform(0, 20)
    costs = tuple(rng.uniform(1, 100) for _ in range(n))
    return RandomDag(costs, tuple(dependencies))


def _work(*args: object) -> None:
    """Stands for a task's function; never called."""


def to_alma_dag(dag: RandomDag) -> TaskGraph:
    """The DAG as a ``TaskGraph``; task i's first argument is i."""
    graph = TaskGraph()
    for task, cost, dependencies in dag.tasks():
        args = (task, *(Dependency(j, cost=c) for j, c in dependencies.items()))
        graph.add(task, _work, args, cost=cost)
    return graph


def to_ampeg(dag: RandomDag) -> dict:
    """The DAG in ampeg's dict format; task i's first argument is i."""
    import ampeg

    return {
        task: (
            _work,
            [task, *(ampeg.Dependency(j, None, c) for j, c in dependencies.items())],
            cost,
        )
        for task, cost, dependencies in dag.tasks()
    }


def ampeg_makespan(graph: dict, n_processes: int) -> float:
    """Plan as ``ampeg.earliest_finish_time`` does; the schedule's makespan."""
    from ampeg import _scheduling as scheduling

    reduced, merged = scheduling.remove_duplicates(graph)
    assert not merged, "the benchmark graph must have no duplicate tasks"
    computation, communication = scheduling.costs(reduced)
    predecessors = scheduling.predecessor_graph(reduced)
    ranks = scheduling.upward_rank(reduced)
    tasks = list(reduced)
    # As ampeg does: a stable sort by increasing rank, popped from the end.
    priority = sorted(tasks, key=ranks.__getitem__)
    schedule: list[list] = [[] for _ in range(n_processes)]
    while priority:
        task = priority.pop()
        schedule = scheduling.add_task_eft(
            task, predecessors[task], computation, communication, schedule
        )
    return max((finish for lane in schedule for _, _, finish in lane), default=0.0)


def textbook_heft(dag: RandomDag, n_processes: int) -> float:
    """Makespan of a plain HEFT: quadratic, for checking only."""
    n = len(dag.costs)
    dependents: list[dict[int, float]] = [{} for _ in range(n)]
    for task, dependencies in enumerate(dag.dependencies):
        for j, comm in dependencies.items():
            dependents[j][task] = comm
    rank = [0.0] * n
    for task in reversed(range(n)):
        rank[task] = dag.costs[task] + max(
            (comm + rank[k] for k, comm in dependents[task].items()), default=0.0
        )
    order = sorted(range(n), key=lambda task: -rank[task])
    slots: list[list[tuple[float, float]]] = [[] for _ in range(n_processes)]
    process = [0] * n
    finish = [0.0] * n
    for task in order:
        cost = dag.costs[task]
        best = None
        for p in range(n_processes):
            ready = max(
                (
                    finish[j] + (comm if process[j] != p else 0.0)
                    for j, comm in dag.dependencies[task].items()
                ),
                default=0.0,
            )
            start = _earliest_gap(slots[p], ready, cost)
            if best is None or start + cost < best[0]:
                best = (start + cost, p, start)
        end, p, start = best
        bisect.insort(slots[p], (start, end))
        process[task], finish[task] = p, end
    return max(finish, default=0.0)


def _earliest_gap(slots: list[tuple[float, float]], ready: float, cost: float) -> float:
    previous_end = 0.0
    for start, end in slots:
        candidate = max(ready, previous_end)
        if candidate + cost <= start:
            return candidate
        previous_end = end
    return max(ready, previous_end)


def _timed(function, *args):
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


@dataclass(slots=True)
class _AmpegClock:
    """Predicts ampeg's time at a size from its largest measured one,
    assuming cubic growth; with nothing measured yet, allows up to
    ``first`` tasks."""

    budget: float
    first: int = 500
    size: int = 0
    seconds: float = 0.0

    def affordable(self, size: int) -> bool:
        if not self.size:
            return size <= self.first
        return self.seconds * (size / self.size) ** 3 <= self.budget

    def record(self, size: int, seconds: float) -> None:
        if seconds > self.seconds or size > self.size:
            self.size, self.seconds = size, seconds


def _row(cells: Sequence[object]) -> str:
    widths = (7, 7, 3, 10, 10, 9, 8, 9, 8)
    pairs = zip(cells, widths, strict=True)
    return " ".join(str(cell).rjust(width) for cell, width in pairs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000, 10000])
    parser.add_argument("--processes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ampeg-budget", type=float, default=60.0)
    parser.add_argument("--textbook-max", type=int, default=2000)
    options = parser.parse_args(argv)

    print(
        _row(
            [
                "tasks",
                "edges",
                "P",
                "alma_dag s",
                "ampeg s",
                "speedup",
                "alma/LB",
                "textbk/LB",
                "ampeg/LB",
            ]
        )
    )
    clocks = {p: _AmpegClock(options.ampeg_budget) for p in options.processes}
    for size in sorted(options.sizes):
        dag = random_layered_dag(size, options.seed)
        for p in options.processes:
            plan, alma_seconds = _timed(heft, to_alma_dag(dag), p)
            bound = plan.lower_bound
            textbook = ampeg_time = ampeg_ratio = speedup = "skipped"
            if size <= options.textbook_max:
                textbook = f"{textbook_heft(dag, p) / bound:.4f}"
            if clocks[p].affordable(size):
                makespan, seconds = _timed(ampeg_makespan, to_ampeg(dag), p)
                clocks[p].record(size, seconds)
                ampeg_time, ampeg_ratio = f"{seconds:.3f}", f"{makespan / bound:.4f}"
                speedup = f"{seconds / alma_seconds:.0f}x"
            print(
                _row(
                    [
                        size,
                        dag.n_edges,
                        p,
                        f"{alma_seconds:.3f}",
                        ampeg_time,
                        speedup,
                        f"{plan.makespan / bound:.4f}",
                        textbook,
                        ampeg_ratio,
                    ]
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
