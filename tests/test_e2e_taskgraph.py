"""Whole runs of task graphs, mostly on the loky backend, with saboteurs.

Every function that runs in a worker is defined inside its test (a lambda,
a closure or a local function), so it travels by value with cloudpickle,
as a user's notebook function would. Tasks that must be counted append a
line to a file opened with ``O_APPEND``, so lines written by concurrent
workers never mix. Every run is bounded: ``run_to_end`` fails the test,
dumping every thread's stack, when a run does not end in ``WAIT`` seconds.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import hashlib
import os
import signal
import threading
import time

import psutil
import pytest
from conftest import WAIT, run_to_end

import alma_dag as ad
from alma_dag import Dependency, Dispatcher, Err, RunState, TaskGraph

BACKENDS = ["inline", "loky"]


def assert_consistent(dispatcher: Dispatcher) -> None:
    """``results``, ``progress()`` and ``timings`` agree at the end of a run."""
    results = dispatcher.results
    progress = dispatcher.progress()
    failed = {n for n, r in results.items() if isinstance(r, Err)}
    assert set(results) == set(dispatcher.graph)
    assert progress.total == len(dispatcher.graph)
    assert progress.done + progress.failed == progress.total
    assert progress.failed == len(failed)
    assert progress.running == progress.pending == 0
    assert progress.state is (RunState.FAILED if failed else RunState.FINISHED)
    assert dispatcher.state is progress.state
    timings = dispatcher.timings
    assert set(timings) <= set(results)
    for node, result in results.items():
        ran = not isinstance(result, Err) or not isinstance(
            result.exception, ad.TaskFailure
        )
        if ran:  # it ran to a value, or raised: when is known
            assert node in timings, f"no timing for {node!r}"
    for start, finish in timings.values():
        assert start <= finish


def read_lines(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class DoneTimes(ad.Callbacks):
    """When (``time.time()``) the dispatcher recorded each result."""

    def __init__(self) -> None:
        self.times: dict = {}

    def on_task_done(self, node, result) -> None:
        self.times.setdefault(node, time.time())


def kill_each_new_pid(dispatcher: Dispatcher, pid_file) -> list[int]:
    """SIGKILL every pid written to ``pid_file`` until the run ends."""
    killed: list[int] = []
    deadline = time.monotonic() + WAIT
    while not dispatcher.wait(0.01):
        for pid in map(int, read_lines(pid_file)):
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)
            dispatcher.stop(WAIT)
            pytest.fail(f"the run did not end in {WAIT} s")
    return killed


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- what travels by value -----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_lambdas_closures_and_local_classes(backend):
    factor = 7
    offsets = [1, 2, 3]

    @dataclasses.dataclass(frozen=True)
    class Pair:
        left: int
        right: str

    class Box:
        def __init__(self, value):
            self.value = value

        def doubled(self):
            return Box(self.value * 2)

    def make_pair(n):
        return Pair(n, str(n * factor))

    def make_adder(k):
        return lambda x: x + k + sum(offsets)

    def fib(n):  # a local function calling itself
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    g = TaskGraph()
    pair = g.add("pair", make_pair, (3,))
    box = g.add("box", lambda p: Box(p.left).doubled(), (pair,))
    g.add("unbox", lambda b: b.value, (box,))
    scaled = g.add("scaled", lambda x: x * factor, (5,))
    g.add("added", make_adder(10), (scaled,))
    g.add("fib", fib, (15,))
    g.add("right", str.upper, (pair["right"],))  # attribute of a local class
    d = run_to_end(Dispatcher(g, workers=2, backend=backend))
    results = d.results
    assert results["pair"] == Pair(3, "21")
    assert type(results["pair"]) is Pair  # the class itself, not a copy
    assert isinstance(results["box"], Box) and results["box"].value == 6
    assert results["unbox"] == 6
    assert results["scaled"] == 35
    assert results["added"] == 35 + 10 + 6
    assert results["fib"] == 610
    assert results["right"] == "21"
    assert_consistent(d)


# -- dead workers --------------------------------------------------------------


def _innocents_and_killer(g: TaskGraph, work, killer) -> dict:
    """Add a killer ``K`` and 23 innocent tasks; returns the expected value
    of each innocent that does not depend on ``K``.

    ::

        r0 r1 --> K --> k1 --> k2       K needs r0 and r1: they are done
                  |                     before it starts
        r2 -------+---> k3
        r2 -> c0 -> c1 -> ... -> c7     a chain beside it
        i0 i1 ... i7                    independent tasks
        r3
    """
    expected = {}
    for i in range(4):
        g.add(f"r{i}", work, (f"r{i}", i))
        expected[f"r{i}"] = i + 1
    kill = g.add("K", killer, (Dependency("r0"), Dependency("r1")))
    k1 = g.add("k1", work, ("k1", kill))
    g.add("k2", work, ("k2", k1))
    g.add("k3", work, ("k3", Dependency("r2"), kill))
    prev, value = Dependency("r2"), expected["r2"]
    for i in range(8):
        prev = g.add(f"c{i}", work, (f"c{i}", prev))
        value = expected[f"c{i}"] = value + 1
    for i in range(8):
        g.add(f"i{i}", work, (f"i{i}", 10 * i))
        expected[f"i{i}"] = 10 * i + 1
    return expected


@pytest.mark.parametrize("how", ["os._exit", "segfault"])
def test_dead_worker_fails_only_its_task(tmp_path, how):
    """The killer gives Err(WorkerDied), its dependents Err(DependencyError),
    every other task its result; a result recorded before the crash is
    never computed again. Tasks running beside the killer may run twice."""
    calls = tmp_path / "calls"
    deaths = tmp_path / "deaths"

    def work(node, *values):
        fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{node}\n".encode())
        os.close(fd)
        time.sleep(0.01)
        return sum(values) + 1

    def killer(*values):
        fd = os.open(deaths, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{time.time()!r}\n".encode())
        os.close(fd)
        if how == "os._exit":
            os._exit(3)
        import ctypes

        ctypes.string_at(0)

    g = TaskGraph()
    expected = _innocents_and_killer(g, work, killer)
    done = DoneTimes()
    d = run_to_end(Dispatcher(g, workers=2, callbacks=[done]))
    results = d.results

    err = results["K"]
    assert isinstance(err, Err) and isinstance(err.exception, ad.WorkerDied)
    assert err.exception.task == "K" and "'K'" in str(err)
    assert err.exception.exitcode in ((3,) if how == "os._exit" else (-11,))
    for node in ("k1", "k2", "k3"):
        exc = results[node].exception
        assert isinstance(exc, ad.DependencyError)
        assert exc.task == node and exc.dependency == "K"
    assert {n: results[n] for n in expected} == expected

    first_death = min(map(float, read_lines(deaths)))
    before = {n for n, t in done.times.items() if t < first_death}
    assert {"r0", "r1"} <= before  # K's dependencies
    runs = read_lines(calls)
    for node in expected:
        assert runs.count(node) >= 1
    for node in before:
        assert runs.count(node) == 1, f"{node} ran again after the crash"
    assert_consistent(d)


def test_worker_killed_from_outside(tmp_path):
    """A task whose worker is SIGKILLed on every attempt fails with
    WorkerDied; the rest of the graph completes."""
    pids = tmp_path / "pids"

    def victim():
        fd = os.open(pids, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        time.sleep(WAIT)
        return "not killed"

    g = TaskGraph()
    v = g.add("victim", victim)
    g.add("after", lambda x: x, (v,))
    for i in range(8):
        g.add(i, lambda i: (time.sleep(0.02), i * i)[1], (i,))
    d = Dispatcher(g, workers=2).start()
    killed = kill_each_new_pid(d, pids)
    assert len(killed) >= 1
    results = d.results
    assert results["victim"].err_type is ad.WorkerDied
    assert results["victim"].exception.task == "victim"
    assert results["victim"].exception.exitcode in (-9,)
    assert results["after"].exception.dependency == "victim"
    assert {i: results[i] for i in range(8)} == {i: i * i for i in range(8)}
    assert all(is_gone(pid) for pid in killed)
    assert_consistent(d)


def test_worker_killed_from_outside_is_retried(tmp_path):
    """With retries=1, a task killed once succeeds on its next attempt."""
    pids = tmp_path / "pids"
    marker = tmp_path / "tried"

    def victim():
        if marker.exists():
            return "second attempt"
        marker.touch()
        fd = os.open(pids, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        time.sleep(WAIT)
        return "not killed"

    g = TaskGraph()
    v = g.add("victim", victim, retries=1)
    g.add("after", str.upper, (v,))
    for i in range(8):
        g.add(i, lambda i: (time.sleep(0.02), i * i)[1], (i,))
    d = Dispatcher(g, workers=2).start()
    killed = kill_each_new_pid(d, pids)
    assert len(killed) == 1
    assert d.results["victim"] == "second attempt"
    assert d.results["after"] == "SECOND ATTEMPT"
    assert {i: d.results[i] for i in range(8)} == {i: i * i for i in range(8)}
    assert_consistent(d)


def test_idle_workers_killed_between_runs():
    """Workers of the warm shared pool killed while idle: the next run
    still completes."""
    g = TaskGraph()
    for i in range(10):
        g.add(i, lambda i: i + 1, (i,))
    d = run_to_end(Dispatcher(g, workers=2))
    assert d.results == {i: i + 1 for i in range(10)}
    workers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                child.kill()
                workers.append(child)
        except psutil.NoSuchProcess:
            continue
    assert workers
    psutil.wait_procs(workers, timeout=WAIT)
    again = run_to_end(Dispatcher(g, workers=2))
    assert again.results == {i: i + 1 for i in range(10)}
    assert_consistent(again)


# -- timeouts ------------------------------------------------------------------


def hang_until(release, started=None):
    """A task that appends its pid to ``started`` and hangs until the file
    ``release`` exists (or ``WAIT`` seconds). A test ends such a task by
    creating ``release``, so no worker is left busy after it; the task
    itself is a closure, so it travels by value."""

    def hang():
        if started is not None:
            fd = os.open(started, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
        deadline = time.monotonic() + WAIT
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        return "released"

    return hang


def test_timeout_fails_that_task_only(tmp_path):
    release = tmp_path / "release"
    g = TaskGraph()
    slow = g.add("slow", hang_until(release), timeout=0.5)
    g.add("after_slow", lambda x: x, (slow,))
    for i in range(10):
        g.add(("fast", i), lambda i: (time.sleep(0.05), i * i)[1], (i,))
    try:
        d = run_to_end(Dispatcher(g, workers=2))
    finally:
        release.touch()
    results = d.results
    exc = results["slow"].exception
    assert isinstance(exc, ad.TaskTimeoutError)
    assert exc.task == "slow" and exc.timeout == 0.5
    assert "'slow'" in str(exc)
    assert results["after_slow"].exception.dependency == "slow"
    assert {i: results[("fast", i)] for i in range(10)} == {i: i * i for i in range(10)}
    assert_consistent(d)


def test_timeout_stops_a_task_running_alone(tmp_path):
    """
    slow (timeout 0.3 s, hangs) -> fast      one lane: slow is alone in flight

    When slow's timeout is recorded its worker has been stopped, so the
    lane's next task does not wait behind it.
    """
    release = tmp_path / "release"
    started = tmp_path / "started"
    stopped = []

    class WhenTimedOut(ad.Callbacks):
        def on_task_done(self, node, result):
            if node != "slow":
                return
            try:  # slow may have timed out before it began
                pids = read_lines(started)
                stopped.append(bool(pids) and is_gone(int(pids[0])))
            finally:
                release.touch()  # whatever happened, let the run end

    g = TaskGraph()
    g.add("slow", hang_until(release, started), timeout=0.3)
    g.add("fast", os.getpid)
    try:
        d = run_to_end(Dispatcher(g, workers=1, callbacks=[WhenTimedOut()]))
    finally:
        release.touch()
    assert d.results["slow"].err_type is ad.TaskTimeoutError
    assert isinstance(d.results["fast"], int)
    assert stopped == [True], "the timed-out task was still running"


def test_timeout_counts_only_time_spent_running(tmp_path):
    """
    run B: b0, b1 (hang until released)     both workers of the shared pool
    run A: quick (timeout 0.3 s)             waits for a worker, then runs

    quick takes no time; waiting for a worker is not running past a timeout.
    """
    release = tmp_path / "release"
    started = tmp_path / "started"
    b = TaskGraph()
    b.add("b0", hang_until(release, started))
    b.add("b1", hang_until(release, started))
    a = TaskGraph()
    a.add("quick", lambda: "ran", timeout=0.3)
    timer = threading.Timer(1.0, release.touch)
    try:
        run_b = Dispatcher(b, workers=2).start()
        deadline = time.monotonic() + WAIT
        while len(read_lines(started)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        timer.start()
        run_a = run_to_end(Dispatcher(a, workers=2))
        assert run_b.wait(WAIT)
    finally:
        timer.cancel()
        release.touch()
    assert run_b.results == {"b0": "released", "b1": "released"}
    assert run_a.results == {"quick": "ran"}


def test_timeout_in_one_run_spares_a_concurrent_run(tmp_path):
    """Both runs share the process pool; killing it for one run's late task
    makes the batches in flight (of both runs) run again, nothing more."""
    release = tmp_path / "release"
    busy = TaskGraph()
    for i in range(20):
        busy.add(i, lambda i: (time.sleep(0.05), -i)[1], (i,))
    late = TaskGraph()
    late.add("late", hang_until(release), timeout=0.3)
    # In flight when late's timeout expires, so the pool is killed.
    late.add("steady", lambda: (time.sleep(0.6), "steady")[1])
    try:
        first = Dispatcher(busy, workers=2).start()
        second = run_to_end(Dispatcher(late, workers=2))
        assert first.wait(WAIT)
    finally:
        release.touch()
    assert first.results == {i: -i for i in range(20)}
    assert second.results["late"].err_type is ad.TaskTimeoutError
    assert second.results["steady"] == "steady"
    assert_consistent(first)
    assert_consistent(second)


# -- exceptions that are not errors --------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sys_exit_and_keyboard_interrupt_are_results(backend):
    def leave():
        import sys

        sys.exit(2)

    def interrupt():
        raise KeyboardInterrupt

    g = TaskGraph()
    ex = g.add("exit", leave)
    ki = g.add("interrupt", interrupt)
    g.add("after_exit", lambda x: x, (ex,))
    g.add("after_interrupt", lambda x: x, (ki,))
    for i in range(6):
        g.add(i, lambda i: i * 3, (i,))
    d = run_to_end(Dispatcher(g, workers=2, backend=backend))
    results = d.results
    assert results["exit"].err_type is SystemExit
    assert results["exit"].exception.code == 2
    assert "leave" in results["exit"].traceback
    assert results["interrupt"].err_type is KeyboardInterrupt
    assert results["after_exit"].exception.dependency == "exit"
    assert results["after_interrupt"].exception.dependency == "interrupt"
    assert {i: results[i] for i in range(6)} == {i: i * 3 for i in range(6)}
    assert_consistent(d)


# -- what cannot travel ----------------------------------------------------------


@pytest.mark.parametrize(
    "saboteur, error",
    [
        ("lock argument", ad.SerializationError),
        ("argument raising at unpickle", ad.SerializationError),
        ("argument exiting at unpickle", ad.WorkerDied),
        ("lock result", ad.SerializationError),
        ("result raising at unpickle", ad.SerializationError),
    ],
)
def test_what_cannot_travel_fails_that_task_only(saboteur, error):
    """One bad task among innocents that share its function, so that it may
    be batched with them: only it fails, with ``error``."""

    def refuse():
        raise RuntimeError("refusing to unpickle")

    class CrashAtUnpickle:
        def __reduce__(self):
            return (refuse, ())

    class ExitAtUnpickle:
        def __reduce__(self):
            return (os._exit, (4,))

    def ident(x):
        return x

    def make(kind):
        if kind == "lock":
            return threading.Lock()
        if kind == "crash":
            return CrashAtUnpickle()
        return kind

    g = TaskGraph()
    for i in range(12):
        g.add(i, ident, (i,))
    if saboteur == "lock argument":
        bad = g.add("bad", ident, (threading.Lock(),))
    elif saboteur == "argument raising at unpickle":
        bad = g.add("bad", ident, (CrashAtUnpickle(),))
    elif saboteur == "argument exiting at unpickle":
        bad = g.add("bad", ident, (ExitAtUnpickle(),))
    elif saboteur == "lock result":
        bad = g.add("bad", make, ("lock",))
    else:
        bad = g.add("bad", make, ("crash",))
    g.add("after", ident, (bad,))
    for i in range(12, 18):
        g.add(i, ident, (i,))
    d = run_to_end(Dispatcher(g, workers=2))
    results = d.results
    exc = results["bad"].exception
    assert type(exc) is error
    assert exc.task == "bad" and "'bad'" in str(exc)
    if error is ad.WorkerDied:
        assert exc.exitcode == 4
    assert results["after"].exception.dependency == "bad"
    assert {i: results[i] for i in range(18)} == {i: i for i in range(18)}
    assert_consistent(d)


# -- size ------------------------------------------------------------------------


def test_long_chain():
    g = TaskGraph()
    prev = g.add(0, lambda: 0)
    inc = lambda x: x + 1  # one function: its tasks batch
    for i in range(1, 2000):
        prev = g.add(i, inc, (prev,))
    d = run_to_end(Dispatcher(g, workers=2))
    assert d.results[1999] == 1999
    assert d.results == {i: i for i in range(2000)}
    assert_consistent(d)


def test_many_independent_tasks():
    g = TaskGraph()
    square = lambda x: x * x
    for i in range(5000):
        g.add(i, square, (i,))
    d = run_to_end(Dispatcher(g, workers=2))
    assert d.results == {i: i * i for i in range(5000)}
    assert_consistent(d)


def test_large_results_between_lanes():
    """
            src (1 MiB)
          /  |  ...  \\
     shift0 shift1 .. shift5      each 1 MiB, spread over the lanes
          \\  |  ...  /
            join                  digests of all six
    """
    size = 1 << 20

    def source():
        return bytes(range(256)) * (size // 256)

    def shift(data, k):
        return data.translate(bytes((x + k) % 256 for x in range(256)))

    def join(*parts):
        return [(len(p), hashlib.sha256(p).hexdigest()) for p in parts]

    g = TaskGraph()
    src = g.add("src", source, cost=1)
    shifted = [g.add(("shift", k), shift, (src, k), cost=5) for k in range(6)]
    g.add("join", join, tuple(shifted))
    g.add("head", lambda b: b[:4], (shifted[5],))
    d = run_to_end(Dispatcher(g, workers=3))
    results = d.results
    data = source()
    assert results["src"] == data
    for k in range(6):
        assert results[("shift", k)] == shift(data, k)
    assert results["join"] == [
        (size, hashlib.sha256(shift(data, k)).hexdigest()) for k in range(6)
    ]
    assert results["head"] == bytes([5, 6, 7, 8])
    # The shifts were not all run on one lane.
    lanes = {
        i for i, lane in enumerate(d.plan.lanes) for n in lane if isinstance(n, tuple)
    }
    assert len(lanes) > 1
    assert_consistent(d)


def test_tasklists_front_end_contains_a_crash():
    """``ad.run`` (ampeg's entry point) gives the same containment."""
    g = {
        "ok": (abs, -1, 1),
        "boom": (lambda: os._exit(9), (), 1),
        "after": (lambda x: x, Dependency("boom"), 1),
    }
    for i in range(6):
        g[i] = (lambda i: i * 2, i, 1)
    results = ad.run(g, 2)
    assert results["ok"] == 1
    assert results["boom"].err_type is ad.WorkerDied
    assert results["after"].exception.dependency == "boom"
    assert {i: results[i] for i in range(6)} == {i: i * 2 for i in range(6)}
