"""The backend contract, run against every backend, then loky's own parts.

``_BackendContract`` drives a backend directly, as the dispatcher does:
``open(n_workers, report)``, ``submit(Batch)``, ``drive`` (only ``inline``
needs it), then one ``Outcome`` per batch through ``report``. Each backend
subclasses it (``TestInlineBackend``, ``TestLokyBackend``).

The loky part checks ``map_pool_error`` against every error type loky and
``concurrent.futures`` define, ``run_payload`` (the worker's side), results
that cannot travel back, and the process-wide ``shared_pool``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import faulthandler
import inspect
import itertools
import os
import pickle
import queue
import threading
import time

import cloudpickle
import loky
import loky.process_executor
import psutil
import pytest
from conftest import WAIT

import alma_dag as ad
from alma_dag import Dependency, Err, TaskGraph
from alma_dag.backends import get_backend
from alma_dag.backends.base import Backend, Batch, Outcome
from alma_dag.backends.inline import InlineBackend
from alma_dag.backends.loky import (
    LokyBackend,
    map_pool_error,
    run_payload,
    shared_pool,
    shutdown_pool,
)


class Harness:
    """A backend opened with a ``SimpleQueue`` as its ``report``, and the
    bookkeeping to submit batches of a graph and wait for their outcomes."""

    def __init__(self, backend: Backend, n_workers: int = 2) -> None:
        self.backend = backend
        self.n_workers = n_workers
        self._ids = itertools.count(1)
        self.open()

    def open(self) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.received: dict[int, Outcome] = {}
        self.backend.open(self.n_workers, self.events.put)

    def submit(self, graph, nodes, inputs=(), timeout=None) -> int:
        batch_id = next(self._ids)
        items = tuple((node, graph.task(node)) for node in nodes)
        self.backend.submit(Batch(batch_id, items, dict(inputs), timeout))
        return batch_id

    def wait(self, *batch_ids: int, timeout: float = WAIT) -> dict[int, Outcome]:
        """Drive the backend until each of ``batch_ids`` is reported; fail
        the test (dumping every thread's stack) after ``timeout`` seconds.
        Outcomes of other batches (killed ones) are kept but not waited for.
        """
        deadline = time.monotonic() + timeout
        while not all(b in self.received for b in batch_ids):
            self.backend.drive(0)
            try:
                outcome = self.events.get(timeout=0.01)
            except queue.Empty:
                if time.monotonic() > deadline:
                    faulthandler.dump_traceback(all_threads=True)
                    missing = [b for b in batch_ids if b not in self.received]
                    pytest.fail(f"no outcome for batches {missing} after {timeout} s")
                continue
            assert isinstance(outcome, Outcome), outcome
            assert outcome.batch not in self.received, f"{outcome} reported twice"
            self.received[outcome.batch] = outcome
        return {b: self.received[b] for b in batch_ids}

    def run(self, graph, nodes, inputs=()) -> list:
        """Run one batch that must not be lost; its ``(result, start,
        finish)`` triples."""
        batch_id = self.submit(graph, nodes, inputs)
        outcome = self.wait(batch_id)[batch_id]
        assert outcome.error is None, f"batch lost: {outcome.error!r}"
        assert len(outcome.results) == len(nodes)
        return list(outcome.results)

    def results(self, graph, nodes, inputs=()) -> dict:
        """Run one batch; its results by node id."""
        outcomes = self.run(graph, nodes, inputs)
        return {
            node: result for node, (result, _, _) in zip(nodes, outcomes, strict=True)
        }

    def drain(self) -> None:
        """Take what is left in the queue: no batch may be reported twice."""
        while True:
            try:
                outcome = self.events.get_nowait()
            except queue.Empty:
                return
            assert outcome.batch not in self.received, f"{outcome} reported twice"
            self.received[outcome.batch] = outcome


def wait_for_file(path, timeout=WAIT) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)
            pytest.fail(f"{path} not written after {timeout} s")
        time.sleep(0.005)
    return path.read_text()


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class _BackendContract:
    """What every backend must do; subclasses set ``make_backend``."""

    #: Builds a fresh backend (not opened).
    make_backend: staticmethod
    #: Whether submitted batches run without ``drive`` (in other processes).
    runs_in_background: bool

    @pytest.fixture
    def harness(self):
        harness = Harness(self.make_backend())
        yield harness
        harness.backend.close()
        harness.drain()

    def test_is_a_backend_with_a_name(self):
        backend = self.make_backend()
        assert isinstance(backend, Backend)
        assert get_backend(backend.name).name == backend.name
        assert get_backend(backend) is backend

    def test_results_in_batch_order_with_times(self, harness):
        g = TaskGraph()
        a = g.add("a", abs, (-2,))
        g.add("b", pow, (a, 3))
        g.add("c", str.upper, ("x",))
        g.add("d", lambda x, *, y: x - y, (a,), {"y": 5})
        outcomes = harness.run(g, ["a", "b", "c", "d"])
        assert [r for r, _, _ in outcomes] == [2, 8, "X", -3]
        for _, start, finish in outcomes:
            assert start <= finish
        # One task after the other, in batch order.
        for (_, _, finish), (_, start, _) in itertools.pairwise(outcomes):
            assert finish <= start

    def test_each_batch_reported_once(self, harness):
        g = TaskGraph()
        for i in range(12):
            g.add(i, lambda i: i * i, (i,))
        ids = {harness.submit(g, [i, i + 1]): i for i in range(0, 12, 2)}
        outcomes = harness.wait(*ids)
        for batch_id, first in ids.items():
            outcome = outcomes[batch_id]
            assert outcome.batch == batch_id and outcome.error is None
            assert [r for r, _, _ in outcome.results] == [first**2, (first + 1) ** 2]
        harness.drain()

    def test_exception_gives_err_with_traceback(self, harness):
        def raise_in_task_body(x):
            raise ValueError(f"bad value {x}")

        g = TaskGraph()
        g.add("boom", raise_in_task_body, (7,))
        g.add("after", abs, (-1,))
        results = harness.results(g, ["boom", "after"])
        err = results["boom"]
        assert isinstance(err, Err)
        assert err.err_type is ValueError
        assert str(err) == "bad value 7"
        assert "raise_in_task_body" in err.traceback
        assert "ValueError: bad value 7" in err.traceback
        assert results["after"] == 1  # the batch goes on after a failure

    @pytest.mark.parametrize("how", ["sys.exit", "KeyboardInterrupt"])
    def test_base_exceptions_are_results(self, harness, how):
        def leave():
            import sys

            sys.exit(2)

        def interrupt():
            raise KeyboardInterrupt

        g = TaskGraph()
        g.add("x", leave if how == "sys.exit" else interrupt)
        g.add("after", abs, (-1,))
        results = harness.results(g, ["x", "after"])
        err = results["x"]
        assert isinstance(err, Err)
        if how == "sys.exit":
            assert err.err_type is SystemExit and err.exception.code == 2
        else:
            assert err.err_type is KeyboardInterrupt
        assert results["after"] == 1  # the batch went on

    def test_in_batch_dependency_failure(self, harness):
        """
        a (raises) -> b -> c      b and c are not run; both name a.
        d                         d runs.
        """
        ran = []

        def fail():
            raise ZeroDivisionError("no")

        g = TaskGraph()
        a = g.add("a", fail)
        b = g.add("b", lambda x: ran.append("b") or x, (a,))
        g.add("c", lambda x: ran.append("c") or x, (b,))
        g.add("d", abs, (-4,))
        results = harness.results(g, ["a", "b", "c", "d"])
        assert results["a"].err_type is ZeroDivisionError
        for node in "bc":
            exc = results[node].exception
            assert isinstance(exc, ad.DependencyError)
            assert exc.task == node and exc.dependency == "a"
            assert repr(node) in str(exc) and "'a'" in str(exc)
        assert "ZeroDivisionError" in str(results["b"].exception)
        assert results["d"] == 4
        assert ran == []

    def test_inputs_feed_dependencies_outside_the_batch(self, harness):
        g = TaskGraph()
        x = g.add("x", abs, (1,))  # not in the batch: its result is an input
        y = g.add("y", lambda v: v + 1, (x,))
        g.add("z", lambda v, w: v * w, (x, y))
        results = harness.results(g, ["y", "z"], inputs={"x": 41})
        assert results == {"y": 42, "z": 41 * 42}

    def test_failed_input_gives_dependency_error(self, harness):
        g = TaskGraph()
        x = g.add("x", abs, (1,))
        g.add("y", lambda v: v + 1, (x,))
        results = harness.results(g, ["y"], inputs={"x": Err(OSError("disk"))})
        exc = results["y"].exception
        assert isinstance(exc, ad.DependencyError)
        assert exc.dependency == "x" and exc.task == "y"

    def test_dependency_error_input_names_the_root(self, harness):
        g = TaskGraph()
        x = g.add("x", abs, (1,))
        g.add("y", lambda v: v + 1, (x,))
        upstream = Err(ad.DependencyError("x not run", task="x", dependency="w"))
        results = harness.results(g, ["y"], inputs={"x": upstream})
        assert results["y"].exception.dependency == "w"

    def test_key_extraction(self, harness):
        point = collections.namedtuple("Point", "x y")
        g = TaskGraph()
        a = g.add("a", lambda: {"values": [1, 3, 5], "p": point(7, 8)})
        g.add("path", lambda v: v, (a["values"][2],))
        g.add("tuple_key", lambda v: v, (Dependency("a", ("values", 0)),))
        g.add("slice", lambda v: v, (Dependency("a", ("values", slice(1, 3))),))
        g.add("attribute", lambda v: v, (a["p"]["y"],))
        g.add("nested", lambda d: d, ({"k": [a["values"][1], 0]},))
        g.add("kwargs", lambda *, v: v, (), {"v": a["p"]["x"]})
        g.add("missing", lambda v: v, (a["nope"],))
        nodes = ["a", "path", "tuple_key", "slice", "attribute", "nested"]
        nodes += ["kwargs", "missing"]
        results = harness.results(g, nodes)
        assert results["path"] == 5
        assert results["tuple_key"] == 1
        assert results["slice"] == [3, 5]
        assert results["attribute"] == 8
        assert results["nested"] == {"k": [3, 0]}
        assert results["kwargs"] == 7
        assert results["missing"].err_type is KeyError
        # The same extraction from an input.
        value = {"values": [1, 3, 5], "p": point(7, 8)}
        assert harness.results(g, ["path", "attribute"], inputs={"a": value}) == {
            "path": 5,
            "attribute": 8,
        }

    def test_kill_then_submit(self, harness, tmp_path):
        started = tmp_path / "started"

        def hang():
            started.write_text(str(os.getpid()))
            time.sleep(WAIT)

        g = TaskGraph()
        g.add("hang", hang)
        g.add("quick", abs, (-3,))
        hung = harness.submit(g, ["hang"])
        if self.runs_in_background:
            wait_for_file(started)
        harness.backend.kill()
        assert harness.results(g, ["quick"]) == {"quick": 3}
        harness.drain()
        lost = harness.received.get(hung)
        # A killed batch is reported lost, or not at all.
        assert lost is None or (
            lost.results is None
            and isinstance(lost.error, ad.WorkerDied | ad.TaskCancelled)
        )
        if self.runs_in_background:
            assert is_gone(int(started.read_text()))

    def test_kill_with_nothing_running(self, harness):
        harness.backend.kill()
        g = TaskGraph()
        g.add("a", abs, (-1,))
        assert harness.results(g, ["a"]) == {"a": 1}

    def test_close_and_reopen(self, harness):
        g = TaskGraph()
        g.add("a", lambda: "first")
        g.add("b", lambda: "second")
        assert harness.results(g, ["a"]) == {"a": "first"}
        harness.backend.close()
        harness.open()
        assert harness.results(g, ["b"]) == {"b": "second"}

    def test_context_manager_closes(self):
        backend = self.make_backend()
        with backend as entered:
            assert entered is backend
            harness = Harness(backend)
            g = TaskGraph()
            g.add("a", abs, (-5,))
            assert harness.results(g, ["a"]) == {"a": 5}
        # Closed, it opens again.
        harness.open()
        assert harness.results(g, ["a"]) == {"a": 5}
        backend.close()


class TestInlineBackend(_BackendContract):
    make_backend = staticmethod(InlineBackend)
    runs_in_background = False

    def test_nothing_runs_until_driven(self, harness):
        ran = []
        g = TaskGraph()
        g.add("a", ran.append, (1,))
        harness.submit(g, ["a"])
        assert ran == []
        assert harness.backend.drive(0) is True
        assert ran == [1]
        assert harness.backend.drive(0) is False  # nothing left

    def test_results_are_not_pickled(self, harness):
        lock = threading.Lock()
        g = TaskGraph()
        g.add("a", lambda: lock)
        assert harness.results(g, ["a"])["a"] is lock

    def test_late_task_reported_as_timed_out(self, harness):
        g = TaskGraph()
        g.add("slow", time.sleep, (0.2,), timeout=0.05)
        g.add("fast", abs, (-1,), timeout=WAIT)
        slow = harness.submit(g, ["slow"], timeout=0.05)
        fast = harness.submit(g, ["fast"], timeout=WAIT)
        outcomes = harness.wait(slow, fast)
        err = outcomes[slow].results[0][0]
        assert isinstance(err.exception, ad.TaskTimeoutError)
        assert err.exception.task == "slow" and err.exception.timeout == 0.05
        assert outcomes[fast].results[0][0] == 1


class TestLokyBackend(_BackendContract):
    make_backend = staticmethod(LokyBackend)
    runs_in_background = True

    def test_runs_in_another_process(self, harness):
        g = TaskGraph()
        g.add("pid", os.getpid)
        assert harness.results(g, ["pid"])["pid"] != os.getpid()

    @pytest.mark.parametrize(
        "make_result",
        [threading.Lock, lambda: (i for i in range(3))],
        ids=["lock", "generator"],
    )
    def test_unpicklable_result_fails_that_task_only(self, harness, make_result):
        g = TaskGraph()
        g.add("before", abs, (-1,))
        bad = g.add("bad", make_result)
        g.add("uses_it", lambda x: type(x).__name__, (bad,))
        g.add("after", abs, (-2,))
        results = harness.results(g, ["before", "bad", "uses_it", "after"])
        exc = results["bad"].exception
        assert isinstance(exc, ad.SerializationError)
        assert exc.task == "bad" and "'bad'" in str(exc)
        assert "cannot be pickled" in str(exc)
        assert results["before"] == 1 and results["after"] == 2
        # In the worker the dependent got the real object.
        assert results["uses_it"] in ("lock", "generator")

    def test_unpicklable_argument_loses_the_batch(self, harness):
        g = TaskGraph()
        g.add("locked", lambda lock: 1, (threading.Lock(),))
        batch_id = harness.submit(g, ["locked"])
        outcome = harness.wait(batch_id)[batch_id]
        assert outcome.results is None
        assert isinstance(outcome.error, ad.SerializationError)
        assert "could not be pickled" in str(outcome.error)

    def test_argument_failing_to_unpickle_loses_the_batch(self, harness):
        def refuse():
            raise RuntimeError("refusing to unpickle")

        class CrashAtUnpickle:
            def __reduce__(self):
                return (refuse, ())

        g = TaskGraph()
        g.add("a", lambda x: 1, (CrashAtUnpickle(),))
        batch_id = harness.submit(g, ["a"])
        outcome = harness.wait(batch_id)[batch_id]
        assert isinstance(outcome.error, ad.SerializationError)
        assert "refusing to unpickle" in str(outcome.error)
        g.add("b", abs, (-1,))
        assert harness.results(g, ["b"]) == {"b": 1}  # the pool is intact

    def test_result_failing_to_unpickle_loses_the_batch(self, harness):
        """A result that pickles in the worker but cannot be unpickled here
        loses its whole batch (the dispatcher then runs its tasks alone)."""

        def refuse():
            raise RuntimeError("refusing to unpickle")

        class CrashAtUnpickle:
            def __reduce__(self):
                return (refuse, ())

        g = TaskGraph()
        g.add("good", abs, (-1,))
        g.add("bad", CrashAtUnpickle)
        batch_id = harness.submit(g, ["good", "bad"])
        outcome = harness.wait(batch_id)[batch_id]
        assert outcome.results is None
        assert isinstance(outcome.error, ad.SerializationError)
        assert "refusing to unpickle" in str(outcome.error)

    @pytest.mark.parametrize("how", ["os._exit", "unpickle"])
    def test_dead_worker_loses_the_batch_and_pool_recovers(self, harness, how):
        class ExitAtUnpickle:
            def __reduce__(self):
                return (os._exit, (3,))

        g = TaskGraph()
        if how == "os._exit":
            g.add("die", os._exit, (3,))
        else:
            g.add("die", lambda x: x, (ExitAtUnpickle(),))
        g.add("next", abs, (-1,))
        died = harness.submit(g, ["die"])
        outcome = harness.wait(died)[died]
        assert outcome.results is None
        assert isinstance(outcome.error, ad.WorkerDied)
        assert isinstance(
            outcome.error.__cause__, loky.process_executor.BrokenProcessPool
        )
        assert harness.results(g, ["next"]) == {"next": 1}

    def test_pool_killed_by_another_backend_is_replaced(self, harness):
        """Another run's ``kill()`` shuts the shared pool down under this one."""
        g = TaskGraph()
        g.add("a", abs, (-1,))
        assert harness.results(g, ["a"]) == {"a": 1}
        other = Harness(LokyBackend())
        assert other.results(g, ["a"]) == {"a": 1}
        other.backend.kill()
        other.backend.close()
        assert harness.results(g, ["a"]) == {"a": 1}
        shutdown_pool()
        assert harness.results(g, ["a"]) == {"a": 1}


# -- loky: the mapping of pool failures ---------------------------------------


def _exception_classes(module) -> set[type[BaseException]]:
    return {
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }


#: Exception classes found in loky's namespaces that never report the loss of
#: a batch: ``_RemoteTraceback`` only carries a worker's traceback text as the
#: ``__cause__`` of another error; ``InvalidStateError`` is raised by setting
#: the result of a finished future, which loky catches itself; ``TimeoutError``
#: comes only from ``Future.result(timeout=...)``, which the backend never
#: calls with a timeout.
NOT_BATCH_FAILURES = {
    loky.process_executor._RemoteTraceback,
    cf.InvalidStateError,
    cf.TimeoutError,
}

#: What each known pool failure must become.
EXPECTED_MAPPING = {
    loky.process_executor.TerminatedWorkerError: ad.WorkerDied,
    loky.process_executor.BrokenProcessPool: ad.WorkerDied,
    cf.process.BrokenProcessPool: ad.WorkerDied,
    cf.BrokenExecutor: ad.WorkerDied,
    loky.process_executor.ShutdownExecutorError: ad.TaskCancelled,
    cf.CancelledError: ad.TaskCancelled,
    pickle.PicklingError: ad.SerializationError,
}

KNOWN_POOL_ERRORS = sorted(
    (
        _exception_classes(loky.process_executor)
        | _exception_classes(loky)
        | set(EXPECTED_MAPPING)
    )
    - NOT_BATCH_FAILURES,
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


def _instance(cls: type[BaseException]) -> BaseException:
    return cls("loky said no")


class _UnknownPoolError(Exception):
    pass


def _generic_meaning() -> str:
    """The message ``map_pool_error`` gives an error it does not know."""
    text = str(map_pool_error(_UnknownPoolError("zz")))
    return text.removesuffix(" (_UnknownPoolError: zz)")


class TestMapPoolError:
    def test_known_loky_errors_are_listed(self):
        names = {cls.__name__ for cls in KNOWN_POOL_ERRORS}
        assert {
            "TerminatedWorkerError",
            "BrokenProcessPool",
            "ShutdownExecutorError",
            "CancelledError",
            "PicklingError",
            "BrokenExecutor",
        } <= names

    @pytest.mark.parametrize(
        "foreign",
        KNOWN_POOL_ERRORS,
        ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
    )
    def test_every_known_pool_error_is_mapped(self, foreign):
        exc = _instance(foreign)
        mapped = map_pool_error(exc)
        assert isinstance(mapped, ad.TaskFailure)
        assert mapped.__cause__ is exc
        assert type(exc).__name__ in str(mapped) and "loky said no" in str(mapped)
        # Not the fall-back for errors nobody thought of.
        assert not str(mapped).startswith(_generic_meaning()), (
            f"{foreign.__module__}.{foreign.__qualname__} is not mapped: {mapped!r}"
        )
        for known, ours in EXPECTED_MAPPING.items():
            if isinstance(exc, known):
                assert type(mapped) is ours
                break

    def test_unknown_error_is_a_worker_death(self):
        mapped = map_pool_error(_UnknownPoolError("zz"))
        assert type(mapped) is ad.WorkerDied
        assert _generic_meaning().startswith("batch lost")

    def test_subclass_wins_over_base(self):
        terminated = loky.process_executor.TerminatedWorkerError("x")
        broken = loky.process_executor.BrokenProcessPool("x")
        assert "died" in str(map_pool_error(terminated))
        assert str(map_pool_error(terminated)) != str(map_pool_error(broken))

    def test_cancellation_records_the_reason(self):
        for exc in (cf.CancelledError(), loky.process_executor.ShutdownExecutorError()):
            mapped = map_pool_error(exc)
            assert isinstance(mapped, ad.TaskCancelled)
            assert mapped.reason and mapped.reason in str(mapped)

    def test_mapped_errors_survive_a_round_trip(self):
        for foreign in EXPECTED_MAPPING:
            mapped = map_pool_error(_instance(foreign))
            back = cloudpickle.loads(cloudpickle.dumps(mapped))
            assert type(back) is type(mapped) and back.args == mapped.args


# -- loky: the worker's side --------------------------------------------------


class TestRunPayload:
    @pytest.mark.parametrize(
        "payload", [b"", b"garbage", b"\x80\x05garbage", pickle.dumps(None)[:-1]]
    )
    def test_garbage_gives_false_and_a_message(self, payload):
        ok, message = run_payload(payload)
        assert ok is False
        assert isinstance(message, str)
        assert message.startswith("the batch could not be unpickled")

    def test_wrong_shape_gives_false(self):
        ok, message = run_payload(cloudpickle.dumps("not a batch"))
        assert ok is False and "ValueError" in message


# -- loky: the shared pool ----------------------------------------------------


class TestSharedPool:
    def test_reused_across_calls_and_threads(self):
        pool = shared_pool(2)
        assert shared_pool(2) is pool
        from_thread = []
        thread = threading.Thread(target=lambda: from_thread.append(shared_pool(2)))
        thread.start()
        thread.join(WAIT)
        assert from_thread == [pool]
        harness = Harness(LokyBackend())
        g = TaskGraph()
        g.add("a", abs, (-1,))
        assert harness.results(g, ["a"]) == {"a": 1}
        assert shared_pool(2) is pool  # the backend used it
        harness.backend.close()

    def test_replaced_when_fresh(self):
        pool = shared_pool(2)
        fresh = shared_pool(2, fresh=True)
        assert fresh is not pool
        assert shared_pool(2) is fresh

    def test_replaced_after_shutdown(self):
        pool = shared_pool(2)
        shutdown_pool()
        shutdown_pool()  # nothing left to shut down: no error
        new = shared_pool(2)
        assert new is not pool
        harness = Harness(LokyBackend())
        g = TaskGraph()
        g.add("a", abs, (-3,))
        assert harness.results(g, ["a"]) == {"a": 3}
        harness.backend.close()

    def test_replaced_after_a_worker_died(self):
        harness = Harness(LokyBackend())
        g = TaskGraph()
        g.add("die", os._exit, (1,))
        g.add("a", abs, (-1,))
        assert harness.results(g, ["a"]) == {"a": 1}
        pool = shared_pool(2)
        died = harness.submit(g, ["die"])
        assert isinstance(harness.wait(died)[died].error, ad.WorkerDied)
        assert harness.results(g, ["a"]) == {"a": 1}
        assert shared_pool(2) is not pool
        harness.backend.close()

    def test_concurrent_runs_of_different_sizes_do_not_thrash(self, monkeypatch):
        created = []

        class CountingPool(loky.ProcessPoolExecutor):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                created.append(kwargs.get("max_workers", args[:1]))

        monkeypatch.setattr(loky, "ProcessPoolExecutor", CountingPool)
        shutdown_pool()  # the first pool is counted too

        def graph():
            g = TaskGraph()
            for i in range(4):
                g.add(i, lambda i: (time.sleep(0.02), i)[1], (i,))
            return g

        two = ad.Dispatcher(graph(), workers=2).start()
        three = ad.Dispatcher(graph(), workers=3).start()
        assert two.wait(WAIT) and three.wait(WAIT)
        assert two.results == three.results == {i: i for i in range(4)}
        # Not one pool per submit (each run replacing the other's pool).
        assert len(created) <= 2, f"pools created, by size: {created}"
