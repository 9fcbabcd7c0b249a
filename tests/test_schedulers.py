"""Admission schedulers: ``launchable`` and ``validate`` on plain dicts,
without threads or processes; then whole runs of task graphs.

In the runs, every task appends ``start <name> <time>`` and
``end <name> <time>`` lines to a log opened with ``O_APPEND`` (lines written
by concurrent workers never mix), and what ran at once is read back from
those timestamps. Tasks are closures, so they travel to loky's workers by
value. Every wait is bounded by ``WAIT``; no assertion is about wall-clock
durations.
"""

from __future__ import annotations

import math
import os
import random
import time

import psutil
import pytest
from conftest import WAIT, run_to_end
from hypothesis import given, settings
from hypothesis import strategies as st

from alma_dag import DefinitionError, Dispatcher, RunState, TaskGraph
from alma_dag.schedulers import (
    BaseScheduler,
    LaxistScheduler,
    MaxMemoryScheduler,
    MaxThreadsScheduler,
)


def sets(*memories: float) -> list[dict]:
    """Instruction dicts ``s0``, ``s1``, … with these memories."""
    return [{"name": f"s{i}", "memory": m} for i, m in enumerate(memories)]


def names(instructions: list[dict]) -> list[str]:
    return [i["name"] for i in instructions]


def assert_split(pending, split) -> None:
    """The scheduler's contract: the same dicts, in order, each once."""
    now, later = split
    assert [id(i) for i in now + later] == [id(i) for i in pending]


# -- launchable() and validate(), without processes ------------------------------


class TestBaseScheduler:
    def test_is_abstract(self):
        with pytest.raises(TypeError, match="launchable"):
            BaseScheduler()

    def test_validate_accepts_everything_by_default(self):
        class Everything(BaseScheduler):
            def launchable(self, pending_instructions, workers, report):
                return list(pending_instructions), []

        assert Everything().validate({"name": "a", "memory": 10**9}) is None


class TestLaxistScheduler:
    def test_everything_is_launchable(self):
        pending = sets(10, 20, 30)
        split = LaxistScheduler().launchable(pending, sets(1, 2, 3, 4), {})
        assert_split(pending, split)
        assert split[1] == []

    def test_nothing_pending(self):
        assert LaxistScheduler().launchable([], [], {}) == ([], [])


class TestMaxThreadsScheduler:
    @pytest.mark.parametrize("running", [0, 1, 2, 3])
    def test_first_in_first_out_up_to_max(self, running):
        pending = sets(0, 0, 0)
        split = MaxThreadsScheduler(2).launchable(pending, sets(*[0] * running), {})
        assert_split(pending, split)
        launched = max(0, 2 - running)
        assert names(split[0]) == names(pending)[:launched]

    def test_default_is_two(self):
        assert MaxThreadsScheduler().max_threads == 2

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
    def test_max_threads_must_be_a_positive_integer(self, bad):
        with pytest.raises(DefinitionError, match="max_threads") as info:
            MaxThreadsScheduler(bad)
        assert info.value.field == "max_threads"


class TestMaxMemoryScheduler:
    def test_budget(self):
        scheduler = MaxMemoryScheduler(0.5, total_system_memory=4096)
        assert scheduler.budget == 2048

    def test_total_defaults_to_this_machine(self):
        scheduler = MaxMemoryScheduler()
        total = psutil.virtual_memory().total / 2**20
        assert scheduler.total_system_memory == total
        assert scheduler.budget == pytest.approx(0.75 * total)

    def test_sets_fitting_the_budget_exactly_start(self):
        """Budget 500: 100 running, then 150 + 250 end exactly at 500."""
        scheduler = MaxMemoryScheduler(0.5, 1000)
        pending = sets(150, 250, 1)
        split = scheduler.launchable(pending, sets(100), {})
        assert_split(pending, split)
        assert names(split[0]) == ["s0", "s1"]

    def test_a_set_of_the_whole_budget_starts_alone(self):
        scheduler = MaxMemoryScheduler(0.5, 1000)
        whole = sets(500)
        scheduler.validate(whole[0])
        assert scheduler.launchable(whole, [], {}) == (whole, [])
        assert scheduler.launchable(whole, sets(1), {}) == ([], whole)

    def test_rounding_does_not_refuse_a_set(self):
        """0.29 * 100 is 28.999999999999996: a 29 MiB set still fits."""
        scheduler = MaxMemoryScheduler(0.29, 100)
        assert scheduler.budget < 29
        scheduler.validate({"name": "a", "memory": 29})
        assert names(scheduler.launchable(sets(29), [], {})[0]) == ["s0"]
        with pytest.raises(DefinitionError):
            scheduler.validate({"name": "a", "memory": 29.001})

    def test_missing_memory_counts_as_zero(self):
        scheduler = MaxMemoryScheduler(0.5, 1000)
        pending = [{"name": "a"}, {"name": "b"}]
        assert scheduler.launchable(pending, sets(500), {}) == (pending, [])

    def test_no_small_set_overtakes_a_large_one(self):
        """Budget 500, 400 running: the 300 at the head waits, and the 10s
        behind it, which would fit, wait too -- until the 400 finishes."""
        scheduler = MaxMemoryScheduler(0.5, 1000)
        pending = sets(300, 10, 10)
        split = scheduler.launchable(pending, sets(400), {})
        assert_split(pending, split)
        assert split == ([], pending)
        now, later = scheduler.launchable(pending, [], {})
        assert names(now) == ["s0", "s1", "s2"] and later == []

    def test_a_stream_of_small_sets_does_not_starve_a_large_one(self):
        """Small sets keep arriving behind a large one; as soon as the small
        ones running drain, the large one starts, before any newcomer."""
        scheduler = MaxMemoryScheduler(1.0, 100)
        large = {"name": "large", "memory": 80}
        running = [{"name": "small-0", "memory": 30}]
        pending = [large]
        for i in range(1, 20):
            pending.append({"name": f"small-{i}", "memory": 30})
            now, pending = scheduler.launchable(pending, running, {})
            running = running[1:] + now  # the oldest running set finishes
            if large in running:
                break
        assert large in running
        assert [s for s in running if s is not large] == []

    def test_an_impossible_set_is_refused_rather_than_waiting_forever(self):
        """launchable() on a set never validated: with nothing running, it
        could never start, so it raises instead of returning ([], [set])."""
        scheduler = MaxMemoryScheduler(0.5, 1000)
        with pytest.raises(DefinitionError, match="memory 600 MiB"):
            scheduler.launchable(sets(600, 1), [], {})

    def test_validate_names_memory_the_set_and_the_budget(self):
        scheduler = MaxMemoryScheduler(0.5, 1000)
        with pytest.raises(DefinitionError) as info:
            scheduler.validate({"name": "big", "memory": 600})
        message = str(info.value)
        assert info.value.field == "memory"
        for words in ("'big'", "memory 600 MiB", "budget of 500 MiB", "0.5 of 1000"):
            assert words in message

    @pytest.mark.parametrize("bad", [-1, math.nan, math.inf, True, "1", None])
    def test_memory_must_be_a_non_negative_number(self, bad):
        scheduler = MaxMemoryScheduler(0.5, 1000)
        with pytest.raises(DefinitionError, match="non-negative") as info:
            scheduler.validate({"name": "a", "memory": bad})
        assert info.value.field == "memory"

    @pytest.mark.parametrize("bad", [0, -0.5, 1.5, math.nan, True, "0.5", None])
    def test_percentage_must_be_in_0_1(self, bad):
        with pytest.raises(DefinitionError, match="max_memory_percentage") as info:
            MaxMemoryScheduler(bad, 1000)
        assert info.value.field == "max_memory_percentage"

    @pytest.mark.parametrize("bad", [0, -1, math.inf, "4096", True, 10**400])
    def test_total_must_be_a_positive_number(self, bad):
        with pytest.raises(DefinitionError, match="total_system_memory") as info:
            MaxMemoryScheduler(0.5, bad)
        assert info.value.field == "total_system_memory"

    @settings(max_examples=60, deadline=None)
    @given(
        memories=st.lists(st.integers(0, 100), min_size=1, max_size=30),
        seed=st.integers(0, 2**32 - 1),
    )
    def test_simulated_run_keeps_budget_and_order(self, memories, seed):
        """Any sizes, sets finishing in any order: the running sets never
        hold more than the budget, sets start in submission order, and
        something starts whenever nothing runs."""
        chosen = random.Random(seed)
        scheduler = MaxMemoryScheduler(1.0, 100)
        pending, running, started = sets(*memories), [], []
        while pending or running:
            now, pending = scheduler.launchable(pending, running, {})
            assert running or now, "nothing runs and nothing starts"
            running += now
            started += now
            assert sum(s["memory"] for s in running) <= scheduler.budget
            running.pop(chosen.randrange(len(running)))
        assert names(started) == [f"s{i}" for i in range(len(memories))]


# -- whole runs -------------------------------------------------------------------


def timed(log_path: str, seconds: float = 0.05):
    """A task logging its start and end times around a short sleep."""

    def task(name):
        def write(kind):
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{kind} {name} {time.time()!r}\n".encode())
            finally:
                os.close(fd)

        write("start")
        time.sleep(seconds)
        write("end")
        return name

    return task


def rendezvous(log_path: str, partner: str):
    """A task that logs its start, then waits (bounded) until ``partner``
    has started too: it finishes only if both ran at the same time."""

    def task(name):
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"start {name} {time.time()!r}\n".encode())
        finally:
            os.close(fd)
        deadline = time.monotonic() + WAIT
        while f"start {partner} " not in open(log_path).read():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never ran beside {partner}")
            time.sleep(0.01)
        return name

    return task


def intervals(log_path) -> dict[str, tuple[float, float]]:
    """Each task's (start, end) times, from the log."""
    found: dict[str, list[float]] = {}
    for line in log_path.read_text().splitlines():
        kind, name, when = line.split()
        found.setdefault(name, [0.0, 0.0])[kind == "end"] = float(when)
    return {name: (start, end) for name, (start, end) in found.items()}


def most_at_once(spans: dict[str, tuple[float, float]], weight) -> float:
    """The largest total ``weight(name)`` of tasks running at one moment."""
    events = sorted(
        (when, starts, name)
        for name, (start, end) in spans.items()
        for when, starts in ((start, 1), (end, 0))
    )  # at equal times, an end comes first
    total = most = 0.0
    for _, starts, name in events:
        total += weight(name) if starts else -weight(name)
        most = max(most, total)
    return most


def test_max_threads_one_never_overlaps_on_two_workers(tmp_path):
    log = tmp_path / "times.log"
    task = timed(str(log))
    g = TaskGraph()
    for name in "abcd":
        g.add(name, task, (name,))
    run = run_to_end(Dispatcher(g, 2, "loky", scheduler=MaxThreadsScheduler(1)))
    assert run.state is RunState.FINISHED
    spans = intervals(log)
    assert sorted(spans) == list("abcd")
    assert most_at_once(spans, lambda name: 1) == 1


def test_max_memory_budget_is_never_exceeded(tmp_path):
    """Budget 600 MiB on three workers; the hints allow two or three of
    the small tasks at once, and the 600 MiB one only alone."""
    log = tmp_path / "times.log"
    task = timed(str(log))
    memory = {"a": 300, "b": 300, "c": 200, "d": 400, "e": 600, "f": 100, "g": 0}
    g = TaskGraph()
    for name, mib in memory.items():
        g.add(name, task, (name,), memory=mib)
    scheduler = MaxMemoryScheduler(0.6, total_system_memory=1000)
    run = run_to_end(Dispatcher(g, 3, "loky", scheduler=scheduler))
    assert run.state is RunState.FINISHED
    spans = intervals(log)
    assert sorted(spans) == sorted(memory)
    assert most_at_once(spans, memory.get) <= 600


def test_sets_filling_the_budget_exactly_run_together(tmp_path):
    """a and b declare 300 MiB each, the whole 600 MiB budget: each waits
    for the other to start, so the run finishes only if both ran at once."""
    log = tmp_path / "times.log"
    g = TaskGraph()
    g.add("a", rendezvous(str(log), "b"), ("a",), memory=300)
    g.add("b", rendezvous(str(log), "a"), ("b",), memory=300)
    scheduler = MaxMemoryScheduler(0.6, total_system_memory=1000)
    run = run_to_end(Dispatcher(g, 2, "loky", scheduler=scheduler))
    assert run.state is RunState.FINISHED, run.results
    assert run.results == {"a": "a", "b": "b"}


def test_an_over_budget_task_is_refused_before_the_run(tmp_path):
    marker = tmp_path / "ran"
    g = TaskGraph()
    g.add("small", marker.touch, memory=100)
    g.add("huge", marker.touch, memory=600)
    scheduler = MaxMemoryScheduler(0.5, total_system_memory=1000)
    with pytest.raises(DefinitionError) as info:
        Dispatcher(g, 2, "loky", scheduler=scheduler)
    assert info.value.field == "memory"
    assert "'huge'" in str(info.value) and "600 MiB" in str(info.value)
    assert not marker.exists()


class ExclusiveGroups(BaseScheduler):
    """A custom scheduler: sets of one group (the name before ``-``) never
    run together; it records what it was asked."""

    def __init__(self):
        self.calls = []

    def launchable(self, pending_instructions, workers, report):
        self.calls.append((list(pending_instructions), list(workers), dict(report)))
        busy = {w["name"].split("-")[0] for w in workers}
        now, later = [], []
        for instructions in pending_instructions:
            group = instructions["name"].split("-")[0]
            (later if group in busy else now).append(instructions)
            busy.add(group)
        return now, later


def test_a_custom_scheduler(tmp_path):
    log = tmp_path / "times.log"
    task = timed(str(log))
    g = TaskGraph()
    for name in ("x-1", "x-2", "x-3", "y-1", "y-2"):
        g.add(name, task, (name,), memory=7)
    scheduler = ExclusiveGroups()
    run = run_to_end(Dispatcher(g, 3, "loky", scheduler=scheduler))
    assert run.state is RunState.FINISHED
    spans = intervals(log)
    for group in "xy":
        alike = {n: span for n, span in spans.items() if n.startswith(group)}
        assert most_at_once(alike, lambda name: 1) == 1
    asked = [i for pending, _, _ in scheduler.calls for i in pending]
    assert {i["name"] for i in asked} == set(g)
    assert all(i["memory"] == 7 for i in asked)
    # Asked again as sets finished: later calls see them in the report.
    assert any(report for _, _, report in scheduler.calls)
    for _, _, report in scheduler.calls:
        assert all(report[name] == name for name in report)
