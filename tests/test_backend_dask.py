"""The dask backend: the backend contract on a local cluster, then runs
through the dispatcher and the mapping of distributed's errors.

One ``LocalCluster`` (two single-threaded worker processes, no task
retried) serves the whole module; starting one takes seconds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import SimpleNamespace

import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402
from conftest import WAIT, run_to_end  # noqa: E402
from distributed.client import (  # noqa: E402
    FutureCancelledError,
    FuturesCancelledError,
)
from distributed.comm.core import CommClosedError  # noqa: E402
from distributed.core import RPCClosed  # noqa: E402
from distributed.scheduler import KilledWorker  # noqa: E402
from test_backends import _BackendContract  # noqa: E402
from test_experiment import (  # noqa: E402
    logged,
    wait_until,
    write_experiment,
)

import alma_dag as ad  # noqa: E402
from alma_dag import Err, TaskGraph  # noqa: E402
from alma_dag.backends import get_backend  # noqa: E402
from alma_dag.backends.dask import (  # noqa: E402
    ClientStates,
    DaskBackend,
    local_cluster,
    map_dask_error,
    serve_states,
)
from alma_dag.experiment import load  # noqa: E402
from alma_dag.store import Store  # noqa: E402

_shared: dict[str, distributed.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def client():
    cluster = local_cluster(2)
    client = distributed.Client(cluster, set_as_default=False)
    _shared["client"] = client
    yield client
    _shared.clear()
    client.close()
    cluster.close()


def _restarting_backend() -> DaskBackend:
    return DaskBackend(_shared["client"], restart_on_kill=True)


class TestDaskBackend(_BackendContract):
    make_backend = staticmethod(_restarting_backend)
    runs_in_background = True

    def test_runs_in_another_process(self, harness):
        g = TaskGraph()
        g.add("pid", os.getpid)
        assert harness.results(g, ["pid"])["pid"] != os.getpid()

    def test_unpicklable_argument_loses_the_batch(self, harness):
        import threading

        g = TaskGraph()
        g.add("locked", lambda lock: 1, (threading.Lock(),))
        batch_id = harness.submit(g, ["locked"])
        outcome = harness.wait(batch_id)[batch_id]
        assert isinstance(outcome.error, ad.SerializationError)

    def test_dead_worker_loses_that_batch_only(self, harness):
        g = TaskGraph()
        g.add("die", lambda: (time.sleep(0.2), os._exit(3)))
        g.add("slow", lambda: (time.sleep(0.5), "ok")[1])
        g.add("next", abs, (-1,))
        died = harness.submit(g, ["die"])
        slow = harness.submit(g, ["slow"])
        outcomes = harness.wait(died, slow)
        assert isinstance(outcomes[died].error, ad.WorkerDied)
        assert isinstance(outcomes[died].error.__cause__, KilledWorker)
        assert outcomes[slow].error is None
        assert outcomes[slow].results[0][0] == "ok"
        assert harness.results(g, ["next"]) == {"next": 1}

    def test_started_is_heard_for_batches_with_a_timeout(self, harness):
        g = TaskGraph()
        g.add("a", time.sleep, (0.3,), timeout=WAIT)
        before = time.time()
        batch_id = harness.submit(g, ["a"], timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while harness.backend.started(batch_id) is None:
            assert time.monotonic() < deadline, "start never heard of"
            time.sleep(0.01)
        assert before <= harness.backend.started(batch_id) <= time.time()
        harness.wait(batch_id)
        assert harness.backend.started(batch_id) is None


def test_get_backend_accepts_a_client(client):
    backend = get_backend(client)
    assert isinstance(backend, DaskBackend) and backend.client is client
    assert isinstance(get_backend("dask"), DaskBackend)
    by_address = get_backend("tls://scheduler:8786")
    assert isinstance(by_address, DaskBackend) and by_address.client is None


def test_missing_distributed_is_a_definition_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "alma_dag.backends.dask", None)
    with pytest.raises(ad.DefinitionError, match=r"pip install 'alma_dag\[dask\]'"):
        get_backend("dask")


def test_bad_argument_is_a_definition_error():
    with pytest.raises(ad.DefinitionError, match="distributed.Client"):
        DaskBackend(42)


def test_tls_settings_reach_the_cluster_and_the_client():
    pytest.importorskip("cryptography")  # Security.temporary() makes certificates
    backend = DaskBackend(security=distributed.Security.temporary())
    addresses = []

    class Address(ad.Callbacks):
        def on_start(self, dispatcher):
            addresses.append(backend.client.scheduler.address)

    g = TaskGraph()
    g.add("x", lambda: 41 + 1)
    run = ad.Dispatcher(g, workers=1, backend=backend, callbacks=[Address()])
    assert run.run() is ad.RunState.FINISHED
    assert run.results == {"x": 42}
    assert addresses and addresses[0].startswith("tls://")
    assert backend.client is None  # the backend closed what it started


def test_graph_through_the_dispatcher(client):
    def fail():
        raise ValueError("bad")

    g = TaskGraph()
    a = g.add("a", lambda: 2)
    b = g.add("b", lambda x: x * 10, (a,))
    c = g.add("c", lambda x: x + 1, (a,))
    g.add("d", lambda x, y: x + y, (b, c))
    g.add("pid", os.getpid)
    broken = g.add("broken", fail)
    g.add("after_broken", lambda x: x, (broken,))
    run = ad.Dispatcher(g, workers=2, backend=client).start()
    assert run.wait(WAIT)
    results = run.results
    assert (results["a"], results["b"], results["c"], results["d"]) == (2, 20, 3, 23)
    assert results["pid"] != os.getpid()
    assert isinstance(results["broken"], Err)
    assert results["broken"].err_type is ValueError
    assert isinstance(results["after_broken"].exception, ad.DependencyError)


class ChainSpy(DaskBackend):
    """A dask backend that notes, per task, the batches it was chained to."""

    def open(self, n_workers, report, store=None) -> None:
        self.after: dict[str, list[int]] = {}
        super().open(n_workers, report, store)

    def submit(self, batch) -> None:
        for node, _ in batch.items:
            self.after[node] = [b for b, _ in batch.after]
        super().submit(batch)


def _slowly(function, seconds=0.3):
    def slow(*args):
        time.sleep(seconds)
        return function(*args)

    return slow


def _chain_of_three(tmp_path, client, first):
    """a (``first``) -> b -> c, with b on the other lane: b is chained to a
    while a runs, c to b; returns the finished dispatcher and its backend."""
    g = TaskGraph()
    a = g.add("a", _slowly(first))
    b = g.add("b", _slowly(lambda x: x * 10), (a,))
    g.add("c", lambda x, y: x + y, (a, b))
    plan = ad.plan_from_lanes(g, [["a", "c"], ["b"]])
    backend = ChainSpy(client)
    store = ad.Store(tmp_path / "run.alma")
    run = ad.Dispatcher(g, workers=2, backend=backend, store=store, plan=plan)
    run.run()
    return run, backend


def test_batches_are_chained_to_batches_in_flight(tmp_path, client):
    run, backend = _chain_of_three(tmp_path, client, lambda: 2)
    assert run.state is ad.RunState.FINISHED
    assert run.results == {"a": 2, "b": 20, "c": 22}
    assert backend.after["a"] == []
    assert backend.after["b"], "b was not chained to a"
    assert backend.after["c"], "c was not chained to b"
    assert run.store.done_ids() == {"a", "b", "c"}
    run.store.close()


def test_a_failure_reaches_the_batches_chained_to_it(tmp_path, client):
    def fail():
        raise ValueError("bad")

    run, backend = _chain_of_three(tmp_path, client, fail)
    assert backend.after["b"]
    results = run.results
    assert run.state is ad.RunState.FAILED
    assert results["a"].err_type is ValueError
    for node in "bc":
        assert results[node].err_type is ad.DependencyError
        assert results[node].exception.dependency == "a"
    assert set(run.store.failures()) == {"a", "b", "c"}
    run.store.close()


def test_a_dead_worker_blames_its_task_not_those_chained_to_it(tmp_path, client):
    def die():
        os._exit(3)

    run, backend = _chain_of_three(tmp_path, client, die)
    assert backend.after["b"]
    results = run.results
    assert results["a"].err_type is ad.WorkerDied
    for node in "bc":
        assert results[node].err_type is ad.DependencyError, results[node]
    run.store.close()


def test_timeout_through_the_dispatcher(client):
    g = TaskGraph()
    g.add("slow", time.sleep, (WAIT,), timeout=0.5)
    g.add("fast", abs, (-1,))
    run = ad.Dispatcher(g, workers=2, backend=_restarting_backend()).start()
    assert run.wait(WAIT)
    assert isinstance(run.results["slow"].exception, ad.TaskTimeoutError)
    assert run.results["fast"] == 1


def test_experiment_runs_to_the_end(tmp_path, client):
    path = write_experiment(tmp_path, instances=("a", "b"))
    run = run_to_end(load(path, backend=DaskBackend(client)))
    assert run.state is ad.RunState.FINISHED
    assert run.progress().failed == 0


def test_command_line_runs_on_a_scheduler_address(tmp_path, client, capsys):
    from alma_dag.cli import main

    path = write_experiment(tmp_path, instances=("a", "b"), iterations=2)
    address = client.scheduler.address
    assert main(["run", str(path), "--backend", address, "--quiet"]) == 0
    assert "finished: 5 done, 0 failed, of 5" in capsys.readouterr().out
    assert sorted(logged(tmp_path)) == [["done"]] + [["run", "a"]] * 2 + [
        ["run", "b"]
    ] * 2


# Saves, then works on for a while: a stop lands while some run is between
# its save() and its end. A run started with a state returns it.
SAVE_THEN_SLEEP = """
def run(instance, save, state):
    log("start", name(instance), state or "-", os.getpid())
    if state:
        return state
    save("saved-" + name(instance))
    log("saved", name(instance))
    time.sleep(0.2)
    return "fresh"
"""


def test_experiment_stops_and_resumes_on_dask(tmp_path, client):
    instances = tuple("abcdef")
    path = write_experiment(
        tmp_path, SAVE_THEN_SLEEP, instances=instances, iterations=3
    )
    run = load(path, backend=DaskBackend(client, restart_on_kill=True))
    run.start()
    try:
        wait_until(lambda: ["saved"] in [w[:1] for w in logged(tmp_path)][3:], "saves")
        began = time.monotonic()
        assert run.stop(WAIT)
        stopping = time.monotonic() - began
    finally:
        run.stop(WAIT)
    assert run.state is ad.RunState.STOPPED
    assert stopping < 15, f"stop() took {stopping:.1f} s"
    assert run.progress().done < 18

    resumed = run_to_end(load(path, backend=DaskBackend(client, restart_on_kill=True)))
    assert resumed.state is ad.RunState.FINISHED
    progress = resumed.progress()
    assert (progress.total, progress.done, progress.failed) == (18, 18, 0)
    store = resumed.store
    nodes = [f"{i}#{n}" for i in instances for n in range(3)]
    assert store.done_ids() == set(nodes)
    # Every node recorded once; a node whose first call was stopped after
    # its save() ran again with that state, and returned it.
    results = {node: store.result(node) for node in nodes}
    starts = [w[1:3] for w in logged(tmp_path) if w[0] == "start"]
    restarted = [n for n, r in results.items() if r != "fresh"]
    assert restarted, "no run was stopped after its save()"
    for node in restarted:
        assert results[node] == "saved-" + node.split("#")[0]
    assert sum(1 for s in starts if s[1] != "-") == len(restarted)
    assert len(starts) == 18 + len(restarted)


# The worker may not open the store: SQLite refuses to connect while the run
# saves, and no connection to it was opened for the state it started with.
NO_SHARED_DISK = """
import sqlite3

from alma_dag import store


def run(instance, save, state):
    assert not [d for d in store._writers if d.startswith(HERE)], "read the file"
    connect, sqlite3.connect = sqlite3.connect, None
    try:
        save(state + "+" + name(instance))
    finally:
        sqlite3.connect = connect
    log("ran", name(instance), state or "-")
    if not state:
        raise RuntimeError("fails once, after its save()")
    return state
"""


def test_states_travel_through_the_client(tmp_path, client):
    path = write_experiment(tmp_path, NO_SHARED_DISK, instances=("a", "b"))
    first = run_to_end(load(path, backend=DaskBackend(client)))
    assert first.progress().failed == 2
    assert {first.store.state(f"{i}#0") for i in "ab"} == {"+a", "+b"}
    first.store.close()
    again = run_to_end(load(path, backend=DaskBackend(client)))
    assert again.state is ad.RunState.FINISHED
    assert {again.store.result(f"{i}#0") for i in "ab"} == {"+a", "+b"}
    assert {again.store.state(f"{i}#0") for i in "ab"} == {"+a+a", "+b+b"}
    assert sorted(logged(tmp_path)) == [
        ["ran", "a", "+a"], ["ran", "a", "-"], ["ran", "b", "+b"], ["ran", "b", "-"]
    ]


def test_state_requests_for_another_file_are_refused(tmp_path, client):
    store = Store(tmp_path / "run.alma")
    queue = distributed.Queue(client=client)
    server = threading.Thread(target=serve_states, args=(queue, client, store))
    server.start()

    def save_then_load(database):
        states = ClientStates(queue.name)
        states.save(database, "n", "kept")
        return states.load(database, "n")

    database = str(store.path)

    def save_bytes():
        ClientStates(queue.name).save(database, "n", b"raw")

    try:
        ours = client.submit(save_then_load, database, pure=False)
        assert ours.result(WAIT) == "kept"
        other = client.submit(save_then_load, str(tmp_path / "x.sqlite"), pure=False)
        with pytest.raises(ad.StoreError, match="not the store of this run"):
            other.result(WAIT)
        with pytest.raises(TypeError, match="save\\(\\) takes a string"):
            client.submit(save_bytes, pure=False).result(WAIT)
        # Malformed requests and unknown kinds get no commit, and the
        # server goes on answering.
        queue.put("garbage")
        queue.put(("t-odd", "delete", database, "n", ""))
        odd = distributed.Variable("t-odd", client=client)
        ok, why = odd.get(timeout=WAIT)
        assert (ok, why) == (False, f"{database}: no state request 'delete'")
        odd.delete()
        again = client.submit(save_then_load, database, pure=False)
        assert again.result(WAIT) == "kept"
    finally:
        queue.put(None)
        server.join(WAIT)
    assert not server.is_alive()
    assert store.state("n") == "kept"
    store.close()


def test_sweep_on_dask_marks_every_combination(tmp_path, client):
    from alma_dag.mapping import map_sweep
    from alma_dag.sweeper import ParamSweeper

    offset = 100  # a closure: it travels by value
    sweeper = ParamSweeper(tmp_path / "sw", ad.sweep({"x": list(range(12))}))

    def square(combination):
        if combination["x"] == 3:
            raise ValueError("three")
        return combination["x"] ** 2 + offset

    results = map_sweep(square, sweeper, backend=DaskBackend(client), progress=False)
    assert {c["x"]: r for c, r in results.items() if not isinstance(r, Err)} == {
        x: x * x + offset for x in range(12) if x != 3
    }
    assert [c["x"] for c in sweeper.get_skipped()] == [3]
    assert len(sweeper.get_done()) == 11


def test_boss_on_dask(client):
    from alma_dag.schedulers import MaxThreadsScheduler
    from alma_dag.workers import Boss, Worker

    class Doubler(Worker):
        value: int

        def _task(self):
            return 2 * self.value, os.getpid()

    boss = Boss(scheduler=MaxThreadsScheduler(2), backend=DaskBackend(client))
    boss.set_instructions({}, {"value": [1, 2, 3], "name": ["a", "b", "c"]})
    boss.make_them_work()
    boss.wait_till_finished(timeout=WAIT)
    report = boss.get_report()
    assert report["status"] == "finished"
    by_name = {e["name"]: e["report"] for e in report["workers_report"]}
    assert {name: value for name, (value, _) in by_name.items()} == {
        "a": 2, "b": 4, "c": 6
    }
    assert os.getpid() not in {pid for _, pid in by_name.values()}


# -- map_dask_error -----------------------------------------------------------

#: An instance of each error distributed may fail a batch with, and what it
#: must become.
KNOWN_DASK_ERRORS = {
    "KilledWorker": (
        KilledWorker("k", SimpleNamespace(address="tcp://w"), 0),
        ad.WorkerDied,
    ),
    "FutureCancelledError": (FutureCancelledError("k", "stop"), ad.TaskCancelled),
    "FuturesCancelledError": (FuturesCancelledError([]), ad.TaskCancelled),
    "CancelledError": (distributed.CancelledError("k"), ad.TaskCancelled),
    "ClosedClientError": (distributed.client.ClosedClientError(), ad.TaskCancelled),
    "CommClosedError": (CommClosedError("gone"), ad.WorkerDied),
    "RPCClosed": (RPCClosed("gone"), ad.WorkerDied),
    "TimeoutError": (distributed.TimeoutError("slow"), ad.WorkerDied),
    "OSError": (OSError("net"), ad.WorkerDied),
    "PicklingError": (
        __import__("pickle").PicklingError("no"),
        ad.SerializationError,
    ),
    "ModuleNotFoundError": (ModuleNotFoundError("alma_dag"), ad.SerializationError),
}


def _generic_meaning() -> str:
    class Unknown(Exception):
        pass

    return str(map_dask_error(Unknown("zz"))).removesuffix(" (Unknown: zz)")


@pytest.mark.parametrize("name", sorted(KNOWN_DASK_ERRORS))
def test_every_known_dask_error_is_mapped(name):
    exc, ours = KNOWN_DASK_ERRORS[name]
    mapped = map_dask_error(exc)
    assert type(mapped) is ours
    assert mapped.__cause__ is exc
    assert type(exc).__name__ in str(mapped)
    assert not str(mapped).startswith(_generic_meaning()), f"{name} is not mapped"
    if isinstance(mapped, ad.TaskCancelled):
        assert mapped.reason and mapped.reason in str(mapped)
    back = cloudpickle.loads(cloudpickle.dumps(mapped))
    assert type(back) is type(mapped) and back.args == mapped.args


def test_unknown_error_is_a_worker_death():
    assert type(map_dask_error(LookupError("zz"))) is ad.WorkerDied
    assert _generic_meaning().startswith("batch lost")
