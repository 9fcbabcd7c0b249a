"""Experiment files end to end: each test writes an ``.experiment``, a
``.batch`` and a run module in ``tmp_path``, then loads and runs it.

Run modules report what they did by appending a line to ``calls.log``
beside them, opened with ``O_APPEND`` so lines written by concurrent
workers never mix; a run that must stay running waits for a ``gate`` file
the test creates (or never does, when the run is to be stopped or killed).
Every wait is bounded by ``WAIT``; no assertion is about wall-clock time.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import WAIT, run_to_end

from alma_dag import (
    DependencyError,
    Dispatcher,
    Err,
    RunState,
    StoreError,
    TaskGraph,
)
from alma_dag.experiment import (
    DONE_NODE,
    ExperimentError,
    ExperimentRun,
    load,
    reset,
    status,
)
from alma_dag.store import LockedError, Store

# The top of every run module: where it logs, and how it waits.
PREAMBLE = f"""
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WAIT = {WAIT}


def log(*words):
    fd = os.open(
        os.path.join(HERE, "calls.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT
    )
    try:
        os.write(fd, (" ".join(map(str, words)) + "\\n").encode())
    finally:
        os.close(fd)


def name(instance):
    return os.path.basename(instance)


def wait_for_gate():
    deadline = time.monotonic() + WAIT
    while not os.path.exists(os.path.join(HERE, "gate")):
        if time.monotonic() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)
"""

COUNT_RUNS = """
def run(instance):
    log("run", name(instance))
    return name(instance).upper()


def done():
    log("done")
"""


def write_experiment(
    folder: Path,
    source: str = COUNT_RUNS,
    instances: tuple[str, ...] = ("a", "b"),
    **fields,
) -> Path:
    """Write ``exp.experiment``, ``exp.batch`` and ``run_exp.py`` (the
    preamble, then ``source``) in ``folder``; ``fields`` override the
    experiment's fields."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_exp.py").write_text(PREAMBLE + textwrap.dedent(source))
    (folder / "exp.batch").write_text(json.dumps({"instances": list(instances)}))
    definition = {
        "load": "run_exp.py",
        "workers": 2,
        "iterations": 1,
        "batch": "exp.batch",
        **fields,
    }
    path = folder / "exp.experiment"
    path.write_text(json.dumps(definition))
    return path


def set_fields(path: Path, **fields) -> None:
    """Change an experiment's fields; a field set to None is removed."""
    definition = {**json.loads(path.read_text()), **fields}
    path.write_text(json.dumps({k: v for k, v in definition.items() if v is not None}))


def log_lines(folder: Path) -> list[str]:
    log = folder / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def calls(folder: Path) -> Counter:
    """How many times each line was logged."""
    return Counter(log_lines(folder))


def logged(folder: Path) -> list[list[str]]:
    """The logged lines, split in words."""
    return [line.split() for line in log_lines(folder)]


def wait_until(predicate, what: str, run: Dispatcher | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(all_threads=True)
            if run is not None:
                run.stop(WAIT)
            pytest.fail(f"{what}: not within {WAIT} s")
        time.sleep(0.01)


@pytest.fixture
def runs():
    """Runs to stop at teardown, whatever the test's outcome."""
    started: list[ExperimentRun] = []
    yield started
    for run in started:
        run.stop(WAIT)


@pytest.fixture
def spawn():
    """Start a Python subprocess; killed and reaped at teardown."""
    started: list[subprocess.Popen] = []

    def spawn(code: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- each run once ---------------------------------------------------------------


def test_each_run_once_then_nothing(tmp_path):
    path = write_experiment(tmp_path, instances=("a", "b", "c"), iterations=2)
    run = run_to_end(load(path))
    assert run.state is RunState.FINISHED
    expected = {f"{i}#{n}" for i in "abc" for n in range(2)}
    assert set(run.graph) == expected | {DONE_NODE}
    assert calls(tmp_path) == {"run a": 2, "run b": 2, "run c": 2, "done": 1}
    assert run.result("b#1") == "B"
    progress = run.progress()
    assert (progress.total, progress.done, progress.failed) == (7, 7, 0)
    assert progress.running == 0
    info = status(path)
    assert (info.total, info.done, info.failures) == (6, 6, {})
    assert info.finished and info.holder is None
    assert (tmp_path / "exp.alma" / "store.sqlite").exists()

    again = load(path)
    assert len(again.graph) == 0
    assert run_to_end(again).state is RunState.FINISHED
    assert calls(tmp_path) == {"run a": 2, "run b": 2, "run c": 2, "done": 1}
    assert again.progress().done == again.progress().total == 7
    assert again.result("c#0") == "C"  # from the earlier session


def test_new_iterations_and_instances_run_alone_then_done_again(tmp_path):
    """done() runs after all runs succeeded; runs added later (iterations,
    then an instance) run alone, and done() runs again after them."""
    path = write_experiment(tmp_path, iterations=1)
    run_to_end(load(path))
    assert calls(tmp_path) == {"run a": 1, "run b": 1, "done": 1}

    set_fields(path, iterations=2)
    more = load(path)
    assert set(more.graph) == {"a#1", "b#1", DONE_NODE}
    assert not status(path).finished
    before = more.progress()
    assert (before.total, before.done) == (5, 2)
    run_to_end(more)
    assert calls(tmp_path) == {"run a": 2, "run b": 2, "done": 2}
    assert more.progress().done == 5
    assert more.result("a#0") == "A"

    (tmp_path / "exp.batch").write_text(json.dumps({"instances": ["a", "b", "c"]}))
    wider = load(path)
    assert set(wider.graph) == {"c#0", "c#1", DONE_NODE}
    run_to_end(wider)
    assert calls(tmp_path) == {"run a": 2, "run b": 2, "run c": 2, "done": 3}
    assert status(path).finished


def test_zero_iterations_runs_only_done(tmp_path):
    path = write_experiment(tmp_path, iterations=0)
    run = run_to_end(load(path, backend="inline"))
    assert set(run.graph) == {DONE_NODE}
    assert calls(tmp_path) == {"done": 1}


def test_without_done(tmp_path):
    source = """
    def run(instance, save, state):
        log("run", name(instance))
    """
    path = write_experiment(tmp_path, source)
    run = run_to_end(load(path))
    assert set(run.graph) == {"a#0", "b#0"}
    assert calls(tmp_path) == {"run a": 1, "run b": 1}
    assert len(load(path).graph) == 0


# -- stop, crash and resume --------------------------------------------------------

# Saves its progress, then waits for a gate that never opens: only a stop
# or a kill ends the first call. The next call of the node gets the state.
SAVE_THEN_HANG = """
def run(instance, save, state):
    log("start", name(instance), state or "-", os.getpid())
    if state:
        return state
    save("halfway")
    log("saved", name(instance), os.getpid())
    wait_for_gate()
    return "never"


def done():
    log("done")
"""


def saved_pids(folder: Path) -> list[int]:
    return [int(words[2]) for words in logged(folder) if words[0] == "saved"]


def test_stop_then_resume_with_the_saved_state(tmp_path, runs):
    path = write_experiment(tmp_path, SAVE_THEN_HANG, instances=("a",))
    run = load(path)
    runs.append(run)
    run.start()
    wait_until(lambda: saved_pids(tmp_path), "the run saved its state", run)
    # save() returned in the worker: the state is committed, readable here
    with Store(tmp_path / "exp.alma", readonly=True) as store:
        assert store.state("a#0") == "halfway"

    assert run.stop(WAIT)
    assert run.state is RunState.STOPPED
    assert run.progress().running == 0
    [pid] = saved_pids(tmp_path)
    wait_until(lambda: is_gone(pid), "the stopped run's worker is gone")
    info = status(path)
    assert (info.done, info.failures, info.holder) == (0, {}, None)

    resumed = run_to_end(load(path))
    assert resumed.state is RunState.FINISHED
    assert resumed.result("a#0") == "halfway"
    starts = [words[1:3] for words in logged(tmp_path) if words[0] == "start"]
    assert starts == [["a", "-"], ["a", "halfway"]]
    assert calls(tmp_path)["done"] == 1


def test_stopped_run_continues_with_start(tmp_path, runs):
    path = write_experiment(tmp_path, SAVE_THEN_HANG, instances=("a",))
    run = load(path)
    runs.append(run)
    run.start()
    wait_until(lambda: saved_pids(tmp_path), "the run saved its state", run)
    assert run.stop(WAIT)
    run_to_end(run)
    assert run.result("a#0") == "halfway"
    assert calls(tmp_path)["done"] == 1


def test_killed_process_resumes_with_the_saved_state(tmp_path, spawn):
    """The process running the experiment is killed mid-run: its lock does
    not block the next start, which runs the interrupted node again with
    the state it saved."""
    path = write_experiment(tmp_path, SAVE_THEN_HANG, instances=("a",))
    proc = spawn(
        """
        import sys
        from alma_dag.experiment import load
        load(sys.argv[1], backend="inline").run()
        """,
        path,
    )
    wait_until(lambda: saved_pids(tmp_path), "the subprocess saved its state")
    assert saved_pids(tmp_path) == [proc.pid]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(WAIT)
    info = status(path)
    assert (info.done, info.finished, info.holder) == (0, False, None)

    run = run_to_end(load(path))
    assert run.result("a#0") == "halfway"
    starts = [words[1:3] for words in logged(tmp_path) if words[0] == "start"]
    assert starts == [["a", "-"], ["a", "halfway"]]
    assert calls(tmp_path)["done"] == 1
    assert status(path).finished


# -- what runs at once ---------------------------------------------------------------

TIMED = """
def run(instance):
    log("start", name(instance), repr(time.time()))
    time.sleep(0.05)
    log("end", name(instance), repr(time.time()))
"""


def max_overlap(folder: Path) -> int:
    """Most runs between their start and end lines at any moment."""
    events = sorted(
        (float(t), 0 if kind == "end" else 1) for kind, _, t in logged(folder)
    )
    running = most = 0
    for _, starts in events:  # at equal times, an end comes first
        running += 1 if starts else -1
        most = max(most, running)
    return most


# (the scheduler field, the memory field, most runs at once on 2 workers)
ADMISSION = {
    "max_threads 1": ({"name": "max_threads", "max_threads": 1}, None, 1),
    "max_memory": (
        {
            "name": "max_memory",
            "max_memory_percentage": 0.5,
            "total_system_memory": 1000,
        },
        300,
        1,
    ),
    "max_memory, exact budget": (
        {
            "name": "max_memory",
            "max_memory_percentage": 0.5,
            "total_system_memory": 1000,
        },
        250,
        2,
    ),
    "laxist": ({"name": "laxist"}, 10, 2),
}


@pytest.mark.parametrize("case", ADMISSION)
def test_scheduler_and_memory_fields_bound_concurrency(tmp_path, case):
    """The file's scheduler admits the runs, counting their memory: 300 MiB
    runs on a 500 MiB budget run one at a time, 250 MiB ones two at once."""
    scheduler, memory, most = ADMISSION[case]
    fields = {"scheduler": scheduler}
    if memory is not None:
        fields["memory"] = memory
    path = write_experiment(tmp_path, TIMED, instances=tuple("abcd"), **fields)
    run = load(path)
    assert (
        type(run.scheduler).__name__
        == {
            "max_threads": "MaxThreadsScheduler",
            "max_memory": "MaxMemoryScheduler",
            "laxist": "LaxistScheduler",
        }[scheduler["name"]]
    )
    assert run.experiment.scheduler is run.scheduler
    assert run.experiment.memory == (memory or 0)
    assert {run.graph.task(n).memory for n in run.graph} == {memory or 0}
    run_to_end(run)
    assert run.state is RunState.FINISHED
    assert len(logged(tmp_path)) == 8
    assert 1 <= max_overlap(tmp_path) <= most


def test_without_scheduler_runs_declare_no_memory(tmp_path):
    run = load(write_experiment(tmp_path))
    assert run.scheduler is None
    assert (run.experiment.memory, run.experiment.scheduler) == (0.0, None)
    assert {run.graph.task(n).memory for n in run.graph} == {0.0}


@pytest.mark.parametrize("override", [None, 1])
def test_workers_bound_concurrency(tmp_path, override):
    instances = tuple("abcdef")
    path = write_experiment(tmp_path, TIMED, instances=instances, workers=2)
    run = run_to_end(load(path, workers=override))
    assert run.workers == (override or 2)
    assert len(logged(tmp_path)) == 2 * len(instances)
    assert 1 <= max_overlap(tmp_path) <= run.workers


def test_workers_override_is_checked(tmp_path):
    path = write_experiment(tmp_path)
    with pytest.raises(ExperimentError, match="workers"):
        load(path, workers=0)
    assert not (tmp_path / "exp.alma").exists()


# -- paths ----------------------------------------------------------------------------


def test_paths_are_relative_to_the_files_naming_them(tmp_path, monkeypatch):
    """
    tmp/experiments/sub/e.experiment   load ../../code/run_it.py
                                       batch ../../batches/set.batch
    tmp/code/run_it.py                 imports shouting.py beside it
    tmp/batches/set.batch              ../data/x.txt, more/y.txt
    The test runs from an unrelated folder, on a warm worker pool that
    was started before the run module's folder was known.
    """
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "shouting.py").write_text(
        "def shout(text):\n    return text.upper() + '!'\n"
    )
    (tmp_path / "code" / "run_it.py").write_text(
        "from shouting import shout\n\n\n"
        "def run(instance):\n    with open(instance) as f:\n"
        "        return shout(f.read())\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("ex")
    (tmp_path / "batches" / "more").mkdir(parents=True)
    (tmp_path / "batches" / "more" / "y.txt").write_text("why")
    (tmp_path / "batches" / "set.batch").write_text(
        json.dumps({"instances": ["../data/x.txt", "more/y.txt"]})
    )
    folder = tmp_path / "experiments" / "sub"
    folder.mkdir(parents=True)
    path = folder / "e.experiment"
    path.write_text(
        json.dumps(
            {
                "load": "../../code/run_it.py",
                "workers": 2,
                "iterations": 1,
                "batch": "../../batches/set.batch",
            }
        )
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", list(sys.path))
    g = TaskGraph()
    g.add("warm", abs, (-1,))
    Dispatcher(g, workers=2, backend="loky").run()

    run = run_to_end(load(path))
    assert run.results == {"../data/x.txt#0": "EX!", "more/y.txt#0": "WHY!"}
    assert (folder / "e.alma").is_dir()
    assert os.listdir(elsewhere) == []
    assert run.experiment.name == "e"


# -- parameters --------------------------------------------------------------------

SWEPT = """
def run(instance, save, state, parameters):
    log("run", name(instance), parameters["k"], type(parameters).__name__)
    return (name(instance), parameters)
"""


def test_parameters_sweep(tmp_path):
    parameters = {"k": [1, 2], "mode": ["x"]}
    path = write_experiment(
        tmp_path, SWEPT, instances=("a",), iterations=2, parameters=parameters
    )
    run = run_to_end(load(path))
    ids = {
        'a {"k": 1, "mode": "x"}#0',
        'a {"k": 1, "mode": "x"}#1',
        'a {"k": 2, "mode": "x"}#0',
        'a {"k": 2, "mode": "x"}#1',
    }
    assert set(run.graph) == ids
    assert run.result('a {"k": 2, "mode": "x"}#1') == ("a", {"k": 2, "mode": "x"})
    assert calls(tmp_path) == {"run a 1 dict": 2, "run a 2 dict": 2}
    assert status(path).total == 4

    # the same ids from the same definition, whatever the key order
    set_fields(path, parameters={"mode": ["x"], "k": [1, 2, 3]})
    more = load(path)
    assert set(more.graph) == {'a {"k": 3, "mode": "x"}#0', 'a {"k": 3, "mode": "x"}#1'}
    run_to_end(more)
    assert calls(tmp_path)["run a 3 dict"] == 2
    assert calls(tmp_path)["run a 1 dict"] == 2


# -- bad input ---------------------------------------------------------------------


def _experiment_text(text):
    return lambda folder: (folder / "exp.experiment").write_text(text)


def _batch_text(text):
    return lambda folder: (folder / "exp.batch").write_text(text)


def _fields(**fields):
    return lambda folder: set_fields(folder / "exp.experiment", **fields)


def _module(source):
    return lambda folder: (folder / "run_exp.py").write_text(textwrap.dedent(source))


# (what to break, the file the message names, its field, words it holds)
BAD_INPUTS = {
    "experiment JSON": (
        _experiment_text('{"load": "run_exp.py",\n  "workers": 2,,\n}'),
        "exp.experiment",
        None,
        ["malformed JSON", "line 2, column 16"],
    ),
    "experiment not an object": (
        _experiment_text("[1, 2]"),
        "exp.experiment",
        None,
        ["JSON object"],
    ),
    "unknown field": (_fields(worker=3), "exp.experiment", "worker", ["'worker'"]),
    "missing run module": (
        _fields(load="nowhere.py"),
        "exp.experiment",
        "load",
        ["nowhere.py", "not found"],
    ),
    "missing batch": (
        _fields(batch="nowhere.batch"),
        "exp.experiment",
        "batch",
        ["nowhere.batch", "not found"],
    ),
    "load not a string": (_fields(load=3), "exp.experiment", "load", ["got 3"]),
    "workers 0": (_fields(workers=0), "exp.experiment", "workers", ["got 0"]),
    "workers a string": (
        _fields(workers="2"),
        "exp.experiment",
        "workers",
        ["got '2'"],
    ),
    "workers missing": (_fields(workers=None), "exp.experiment", "workers", []),
    "iterations < 0": (
        _fields(iterations=-1),
        "exp.experiment",
        "iterations",
        ["got -1"],
    ),
    "name empty": (_fields(name=""), "exp.experiment", "name", []),
    "parameters empty": (
        _fields(parameters={}),
        "exp.experiment",
        "parameters",
        [],
    ),
    "memory < 0": (_fields(memory=-1), "exp.experiment", "memory", ["got -1"]),
    "memory a string": (
        _fields(memory="512"),
        "exp.experiment",
        "memory",
        ["non-negative number", "got '512'"],
    ),
    "memory a bool": (_fields(memory=True), "exp.experiment", "memory", []),
    "scheduler not an object": (
        _fields(scheduler="max_threads"),
        "exp.experiment",
        "scheduler",
        ["'laxist', 'max_memory', 'max_threads'", "got 'max_threads'"],
    ),
    "scheduler without name": (
        _fields(scheduler={"max_threads": 2}),
        "exp.experiment",
        "scheduler",
        ["got name None"],
    ),
    "scheduler unknown": (
        _fields(scheduler={"name": "fastest"}),
        "exp.experiment",
        "scheduler",
        ["got name 'fastest'"],
    ),
    "scheduler unknown argument": (
        _fields(scheduler={"name": "max_threads", "threads": 2}),
        "exp.experiment",
        "scheduler",
        ["'threads'", "its arguments are 'max_threads'"],
    ),
    "scheduler max_threads 0": (
        _fields(scheduler={"name": "max_threads", "max_threads": 0}),
        "exp.experiment",
        "scheduler",
        ["max_threads must be a positive integer, got 0"],
    ),
    "scheduler percentage > 1": (
        _fields(scheduler={"name": "max_memory", "max_memory_percentage": 2}),
        "exp.experiment",
        "scheduler",
        ["max_memory_percentage", "got 2"],
    ),
    "memory over the budget": (
        _fields(
            memory=600,
            scheduler={
                "name": "max_memory",
                "max_memory_percentage": 0.5,
                "total_system_memory": 1000,
            },
        ),
        "exp.experiment",
        "memory",
        ["'a#0'", "memory 600 MiB", "budget of 500 MiB"],
    ),
    "batch JSON": (
        _batch_text('{"instances": [\n"a" "b"]}'),
        "exp.batch",
        None,
        ["malformed JSON", "line 2, column 5"],
    ),
    "batch without instances": (
        _batch_text('{"files": ["a"]}'),
        "exp.batch",
        "instances",
        [],
    ),
    "instances not a list": (
        _batch_text('{"instances": "a"}'),
        "exp.batch",
        "instances",
        [],
    ),
    "instances not strings": (
        _batch_text('{"instances": ["a", 3]}'),
        "exp.batch",
        "instances",
        [],
    ),
    "instance twice": (
        _batch_text('{"instances": ["a", "b", "a"]}'),
        "exp.batch",
        "instances",
        ["'a' is listed twice"],
    ),
    "module without run": (
        _module("def walk(instance):\n    pass\n"),
        "run_exp.py",
        "run",
        ["no run(instance)"],
    ),
    "run not a function": (_module("run = 3\n"), "run_exp.py", "run", []),
    "run with two arguments": (
        _module("def run(instance, save):\n    pass\n"),
        "run_exp.py",
        "run",
        ["run(instance, save)", "unusable signature"],
    ),
    "run with no argument": (
        _module("def run():\n    pass\n"),
        "run_exp.py",
        "run",
        ["unusable signature"],
    ),
    "run wants parameters, none given": (
        _module("def run(instance, parameters):\n    pass\n"),
        "run_exp.py",
        "run",
        ["'parameters'"],
    ),
    "parameters given, run takes none": (
        lambda folder: set_fields(folder / "exp.experiment", parameters={"k": [1]}),
        "run_exp.py",
        "run",
        ["'parameters'"],
    ),
    "done not a function": (
        _module("def run(instance):\n    pass\n\ndone = 1\n"),
        "run_exp.py",
        "done",
        [],
    ),
    "module fails to import": (
        _module("raise RuntimeError('half-written module')\n"),
        "run_exp.py",
        None,
        ["RuntimeError: half-written module"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, case):
    breaks, file, field, words = BAD_INPUTS[case]
    path = write_experiment(tmp_path)
    breaks(tmp_path)
    with pytest.raises(ExperimentError) as info:
        load(path)
    error = info.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert message.startswith(str(tmp_path / file) + ": "), message
    assert error.field == field
    if field is not None:
        assert field in message
    for word in words:
        assert word in message
    assert not (tmp_path / "exp.alma").exists()


# -- failures ----------------------------------------------------------------------

BREAKS_ON_B = """
def run(instance):
    log("run", name(instance))
    if name(instance) == "b" and os.path.exists(os.path.join(HERE, "broken")):
        raise ValueError("bad instance b\\nsecond line")
    return name(instance)


def done():
    log("done")
"""


def test_failure_is_recorded_and_retried(tmp_path):
    path = write_experiment(tmp_path, BREAKS_ON_B, instances=("a", "b", "c"))
    (tmp_path / "broken").touch()
    run = run_to_end(load(path))
    assert run.state is RunState.FAILED
    assert calls(tmp_path) == {"run a": 1, "run b": 1, "run c": 1}  # no done
    err = run.result("b#0")
    assert isinstance(err, Err) and err.err_type is ValueError
    assert "Traceback" in err.traceback
    assert "run_exp.py" in err.traceback and "bad instance b" in err.traceback
    assert isinstance(run.result(DONE_NODE).exception, DependencyError)
    assert run.result("a#0") == "a" and run.result("c#0") == "c"
    progress = run.progress()
    assert (progress.done, progress.failed) == (2, 2)  # b#0 and done()
    info = status(path)
    assert info.failures == {"b#0": "ValueError: bad instance b"}
    assert (info.done, info.finished) == (2, False)

    # A new load runs the failed node again (and fails again): not a, c.
    again = run_to_end(load(path))
    assert set(again.graph) == {"b#0", DONE_NODE}
    assert calls(tmp_path) == {"run a": 1, "run b": 2, "run c": 1}

    # The cause fixed, start() again runs only what failed, then done().
    (tmp_path / "broken").unlink()
    run_to_end(again)
    assert again.state is RunState.FINISHED
    assert calls(tmp_path) == {"run a": 1, "run b": 3, "run c": 1, "done": 1}
    info = status(path)
    assert (info.done, info.failures, info.finished) == (3, {}, True)


# -- status beside a running process -----------------------------------------------

FAST_AND_GATED = """
def run(instance):
    log("run", name(instance))
    if name(instance) != "fast":
        wait_for_gate()
    return name(instance)


def done():
    log("done")
"""


def test_status_beside_another_process_that_runs_it(tmp_path, spawn):
    path = write_experiment(
        tmp_path, FAST_AND_GATED, instances=("fast", "slow1", "slow2"), workers=3
    )
    proc = spawn(
        """
        import sys
        from alma_dag.experiment import load
        sys.exit(load(sys.argv[1]).run().value != "finished")
        """,
        path,
    )

    def is_partly_done():
        if proc.poll() is not None:
            pytest.fail(f"the subprocess exited early ({proc.returncode})")
        info = status(path)
        return info.done == 1 and info.holder is not None

    wait_until(is_partly_done, "status shows the subprocess's first result")
    info = status(path)
    assert info.holder["pid"] == proc.pid
    assert info.holder["host"] == socket.gethostname()
    assert (info.total, info.done, info.failures, info.finished) == (3, 1, {}, False)

    other = load(path)
    with pytest.raises(LockedError) as locked:
        other.start()
    assert locked.value.pid == proc.pid
    assert str(proc.pid) in str(locked.value)
    assert other.state is RunState.PENDING
    with pytest.raises(LockedError):
        reset(path)

    (tmp_path / "gate").touch()
    assert proc.wait(WAIT) == 0
    info = status(path)
    assert (info.done, info.finished, info.holder) == (3, True, None)
    assert calls(tmp_path) == {"run fast": 1, "run slow1": 1, "run slow2": 1, "done": 1}


# -- reset -------------------------------------------------------------------------

SAVES = """
def run(instance, save, state):
    log("run", name(instance), state or "-")
    save("seen")
"""


@pytest.mark.parametrize("backend", ["inline", "loky"])
def test_reset_forgets_everything(tmp_path, backend):
    path = write_experiment(tmp_path, SAVES, instances=("a",), workers=1)
    assert reset(path) is False
    run_to_end(load(path, backend=backend))
    assert reset(path) is True
    assert not (tmp_path / "exp.alma").exists()
    assert status(path).done == 0
    assert reset(path) is False
    # Run anew, the node gets no state: the one saved before is forgotten,
    # even by the worker that saved it.
    run_to_end(load(path, backend=backend))
    assert calls(tmp_path) == {"run a -": 2}


@pytest.mark.parametrize("damage", ["garbage", "other version", "empty"])
def test_reset_a_store_too_damaged_to_open(tmp_path, damage):
    """The message refusing a damaged store says to reset it: reset works."""
    path = write_experiment(tmp_path)
    run_to_end(load(path, backend="inline")).store.close()  # WAL folded in
    database = tmp_path / "exp.alma" / "store.sqlite"
    if damage == "garbage":
        database.write_bytes(b"garbage" * 1000)
    elif damage == "other version":
        with sqlite3.connect(database) as db:
            db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
        db.close()
    else:  # a run directory left empty
        database.unlink()
    with pytest.raises(StoreError, match="reset|no alma_dag store"):
        load(path)
    assert reset(path) is True
    assert not (tmp_path / "exp.alma").exists()
    run_to_end(load(path, backend="inline"))
    assert calls(tmp_path) == {"run a": 2, "run b": 2, "done": 2}


def test_reset_refused_while_running(tmp_path, runs):
    path = write_experiment(tmp_path, FAST_AND_GATED, instances=("slow",))
    run = load(path)
    runs.append(run)
    run.start()
    wait_until(lambda: calls(tmp_path)["run slow"], "the run began", run)
    with pytest.raises(LockedError, match=str(os.getpid())):
        reset(path)
    (tmp_path / "gate").touch()
    assert run.wait(WAIT)
    assert reset(path) is True
