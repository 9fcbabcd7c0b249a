"""Pictures of plans, runs and graphs: each is rendered to a PNG with the
Agg canvas (no pyplot, no display) and read back."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from alma_dag import Dispatcher, Err, InvalidStateError, TaskGraph, heft
from alma_dag.viz import (
    BINS,
    _busy_fraction,
    _interval_lanes,
    draw_graph,
    plan_gantt,
    run_gantt,
)

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402


def _diamond() -> TaskGraph:
    """::

          a
         / \\
        b   c      b fails, so d is not run
         \\ /
          d
    """
    graph = TaskGraph()
    a = graph.add("a", abs, (-1,), cost=2)
    b = graph.add("b", lambda x: x / 0, (a,), cost=3)
    c = graph.add("c", abs, (a,), cost=1)
    graph.add("d", max, (b, c))
    return graph


def _independent(n: int) -> TaskGraph:
    graph = TaskGraph()
    for i in range(n):
        graph.add(f"t{i}", abs, (i,), cost=1 + i % 7)
    return graph


def _save(figure, path) -> np.ndarray:
    """Render ``figure`` to ``path`` at 100 dpi and read the pixels back."""
    figure.savefig(path, dpi=100)
    return imread(path)


def _is_drawn(pixels: np.ndarray) -> bool:
    """Not blank: something other than the white background."""
    return bool((pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.01)


class TestPlanGantt:
    def test_small_plan_draws_one_bar_per_task(self, tmp_path):
        plan = heft(_diamond(), 2)
        figure = plan_gantt(plan, title="diamond")
        (axes,) = figure.axes
        assert not axes.images
        assert sum(len(c.get_paths()) for c in axes.collections) == len(plan)
        assert axes.get_title() == "diamond"
        assert axes.get_xlabel() == "cost units"
        assert _is_drawn(_save(figure, tmp_path / "plan.png"))

    def test_lower_bound_is_a_vertical_line(self):
        plan = heft(_diamond(), 2)
        (axes,) = plan_gantt(plan).axes
        (line,) = axes.lines
        assert list(line.get_xdata()) == [plan.lower_bound] * 2

    def test_method_and_given_axes(self):
        from matplotlib.figure import Figure

        figure = Figure()
        axes = figure.add_subplot()
        assert heft(_diamond(), 2).gantt(ax=axes) is figure

    def test_100000_tasks_aggregate_per_bin(self, tmp_path):
        """100,000 independent tasks on 4 lanes: far more tasks per lane
        than pixel columns, so each lane is one row of busy fractions."""
        plan = heft(_independent(100_000), 4)
        figure = plan_gantt(plan)
        (axes,) = figure.axes
        (image,) = axes.images
        assert image.get_array().shape == (4, BINS, 3)
        assert not axes.collections
        pixels = _save(figure, tmp_path / "big.png")
        width, height = figure.get_size_inches() * 100
        assert pixels.shape == (round(height), round(width), 4)
        assert _is_drawn(pixels)


class TestRunGantt:
    def test_planned_and_actual_with_failure_in_red(self, tmp_path):
        dispatcher = Dispatcher(_diamond(), workers=2, backend="inline")
        dispatcher.run()
        assert isinstance(dispatcher.results["b"], Err)
        figure = run_gantt(dispatcher, title="diamond run")
        planned, actual = figure.axes
        assert planned.get_xlabel() == "cost units"
        assert actual.get_xlabel() == "seconds since the first start"
        red = matplotlib.colors.to_rgba("tab:red")
        colors = [tuple(c.get_facecolor()[0]) for c in actual.collections]
        assert red in colors
        # a, b, c ran (d did not, its dependency failed); b is the red one.
        bars = sum(len(c.get_paths()) for c in actual.collections)
        assert bars == len(dispatcher.timings) == 3
        assert _is_drawn(_save(figure, tmp_path / "run.png"))

    def test_before_start_there_is_no_plan(self):
        dispatcher = Dispatcher(_diamond(), workers=2, backend="inline")
        with pytest.raises(InvalidStateError, match="start"):
            run_gantt(dispatcher)

    def test_large_run_aggregates(self, tmp_path):
        dispatcher = Dispatcher(_independent(5_000), workers=2, backend="inline")
        dispatcher.run()
        figure = run_gantt(dispatcher)
        assert all(axes.images for axes in figure.axes)
        assert _is_drawn(_save(figure, tmp_path / "large-run.png"))


class TestDrawGraph:
    def test_small_graph_draws_each_node(self, tmp_path):
        figure = _diamond().draw()
        (axes,) = figure.axes
        assert axes.get_title() == "4 tasks, 4 edges, 3 generations"
        labels = {text.get_text() for text in axes.texts}
        assert labels == {"a", "b", "c", "d"}
        assert _is_drawn(_save(figure, tmp_path / "graph.png"))

    def test_large_graph_is_grouped_by_generation(self, tmp_path):
        """Three generations of 100: 300 tasks, above max_nodes, become
        three boxes joined by edges carrying their counts."""
        graph = TaskGraph()
        previous: list = []
        for depth in range(3):
            previous = [
                graph.add(f"n{depth}.{i}", max, (previous[i], 0) if previous else (0,))
                for i in range(100)
            ]
        figure = draw_graph(graph, max_nodes=200)
        (axes,) = figure.axes
        texts = [text.get_text() for text in axes.texts]
        assert sum("100 tasks" in text for text in texts) == 3
        assert texts.count("100") == 2  # edge labels: 100 edges each
        assert _is_drawn(_save(figure, tmp_path / "grouped.png"))

    def test_empty_graph(self):
        assert draw_graph(TaskGraph()).axes[0].get_title().startswith("0 tasks")


def test_busy_fraction_of_bins():
    """Intervals [0, 1.5) and [3, 4) over bins of width 1 on [0, 4)."""
    edges = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    busy = _busy_fraction(np.array([0.0, 3.0]), np.array([1.5, 4.0]), edges)
    assert busy.tolist() == [1.0, 0.5, 0.0, 1.0]


def test_interval_lanes_never_overlap():
    """a [0, 2) and b [1, 3) overlap; c [2, 4) can follow a."""
    lanes = _interval_lanes([(0, 2), (1, 3), (2, 4)])
    assert lanes == [0, 1, 0]


def test_import_alma_dag_does_not_import_matplotlib():
    code = (
        "import json, sys\n"
        "import alma_dag, alma_dag.viz\n"
        "alma_dag.TaskGraph().validate()\n"
        "print(json.dumps(sorted(m for m in sys.modules if 'matplotlib' in m)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
