"""Tests of the planner (alma_dag.plan).

Each graph is drawn in its test's docstring: costs in brackets,
communication costs on the edges (none drawn: 0). Every test that names
tasks runs under each of ``RELABELLINGS``, so no result depends on how node
ids sort; every plan goes through ``assert_valid_plan``.
"""

from __future__ import annotations

import math
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from plan_checks import RELABELLINGS, assert_valid_plan, make_graph, relabel_plan

from alma_dag import plan as plan_module
from alma_dag.errors import CycleError, DefinitionError
from alma_dag.graph import Dependency, TaskGraph
from alma_dag.plan import (
    Plan,
    PlannedTask,
    critical_path_length,
    earliest_starts,
    heft,
    plan_from_lanes,
    upward_ranks,
)


@pytest.fixture(params=sorted(RELABELLINGS))
def name(request):
    """Letter -> node id, one relabelling per run of the test."""
    return RELABELLINGS[request.param]


def lanes_of(name, *lanes):
    return tuple(tuple(name(letter) for letter in lane) for lane in lanes)


# The module docstring's example.
#
#          a [1]
#       1 /     \ 1
#     b [3]     c [2]
#       1 \     / 1
#          d [1]
DIAMOND = {
    "a": (1, {}),
    "b": (3, {"a": 1}),
    "c": (2, {"a": 1}),
    "d": (1, {"b": 1, "c": 1}),
}

# Ranks chosen so that a communication cost, not a task cost, decides.
#
#          a [2]
#       4 /     \ 1
#     b [3]     c [5]
#       2 \     / 0
#          d [1]
SKEWED = {
    "a": (2, {}),
    "b": (3, {"a": 4}),
    "c": (5, {"a": 1}),
    "d": (1, {"b": 2, "c": 0}),
}


class TestUpwardRanks:
    def test_textbook_formula(self, name):
        """rank(v) = cost(v) + max over dependents w of (comm + rank(w))::

                 a [2]
              4 /     \\ 1
            b [3]     c [5]
              2 \\     / 0
                 d [1]

        d: 1; b: 3 + 2 + 1 = 6; c: 5 + 0 + 1 = 6;
        a: 2 + max(4 + 6, 1 + 6) = 12, through b although c costs more.
        """
        graph = make_graph(SKEWED, name)
        ranks = upward_ranks(graph)
        assert ranks == {name("a"): 12, name("b"): 6, name("c"): 6, name("d"): 1}
        assert_valid_plan(graph, heft(graph, 2), 2)

    def test_done_tasks_are_left_out(self, name):
        """The graph of test_textbook_formula with d done: b is 3, c is 5,
        and a is 2 + max(4 + 3, 1 + 5) = 9."""
        graph = make_graph(SKEWED, name)
        ranks = upward_ranks(graph, done={name("d")})
        assert ranks == {name("a"): 9, name("b"): 3, name("c"): 5}
        assert_valid_plan(graph, heft(graph, 2, done=[name("d")]), 2, done=[name("d")])

    def test_measured_costs_override_estimates(self, name):
        """The graph of test_textbook_formula with c measured at 10: c is
        10 + 0 + 1 = 11 and a is 2 + max(4 + 6, 1 + 11) = 14, now through c."""
        graph = make_graph(SKEWED, name)
        costs = {name("c"): 10}
        ranks = upward_ranks(graph, costs=costs)
        assert ranks == {name("a"): 14, name("b"): 6, name("c"): 11, name("d"): 1}
        assert_valid_plan(graph, heft(graph, 2, costs=costs), 2, costs=costs)

    def test_zero_costs_give_zero_ranks(self, name):
        """a [0] --> b [0]   and   c [0]: every rank is 0."""
        graph = make_graph({"a": (0, {}), "b": (0, {"a": 0}), "c": (0, {})}, name)
        assert upward_ranks(graph) == {name("a"): 0, name("b"): 0, name("c"): 0}
        assert_valid_plan(graph, heft(graph, 2), 2)

    def test_empty_graph(self):
        """No task, no rank."""
        assert upward_ranks(TaskGraph()) == {}


class TestCriticalPath:
    def test_communication_does_not_count(self, name):
        """a [1] --100--> b [2]: the chain is 3 long; on one process the
        result never moves."""
        graph = make_graph({"a": (1, {}), "b": (2, {"a": 100})}, name)
        assert critical_path_length(graph) == 3
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.makespan == 3
        assert plan.lanes == lanes_of(name, "ab", "")

    def test_longest_chain_of_costs(self, name):
        """The graph of test_textbook_formula: a, c, d is the longest chain,
        2 + 5 + 1 = 8 (a, b, d is 6 even with its communication)."""
        graph = make_graph(SKEWED, name)
        assert critical_path_length(graph) == 8
        assert_valid_plan(graph, heft(graph, 3), 3)

    def test_done_and_measured_costs(self, name):
        """The graph of test_textbook_formula: with a done the chain is c, d
        (6); with b measured at 10 it is a, b, d (13)."""
        graph = make_graph(SKEWED, name)
        assert critical_path_length(graph, done={name("a")}) == 6
        assert critical_path_length(graph, costs={name("b"): 10}) == 13
        costs = {name("b"): 10}
        assert_valid_plan(graph, heft(graph, 2, costs=costs), 2, costs=costs)

    def test_empty_graph_is_zero(self, name):
        """Nothing left to run: the single task a [4] is done."""
        graph = make_graph({"a": (4, {})}, name)
        assert critical_path_length(TaskGraph()) == 0
        assert critical_path_length(graph, done=[name("a")]) == 0


class TestHeft:
    def test_docstring_example(self, name):
        """::

                 a [1]
              1 /     \\ 1
            b [3]     c [2]
              1 \\     / 1
                 d [1]

        Ranks a 7, b 5, c 4, d 1. a then b on lane 0; c finishes sooner on
        lane 1 (start 2, after a's result arrives) than after b; d joins
        lane 0 at 5, tied with lane 1, so the lower lane wins. Makespan 6,
        lower bound max(1 + 3 + 1, 7 / 2) = 5.
        """
        graph = make_graph(DIAMOND, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.lanes == lanes_of(name, "abd", "c")
        assert plan.entries[name("c")] == PlannedTask(name("c"), 1, 0, 2.0, 4.0)
        assert plan.entries[name("d")].start == 5
        assert (plan.makespan, plan.lower_bound) == (6, 5)

    @pytest.mark.parametrize(
        ("cost_s", "lane_s", "start_s"), [(1, 1, 0), (3, 1, 0), (4, 0, 12)]
    )
    def test_insertion_fills_an_idle_gap(self, name, cost_s, lane_s, start_s):
        """::

                 a [2]              s [cost_s]   (no dependencies,
              1 /     \\ 1                        ranked last)
           b [10]     c [10]

        a and b run on lane 0 over [0, 12]; c waits for a's result and runs
        on lane 1 over [3, 13], which leaves lane 1 idle over [0, 3). s is
        placed last, yet when it fits in that gap (cost 1, or exactly 3) it
        runs there, before c in lane 1's order. At cost 4 it does not fit,
        and ends soonest after b on lane 0.
        """
        spec = {
            "a": (2, {}),
            "b": (10, {"a": 1}),
            "c": (10, {"a": 1}),
            "s": (cost_s, {}),
        }
        graph = make_graph(spec, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        s = plan.entries[name("s")]
        assert (s.lane, s.start) == (lane_s, start_s)
        assert plan.entries[name("c")].start == 3
        if lane_s == 1:
            assert plan.lanes == lanes_of(name, "ab", "sc")
        else:
            assert plan.lanes == lanes_of(name, "abs", "c")

    def test_zero_cost_task_at_the_end_of_a_gap(self, name):
        """::

                 a [2]
              1 /  |  \\ 1
           b [10]  |   c [10]
                 1 |
                 z [0]

        As in test_insertion_fills_an_idle_gap, lane 1 is idle over [0, 3)
        and runs c from 3. z, ranked last, can start at 3 on lane 1 (a's
        result arrives then) but only at 12 on lane 0, so it sits at the end
        of lane 1's gap, at 3, and comes before c in lane 1's order.
        """
        spec = {
            "a": (2, {}),
            "b": (10, {"a": 1}),
            "c": (10, {"a": 1}),
            "z": (0, {"a": 1}),
        }
        graph = make_graph(spec, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.lanes == lanes_of(name, "ab", "zc")
        assert plan.entries[name("z")].start == plan.entries[name("c")].start == 3

    def test_chain_stays_on_one_lane(self, name):
        """a [1] --5--> b [2] --5--> c [3] on three processes: moving a
        result costs more than waiting, so all three run on lane 0 and
        lanes 1 and 2 stay empty; makespan 6."""
        spec = {"a": (1, {}), "b": (2, {"a": 5}), "c": (3, {"b": 5})}
        graph = make_graph(spec, name)
        plan = heft(graph, 3)
        assert_valid_plan(graph, plan, 3)
        assert plan.lanes == lanes_of(name, "abc", "", "")
        assert plan.makespan == 6 == plan.lower_bound

    def test_independent_tasks_share_the_processes(self, name):
        """a [1]  b [1]  c [1]  d [1], no edges, on two processes: equal
        ranks, so the tasks go in topological (here insertion) order, each
        to the lane where it ends first: lanes (a, c) and (b, d),
        makespan 2 = total cost / 2."""
        spec = {letter: (1, {}) for letter in "abcd"}
        graph = make_graph(spec, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.lanes == lanes_of(name, "ac", "bd")
        assert plan.makespan == 2 == plan.lower_bound

    def test_zero_costs(self, name):
        """::

            a [0] --> b [2] --> c [0] --> d [0]        e [0]

        a and b run on lane 0 from time 0; e, a free task of rank 0, starts
        at once on lane 1 rather than after b; c and d both sit at time 2 on
        lane 0, in dependency order. Makespan 2.
        """
        spec = {
            "a": (0, {}),
            "b": (2, {"a": 0}),
            "c": (0, {"b": 0}),
            "d": (0, {"c": 0}),
            "e": (0, {}),
        }
        graph = make_graph(spec, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.lanes == lanes_of(name, "abcd", "e")
        assert [plan.entries[name(x)].start for x in "abcde"] == [0, 0, 2, 2, 0]
        assert plan.makespan == 2

    def test_all_zero_costs(self, name):
        """a [0] --> b [0],  c [0]: everything runs at time 0, makespan 0."""
        graph = make_graph({"a": (0, {}), "b": (0, {"a": 3}), "c": (0, {})}, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.makespan == 0 == plan.lower_bound

    def test_done_dependencies_are_ready_everywhere(self, name):
        """::

            a [5] --10--> b [1] --10--> c [1]        d [2]

        a is done: b starts at once on lane 0 (a's result is no longer
        waited for), d at once on lane 1, and c right after b on lane 0.
        """
        spec = {
            "a": (5, {}),
            "b": (1, {"a": 10}),
            "c": (1, {"b": 10}),
            "d": (2, {}),
        }
        graph = make_graph(spec, name)
        done = {name("a")}
        plan = heft(graph, 2, done=done)
        assert_valid_plan(graph, plan, 2, done=done)
        assert plan.lanes == lanes_of(name, "bc", "d")
        assert plan.entries[name("b")].start == 0
        assert name("a") not in plan.entries
        with pytest.raises(KeyError, match="not in the plan"):
            plan.lane_of(name("a"))

    def test_everything_done(self, name):
        """a [1] --> b [1], both done: an empty plan of two empty lanes."""
        graph = make_graph({"a": (1, {}), "b": (1, {"a": 1})}, name)
        done = [name("a"), name("b")]
        plan = heft(graph, 2, done=done)
        assert_valid_plan(graph, plan, 2, done=done)
        assert plan.lanes == ((), ())
        assert (len(plan), plan.makespan, plan.lower_bound) == (0, 0, 0)

    def test_measured_costs_override_estimates(self, name):
        """a [1]  b [1]  c [1], no edges, on two processes. Estimated:
        lanes (a, c) and (b). With a measured at 10, a ranks first and
        fills lane 0 until 10, so b and c share lane 1."""
        graph = make_graph({letter: (1, {}) for letter in "abc"}, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        assert plan.lanes == lanes_of(name, "ac", "b")
        costs = {name("a"): 10.0}
        plan = heft(graph, 2, costs=costs)
        assert_valid_plan(graph, plan, 2, costs=costs)
        assert plan.lanes == lanes_of(name, "a", "bc")
        assert (plan.makespan, plan.critical_path, plan.total_cost) == (10, 10, 12)

    @pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "3", None, True])
    def test_invalid_measured_cost(self, name, bad):
        """a [1] measured at an invalid value: DefinitionError naming a."""
        graph = make_graph({"a": (1, {})}, name)
        with pytest.raises(DefinitionError, match="measured cost") as info:
            heft(graph, 1, costs={name("a"): bad})
        assert repr(name("a")) in str(info.value)

    @pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2", None])
    def test_invalid_n_processes(self, name, bad):
        """a [1] on a number of processes that is not a positive integer."""
        graph = make_graph({"a": (1, {})}, name)
        message = f"n_processes must be a positive integer, got {bad!r}"
        with pytest.raises(DefinitionError) as info:
            heft(graph, bad)
        assert str(info.value) == message

    def test_invalid_graph_is_rejected(self, name):
        """a --> b --> a: a cycle is reported before planning; so is a
        dependency on a task that does not exist."""
        graph = make_graph({"a": (1, {"b": 0}), "b": (1, {"a": 0})}, name)
        with pytest.raises(CycleError):
            heft(graph, 2)
        graph = make_graph({"a": (1, {"zz": 0})}, name)
        with pytest.raises(DefinitionError, match="unknown task"):
            heft(graph, 2)

    def test_deterministic(self, name):
        """The graph of test_textbook_formula, planned twice, and built and
        planned again: the same plan every time."""
        graph = make_graph(SKEWED, name)
        first = heft(graph, 3)
        assert_valid_plan(graph, first, 3)
        assert heft(graph, 3) == first
        assert heft(make_graph(SKEWED, name), 3) == first
        assert list(heft(graph, 3).entries) == list(first.entries)

    def test_names_do_not_matter(self, name):
        """The graph of test_textbook_formula under each relabelling gives
        the plan it gets with plain letters, relabelled."""
        graph = make_graph(SKEWED, name)
        plan = heft(graph, 2)
        assert_valid_plan(graph, plan, 2)
        reference = heft(make_graph(SKEWED), 2)
        assert relabel_plan(reference, name) == relabel_plan(plan, lambda x: x)

    def test_plan_object(self, name):
        """The docstring example: size, lanes and bound of the Plan object."""
        graph = make_graph(DIAMOND, name)
        plan = heft(graph, 4)
        assert_valid_plan(graph, plan, 4)
        assert isinstance(plan, Plan)
        assert (len(plan), plan.n_processes) == (4, 4)
        assert (plan.critical_path, plan.total_cost) == (5, 7)
        assert plan.lower_bound == 5
        assert plan.lane_of(name("a")) == 0
        assert repr(plan) == "<Plan: 4 tasks on 4 lanes, makespan 6, lower bound 5>"
        with pytest.raises(AttributeError):
            plan.makespan = 0

    def test_larger_graph(self, name):
        """A ladder of 200 tasks (each row i: l_i [1 + i % 3] and r_i [2],
        both needing both tasks of row i - 1, communication 1) on 3
        processes: a valid plan, and never longer than running it all on
        one process."""
        spec: dict = {}
        for i in range(100):
            before = {f"l{i - 1}": 1, f"r{i - 1}": 1} if i else {}
            spec[f"l{i}"] = (1 + i % 3, before)
            spec[f"r{i}"] = (2, before)
        graph = make_graph(spec, name)
        plan = heft(graph, 3)
        assert_valid_plan(graph, plan, 3)
        assert plan.makespan <= plan.total_cost


class TestPlanFromLanes:
    def test_times_follow_the_lanes(self, name):
        """a [2] --5--> b [1]. On two lanes b waits for a's result: starts
        at 2 + 5 = 7. On one lane it starts when a ends, at 2."""
        graph = make_graph({"a": (2, {}), "b": (1, {"a": 5})}, name)
        apart = plan_from_lanes(graph, lanes_of(name, "a", "b"))
        assert_valid_plan(graph, apart, 2)
        assert apart.entries[name("b")].start == 7
        together = plan_from_lanes(graph, lanes_of(name, "ab", ""))
        assert_valid_plan(graph, together, 2)
        assert together.makespan == 3

    def test_a_lane_runs_one_task_at_a_time(self, name):
        """a [2]  b [3], no edges, both on lane 0 in the order b, a: a
        starts when b ends, at 3."""
        graph = make_graph({"a": (2, {}), "b": (3, {})}, name)
        plan = plan_from_lanes(graph, lanes_of(name, "ba"))
        assert_valid_plan(graph, plan, 1)
        assert plan.lanes == lanes_of(name, "ba")
        assert plan.entries[name("a")].start == 3

    def test_replays_heft(self, name):
        """The docstring example: the lanes HEFT chose, timed again, give
        HEFT's plan (each of its tasks starts as early as it can)."""
        graph = make_graph(DIAMOND, name)
        plan = heft(graph, 2)
        replay = plan_from_lanes(graph, plan.lanes)
        assert_valid_plan(graph, replay, 2)
        assert replay == plan

    def test_done_tasks_are_skipped(self, name):
        """a [2] --5--> b [1] with a done: lanes may still list a; b starts
        at 0."""
        graph = make_graph({"a": (2, {}), "b": (1, {"a": 5})}, name)
        done = {name("a")}
        plan = plan_from_lanes(graph, lanes_of(name, "a", "b"), done=done)
        assert_valid_plan(graph, plan, 2, done=done)
        assert plan.lanes == lanes_of(name, "", "b")
        assert plan.entries[name("b")].start == 0

    def test_measured_costs(self, name):
        """a [2] --> b [1], both on lane 0, a measured at 4: b starts at 4."""
        graph = make_graph({"a": (2, {}), "b": (1, {"a": 5})}, name)
        costs = {name("a"): 4}
        plan = plan_from_lanes(graph, lanes_of(name, "ab"), costs=costs)
        assert_valid_plan(graph, plan, 1, costs=costs)
        assert plan.entries[name("b")].start == 4

    def test_task_listed_twice(self, name):
        """a [1]  b [1], lanes (a, b) and (a): a is listed twice."""
        graph = make_graph({"a": (1, {}), "b": (1, {})}, name)
        with pytest.raises(DefinitionError, match="listed twice") as info:
            plan_from_lanes(graph, lanes_of(name, "ab", "a"))
        assert repr(name("a")) in str(info.value)

    def test_task_missing(self, name):
        """a [1]  b [1], one lane (a): b is missing."""
        graph = make_graph({"a": (1, {}), "b": (1, {})}, name)
        with pytest.raises(DefinitionError, match="missing") as info:
            plan_from_lanes(graph, lanes_of(name, "a"))
        assert repr(name("b")) in str(info.value)

    def test_unknown_task(self, name):
        """a [1], one lane (a, zz): zz is not a task of the graph."""
        graph = make_graph({"a": (1, {})}, name)
        with pytest.raises(DefinitionError, match="not a task") as info:
            plan_from_lanes(graph, [[name("a"), name("zz")]])
        assert repr(name("zz")) in str(info.value)

    def test_no_lanes(self, name):
        """a [1] and no lane at all."""
        graph = make_graph({"a": (1, {})}, name)
        with pytest.raises(DefinitionError, match="at least one lane"):
            plan_from_lanes(graph, [])

    def test_dependency_after_its_dependent_in_a_lane(self, name):
        """a [1] --> b [1], one lane (b, a): b would wait forever for a."""
        graph = make_graph({"a": (1, {}), "b": (1, {"a": 0})}, name)
        with pytest.raises(DefinitionError, match="deadlock") as info:
            plan_from_lanes(graph, lanes_of(name, "ba"))
        assert repr(name("a")) in str(info.value)
        assert repr(name("b")) in str(info.value)

    def test_lanes_waiting_in_a_circle(self, name):
        """::

            a [1] --> b [1]        c [1] --> d [1]

        Lanes (d, a) and (b, c): d waits for c, which waits behind b, which
        waits for a, which waits behind d. All four are named.
        """
        spec = {"a": (1, {}), "b": (1, {"a": 0}), "c": (1, {}), "d": (1, {"c": 0})}
        graph = make_graph(spec, name)
        with pytest.raises(DefinitionError, match="deadlock") as info:
            plan_from_lanes(graph, lanes_of(name, "da", "bc"))
        for letter in "abcd":
            assert repr(name(letter)) in str(info.value)


class TestEarliestStarts:
    def test_communication_only_from_other_lanes(self):
        """Dependency 0 ends at 10 on lane 0 (communication 5), dependency 1
        at 12 on lane 1 (communication 1). Lane 0: max(10, 12 + 1) = 13;
        lane 1: max(12, 10 + 5) = 15; lane 2: max(15, 13) = 15."""
        starts = earliest_starts([(0, 5.0), (1, 1.0)], [0, 1], [10.0, 12.0], 3)
        assert starts == [13.0, 15.0, 15.0]

    def test_no_dependencies(self):
        """A task without dependencies may start at 0 everywhere."""
        assert earliest_starts([], [], [], 2) == [0.0, 0.0]


def _conflicts(start, duration, busy):
    finish = start + duration
    for s, f in busy:
        if max(start, s) < min(finish, f):
            return True
        if s == f and start < s < finish:  # a zero-cost task inside it
            return True
        if duration == 0 and s < start < f:  # it inside a busy interval
            return True
    return False


def _earliest_by_brute_force(busy, earliest, duration):
    candidates = sorted({earliest, *(f for _, f in busy if f >= earliest)})
    return next(t for t in candidates if not _conflicts(t, duration, busy))


def _assert_valid_gaps(lane, busy):
    """The lane's blocks hold its idle gaps, sorted and non-empty, each
    block at most twice the (patched) block size, with true summaries."""
    starts = [s for block in lane.starts for s in block]
    ends = [e for block in lane.ends for e in block]
    assert all(s < e for s, e in zip(starts, ends, strict=True))
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False))
    assert all(0 < len(block) <= 2 for block in lane.starts)
    for block, b_starts in enumerate(lane.starts):
        b_ends = lane.ends[block]
        lengths = [e - s for s, e in zip(b_starts, b_ends, strict=True)]
        assert lane.longest[block] == max(lengths)
        assert lane.last_ends[block] == b_ends[-1]
    assert lane.end == max((f for _, f in busy), default=0.0)
    for s, e in zip(starts, ends, strict=True):
        assert not any(max(s, bs) < min(e, bf) for bs, bf in busy)


class TestLane:
    def test_gaps(self):
        """Busy over [0, 2], [5, 6] and [8, 9]::

            time  0 1 2 3 4 5 6 7 8 9
                  a a . . . b . . c

        3 units fit at 2; 4 units only after c, at 9; 1 unit from 6 fits
        at 6; 2 units from 7 only at 9."""
        lane = plan_module._Lane()
        for earliest, duration in [(0, 2), (5, 1), (8, 1)]:
            start, block, k = lane.find_slot(earliest, duration)
            assert start == earliest
            lane.insert_slot(start, duration, block, k)
        assert lane.find_slot(0, 3)[0] == 2
        assert lane.find_slot(0, 4)[0] == 9
        assert lane.find_slot(6, 1)[0] == 6
        assert lane.find_slot(7, 2)[0] == 9

    @settings(max_examples=100, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(st.integers(0, 40), st.sampled_from([0, 0.5, 1, 2, 3, 7])),
            max_size=60,
        )
    )
    def test_matches_brute_force(self, steps):
        """Random placements, with blocks of at most 2 gaps so that they
        split and empty often: a task of positive cost goes exactly where a brute-force
        search puts it; one of zero cost never earlier, and never inside a
        busy interval."""
        with mock.patch.object(plan_module, "_BLOCK", 1):
            lane = plan_module._Lane()
            busy: list[tuple[float, float]] = []
            for earliest, duration in steps:
                start, block, k = lane.find_slot(earliest, duration)
                expected = _earliest_by_brute_force(busy, earliest, duration)
                assert not _conflicts(start, duration, busy)
                if duration:
                    assert start == expected
                else:
                    assert start >= expected
                lane.insert_slot(start, duration, block, k)
                busy.append((start, start + duration))
                _assert_valid_gaps(lane, busy)


@st.composite
def random_cases(draw):
    """A random DAG spec over n0, n1, ... (each task may depend on any
    earlier one), added in a random order, with a number of processes,
    done tasks, measured costs and a relabelling."""
    n = draw(st.integers(0, 12))
    costs = st.sampled_from([0, 0.5, 1, 2, 3, 10])
    comms = st.sampled_from([0, 0.25, 1, 4])
    spec = {}
    for i in range(n):
        before = draw(st.dictionaries(st.integers(0, i - 1), comms)) if i else {}
        spec[f"n{i}"] = (draw(costs), {f"n{j}": c for j, c in before.items()})
    order = draw(st.permutations(sorted(spec)))
    spec = {node: spec[node] for node in order}
    nodes = st.sampled_from(sorted(spec) or ["n0"])  # n0 unused when no task
    done = draw(st.sets(nodes, max_size=4)) & set(spec)
    measured = draw(st.dictionaries(nodes, st.sampled_from([0, 1.5, 6]), max_size=4))
    n_processes = draw(st.integers(1, 4))
    relabelling = draw(st.sampled_from(sorted(RELABELLINGS)))
    return spec, n_processes, done, measured, relabelling


class TestRandomGraphs:
    @settings(max_examples=100, deadline=None)
    @given(case=random_cases())
    def test_plans_are_valid(self, case):
        """Any DAG: HEFT's plan keeps every invariant, does not depend on
        the names, and timing its lanes again never starts a task later."""
        spec, n_processes, done, measured, relabelling = case
        name = RELABELLINGS[relabelling]
        graph = make_graph(spec, name)
        costs = {name(x): c for x, c in measured.items()}
        finished = {name(x) for x in done}
        plan = heft(graph, n_processes, costs=costs, done=finished)
        assert_valid_plan(graph, plan, n_processes, costs=costs, done=finished)

        reference = heft(make_graph(spec), n_processes, costs=measured, done=done)
        assert relabel_plan(reference, name) == relabel_plan(plan, lambda x: x)

        replay = plan_from_lanes(graph, plan.lanes, costs=costs, done=finished)
        assert_valid_plan(graph, replay, n_processes, costs=costs, done=finished)
        assert replay.lanes == plan.lanes
        for node, entry in replay.entries.items():
            assert entry.start <= plan.entries[node].start


def test_dependency_objects_in_nested_arguments(name):
    """A graph built by hand, its dependency nested in a dict: the planner
    reads the edges, whatever the shape of the arguments::

        x [1] --2--> y [1]

    Both run on lane 0, y after x.
    """
    graph = TaskGraph()
    graph.add(name("x"), abs, (-1,))
    graph.add(name("y"), sorted, ({"key": [Dependency(name("x"), cost=2)]},))
    plan = heft(graph, 2)
    assert_valid_plan(graph, plan, 2)
    assert plan.lanes == lanes_of(name, "xy", "")
