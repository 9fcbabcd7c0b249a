"""The dispatcher: ledger bookkeeping without threads, then whole runs."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from conftest import WAIT

import alma_dag as ad
from alma_dag import Dependency, Dispatcher, Err, RunState, TaskGraph
from alma_dag.backends import Backend, Outcome, execute_batch
from alma_dag.dispatch import (
    MAX_BATCH_TASKS,
    claim_batch,
    finish,
    is_complete,
    lane_head,
    release,
    start_ledger,
)
from alma_dag.plan import plan_from_lanes


def chain(n, function=lambda x: x + 1):
    g = TaskGraph()
    prev = g.add(0, function, (0,))
    for i in range(1, n):
        prev = g.add(i, function, (prev,))
    return g


def ledger_for(graph, lanes, results=()):
    plan = plan_from_lanes(graph, lanes, done=dict(results))
    return start_ledger(graph, plan, dict(results))


class TestClaimBatch:
    def test_chain_in_one_batch_when_cheap(self):
        """0 -> 1 -> 2 -> 3 on one lane: one batch holds the whole chain."""
        g = chain(4)
        ledger = ledger_for(g, [[0, 1, 2, 3]])
        assert claim_batch(ledger, 0, lambda n: 0.0) == [0, 1, 2, 3]
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2) == []  # none left

    def test_unknown_durations_run_alone(self):
        g = chain(3)
        ledger = ledger_for(g, [[0, 1, 2]])
        assert claim_batch(ledger, 0, lambda n: float("inf")) == [0]

    def test_budget_limits_batch(self):
        g = chain(10)
        ledger = ledger_for(g, [list(range(10))])
        assert claim_batch(ledger, 0, lambda n: 1.0, budget=3.0) == [0, 1, 2]

    def test_batch_stops_at_cross_lane_dependency(self):
        """
        lane 0: a -> c      c needs b, which lane 1 runs
        lane 1: b ---^
        Lane 0's batch is [a] only; after b finishes, c is claimable.
        """
        g = TaskGraph()
        a = g.add("a", abs, (1,))
        b = g.add("b", abs, (2,))
        g.add("c", max, (a, b))
        ledger = ledger_for(g, [["a", "c"], ["b"]])
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["a"]
        assert claim_batch(ledger, 1, lambda n: 0.0) == ["b"]
        finish(ledger, "a", 1)
        release(ledger, 0, ["a"])
        assert claim_batch(ledger, 0, lambda n: 0.0) == []
        finish(ledger, "b", 2)
        release(ledger, 1, ["b"])
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["c"]

    def test_timeout_tasks_run_alone(self):
        g = TaskGraph()
        g.add("a", abs, (1,))
        g.add("b", abs, (1,), timeout=5)
        g.add("c", abs, (1,))
        ledger = ledger_for(g, [["a", "b", "c"]])
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["a"]
        # b runs alone: never prefetched behind a, never without a free worker
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2) == []
        release(ledger, 0, ["a"])
        finish(ledger, "a", 1)
        assert claim_batch(ledger, 0, lambda n: 0.0, free_worker=False) == []
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["b"]
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2) == ["c"]

    def test_prefetch_takes_only_ready_tasks(self):
        """
        lane 0: a  b  c      b needs a; c needs nothing
        With a in flight, a prefetch skips b (not ready) and stops there,
        keeping the lane's order.
        """
        g = TaskGraph()
        a = g.add("a", abs, (1,))
        g.add("b", abs, (a,))
        g.add("c", abs, (1,))
        ledger = ledger_for(g, [["a", "b", "c"]])
        assert claim_batch(ledger, 0, lambda n: float("inf")) == ["a"]
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2) == []
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=1) == []

    def test_chained_claims_take_tasks_whose_dependencies_are_in_flight(self):
        """
        lane 0: a -> c      with a backend that chains, c goes out while a
        lane 1: b ---^      and b run, and d after c in the same batch
        """
        g = TaskGraph()
        a = g.add("a", abs, (1,))
        b = g.add("b", abs, (2,))
        c = g.add("c", max, (a, b))
        g.add("d", abs, (c,))
        ledger = ledger_for(g, [["a", "c", "d"], ["b"]])
        assert claim_batch(ledger, 0, lambda n: float("inf")) == ["a"]
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2) == []
        assert claim_batch(ledger, 1, lambda n: 0.0, chained=True) == ["b"]
        assert claim_batch(ledger, 0, lambda n: 0.0, depth=2, chained=True) == [
            "c",
            "d",
        ]

    def test_nothing_is_chained_to_a_task_that_runs_alone(self):
        """A dependency with retries may fail and run again, so nothing
        waits on its first attempt; a task with a timeout is not chained
        either (its clock must start when it does)."""
        g = TaskGraph()
        a = g.add("a", abs, (1,), retries=1)
        g.add("b", abs, (a,))
        c = g.add("c", abs, (1,))
        g.add("d", abs, (c,), timeout=5)
        ledger = ledger_for(g, [["a", "c"], ["b", "d"]])
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["a"]
        assert claim_batch(ledger, 1, lambda n: 0.0, chained=True) == []
        release(ledger, 0, ["a"])
        finish(ledger, "a", 1)
        assert claim_batch(ledger, 0, lambda n: 0.0) == ["c"]
        assert claim_batch(ledger, 1, lambda n: 0.0, chained=True) == ["b"]
        release(ledger, 1, ["b"])
        finish(ledger, "b", 1)
        assert claim_batch(ledger, 1, lambda n: 0.0, chained=True) == []

    def test_max_batch(self):
        g = TaskGraph()
        for i in range(MAX_BATCH_TASKS + 5):
            g.add(i, abs, (i,))
        ledger = ledger_for(g, [list(g)])
        assert len(claim_batch(ledger, 0, lambda n: 0.0)) == MAX_BATCH_TASKS


class TestFinish:
    def test_failure_cascades_downstream(self):
        """
        a -> b -> c      a fails: b and c get DependencyError naming a;
        d                d is untouched.
        """
        g = chain(3)
        g.add("d", abs, (1,))
        ledger = ledger_for(g, [[0, 1, 2], ["d"]])
        finished = finish(ledger, 0, Err(ValueError("boom")))
        assert finished == [0, 1, 2]
        for node in (1, 2):
            assert ledger.results[node].err_type is ad.DependencyError
            assert ledger.results[node].exception.dependency == 0
        assert "d" not in ledger.results
        assert lane_head(ledger, 0) is None

    def test_long_chain_cascade_has_no_recursion_limit(self):
        g = chain(5000)
        ledger = ledger_for(g, [list(range(5000))])
        assert len(finish(ledger, 0, Err(ValueError()))) == 5000
        assert is_complete(ledger)

    def test_release_puts_unfinished_back(self):
        g = chain(4)
        ledger = ledger_for(g, [[0, 1, 2, 3]])
        batch = claim_batch(ledger, 0, lambda n: 0.0)
        assert lane_head(ledger, 0) is None
        release(ledger, 0, batch)
        assert claim_batch(ledger, 0, lambda n: 0.0) == batch
        finish(ledger, 0, 1)
        release(ledger, 0, batch)
        assert claim_batch(ledger, 0, lambda n: 0.0) == [1, 2, 3]

    def test_results_given_are_done(self):
        g = chain(3)
        ledger = ledger_for(g, [[1, 2]], results={0: 1})
        assert claim_batch(ledger, 0, lambda n: 0.0) == [1, 2]


class TestRun:
    def test_inline_chain(self):
        d = Dispatcher(chain(50), workers=2, backend="inline")
        assert d.run() is RunState.FINISHED
        assert d.results[49] == 50

    def test_background_start_and_wait(self):
        d = Dispatcher(chain(10), workers=1, backend="inline").start()
        assert d.wait(WAIT)
        assert d.state is RunState.FINISHED
        assert d.progress().done == 10

    def test_failed_state_and_retry_on_next_start(self, tmp_path):
        flag = tmp_path / "ok"

        def flaky():
            if not flag.exists():
                raise RuntimeError("not yet")
            return "fine"

        g = TaskGraph()
        a = g.add("a", flaky)
        g.add("b", str.upper, (a,))
        d = Dispatcher(g, workers=1, backend="inline")
        assert d.run() is RunState.FAILED
        assert d.results["b"].err_type is ad.DependencyError
        flag.touch()
        assert d.run() is RunState.FINISHED
        assert d.results == {"a": "fine", "b": "FINE"}

    def test_retries(self, tmp_path):
        counter = tmp_path / "count"

        def twice_failing():
            with open(counter, "a") as f:
                f.write("x")
            if len(counter.read_text()) < 3:
                raise RuntimeError("again")
            return len(counter.read_text())

        g = TaskGraph()
        g.add("a", twice_failing, retries=2)
        d = Dispatcher(g, workers=1, backend="inline")
        assert d.run() is RunState.FINISHED
        assert d.results["a"] == 3

    def test_finished_run_started_again_does_nothing(self):
        calls = []
        g = TaskGraph()
        g.add("a", calls.append, (1,))
        d = Dispatcher(g, workers=1, backend="inline")
        d.run()
        d.run()
        assert calls == [1]


class TestStateMachine:
    def test_invalid_transition_names_states(self):
        d = Dispatcher(chain(2), workers=1, backend="inline")
        with pytest.raises(ad.InvalidStateError, match="pending to paused"):
            d.pause()
        with pytest.raises(ad.InvalidStateError, match="only a paused run.*start"):
            d.resume()

    def test_stop_before_start(self):
        d = Dispatcher(chain(2), workers=1, backend="inline")
        assert d.stop()
        assert d.state is RunState.STOPPED

    def test_pause_resume(self):
        gate = threading.Event()
        started = []
        g = TaskGraph()
        a = g.add("a", lambda: (started.append("a"), gate.wait(WAIT)))
        g.add("b", lambda _: started.append("b"), (a,))
        d = Dispatcher(g, workers=1, backend="inline").start()
        deadline = time.monotonic() + WAIT
        while not started and time.monotonic() < deadline:
            time.sleep(0.001)
        d.pause()
        assert d.state is RunState.PAUSED
        gate.set()
        time.sleep(0.1)
        assert started == ["a"]  # b did not start while paused
        d.resume()
        assert d.wait(WAIT)
        assert started == ["a", "b"]

    def test_stop_then_start_continues(self, tmp_path):
        import os

        log = tmp_path / "log"

        def work(i):
            with open(log, "a") as f:
                f.write(f"{i}\n")
            time.sleep(0.05)
            return i

        g = TaskGraph()
        for i in range(20):
            g.add(i, work, (i,))
        d = Dispatcher(g, workers=2, backend="loky").start()
        deadline = time.monotonic() + WAIT
        while d.progress().done < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.stop(WAIT)
        assert d.state is RunState.STOPPED
        assert d.progress().running == 0
        done_before = set(d.results)
        assert 3 <= len(done_before) < 20
        d.start()
        assert d.wait(WAIT)
        assert d.results == {i: i for i in range(20)}
        runs = [int(x) for x in log.read_text().split()]
        assert set(runs) == set(range(20))
        assert all(runs.count(i) == 1 for i in done_before)
        assert os.path.exists(log)


class _ReportsBackwards(Backend):
    """A backend that chains, and reports the batches of each round in the
    reverse order: a chained batch comes back before the one it ran after."""

    name = "backwards"
    chains = True

    def open(self, n_workers, report, store=None) -> None:
        super().open(n_workers, report, store)
        self.pending: list = []
        self.chained: list = []

    def submit(self, batch) -> None:
        self.pending.append(batch)
        self.chained += [node for node, _ in batch.items if batch.after]

    def drive(self, timeout) -> bool:
        if not self.pending:
            return False
        results, outcomes = {}, []
        for batch in self.pending:
            ran = execute_batch(batch.items, {**results, **batch.inputs})
            for (node, _), (result, _, _) in zip(batch.items, ran, strict=True):
                results[node] = result
            outcomes.append(Outcome(batch.id, ran))
        self.pending.clear()
        for outcome in reversed(outcomes):
            self._report(outcome)
        return True

    def kill(self) -> None:
        self.pending.clear()


class TestChaining:
    def test_outcomes_are_applied_after_those_of_batches_chained_to(self, tmp_path):
        g = TaskGraph()
        a = g.add("a", abs, (-2,))
        g.add("b", lambda x: x * 10, (a,))
        finished = []

        class Order(ad.Callbacks):
            def on_task_done(self, node, result):
                finished.append(node)

        backend = _ReportsBackwards()
        with ad.Store(tmp_path / "run.alma") as store:
            run = Dispatcher(
                g,
                2,
                backend,
                store=store,
                plan=plan_from_lanes(g, [["a"], ["b"]]),
                callbacks=[Order()],
            )
            assert run.run() is RunState.FINISHED
            assert run.results == {"a": 2, "b": 20}
        assert backend.chained == ["b"]
        assert finished == ["a", "b"]


class TestCallbacks:
    def test_hooks_called(self):
        events = []

        class Recorder(ad.Callbacks):
            def on_start(self, dispatcher):
                events.append("start")

            def on_task_start(self, node):
                events.append(("begin", node))

            def on_task_done(self, node, result):
                events.append(("done", node, result))

            def on_finish(self, failed):
                events.append(("finish", failed))

        Dispatcher(chain(2), workers=1, backend="inline", callbacks=[Recorder()]).run()
        assert events[0] == "start" and events[-1] == ("finish", False)
        assert ("done", 1, 2) in events
        assert events.index(("begin", 1)) < events.index(("done", 1, 2))

    def test_hook_exception_is_logged(self, caplog):
        class Broken(ad.Callbacks):
            def on_task_done(self, node, result):
                raise ValueError("hook bug")

        with caplog.at_level(logging.ERROR, logger="alma_dag.dispatch"):
            d = Dispatcher(chain(2), workers=1, backend="inline", callbacks=[Broken()])
            assert d.run() is RunState.FINISHED
        assert "on_task_done" in caplog.text


class TestValidation:
    @pytest.mark.parametrize("workers", [0, -1, 1.5, True])
    def test_bad_workers(self, workers):
        with pytest.raises(ad.DefinitionError, match="workers"):
            Dispatcher(chain(1), workers=workers)

    def test_bad_backend(self):
        with pytest.raises(ad.DefinitionError, match="unknown backend 'nope'"):
            Dispatcher(chain(1), backend="nope")

    def test_not_a_graph(self):
        with pytest.raises(ad.DefinitionError, match="TaskGraph"):
            Dispatcher({"a": (abs, 1, 1)})

    def test_invalid_graph(self):
        g = TaskGraph()
        g.add("a", abs, (Dependency("zz"),))
        with pytest.raises(ad.DefinitionError, match="unknown task 'zz'"):
            Dispatcher(g)

    def test_progress_counts(self):
        g = chain(5)
        g.add("boom", lambda: 1 / 0)
        d = Dispatcher(g, workers=1, backend="inline")
        d.run()
        p = d.progress()
        assert (p.total, p.done, p.failed, p.running, p.pending) == (6, 5, 1, 0, 0)
        assert p.state is RunState.FAILED


def diamond_and_more(g=None):
    """
    a ──► b ──► d ──► e        f alone; g waits for a without its result
      └─► c ──┘                (after=); e takes a too.
    """
    g = TaskGraph()
    a = g.add("a", abs, (-2,))
    b = g.add("b", pow, (a, 2))
    c = g.add("c", pow, (a, 3))
    d = g.add("d", lambda x, y: x + y, (b, c))
    g.add("e", lambda x, y: x * y, (d, a))
    g.add("f", abs, (-7,))
    g.add("g", abs, (-1,), after=["a"])
    expected = {"a": 2, "b": 4, "c": 8, "d": 12, "e": 24, "f": 7, "g": 1}
    return g, expected


class InputsInMemory(ad.Callbacks):
    """Checks, each time a task finishes, that every finished input of an
    unfinished task is still in the dispatcher's memory (a callback's
    exception is only logged: the misses are collected instead)."""

    def __init__(self):
        self.dispatcher = None
        self.checks = 0
        self.missed = []

    def on_start(self, dispatcher):
        self.dispatcher = dispatcher

    def on_task_done(self, node, result):
        ledger = self.dispatcher._ledger
        for waiting in ledger.waiting:
            for needed in ledger.graph.task(waiting).inputs:
                if needed not in ledger.waiting:
                    self.checks += 1
                    if needed not in ledger.results:
                        self.missed.append((waiting, needed))


class TestLettingGo:
    """With a store, a committed result leaves memory once no unfinished
    task needs it; reading it loads it from the store."""

    @pytest.mark.parametrize("workers", [1, 3])
    def test_committed_results_leave_memory_yet_read_back(self, tmp_path, workers):
        g, expected = diamond_and_more()
        watch = InputsInMemory()
        with ad.Store(tmp_path / "run.alma") as store:
            d = Dispatcher(
                g, workers=workers, backend="inline", store=store, callbacks=[watch]
            )
            assert d.run() is RunState.FINISHED
            ledger = d._ledger
            # nothing kept per task: results, attempts, timings all let go
            assert ledger.results == {}
            assert ledger.attempts == ledger.consumers == ledger.input_sets == {}
            assert d._timings == {}
            # yet everything reads back, from the store, every time
            assert d.results == expected
            assert d.results == expected
            assert ledger.results == {}
            assert set(d.timings) == set(expected) == set(store.timings())
            assert "e" in d._results and d._results["e"] == 24
            assert len(d._results) == len(expected) and dict(d._results) == expected
            p = d.progress()
            assert (p.done, p.failed, p.pending) == (7, 0, 0)
            assert p.eta is not None
            assert repr(d) == "<Dispatcher finished: 7/7 tasks>"
        assert watch.checks > 0 and watch.missed == []

    def test_without_store_nothing_is_let_go(self):
        g, expected = diamond_and_more()
        d = Dispatcher(g, workers=2, backend="inline")
        assert d.run() is RunState.FINISHED
        assert d._ledger.results == expected
        assert d.results == expected
        assert set(d.timings) == set(expected)

    def test_a_retried_consumer_still_receives_its_input(self, tmp_path):
        """b fails once and runs again: a, its input, stays in memory until
        b is finished (the inline backend runs b in the dispatcher's own
        thread, so b can look)."""
        seen = []

        def once_failing(x):
            seen.append("a" in d._ledger.results)
            if len(seen) == 1:
                raise RuntimeError("first attempt")
            return x + 1

        g = TaskGraph()
        a = g.add("a", abs, (-1,))
        g.add("b", once_failing, (a,), retries=1)
        with ad.Store(tmp_path / "run.alma") as store:
            d = Dispatcher(g, backend="inline", store=store)
            assert d.run() is RunState.FINISHED
            assert seen == [True, True]
            assert d.results == {"a": 1, "b": 2}
            assert d._ledger.results == {}

    def test_next_start_loads_inputs_from_the_store(self, tmp_path):
        """b fails; a, its input, leaves memory; the next start runs b again
        with a's result read back from the store."""
        flag = tmp_path / "ok"

        def needs_flag(x):
            if not flag.exists():
                raise RuntimeError("not yet")
            return x * 10

        g = TaskGraph()
        a = g.add("a", abs, (-3,))
        g.add("b", needs_flag, (a,))
        with ad.Store(tmp_path / "run.alma") as store:
            d = Dispatcher(g, backend="inline", store=store)
            assert d.run() is RunState.FAILED
            # the failure stays in memory; a is only in the store
            assert list(d._ledger.results) == ["b"]
            assert d._failures().keys() == {"b"}
            assert d.results["a"] == 3
            assert "failed task" in d._repr_html_()
            flag.touch()
            assert d.run() is RunState.FINISHED
            assert d.results == {"a": 3, "b": 30}
            assert d._ledger.results == {}

    def test_failures_stay_in_memory(self, tmp_path):
        g = TaskGraph()
        a = g.add("a", lambda: 1 / 0)
        g.add("b", abs, (a,))
        g.add("c", abs, (-1,))
        with ad.Store(tmp_path / "run.alma") as store:
            d = Dispatcher(g, workers=2, backend="inline", store=store)
            assert d.run() is RunState.FAILED
            assert set(d._ledger.results) == {"a", "b"}
            results = d.results
            assert results["a"].err_type is ZeroDivisionError
            assert results["b"].err_type is ad.DependencyError
            assert results["c"] == 1
            p = d.progress()
            assert (p.done, p.failed) == (1, 2)

    def test_a_scheduler_reads_values_not_markers(self, tmp_path):
        from alma_dag.schedulers import BaseScheduler

        class Peek(BaseScheduler):
            def __init__(self):
                self.seen = {}

            def launchable(self, pending, workers, report):
                for node in report:
                    self.seen[node] = report[node]
                return list(pending), []

        g, expected = diamond_and_more()
        peek = Peek()
        with ad.Store(tmp_path / "run.alma") as store:
            d = Dispatcher(g, workers=2, backend="inline", store=store, scheduler=peek)
            assert d.run() is RunState.FINISHED
            assert d._ledger.results == {}
        assert peek.seen and all(expected[n] == v for n, v in peek.seen.items())

    def test_a_second_dispatcher_on_the_store_keeps_nothing(self, tmp_path):
        g, expected = diamond_and_more()
        with ad.Store(tmp_path / "run.alma") as store:
            Dispatcher(g, backend="inline", store=store).run()
            again = Dispatcher(g, backend="inline", store=store)
            assert again.run() is RunState.FINISHED
            assert again._ledger.results == {}
            assert again.results == expected
            assert again.progress().done == len(expected)
