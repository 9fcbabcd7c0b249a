"""The task-list front end keeps ampeg's meaning."""

from __future__ import annotations

import collections

import pytest

import alma_dag as ad
from alma_dag import Dependency, Err, Position


def readme_graph():
    return {
        0: (lambda x: x**2, 3, 10.8),
        1: (lambda x: x**2, 4, 10.8),
        2: (lambda x: x / 2, 10, 11),
        3: (lambda x, y: x + y, (Dependency(0, None, 1), Dependency(1, None, 1)), 10.7),
        4: (lambda x, y: x * y, (Dependency(0, None, 1), Dependency(2, None, 1)), 10.8),
        5: (lambda x, y: x - y, (Dependency(3, None, 1), Dependency(4, None, 1)), 10.9),
    }


README_RESULT = {0: 9, 1: 16, 2: 5, 3: 25, 4: 45, 5: -20}


class TestReadmeExample:
    @pytest.mark.parametrize("backend", ["inline", "loky"])
    def test_two_steps(self, backend):
        task_lists, task_ids = ad.earliest_finish_time(readme_graph(), 3)
        assert ad.execute_task_lists(task_lists, task_ids, backend=backend) == (
            README_RESULT
        )

    @pytest.mark.parametrize("n_processes", [1, 2, 3, 7])
    def test_run(self, n_processes):
        assert ad.run(readme_graph(), n_processes) == README_RESULT

    def test_lists_cover_every_task_once(self):
        task_lists, task_ids = ad.earliest_finish_time(readme_graph(), 3)
        assert len(task_lists) == len(task_ids) == 3
        flat = [i for ids in task_ids for i in ids]
        assert sorted(flat) == list(range(6))
        assert all(len(a) == len(b) for a, b in zip(task_lists, task_ids, strict=True))


class TestEarliestFinishTime:
    def test_dependencies_become_positions(self):
        task_lists, task_ids = ad.earliest_finish_time(readme_graph(), 2)
        where = {
            node: (lane, i)
            for lane, ids in enumerate(task_ids)
            for i, node in enumerate(ids)
        }
        lane, i = where[5]
        _, args = task_lists[lane][i]
        for dep, pred in zip(args, (3, 4), strict=True):
            plane, pi = where[pred]
            expected = pi if plane == lane else Position(plane, pi)
            assert dep.task == expected

    def test_output_tasks_filter_ids(self):
        task_lists, task_ids = ad.earliest_finish_time(readme_graph(), 2, [5, 0])
        results = ad.execute_task_lists(task_lists, task_ids, backend="inline")
        assert results == {0: 9, 5: -20}

    def test_unknown_output_task(self):
        with pytest.raises(ad.DefinitionError, match="unknown task 'zz'"):
            ad.earliest_finish_time(readme_graph(), 2, ["zz"])

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
    def test_bad_process_count(self, bad):
        with pytest.raises(ad.DefinitionError, match="n_processes"):
            ad.earliest_finish_time(readme_graph(), bad)

    def test_timeout_travels_with_lists(self):
        task_lists, _ = ad.earliest_finish_time(readme_graph(), 2, timeout=5)
        assert task_lists.timeout == 5

    def test_cycle(self):
        g = {"a": (abs, Dependency("b"), 1), "b": (abs, Dependency("a"), 1)}
        with pytest.raises(ad.CycleError):
            ad.earliest_finish_time(g, 2)


class TestDuplicates:
    def test_merged_and_reported_under_every_id(self):
        calls = []

        def square(x):
            calls.append(x)
            return x * x

        g = {
            "a": (square, 3, 1),
            "b": (square, 3, 1),
            "c": (square, 3.0, 1),
            "d": (square, True, 1),
            "e": (lambda x, y: x + y, (Dependency("a"), Dependency("b")), 1),
        }
        task_lists, task_ids = ad.earliest_finish_time(g, 2)
        assert sum(len(t) for t in task_lists) == 4  # a and b merged
        assert ["a", "b"] in [i for ids in task_ids for i in ids]
        results = ad.execute_task_lists(task_lists, task_ids, backend="inline")
        assert results == {"a": 9, "b": 9, "c": 9.0, "d": 1, "e": 18}
        assert type(results["c"]) is float and type(results["d"]) is int
        assert sorted(calls, key=repr) == sorted([3, 3.0, True], key=repr)


class TestExecuteTaskLists:
    def test_hand_written_lists(self):
        lists = [
            [(abs, -2), (pow, (Dependency(0), 3))],
            [(lambda d: d["values"][1], {"d": {"values": [1, 2]}})],
        ]
        assert ad.execute_task_lists(lists, backend="inline") == {
            (0, 0): 2,
            (0, 1): 8,
            (1, 0): 2,
        }

    def test_cross_list_position(self):
        lists = [
            [(lambda: {"values": [1, 3, 5]}, ())],
            [(lambda x: x * 10, Dependency(Position(0, 0), ("values", 2)))],
        ]
        results = ad.execute_task_lists(lists, [["v"], ["w"]], backend="inline")
        assert results == {"v": {"values": [1, 3, 5]}, "w": 50}

    def test_id_lists_and_none(self):
        lists = [[(abs, -1), (abs, -2)]]
        results = ad.execute_task_lists(lists, [[["x", "y"], None]], backend="inline")
        assert results == {"x": 1, "y": 1}

    def test_later_index_is_refused(self):
        lists = [[(abs, Dependency(1)), (abs, -2)]]
        with pytest.raises(ad.DefinitionError, match="task list 0, entry 0"):
            ad.execute_task_lists(lists, backend="inline")

    @pytest.mark.parametrize(
        "lists, match",
        [
            ("nope", "list of lists"),
            ([["nope"]], r"\(function, args\) pair"),
            ([[(3, ())]], "must be callable"),
            ([[(abs, Dependency("name"))]], "must refer to"),
        ],
    )
    def test_malformed(self, lists, match):
        with pytest.raises(ad.DefinitionError, match=match):
            ad.execute_task_lists(lists, backend="inline")

    def test_task_ids_shape(self):
        with pytest.raises(ad.DefinitionError, match="task_ids"):
            ad.execute_task_lists([[(abs, -1)]], [["a", "b"]], backend="inline")

    def test_empty(self):
        assert ad.execute_task_lists([], backend="inline") == {}
        assert ad.execute_task_lists([[], []], backend="inline") == {}


class TestInflate:
    def test_tuple_ids_nest(self):
        g = {("sq", i): (lambda x: x * x, i, 1) for i in range(3)}
        g["total"] = (sum, ([Dependency(("sq", i)) for i in range(3)],), 1)
        results = ad.run(g, 2, inflate=True, backend="inline")
        assert results == {"sq": {0: 0, 1: 1, 2: 4}, "total": 5}


class TestCosts:
    def test_costs_entry(self):
        results = ad.run(readme_graph(), 2, costs=True, backend="inline")
        table = results.pop("costs")
        assert results == README_RESULT
        assert set(table) == set(README_RESULT)
        for task_id, (seconds, comm) in table.items():
            assert seconds >= 0
            expected = (
                {
                    d.task
                    for d in readme_graph()[task_id][1]
                    if isinstance(d, Dependency)
                }
                if task_id >= 3
                else set()
            )
            assert set(comm) == expected
            assert all(c >= 0 for c in comm.values())

    def test_task_named_costs_keeps_its_result(self):
        g = {"costs": (abs, -1, 1), "costs_0": (abs, -2, 1)}
        with pytest.warns(UserWarning, match="costs_1"):
            results = ad.run(g, 1, costs=True, backend="inline")
        assert results["costs"] == 1 and results["costs_0"] == 2
        assert set(results["costs_1"]) == {"costs", "costs_0"}

    def test_costs_inflated(self):
        g = {("a", 0): (abs, -1, 1)}
        results = ad.run(g, 1, costs=True, inflate=True, backend="inline")
        assert results["a"] == {0: 1}
        assert set(results["costs"]["a"]) == {0}


class TestFailures:
    @pytest.mark.parametrize("backend", ["inline", "loky"])
    def test_err_and_dependency_error(self, backend):
        g = {
            "a": (lambda: 1 / 0, (), 1),
            "b": (lambda x: x + 1, Dependency("a"), 1),
            "c": (lambda x: x + 1, Dependency("b"), 1),
            "d": (abs, -4, 1),
        }
        results = ad.run(g, 2, backend=backend)
        assert results["d"] == 4
        assert isinstance(results["a"], Err)
        assert results["a"].err_type is ZeroDivisionError
        assert "ZeroDivisionError" in results["a"].traceback
        for node in "bc":
            assert results[node].err_type is ad.DependencyError
            assert results[node].exception.dependency == "a"
            assert repr(node) in str(results[node])

    def test_key_error_in_extraction(self):
        g = {"a": (dict, (), 1), "b": (abs, Dependency("a", "missing"), 1)}
        results = ad.run(g, 1, backend="inline")
        assert results["b"].err_type is KeyError

    def test_attribute_fallback(self):
        point = collections.namedtuple("Point", "x y")
        g = {"p": (point, (1, 2), 1), "x": (abs, Dependency("p", "y"), 1)}
        assert ad.run(g, 1, backend="inline")["x"] == 2

    def test_timeout(self):
        import time

        g = {"slow": (time.sleep, 30, 1), "fast": (abs, -1, 1)}
        results = ad.run(g, 2, timeout=0.5)
        assert results["fast"] == 1
        assert results["slow"].err_type is ad.TaskTimeoutError
