"""Pictures of plans, runs and graphs, drawn with matplotlib.

In: a ``Plan``, a ``Dispatcher`` (its plan, its ``timings`` and its
results) or a ``TaskGraph``. Out: a ``matplotlib.figure.Figure``, built
without pyplot so that nothing global changes and no display is needed;
save it with ``figure.savefig("plan.png")``. matplotlib is imported inside
the functions, so ``import alma_dag`` never loads it.

Gantt charts put lanes on the y axis (lane 0 on top) and time on the x
axis: cost units for plans, seconds since the first start for runs. Tasks
are bars; failures are red. When a lane holds more tasks than the axes
have pixel columns, single bars cannot be seen and would cost minutes to
draw, so the chart switches to aggregate mode: time is cut into
``BINS`` bins, and each lane's bin is shaded by the fraction of it that
is busy (blue for tasks that succeeded or are planned, red for failures)::

    lane 0  |####|###=|##  |          #  busy all the bin
    lane 1  |####|=   |    |          =  busy part of it

Graphs are drawn layered by topological generation (a task's generation
is one more than its latest dependency's). Above ``max_nodes`` tasks, each
generation becomes one box with its count, and the edges between boxes
carry the number of edges between the generations.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from .errors import InvalidStateError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .dispatch import Dispatcher
    from .graph import TaskGraph
    from .plan import Plan

__all__ = ["draw_graph", "plan_gantt", "run_gantt"]

#: Time bins per lane in aggregate mode: fine enough to show idle stretches
#: of 0.2 % of the makespan, small enough to draw instantly.
BINS = 500

#: Lanes up to this many are labelled one by one.
_LABELLED_LANES = 32
#: Tasks up to this many get their node id written on their bar.
_LABELLED_TASKS = 40

_BUSY = "tab:blue"
_FAILED = "tab:red"
_BUSY_RGB = np.array([0.12, 0.47, 0.71])
_FAILED_RGB = np.array([0.84, 0.15, 0.16])


class _Bars:
    """Intervals to draw, one per task, as parallel arrays."""

    __slots__ = ("nodes", "lane", "start", "finish", "failed")

    def __init__(self, rows: Iterable[tuple[Hashable, int, float, float, bool]]):
        rows = list(rows)
        #: Node id of each bar.
        self.nodes = [row[0] for row in rows]
        #: Lane (y position) of each bar.
        self.lane = np.array([row[1] for row in rows], dtype=int)
        #: Start and finish of each bar, in the axis's units.
        self.start = np.array([row[2] for row in rows], dtype=float)
        self.finish = np.array([row[3] for row in rows], dtype=float)
        #: Whether the task failed (drawn red).
        self.failed = np.array([row[4] for row in rows], dtype=bool)


# -- public functions ----------------------------------------------------------


def plan_gantt(
    plan: Plan, *, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Draw a plan's lanes as a Gantt chart, with its lower bound.

    Parameters
    ----------
    plan : Plan
        What to draw; its times are in cost units.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    title : str, optional
        Defaults to the task count, makespan and lower bound.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the chart.

    Examples
    --------
    >>> from alma_dag import TaskGraph, heft
    >>> g = TaskGraph()
    >>> for name in "abc":
    ...     _ = g.add(name, abs, (-1,), cost=2)
    >>> figure = plan_gantt(heft(g, 2))
    >>> figure.axes[0].get_xlabel()
    'cost units'
    """
    figure, (axes,) = _figure_and_axes(ax, 1, plan.n_processes)
    bars = _plan_bars(plan)
    _draw_bars(axes, bars, plan.n_processes, max(plan.makespan, plan.lower_bound))
    axes.axvline(plan.lower_bound, color="black", linestyle="--", linewidth=1)
    axes.set_xlabel("cost units")
    axes.set_title(
        title
        or f"plan: {len(plan)} tasks, makespan {plan.makespan:g}, "
        f"lower bound {plan.lower_bound:g} (dashed)"
    )
    return figure


def run_gantt(
    dispatcher: Dispatcher,
    *,
    ax: Sequence[Axes] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a run's plan above what actually happened.

    The upper panel is the plan in cost units; the lower one the finished
    tasks in seconds since the first one started, each in the lane its plan
    gave it, failures red. The panels keep their own units, but their x
    ranges are matched by the run's measured speed (the seconds the timed
    tasks took over the cost units planned for them): a task that took as
    long as planned sits under its planned bar. Tasks timed in an earlier
    ``start`` are left out, since the current plan has no lane for them.

    Parameters
    ----------
    dispatcher : Dispatcher
        A dispatcher that has started; it may still be running.
    ax : pair of matplotlib Axes, optional
        Where to draw the plan and the run; a new figure when omitted.
    title : str, optional
        A title over both panels.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the chart.

    Raises
    ------
    InvalidStateError
        The dispatcher has not started, so it has no plan.

    Examples
    --------
    >>> from alma_dag import Dispatcher, TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-3,))
    >>> _ = g.add("b", pow, (a, 2))
    >>> d = Dispatcher(g, workers=1, backend="inline")
    >>> _ = d.run()
    >>> [axes.get_xlabel() for axes in run_gantt(d).axes]
    ['cost units', 'seconds since the first start']
    """
    plan = dispatcher.plan
    if plan is None:
        raise InvalidStateError(
            "the dispatcher has no plan yet: call start() or run() before run_gantt()"
        )
    lanes = plan.n_processes
    figure, (planned, actual) = _figure_and_axes(ax, 2, lanes)
    failed = set(dispatcher._failures())  # in memory, unlike the results
    timings = {n: t for n, t in dict(dispatcher.timings).items() if n in plan.entries}
    first = min((start for start, _ in timings.values()), default=0.0)
    ran = _Bars(
        (node, plan.entries[node].lane, start - first, finish - first, node in failed)
        for node, (start, finish) in timings.items()
    )
    seconds_per_unit = _speed(plan, timings)
    units = max(plan.makespan, plan.lower_bound)
    if seconds_per_unit:
        units = max(units, float(ran.finish.max(initial=0.0)) / seconds_per_unit)
    _draw_bars(planned, _plan_bars(plan, failed), lanes, units)
    planned.axvline(plan.lower_bound, color="black", linestyle="--", linewidth=1)
    planned.set_xlabel("cost units")
    planned.set_title(
        f"planned: {len(plan)} tasks, makespan {plan.makespan:g}, "
        f"lower bound {plan.lower_bound:g} (dashed)"
    )
    seconds = units * seconds_per_unit or float(ran.finish.max(initial=1.0))
    _draw_bars(actual, ran, lanes, seconds)
    actual.set_xlabel("seconds since the first start")
    speed = f", 1 cost unit took {seconds_per_unit:.3g} s" if seconds_per_unit else ""
    actual.set_title(
        f"actual: {len(ran.nodes)} tasks timed, {int(ran.failed.sum())} failed "
        f"(red){speed}"
    )
    if title:
        figure.suptitle(title)
    return figure


def draw_graph(
    graph: TaskGraph, *, ax: Axes | None = None, max_nodes: int = 200
) -> Figure:
    """Draw a task graph in layers, one per topological generation.

    Parameters
    ----------
    graph : TaskGraph
        The tasks; validated first.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when omitted.
    max_nodes : int
        Above this many tasks, each generation is drawn as one box with its
        count, and edges between boxes are labelled with the number of
        edges between the generations.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the drawing.

    Raises
    ------
    DefinitionError, CycleError
        The graph is invalid.

    Examples
    --------
    >>> from alma_dag import TaskGraph
    >>> g = TaskGraph()
    >>> a = g.add("a", abs, (-1,))
    >>> _ = g.add("b", abs, (a,))
    >>> draw_graph(g).axes[0].get_title()
    '2 tasks, 1 edges, 2 generations'
    """
    graph.validate()
    figure, (axes,) = _figure_and_axes(ax, 1, 8)
    generation = {
        node: depth
        for depth, nodes in enumerate(nx.topological_generations(graph.nx))
        for node in nodes
    }
    depth = max(generation.values(), default=-1) + 1
    if len(generation) > max_nodes:
        _draw_generations(axes, graph.nx, generation)
    else:
        _draw_nodes(axes, graph.nx, generation)
    axes.set_title(
        f"{len(generation)} tasks, {graph.nx.number_of_edges()} edges, "
        f"{depth} generations"
    )
    axes.set_axis_off()
    return figure


# -- gantt charts ----------------------------------------------------------------


def _figure_and_axes(ax: Any, panels: int, lanes: int) -> tuple[Figure, list[Axes]]:
    """The figure of the given axes, or a new figure with ``panels`` axes
    stacked, each tall enough for ``lanes`` lanes."""
    if ax is not None:
        axes = [ax] if panels == 1 else list(ax)
        if len(axes) != panels:
            raise ValueError(f"ax must be {panels} matplotlib Axes, got {len(axes)}")
        return axes[0].figure, axes
    from matplotlib.figure import Figure

    height = min(2.0 + 0.3 * min(lanes, _LABELLED_LANES), 12.0)
    figure = Figure(figsize=(12, height * panels), layout="constrained")
    return figure, list(figure.subplots(panels, 1, squeeze=False)[:, 0])


def _plan_bars(plan: Plan, failed: Iterable[Hashable] = ()) -> _Bars:
    failed = set(failed)
    return _Bars(
        (e.node, e.lane, e.start, e.finish, e.node in failed)
        for e in plan.entries.values()
    )


def _speed(plan: Plan, timings: Mapping[Hashable, tuple[float, float]]) -> float:
    """Seconds per cost unit over the timed tasks; 0 when unknown."""
    entries = plan.entries
    planned = sum(entries[n].finish - entries[n].start for n in timings)
    measured = sum(finish - start for start, finish in timings.values())
    return measured / planned if planned > 0 and measured > 0 else 0.0


def _draw_bars(axes: Axes, bars: _Bars, lanes: int, end: float) -> None:
    """Bars, or busy fractions when a lane holds more tasks than ``axes``
    has pixel columns; x from 0 to ``end``."""
    end = end if end > 0 else 1.0
    crowded = np.bincount(bars.lane, minlength=1).max()
    if crowded > axes.get_window_extent().width:
        _draw_busy(axes, bars, lanes, end)
    else:
        _draw_each(axes, bars, lanes, end)
    axes.set_xlim(0, end)
    axes.set_ylim(lanes - 0.5, -0.5)
    axes.set_ylabel("lane")
    if lanes <= _LABELLED_LANES:
        axes.set_yticks(range(lanes), [str(lane) for lane in range(lanes)])


def _draw_each(axes: Axes, bars: _Bars, lanes: int, end: float) -> None:
    for lane in range(lanes):
        for failed, color in ((False, _BUSY), (True, _FAILED)):
            mask = (bars.lane == lane) & (bars.failed == failed)
            if mask.any():
                starts, finishes = bars.start[mask], bars.finish[mask]
                axes.broken_barh(
                    list(zip(starts, finishes - starts, strict=True)),
                    (lane - 0.4, 0.8),
                    facecolors=color,
                    edgecolor="white",
                    linewidth=0.5,
                )
    if len(bars.nodes) <= _LABELLED_TASKS:
        for node, lane, start, finish in zip(
            bars.nodes, bars.lane, bars.start, bars.finish, strict=True
        ):
            # A character of the 8-point label is about 0.7 % of the width.
            if finish - start < 0.007 * end * len(str(node)):
                continue
            axes.text(
                (start + finish) / 2,
                lane,
                str(node),
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                clip_on=True,
            )


def _draw_busy(axes: Axes, bars: _Bars, lanes: int, end: float) -> None:
    edges = np.linspace(0.0, end, BINS + 1)
    image = np.ones((lanes, BINS, 3))
    for lane in range(lanes):
        in_lane = bars.lane == lane
        for failed, rgb in ((False, _BUSY_RGB), (True, _FAILED_RGB)):
            mask = in_lane & (bars.failed == failed)
            if mask.any():
                share = _busy_fraction(bars.start[mask], bars.finish[mask], edges)
                image[lane] -= share[:, None] * (1.0 - rgb)
    axes.imshow(
        np.clip(image, 0.0, 1.0),
        aspect="auto",
        interpolation="nearest",
        extent=(0.0, end, lanes - 0.5, -0.5),
    )
    axes.text(
        0.99,
        0.01,
        f"{len(bars.nodes)} tasks: shade = busy fraction of each of {BINS} bins",
        transform=axes.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )


def _busy_fraction(starts: np.ndarray, finishes: np.ndarray, edges: np.ndarray):
    """Fraction of each bin between ``edges`` covered by the intervals,
    summed over intervals (so at most 1 when they do not overlap)."""
    # The busy time up to t is sum((t - start)+ - (t - finish)+), each sum
    # read off sorted points and their running total in O(n log n).
    covered = _ramp(starts, edges) - _ramp(finishes, edges)
    return np.clip(np.diff(covered) / np.diff(edges), 0.0, 1.0)


def _ramp(points: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``sum(max(t - p, 0) for p in points)`` for each ``t`` in ``at``."""
    points = np.sort(points)
    running = np.concatenate(([0.0], np.cumsum(points)))
    below = np.searchsorted(points, at, side="left")
    return below * at - running[below]


def _interval_lanes(intervals: Sequence[tuple[float, float]]) -> list[int]:
    """A lane for each ``(start, finish)`` interval, so that intervals of a
    lane do not overlap, using as few lanes as possible (greedy interval
    partitioning: by start, into the lane that freed up first)."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i])
    lanes = [0] * len(intervals)
    free: list[tuple[float, int]] = []  # (finish of its last interval, lane)
    for i in order:
        start, finish = intervals[i]
        if free and free[0][0] <= start:
            _, lane = heapq.heappop(free)
        else:
            lane = len(free)
        lanes[i] = lane
        heapq.heappush(free, (finish, lane))
    return lanes


def _timings_gantt(
    timings: Mapping[Hashable, tuple[float, float]],
    failed: Iterable[Hashable] = (),
    *,
    title: str | None = None,
) -> Figure:
    """Gantt chart of recorded ``{node id: (started, finished)}`` times,
    with no plan to give lanes: ``_interval_lanes`` assigns them."""
    failed = set(failed)
    nodes = list(timings)
    first = min((start for start, _ in timings.values()), default=0.0)
    spans = [(timings[n][0] - first, timings[n][1] - first) for n in nodes]
    lane_of = _interval_lanes(spans)
    lanes = max(lane_of, default=-1) + 1
    bars = _Bars(
        (node, lane, start, finish, node in failed)
        for node, lane, (start, finish) in zip(nodes, lane_of, spans, strict=True)
    )
    figure, (axes,) = _figure_and_axes(None, 1, lanes)
    _draw_bars(axes, bars, max(lanes, 1), float(bars.finish.max(initial=0.0)))
    axes.set_xlabel("seconds since the first start")
    axes.set_title(
        title
        or f"{len(nodes)} tasks on {lanes} lanes, {int(bars.failed.sum())} failed (red)"
    )
    return figure


# -- graphs ----------------------------------------------------------------------


def _draw_nodes(axes: Axes, digraph: nx.DiGraph, generation: dict) -> None:
    layered = nx.DiGraph()
    layered.add_nodes_from((node, {"layer": g}) for node, g in generation.items())
    layered.add_edges_from(digraph.edges)
    if not layered:
        return
    pos = nx.multipartite_layout(layered, subset_key="layer")
    nx.draw_networkx(
        layered,
        pos,
        ax=axes,
        node_color="lightsteelblue",
        node_size=300 if len(layered) <= 50 else 60,
        font_size=8 if len(layered) <= 50 else 5,
        arrows=True,
    )


def _draw_generations(axes: Axes, digraph: nx.DiGraph, generation: dict) -> None:
    counts = Counter(generation.values())
    weights = Counter((generation[u], generation[v]) for u, v in digraph.edges)
    groups = nx.DiGraph()
    groups.add_nodes_from((g, {"layer": g}) for g in sorted(counts))
    groups.add_weighted_edges_from((u, v, n) for (u, v), n in weights.items())
    pos = nx.multipartite_layout(groups, subset_key="layer")
    _fit(axes, pos)
    heaviest = max(weights.values(), default=1)
    nx.draw_networkx_edges(
        groups,
        pos,
        edgelist=list(weights),
        ax=axes,
        width=[0.5 + 4 * n / heaviest for n in weights.values()],
        edge_color="gray",
        connectionstyle="arc3,rad=0.25",
        arrows=True,
        node_size=3000,
    )
    nx.draw_networkx_labels(
        groups,
        pos,
        labels={g: f"generation {g}\n{counts[g]} tasks" for g in groups},
        ax=axes,
        font_size=8,
        bbox={"boxstyle": "round", "facecolor": "lightsteelblue"},
    )
    nx.draw_networkx_edge_labels(
        groups,
        pos,
        edge_labels={edge: str(n) for edge, n in weights.items()},
        ax=axes,
        font_size=7,
        connectionstyle="arc3,rad=0.25",
    )


def _fit(axes: Axes, pos: Mapping[Hashable, Any]) -> None:
    """Limits around ``pos`` with room for the boxes, which, being text,
    do not count for matplotlib's autoscaling."""
    xs, ys = np.array(list(pos.values())).T
    margin = 0.25 * max(np.ptp(xs), np.ptp(ys), 1.0)
    axes.set_xlim(xs.min() - margin, xs.max() + margin)
    axes.set_ylim(ys.min() - margin, ys.max() + margin)
