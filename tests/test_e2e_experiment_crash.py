"""Experiments whose dispatcher process is killed with SIGKILL, then reloaded.

The experiment has one iteration per instance, so an instance names its
node. Its ``run(instance, save, state)`` appends ``"<instance> <token>"`` to
a log opened with ``O_APPEND`` (lines of concurrent workers never mix),
saves the attempt number as its state, sleeps 5-40 ms and returns the
token, which is unique per call; ``done()`` appends to another log the
number of runs recorded done when it started.

Each trial starts ``load(path).run()`` in a fresh interpreter and kills it
with SIGKILL: during start-up, while ``load()`` imports the run module,
as soon as ``Store()`` has made the run directory, after a seeded random
delay, a few log lines into the run, or as soon as ``done()`` has run. Between
trials the log and a read-only ``Store`` are read, which splits the calls
into sessions and gives what each session left recorded. A last session
runs to the end. The accounting is exact:

- a node recorded done is never called again, and its recorded result
  never changes (nothing recorded is lost);
- within a session a node is called at most once, and a session that was
  not killed recorded every node it called;
- at the end every node is recorded, with the token of its last call;
- ``done()`` ran once, after every run was recorded -- or once more for
  each session killed after its ``done()`` ran and before it was recorded.

Every process a session started is gone before the next one begins. A
killed dispatcher's loky workers do not yet exit with it (see
``test_workers_exit_with_a_killed_dispatcher``): left alone they would run
the batches queued for them beside the next session, so the test kills them.

Every wait is bounded: the children dump their stacks and exit after
``WAIT`` seconds (``faulthandler``), and every poll has a deadline.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import WAIT

import alma_dag.experiment as ex
import alma_dag.store as store_module
from alma_dag import RunState
from alma_dag.errors import StoreError
from alma_dag.store import DATABASE, Store

WORKERS = 2
INSTANCES = 60
SEED = 20240607

#: Seconds processes left by a killed dispatcher may take to exit.
GRACE = 10

#: Environment variable carrying a marker to every process a session
#: starts (loky workers and resource trackers inherit it), so the test
#: finds them after their parent is gone.
MARK = "ALMA_DAG_CRASH_TEST_MARK"

#: When set, the run module holds its import (inside ``load()``) after
#: touching this file, so the test can kill the dispatcher while loading.
HOLD = "ALMA_DAG_CRASH_TEST_HOLD"

RUN_MODULE = """\
import os
import random
import sqlite3
import time
import uuid

RUN_LOG = {run_log!r}
DONE_LOG = {done_log!r}
DATABASE = {database!r}


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if os.environ.get({hold!r}):  # the test kills the dispatcher meanwhile
    _append(os.environ[{hold!r}], "loading\\n")
    time.sleep(60)


def run(instance, save, state):
    attempt = int(state or 0) + 1
    token = f"{{attempt}}:{{uuid.uuid4().hex}}"
    _append(RUN_LOG, f"{{os.path.basename(instance)}} {{token}}\\n")
    save(str(attempt))
    time.sleep(random.uniform(0.005, 0.04))
    return token


def done():
    db = sqlite3.connect(f"file:{{DATABASE}}?mode=ro", uri=True)
    try:
        (n,) = db.execute("SELECT count(*) FROM nodes WHERE status = 1").fetchone()
    finally:
        db.close()
    _append(DONE_LOG, f"done {{n}}\\n")
"""


@dataclass
class Layout:
    experiment: Path
    run_dir: Path
    run_log: Path
    done_log: Path
    #: Node id by the instance's base name, which run() logs.
    nodes: dict[str, str]


def write_experiment(root: Path, instances: int = INSTANCES) -> Layout:
    folder = root / "exp"
    (folder / "data").mkdir(parents=True)
    names = [f"data/i{i:03d}.txt" for i in range(instances)]
    for name in names:
        (folder / name).write_text(name)
    (folder / "crash.batch").write_text(json.dumps({"instances": names}))
    spec = {
        "load": "crash.py",
        "workers": WORKERS,
        "iterations": 1,
        "batch": "crash.batch",
    }
    experiment = folder / "crash.experiment"
    experiment.write_text(json.dumps(spec))
    run_dir = folder / "crash.alma"
    layout = Layout(experiment, run_dir, root / "run.log", root / "done.log", nodes={})
    (folder / "crash.py").write_text(
        RUN_MODULE.format(
            run_log=str(layout.run_log),
            done_log=str(layout.done_log),
            database=str(run_dir / DATABASE),
            hold=HOLD,
        )
    )
    definition = ex.read_experiment(experiment)
    ids = definition.node_ids()
    assert len(ids) == instances
    layout.nodes = {Path(n).name: node for n, node in zip(names, ids, strict=True)}
    return layout


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def recorded(run_dir: Path) -> dict[str, object]:
    """The result of each node recorded done, read through a read-only Store."""
    if not (run_dir / DATABASE).exists():
        return {}
    try:
        store = Store(run_dir, readonly=True)
    except StoreError:
        # Killed while Store() was writing the layout: nothing can be
        # recorded yet (the next load() completes the layout).
        db = sqlite3.connect(f"file:{run_dir / DATABASE}?mode=ro", uri=True)
        try:
            tables = db.execute("SELECT name FROM sqlite_master").fetchall()
            if ("nodes",) in tables:
                (rows,) = db.execute("SELECT count(*) FROM nodes").fetchone()
                assert rows == 0, "a store with nodes that Store() cannot read"
        finally:
            db.close()
        return {}
    with store:
        return {node: store.result(node) for node in store.done_ids()}


# -- sessions in child processes ----------------------------------------------


@dataclass
class Session:
    process: subprocess.Popen
    marker: str
    stderr: Path

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")[-4000:]


def start_session(layout: Layout, name: str, env: dict | None = None) -> Session:
    """``load(path).run()`` in a fresh interpreter; it dumps its stacks and
    exits if it runs longer than ``WAIT`` seconds."""
    code = (
        "import faulthandler; "
        f"faulthandler.dump_traceback_later({WAIT}, exit=True); "
        "import alma_dag.experiment as e; "
        f"e.load({str(layout.experiment)!r}).run()"
    )
    marker = f"{uuid.uuid4().hex}-{name}"
    stderr = layout.run_log.with_name(f"{name}.stderr")
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, MARK: marker, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Session(process, marker, stderr)


def marked(marker: str) -> list[psutil.Process]:
    """Live processes (zombies are dead) started for the session ``marker``."""
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.environ().get(MARK) == marker
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.Error:  # gone, a zombie, or another user's
            continue
    return found


def wait_gone(marker: str, timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for the session's processes to exit;
    returns those left."""
    deadline = time.monotonic() + timeout
    left = marked(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = marked(marker)
    return left


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue


def abandon(session: Session) -> None:
    """Kill a session that went wrong, and every process it started."""
    session.process.kill()
    session.process.wait(WAIT)
    kill_all(marked(session.marker))
    wait_gone(session.marker, GRACE)


def wait_until(session: Session, condition: Callable[[], bool], what: str) -> bool:
    """Poll ``condition``; False when the session ended first."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if session.process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            abandon(session)
            pytest.fail(f"waited {WAIT} s for {what}:\n{session.errors()}")
        time.sleep(0.002)
    return True


def kill_session(session: Session) -> None:
    """SIGKILL the dispatcher, then whatever it left behind."""
    os.kill(session.process.pid, signal.SIGKILL)
    session.process.wait(WAIT)
    # Until workers watch their parent (test_workers_exit_with_a_killed_
    # dispatcher), orphans would go on running the batches queued for
    # them, beside the next session: kill them, as their death with the
    # dispatcher would.
    kill_all(marked(session.marker))
    left = wait_gone(session.marker, GRACE)
    assert not left, f"processes of a killed session left: {left}"


def finish_session(session: Session) -> None:
    try:
        code = session.process.wait(WAIT + 5)
    except subprocess.TimeoutExpired:
        abandon(session)
        pytest.fail(f"the session did not end:\n{session.errors()}")
    assert code == 0, f"the session failed with {code}:\n{session.errors()}"
    left = wait_gone(session.marker, GRACE)
    kill_all(left)
    assert not left, f"processes of a finished session left: {left}"


# -- the trials -----------------------------------------------------------------


@dataclass
class Segment:
    """What one session did, read once it and its processes were gone."""

    name: str
    killed: bool
    #: Node ids of the run() calls it made, in log order.
    calls: list[str]
    #: Tokens those calls logged.
    tokens: list[str]
    #: Lines done() wrote.
    done_lines: list[str]
    #: Results recorded done in the store after it.
    recorded: dict[str, object]


def trial(layout: Layout, name: str, trigger, rng: random.Random) -> Segment:
    """Run a session until ``trigger`` says kill (or it ends by itself):
    None (never), "loading", "creating", "done", a delay in seconds or a
    number of calls."""
    before = len(lines(layout.run_log))
    before_done = len(lines(layout.done_log))
    env = {}
    if trigger is None:
        condition, what = (lambda: False), "the end of the run"
    elif trigger == "done":
        condition = lambda: len(lines(layout.done_log)) > before_done
        what = "done() to run"
    elif trigger == "creating":
        condition, what = layout.run_dir.exists, "Store() to make the run directory"
    elif trigger == "loading":
        hold = layout.run_log.with_name(f"{name}.hold")
        env[HOLD] = str(hold)
        condition, what = hold.exists, "load() to import the run module"
    elif isinstance(trigger, float):
        deadline = time.monotonic() + trigger
        condition = lambda: time.monotonic() >= deadline
        what = f"{trigger:.2f} s"
    else:
        wanted = before + trigger
        condition = lambda: len(lines(layout.run_log)) >= wanted
        what = f"{trigger} more run() calls"
    session = start_session(layout, name, env)
    if wait_until(session, condition, what):
        if isinstance(trigger, int):
            time.sleep(rng.uniform(0, 0.03))  # land anywhere in a call
        kill_session(session)
        killed = True
    else:
        finish_session(session)
        killed = False
    new = [line.split() for line in lines(layout.run_log)[before:]]
    return Segment(
        name,
        killed,
        [layout.nodes[instance] for instance, _ in new],
        [token for _, token in new],
        lines(layout.done_log)[before_done:],
        recorded(layout.run_dir),
    )


def check_accounting(layout: Layout, segments: list[Segment]) -> None:
    every = set(layout.nodes.values())
    before: dict[str, object] = {}
    done_calls = 0
    for seg in segments:
        where = f"session {seg.name!r}"
        lost = {n: r for n, r in before.items() if seg.recorded.get(n) != r}
        assert not lost, f"{where}: recorded results lost or changed: {lost}"
        again = sorted(n for n in seg.calls if n in before)
        assert not again, f"{where}: nodes recorded done were run again: {again}"
        twice = [n for n, k in collections.Counter(seg.calls).items() if k > 1]
        assert not twice, f"{where}: nodes called twice in one session: {twice}"
        if not seg.killed:
            unrecorded = set(seg.calls) - set(seg.recorded)
            assert not unrecorded, f"{where}: ran but not recorded: {unrecorded}"
        if seg.done_lines:
            assert ex.DONE_NODE not in before, f"{where}: done() ran again"
            assert seg.done_lines == [f"done {len(every)}"], (
                f"{where}: done() ran {len(seg.done_lines)} times, or before "
                f"every run was recorded: {seg.done_lines}"
            )
            done_calls += 1
        before = seg.recorded
    final = segments[-1]
    assert not final.killed
    assert set(final.recorded) == every | {ex.DONE_NODE}, "nodes lost"
    last_token = {}
    attempts = collections.defaultdict(list)
    for seg in segments:
        for node, token in zip(seg.calls, seg.tokens, strict=True):
            last_token[node] = token
            attempts[node].append(int(token.split(":")[0]))
    assert set(last_token) == every
    for node in every:
        assert final.recorded[node] == last_token[node], node
        # The state saved by one attempt reaches the next one (an attempt
        # killed before its save() passes on the same number).
        numbers = attempts[node]
        assert numbers[0] == 1, (node, numbers)
        steps = zip(numbers, numbers[1:], strict=False)
        assert all(b - a in (0, 1) for a, b in steps), numbers
    assert ex.status(layout.experiment).finished
    # done() once, plus once for each session killed after its done() ran
    # and before it was recorded -- the only way it may run twice.
    explained = sum(
        1
        for seg in segments
        if seg.killed and seg.done_lines and ex.DONE_NODE not in seg.recorded
    )
    assert done_calls == 1 + explained
    assert len(lines(layout.done_log)) == done_calls


@pytest.mark.slow
def test_killed_dispatcher_loses_nothing_and_reruns_nothing_recorded(tmp_path):
    layout = write_experiment(tmp_path)
    rng = random.Random(SEED)
    triggers = [
        0.05,  # during start-up, before load()
        "loading",  # inside load(), importing the run module
        "creating",  # inside load(), as Store() makes the run directory
        rng.randint(1, 6),  # a few calls into the run
        round(rng.uniform(0.3, 1.5), 3),
        rng.randint(1, 6),
        rng.randint(1, 6),
        "done",  # as soon as done() ran: recording it, or shutting down
    ]
    segments = [
        trial(layout, f"kill{i}", trigger, rng) for i, trigger in enumerate(triggers)
    ]
    assert sum(seg.killed for seg in segments) >= 5, [s.name for s in segments]
    segments.append(trial(layout, "final", None, rng))
    check_accounting(layout, segments)


# -- what a crash leaves behind ------------------------------------------------


def _kill_mid_run(layout: Layout) -> tuple[Session, list[psutil.Process]]:
    """A session killed with SIGKILL a few calls into its run; returns it
    and its processes as they were just before the kill."""
    session = start_session(layout, "victim")
    before = len(lines(layout.run_log))
    started = wait_until(
        session, lambda: len(lines(layout.run_log)) >= before + 2, "2 run() calls"
    )
    assert started, f"the session ended by itself:\n{session.errors()}"
    children = psutil.Process(session.process.pid).children(recursive=True)
    os.kill(session.process.pid, signal.SIGKILL)
    session.process.wait(WAIT)
    return session, children


@pytest.mark.slow
def test_workers_exit_with_a_killed_dispatcher(tmp_path):
    layout = write_experiment(tmp_path, instances=30)
    session, children = _kill_mid_run(layout)
    try:
        assert children, "the dispatcher had started no worker"
        left = wait_gone(session.marker, GRACE)
        assert not left, f"still running {GRACE} s after the dispatcher died: {left}"
    finally:
        kill_all(marked(session.marker))
        assert not wait_gone(session.marker, GRACE)


def test_status_names_no_holder_after_a_crash(tmp_path):
    """A killed dispatcher leaves owner.json behind, but not its lock."""
    layout = write_experiment(tmp_path, instances=30)
    session, _ = _kill_mid_run(layout)
    kill_all(marked(session.marker))
    assert not wait_gone(session.marker, GRACE)
    assert (layout.run_dir / "owner.json").exists()
    assert ex.status(layout.experiment).holder is None


def _crash_while_creating(run_dir: Path, when: str) -> None:
    """Leave ``run_dir`` as a SIGKILL inside ``Store()`` creating it would."""
    run_dir.mkdir(mode=0o700)
    if when == "after mkdir":
        return
    db = sqlite3.connect(run_dir / DATABASE, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        if when == "after the tables":
            db.executescript("BEGIN;" + store_module._SCHEMA + "COMMIT;")
    finally:
        db.close()
    os.chmod(run_dir / DATABASE, 0o600)


@pytest.mark.parametrize("when", ["after mkdir", "after connect", "after the tables"])
def test_load_after_a_crash_while_creating_the_store(tmp_path, when):
    """Store() makes the directory, the database and its layout in steps; a
    crash between them leaves a store that the next load() completes."""
    layout = write_experiment(tmp_path, instances=3)
    _crash_while_creating(layout.run_dir, when)
    run = ex.load(layout.experiment, backend="inline")
    try:
        assert run.run() is RunState.FINISHED
    finally:
        run.store.close()
    assert ex.status(layout.experiment).finished
