"""The HTML renderers: what they show, what they escape, where they cut."""

from __future__ import annotations

import html

import pytest

from alma_dag import Dispatcher, Err, TaskGraph, heft, plan_from_lanes
from alma_dag.display import dispatcher_html, plan_html, results_html

EVIL = "<script>alert('x')</script>"


def _failing_run(nodes: list[str]) -> Dispatcher:
    """A finished inline run where every node in ``nodes`` raised."""
    graph = TaskGraph()
    graph.add("fine", abs, (-1,))
    for node in nodes:
        graph.add(node, lambda: 1 / 0)
    dispatcher = Dispatcher(graph, backend="inline")
    dispatcher.run()
    return dispatcher


class TestDispatcherHtml:
    def test_pending_run(self):
        graph = TaskGraph()
        graph.add("a", abs, (-1,))
        text = dispatcher_html(Dispatcher(graph, backend="inline"))
        assert "<strong>Dispatcher</strong> — pending" in text
        assert '<progress value="0" max="1"' in text
        assert "0 done, 0 failed, 0 running, 1 total" in text
        assert "ETA —" in text

    def test_finished_run(self):
        graph = TaskGraph()
        a = graph.add("a", abs, (-1,))
        graph.add("b", pow, (a, 2))
        dispatcher = Dispatcher(graph, workers=2, backend="inline")
        dispatcher.run()
        text = dispatcher_html(dispatcher)
        assert "— finished" in text
        assert '<progress value="2" max="2"' in text
        assert "2 done, 0 failed, 0 running, 2 total" in text
        assert "failed task" not in text

    def test_failures_escaped_and_first_line_only(self):
        def explode():
            raise ValueError("bad <b>input</b>\nsecond line")

        graph = TaskGraph()
        graph.add(EVIL, explode)
        dispatcher = Dispatcher(graph, backend="inline")
        dispatcher.run()
        text = dispatcher_html(dispatcher)
        assert "<script>" not in text and "<b>" not in text
        assert html.escape(EVIL) in text
        assert "ValueError: bad &lt;b&gt;input&lt;/b&gt;" in text
        assert "second line" not in text

    def test_failures_truncated(self):
        dispatcher = _failing_run([f"bad{i}" for i in range(7)])
        text = dispatcher_html(dispatcher, max_failures=3)
        assert "7 failed" in text
        assert text.count("ZeroDivisionError") == 3
        assert "… 4 more" in text


class TestPlanHtml:
    def test_summary_and_ratio(self):
        graph = TaskGraph()
        a = graph.add("a", abs, (-1,), cost=2)
        graph.add("b", abs, (a,), cost=2)
        graph.add("c", abs, (-1,), cost=1)
        plan = heft(graph, 2)
        text = plan_html(plan)
        assert "3 tasks on 2 lanes" in text
        assert f"makespan {plan.makespan:g}, lower bound {plan.lower_bound:g}" in text
        assert f"(ratio {plan.makespan / plan.lower_bound:.2f})" in text

    def test_empty_plan_has_no_ratio(self):
        text = plan_html(heft(TaskGraph(), 2))
        assert "0 tasks on 2 lanes" in text and "(ratio —)" in text

    def test_node_ids_escaped(self):
        graph = TaskGraph()
        graph.add(EVIL, abs, (-1,))
        text = plan_html(heft(graph, 1))
        assert "<script>" not in text
        assert html.escape(EVIL) in text

    def test_lanes_and_nodes_truncated(self):
        graph = TaskGraph()
        lanes = [[f"t{lane}_{i}" for i in range(lane + 1)] for lane in range(10)]
        for lane in lanes:
            for node in lane:
                graph.add(node, abs, (-1,))
        plan = plan_from_lanes(graph, lanes)
        text = plan_html(plan, max_lanes=4, max_nodes=2)
        assert "… 6 more" in text  # lanes 4 to 9
        assert "t3_0, t3_1, … 2 more" in text  # lane 3 holds 4 tasks
        assert "t4_0" not in text


class TestResultsHtml:
    def test_values_and_errs(self):
        results = {"a": 1, "b": Err(ValueError("first\nsecond")), ("t", 2): "x"}
        text = results_html(results)
        assert text.count("<tr>") == 4  # a header and three rows
        assert "ValueError: first" in text and "second" not in text
        assert "color:#b00020" in text
        assert "(&#x27;t&#x27;, 2)" in text  # a non-string node id as its repr

    def test_escaped(self):
        text = results_html({EVIL: EVIL, "err": Err(RuntimeError(EVIL))})
        assert "<script>" not in text
        assert html.escape(EVIL) in text
        assert html.escape(f"RuntimeError: {EVIL}") in text

    @pytest.mark.parametrize("rows", [0, 3, 25])
    def test_truncated(self, rows):
        results = {f"n{i}": i for i in range(rows)}
        text = results_html(results, max_rows=10)
        assert text.count("<tr>") == 1 + min(rows, 10) + (rows > 10)
        assert ("… 15 more" in text) == (rows == 25)

    def test_long_values_cut(self):
        text = results_html({"big": list(range(1000))})
        assert "999" not in text and "…" in text

    def test_err_without_message(self):
        assert "KeyError" in results_html({"k": Err(KeyError())})
