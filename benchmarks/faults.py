"""Fault injection across the front ends: what a crash, a dying worker or a
damaged store costs.

Run by hand::

    python benchmarks/faults.py [--trials N] [--seed S] [--fault NAME ...]

For each front end -- a task graph with a store, an experiment, a
``ParamSweeper``, a ``Boss`` -- a small real workload runs while faults are
injected at random moments:

- ``sigkill``: the dispatcher's (or sweeper's) process is killed with
  SIGKILL once or twice, then a last session finishes the work. Every task
  appends ``"<node> <token>"`` to a log opened with ``O_APPEND``, the token
  unique per call, so the log and a read-only store give the accounting:
  a result recorded before a kill and missing or changed after is *lost*;
  a node called again once recorded done (or twice in a session, or
  ``done()`` more often than kills explain) is a *duplicate*;
- worker faults (``os._exit``, ``segfault``, ``kill-worker``, ``timeout``,
  ``unpicklable``, ``SystemExit``, ``KeyboardInterrupt``): the run ends, the
  faulty task gives the documented ``Err``, every other task its result;
- ``store-damage`` (truncated or garbage-filled database) and
  ``missing-module``: a clear ``StoreError`` / ``ExperimentError``, never a
  traceback from sqlite3 or pickle, never a store silently emptied;
- ``locked``: a second process starting the same run is refused with
  ``LockedError`` naming the holder, and ``status()`` works beside it;
- ``disk-full`` (POSIX): a session runs part of the work and stops, then
  one runs with ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so a write fails with
  EFBIG as on a full disk) a random margin above the largest file of the
  database, its WAL, journal and WAL index: it must end with a
  ``StoreError`` naming the database and SQLite's error, not a traceback
  from sqlite3, a hang or a silent success; then the store must load, hold
  everything recorded before and pass ``PRAGMA integrity_check``, and a
  last session must finish, losing and rerunning nothing recorded. Half
  the task-graph trials give results larger than SQLite's page cache, so
  the failed write comes inside the INSERT rather than at COMMIT; half the
  sweeper trials use the rollback journal (``multi_host=True``). A Boss
  writes nothing, so it has no row. Below the table, how many trials the
  limit was actually reached in.

One table comes out: fault x front end -> trials, results lost,
duplicates, hangs (bounded waits that expired), unexpected exceptions. The
goal is 0 everywhere but the trials column. Each non-zero cell is listed
with the seed of its trial: ``--seed S`` replays the whole run.

``tests/test_faults.py`` runs the same functions with a few trials.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

try:
    import resource
except ImportError:  # Windows: no file-size limit, no disk-full row
    resource = None

import alma_dag as ad
import alma_dag.experiment as ex
from alma_dag import Dependency, Dispatcher, Err, LockedError, Store, TaskGraph
from alma_dag.schedulers import MaxThreadsScheduler
from alma_dag.sweep import sweep
from alma_dag.sweeper import ParamSweeper

#: Seconds any bounded wait may take before it counts as a hang.
WAIT = 60

#: Seconds the processes a killed session left may take to exit.
GRACE = 10

#: Environment variable marking every process a child session starts, so
#: its orphans are found once it is killed.
MARK = "ALMA_DAG_FAULTS_MARK"

WORKER_FAULTS = [
    "os._exit",
    "segfault",
    "kill-worker",
    "timeout",
    "unpicklable",
    "SystemExit",
    "KeyboardInterrupt",
]

FRONT_ENDS = ["taskgraph", "experiment", "sweeper", "boss"]


# -- accounting ---------------------------------------------------------------


@dataclass
class Cell:
    """The counts of one fault on one front end."""

    trials: int = 0
    lost: int = 0
    duplicates: int = 0
    hangs: int = 0
    unexpected: int = 0
    #: Trials in which the fault actually struck, where that is up to
    #: chance (a file-size limit the run may not reach); None elsewhere.
    struck: int | None = None
    #: One line per non-zero count: the trial's seed and what happened.
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, seed: int, what: str, count: int = 1) -> None:
        if count:
            setattr(self, kind, getattr(self, kind) + count)
            self.notes.append(f"seed {seed}: {kind} {count}: {what}")

    @property
    def is_clean(self) -> bool:
        return not (self.lost or self.duplicates or self.hangs or self.unexpected)


def _append(path: str | Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _lines(path: Path) -> list[str]:
    # A line cut by a kill is no line.
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# -- child sessions -------------------------------------------------------------


@dataclass
class Session:
    process: subprocess.Popen
    marker: str
    stderr: Path

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")[-2000:]


#: What a child runs first when its files may not grow past ``limit`` bytes:
#: a write past it then fails with EFBIG -- what a full disk gives -- instead
#: of SIGXFSZ killing the process. Its loky workers inherit both.
LIMIT_PRELUDE = """\
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
_soft = {limit} if _hard == resource.RLIM_INFINITY else min({limit}, _hard)
resource.setrlimit(resource.RLIMIT_FSIZE, (_soft, _hard))
"""


def _start(
    code: str,
    root: Path,
    name: str,
    args: tuple[str, ...] = (),
    limit: int | None = None,
    stdout: bool = False,
) -> Session:
    """Run ``code`` in a child (``sys.argv[1:]`` = root, *args); with
    ``limit``, no file it writes may grow past that many bytes; with
    ``stdout``, its output comes back through a pipe (which no limit cuts)."""
    marker = f"{uuid.uuid4().hex}-{name}"
    stderr = root / f"{name}.stderr"
    prelude = (
        f"import faulthandler; faulthandler.dump_traceback_later({WAIT}, exit=True)\n"
    )
    if limit is not None:
        prelude += LIMIT_PRELUDE.format(limit=limit)
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", prelude + code, str(root), *args],
            env={**os.environ, MARK: marker},
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=err,
        )
    return Session(process, marker, stderr)


def _marked(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if (
                process.environ().get(MARK) == marker
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _reap(session: Session) -> None:
    """Kill what a session left behind (loky workers, resource trackers)."""
    for process in _marked(session.marker):
        try:
            process.kill()
        except psutil.Error:
            continue
    deadline = time.monotonic() + GRACE
    while _marked(session.marker) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill(session: Session) -> None:
    session.process.kill()
    session.process.wait(WAIT)
    _reap(session)


def _finish(session: Session) -> str | None:
    """Wait for a session to end; what went wrong, or None."""
    try:
        code = session.process.wait(WAIT + 5)
    except subprocess.TimeoutExpired:
        _kill(session)
        return "hang"
    _reap(session)
    return None if code == 0 else f"exit {code}: {session.errors()}"


def _until(session: Session, condition: Callable[[], bool]) -> bool | None:
    """Poll ``condition``: True when it held, False when the session ended
    first, None when the wait expired (the session is then killed)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if session.process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            _kill(session)
            return None
        time.sleep(0.002)
    return True


@dataclass
class Segment:
    """What one session did: its calls (node, token), done() lines, and the
    results recorded after it."""

    killed: bool
    calls: list[tuple[str, str]]
    done_lines: int
    recorded: dict[str, object]


def _kill_at_random(
    session: Session, log: Path, before: int, rng: random.Random, calls: int
) -> bool | None:
    """Kill ``session`` a random number of calls into its work, or after a
    random delay; True if killed, False if it ended first, None on a hang."""
    if rng.random() < 0.5:
        wanted = before + rng.randint(0, calls)
        held = _until(session, lambda: len(_lines(log)) >= wanted)
        if held:
            time.sleep(rng.uniform(0, 0.03))  # anywhere in a call
    else:
        deadline = time.monotonic() + rng.uniform(0, 1.5)
        held = _until(session, lambda: time.monotonic() >= deadline)
    if held is None:
        return None
    if session.process.poll() is not None:
        _reap(session)
        return False
    _kill(session)
    return True


def _check_done_calls(
    cell: Cell, seed: int, done_log: Path | None, unrecorded: int
) -> None:
    """An experiment's done() runs once, plus once per session stopped after
    it ran and before it was recorded (``unrecorded``)."""
    if done_log is None:
        return
    extra = len(_lines(done_log)) - 1 - unrecorded
    cell.add("duplicates", seed, f"done() ran {extra} more times", max(extra, 0))
    if extra < 0:
        cell.add("lost", seed, "done() never ran")


def _check_segments(
    cell: Cell, seed: int, segments: list[Segment], every: set[str]
) -> None:
    """The accounting of a series of sessions over one store."""
    before: dict[str, object] = {}
    last_token: dict[str, str] = {}
    for i, seg in enumerate(segments):
        lost = [n for n, r in before.items() if seg.recorded.get(n) != r]
        cell.add("lost", seed, f"session {i}: recorded results lost {lost}", len(lost))
        nodes = [n for n, _ in seg.calls]
        again = [n for n in nodes if n in before]
        cell.add(
            "duplicates", seed, f"session {i}: rerun once done {again}", len(again)
        )
        twice = [n for n, k in collections.Counter(nodes).items() if k > 1]
        cell.add("duplicates", seed, f"session {i}: called twice {twice}", len(twice))
        if not seg.killed:
            unrecorded = set(nodes) - set(seg.recorded)
            cell.add("lost", seed, f"ran, not recorded {unrecorded}", len(unrecorded))
        last_token.update(seg.calls)
        before = seg.recorded
    missing = every - set(before)
    cell.add("lost", seed, f"never recorded {sorted(missing)}", len(missing))
    stale = [n for n in every & set(before) if before[n] != last_token.get(n)]
    cell.add(
        "lost", seed, f"recorded result is not the last call's {stale}", len(stale)
    )


# -- sigkill: task graph with a store ----------------------------------------------

GRAPH_NODES = 10

GRAPH_CHILD = """\
import os, sys, time, uuid
from alma_dag import Dependency, Dispatcher, Store, TaskGraph
root = sys.argv[1]
LOG = os.path.join(root, "calls.log")

def work(node, *values):
    token = uuid.uuid4().hex
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{node} {token}\\n".encode())
    os.close(fd)
    time.sleep(0.01)
    return token

g = TaskGraph()
for i in range(N):
    # chains of three beside each other: n0 -> n1 -> n2, n3 -> n4 -> n5, ...
    deps = (Dependency(f"n{i - 1}"),) if i % 3 else ()
    g.add(f"n{i}", work, (f"n{i}",) + deps)
with Store(os.path.join(root, "run.alma")) as store:
    Dispatcher(g, workers=2, store=store).run()
"""


def _graph_recorded(run_dir: Path) -> dict[str, object]:
    if not (run_dir / "store.sqlite").exists():
        return {}
    with Store(run_dir, readonly=True) as store:
        return {n: store.result(n) for n in store.done_ids()}


def _sigkill_series(
    cell: Cell,
    seed: int,
    root: Path,
    code: str,
    recorded: Callable[[], dict[str, object]],
    every: set[str],
    parse: Callable[[str], tuple[str, str]],
    done_log: Path | None = None,
    done_node: str | None = None,
) -> None:
    """One trial: one or two sessions killed at random, then one to the end."""
    rng = random.Random(seed)
    log = root / "calls.log"
    segments = []
    kills = rng.randint(1, 2)
    killed_after_done = 0
    for i in range(kills + 1):
        before = len(_lines(log))
        before_done = len(_lines(done_log)) if done_log else 0
        session = _start(code, root, f"s{i}")
        if i < kills:
            killed = _kill_at_random(session, log, before, rng, len(every))
        else:
            problem = _finish(session)
            killed = False
            if problem == "hang":
                cell.add("hangs", seed, "the last session did not end")
                return
            if problem:
                cell.add("unexpected", seed, f"the last session failed: {problem}")
                return
        if killed is None:
            cell.add("hangs", seed, f"session {i} never reached its kill point")
            return
        after = recorded()
        done_lines = (len(_lines(done_log)) - before_done) if done_log else 0
        if killed and done_lines and done_node not in after:
            killed_after_done += 1
        calls = [parse(line) for line in _lines(log)[before:]]
        segments.append(Segment(killed, calls, done_lines, after))
    _check_segments(cell, seed, segments, every)
    _check_done_calls(cell, seed, done_log, killed_after_done)


def sigkill_taskgraph(trials: int, seed: int) -> Cell:
    cell = Cell()
    code = GRAPH_CHILD.replace("range(N)", f"range({GRAPH_NODES})")
    every = {f"n{i}" for i in range(GRAPH_NODES)}
    for trial_seed in _seeds(seed, "sigkill-taskgraph", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda root=root, s=trial_seed: _sigkill_series(
                    cell,
                    s,
                    root,
                    code,
                    lambda: _graph_recorded(root / "run.alma"),
                    every,
                    lambda line: tuple(line.split()),
                ),
            )
    return cell


# -- sigkill: experiment -------------------------------------------------------

INSTANCES = 8

RUN_MODULE = """\
import os
import sqlite3
import threading
import time
import uuid

RUN_LOG = {run_log!r}
DONE_LOG = {done_log!r}
FAULTS = {faults!r}


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def run(instance, save, state):
    name = os.path.basename(instance)
    fault = FAULTS.get(name)
    if fault == "os._exit":
        os._exit(3)
    if fault == "segfault":
        import ctypes

        ctypes.string_at(0)
    if fault == "kill-worker":
        _append(RUN_LOG + ".pids", f"{{os.getpid()}}\\n")
        time.sleep(60)
    if fault == "SystemExit":
        raise SystemExit(4)
    if fault == "KeyboardInterrupt":
        raise KeyboardInterrupt
    attempt = int(state or 0) + 1
    token = f"{{attempt}}:{{uuid.uuid4().hex}}"
    _append(RUN_LOG, f"{{name}} {{token}}\\n")
    save(str(attempt))
    time.sleep({sleep})
    if fault == "unpicklable":
        return threading.Lock()
    return token


def done():
    _append(DONE_LOG, "done\\n")
"""


def write_experiment(
    root: Path,
    faults: dict[str, str] | None = None,
    sleep: float = 0.01,
    instances: int = INSTANCES,
) -> tuple[Path, dict[str, str]]:
    """An experiment of ``instances`` instances, one iteration each; returns
    its file and the node id of each instance's base name."""
    folder = root / "exp"
    (folder / "data").mkdir(parents=True)
    names = [f"data/i{i:02d}.txt" for i in range(instances)]
    for name in names:
        (folder / name).write_text(name)
    (folder / "faults.batch").write_text(json.dumps({"instances": names}))
    spec = {"load": "faults.py", "workers": 2, "iterations": 1}
    spec["batch"] = "faults.batch"
    path = folder / "faults.experiment"
    path.write_text(json.dumps(spec))
    (folder / "faults.py").write_text(
        RUN_MODULE.format(
            run_log=str(root / "calls.log"),
            done_log=str(root / "done.log"),
            faults=faults or {},
            sleep=sleep,
        )
    )
    ids = ex.read_experiment(path).node_ids()
    return path, {Path(n).name: node for n, node in zip(names, ids, strict=True)}


def _experiment_recorded(run_dir: Path) -> dict[str, object]:
    try:
        return _graph_recorded(run_dir)
    except ad.StoreError:
        # Killed inside Store(): nothing can be recorded yet.
        return {}


def sigkill_experiment(trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, "sigkill-experiment", trials):
        with _workdir() as root:
            cell.trials += 1
            path, nodes = write_experiment(root)
            code = f"import alma_dag.experiment as e; e.load({str(path)!r}).run()\n"
            run_dir = path.parent / "faults.alma"

            def parse(line, nodes=nodes):
                name, token = line.split()
                return nodes[name], token

            def one(root=root, code=code, run_dir=run_dir, s=trial_seed, p=parse):
                _sigkill_series(
                    cell,
                    s,
                    root,
                    code,
                    lambda: _experiment_recorded(run_dir),
                    set(p.__defaults__[0].values()),
                    p,
                    done_log=root / "done.log",
                    done_node=ex.DONE_NODE,
                )

            _guard(cell, trial_seed, one)
    return cell


# -- sigkill: ParamSweeper ---------------------------------------------------------

ELEMENTS = 30

SWEEPER_CHILD = """\
import os, sys, time, uuid
from alma_dag.sweeper import ParamSweeper
root = sys.argv[1]
LOG = os.path.join(root, "calls.log")
DONE = os.path.join(root, "reported.log")

def append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, line.encode())
    os.close(fd)

with ParamSweeper(os.path.join(root, "sweeps")) as sweeper:
    while (element := sweeper.get_next()) is not None:
        append(LOG, f"{element['i']} {uuid.uuid4().hex}\\n")
        time.sleep(0.005)
        sweeper.done(element)
        append(DONE, f"{element['i']}\\n")
"""


def _sweeper_done(directory: Path) -> set[str]:
    """Elements done in the database, read without a ParamSweeper."""
    db = sqlite3.connect(f"file:{directory / 'sweeper.sqlite'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, state FROM log ORDER BY seq").fetchall()
    finally:
        db.close()
    from alma_dag.sweeper import _decode, _State

    return {
        str(_decode(key)["i"])
        for key, state in dict(rows).items()
        if state == _State.DONE
    }


def _sweeper_trial(cell: Cell, seed: int, root: Path) -> None:
    rng = random.Random(seed)
    directory = root / "sweeps"
    ParamSweeper(directory, sweep({"i": range(ELEMENTS)}), save_sweeps=True).close()
    log, reported = root / "calls.log", root / "reported.log"
    every = {str(i) for i in range(ELEMENTS)}
    kills = rng.randint(1, 2)
    for i in range(kills + 1):
        done_before = _sweeper_done(directory)
        before = len(_lines(log))
        session = _start(SWEEPER_CHILD, root, f"s{i}")
        if i < kills:
            if _kill_at_random(session, log, before, rng, ELEMENTS) is None:
                cell.add("hangs", seed, f"session {i} never reached its kill point")
                return
        else:
            problem = _finish(session)
            if problem:
                kind = "hangs" if problem == "hang" else "unexpected"
                cell.add(kind, seed, f"the last session: {problem}")
                return
        got = [line.split()[0] for line in _lines(log)[before:]]
        done_after = _sweeper_done(directory)
        again = [e for e in got if e in done_before]
        cell.add(
            "duplicates", seed, f"session {i}: handed out once done {again}", len(again)
        )
        twice = [e for e, k in collections.Counter(got).items() if k > 1]
        cell.add(
            "duplicates", seed, f"session {i}: handed out twice {twice}", len(twice)
        )
        lost = (set(_lines(reported)) | done_before) - done_after
        cell.add("lost", seed, f"session {i}: done lost {sorted(lost)}", len(lost))
    missing = every - _sweeper_done(directory)
    cell.add("lost", seed, f"never done {sorted(missing)}", len(missing))


def sigkill_sweeper(trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, "sigkill-sweeper", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda r=root, s=trial_seed: _sweeper_trial(cell, s, r),
            )
    return cell


# -- worker faults ----------------------------------------------------------------


def _expected_error(fault: str) -> type[BaseException]:
    return {
        "os._exit": ad.WorkerDied,
        "segfault": ad.WorkerDied,
        "kill-worker": ad.WorkerDied,
        "timeout": ad.TaskTimeoutError,
        "unpicklable": ad.SerializationError,
        "SystemExit": SystemExit,
        "KeyboardInterrupt": KeyboardInterrupt,
    }[fault]


def _saboteur(fault: str, pids: str, gate: str) -> Callable:
    def saboteur(*values):
        _append(gate, f"{time.time()!r}\n")
        if fault == "os._exit":
            os._exit(3)
        if fault == "segfault":
            import ctypes

            ctypes.string_at(0)
        if fault == "kill-worker":
            _append(pids, f"{os.getpid()}\n")
            time.sleep(WAIT)
        if fault == "timeout":
            time.sleep(WAIT)
        if fault == "unpicklable":
            return threading.Lock()
        if fault == "SystemExit":
            raise SystemExit(4)
        if fault == "KeyboardInterrupt":
            raise KeyboardInterrupt
        return "not sabotaged"

    return saboteur


def _kill_each_pid(pids: Path, is_over: Callable[[float], bool]) -> bool:
    """SIGKILL each pid written to ``pids`` until ``is_over``; False when the
    wait expired."""
    killed: set[int] = set()
    deadline = time.monotonic() + WAIT
    while not is_over(0.01):
        for pid in (int(p) for p in _lines(pids)):
            if pid not in killed:
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if time.monotonic() > deadline:
            return False
    return True


class _DoneTimes(ad.Callbacks):
    def __init__(self) -> None:
        self.times: dict = {}

    def on_task_done(self, node, result) -> None:
        self.times.setdefault(node, time.time())


def _graph_fault_trial(cell: Cell, seed: int, root: Path, fault: str) -> None:
    calls, gate, pids = root / "calls", root / "gate", root / "pids"

    def work(node, *values):
        _append(calls, f"{node}\n")
        time.sleep(0.01)
        return sum(values) + 1

    g = TaskGraph()
    expected = {}
    for i in range(3):
        g.add(f"r{i}", work, (f"r{i}", i))
        expected[f"r{i}"] = i + 1
    timeout = 0.3 if fault == "timeout" else None
    bad = g.add(
        "S",
        _saboteur(fault, str(pids), str(gate)),
        (Dependency("r0"),),
        timeout=timeout,
    )
    g.add("after", work, ("after", bad))
    prev, value = Dependency("r1"), expected["r1"]
    for i in range(4):
        prev = g.add(f"c{i}", work, (f"c{i}", prev))
        value = expected[f"c{i}"] = value + 1
    done = _DoneTimes()
    with Store(root / "run.alma") as store:
        d = Dispatcher(g, workers=2, store=store, callbacks=[done]).start()
        if not _kill_each_pid(pids, d.wait):
            cell.add("hangs", seed, f"{fault}: the run did not end")
            d.stop(WAIT)
            return
        results = d.results
        recorded = store.done_ids()
    _check_fault(cell, seed, fault, results.get("S"), "S")
    dep = results.get("after")
    if not (isinstance(dep, Err) and isinstance(dep.exception, ad.DependencyError)):
        cell.add("unexpected", seed, f"{fault}: the dependent gave {dep!r}")
    lost = [n for n, v in expected.items() if results.get(n) != v or n not in recorded]
    cell.add("lost", seed, f"{fault}: innocents lost {lost}", len(lost))
    first = min(map(float, _lines(gate)), default=float("inf"))
    before = {n for n, t in done.times.items() if t < first}
    runs = collections.Counter(_lines(calls))
    again = [n for n in before if runs[n] > 1]
    cell.add("duplicates", seed, f"{fault}: ran again once done {again}", len(again))


def _check_fault(cell: Cell, seed: int, fault: str, result: object, node: str) -> None:
    wanted = _expected_error(fault)
    if not isinstance(result, Err) or not issubclass(result.err_type, wanted):
        cell.add("unexpected", seed, f"{fault}: {node} gave {result!r}, not {wanted}")


def worker_faults_taskgraph(fault: str, trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, f"{fault}-taskgraph", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda r=root, s=trial_seed: _graph_fault_trial(cell, s, r, fault),
            )
    return cell


def _experiment_fault_trial(cell: Cell, seed: int, root: Path, fault: str) -> None:
    rng = random.Random(seed)
    victim = f"i{rng.randrange(INSTANCES):02d}.txt"
    path, nodes = write_experiment(root, {victim: fault})
    run = ex.load(path)
    try:
        run.start()
        if not _kill_each_pid(root / "calls.log.pids", run.wait):
            cell.add("hangs", seed, f"{fault}: the run did not end")
            run.stop(WAIT)
            return
        results = run.results
        recorded = run.store.done_ids()
    finally:
        run.store.close()
    _check_fault(cell, seed, fault, results.get(nodes[victim]), victim)
    innocents = [n for name, n in nodes.items() if name != victim]
    lost = [n for n in innocents if n not in recorded or isinstance(results[n], Err)]
    cell.add("lost", seed, f"{fault}: innocents lost {lost}", len(lost))
    calls = collections.Counter(line.split()[0] for line in _lines(root / "calls.log"))
    twice = [n for n, k in calls.items() if k > 1 and n != victim]
    # A run beside a dying worker may run again (it was lost with the pool);
    # only a run recorded before the fault must not -- counted in the
    # task-graph row, which times the fault; here, report reruns as such.
    if fault in ("timeout", "unpicklable", "SystemExit", "KeyboardInterrupt"):
        cell.add("duplicates", seed, f"{fault}: reran {twice}", len(twice))


def worker_faults_experiment(fault: str, trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, f"{fault}-experiment", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda r=root, s=trial_seed: _experiment_fault_trial(cell, s, r, fault),
            )
    return cell


def _boss_error(fault: str) -> type[BaseException]:
    return {
        "os._exit": ad.WorkerDied,
        "segfault": ad.WorkerDied,
        "kill-worker": ad.WorkerDied,
        "unpicklable": ad.SerializationError,
        "SystemExit": ad.TaskFailure,
        "KeyboardInterrupt": ad.TaskFailure,
    }[fault]


def _boss_fault_trial(cell: Cell, seed: int, root: Path, fault: str) -> None:
    pids = root / "pids"
    sabotage = _saboteur(fault, str(pids), str(root / "gate"))

    class FaultsFine(ad.Worker):
        faults_value: int

        def _task(self):
            return self.faults_value + 1

    class FaultsDoomed(ad.Worker):
        faults_doom: str

        def _task(self):
            return sabotage()

    boss = ad.Boss(scheduler=MaxThreadsScheduler(1))
    try:
        boss.set_instructions({}, {"faults_value": [1, 2], "name": ["fine0", "fine1"]})
        boss.set_instructions({}, {"faults_doom": [fault], "name": ["doomed"]})
        boss.set_instructions({}, {"faults_value": [3], "name": ["after"]})
        boss.make_them_work()
        waiter = _Waiter(boss)
        if not _kill_each_pid(pids, waiter.wait):
            cell.add("hangs", seed, f"{fault}: the Boss did not finish")
            return
        error = waiter.error
        wanted = _boss_error(fault)
        if not isinstance(error, wanted):
            got = "nothing" if error is None else _short(error)
            cell.add("unexpected", seed, f"{fault}: raised {got}, not {wanted}")
        report = boss.get_report()
        entries = {e["name"]: e["report"] for e in report["workers_report"]}
        lost = [n for n, v in (("fine0", 2), ("fine1", 3)) if entries.get(n) != v]
        pending = [s["name"] for s in report["pending"]]
        if pending != ["after"] and entries.get("after") != 4:
            lost.append("after")
        cell.add("lost", seed, f"{fault}: entries lost {lost}", len(lost))
    finally:
        boss.stop_them_working()


class _Waiter:
    """``boss.wait_till_finished`` in a thread, so that pids can be killed
    meanwhile."""

    def __init__(self, boss: ad.Boss) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(boss,), daemon=True)
        self._thread.start()

    def _run(self, boss: ad.Boss) -> None:
        try:
            boss.wait_till_finished(timeout=WAIT)
        except BaseException as exc:  # noqa: BLE001 -- what it raises is the datum
            self.error = exc

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def worker_faults_boss(fault: str, trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, f"{fault}-boss", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda r=root, s=trial_seed: _boss_fault_trial(cell, s, r, fault),
            )
    return cell


# -- damaged stores ------------------------------------------------------------------


def _damage(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    how = rng.choice(["truncate", "garbage", "overwrite"])
    if how == "truncate":
        size = rng.randrange(len(data))
        path.write_bytes(data[:size])
        return f"truncated to {size} of {len(data)} bytes"
    if how == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, len(data))))
        return "replaced with garbage"
    start = rng.randrange(len(data))
    length = rng.randint(1, 512)
    path.write_bytes(data[:start] + rng.randbytes(length) + data[start + length :])
    return f"{length} bytes overwritten at {start}"


def _classify(
    cell: Cell, seed: int, what: str, attempt: Callable[[], bool], clear: tuple
) -> None:
    """``attempt`` opens and reads the damaged store: True when everything
    recorded came back, False when some was silently lost."""
    try:
        intact = attempt()
    except clear:
        return
    except BaseException as exc:  # noqa: BLE001 -- counted, with its type
        cell.add("unexpected", seed, f"{what}: {_short(exc)}")
        return
    if not intact:
        cell.add("lost", seed, f"{what}: opened without an error, results missing")


def _graph_store_trial(cell: Cell, seed: int, root: Path) -> None:
    rng = random.Random(seed)
    g = TaskGraph()
    for i in range(20):
        g.add(f"n{i}", str, (i * 1000,))
    with Store(root / "run.alma") as store:
        Dispatcher(g, workers=1, backend="inline", store=store).run()
    what = _damage(root / "run.alma" / "store.sqlite", rng)

    def attempt() -> bool:
        with Store(root / "run.alma") as store:
            results = {n: store.result(n) for n in store.done_ids()}
            d = Dispatcher(g, workers=1, backend="inline", store=store)
            d.run()
        return results == {f"n{i}": str(i * 1000) for i in range(20)}

    _classify(cell, seed, what, attempt, (ad.StoreError,))


def _experiment_store_trial(cell: Cell, seed: int, root: Path) -> None:
    rng = random.Random(seed)
    path, nodes = write_experiment(root, sleep=0)
    run = ex.load(path, backend="inline")
    try:
        run.run()
    finally:
        run.store.close()
    if rng.random() < 0.25:
        (path.parent / "faults.py").unlink()
        what = "missing run module"
        clear: tuple = (ad.ExperimentError,)
    else:
        what = _damage(path.parent / "faults.alma" / "store.sqlite", rng)
        clear = (ad.StoreError, ad.ExperimentError)

    def attempt() -> bool:
        status = ex.status(path)
        again = ex.load(path, backend="inline")
        try:
            again.run()
        finally:
            again.store.close()
        return status.finished and status.done == INSTANCES

    _classify(cell, seed, what, attempt, clear)


def _sweeper_store_trial(cell: Cell, seed: int, root: Path) -> None:
    rng = random.Random(seed)
    elements = sweep({"i": range(40)})
    with ParamSweeper(root / "sweeps", elements, save_sweeps=True) as sweeper:
        for element in elements[:25]:
            sweeper.done(sweeper.get_next() or element)
    what = _damage(root / "sweeps" / "sweeper.sqlite", rng)

    def attempt() -> bool:
        with ParamSweeper(root / "sweeps") as sweeper:
            done = {e["i"] for e in sweeper.get_done()}
            total = len(sweeper.get_sweeps())
            sweeper.get_next()
        return done == set(range(25)) and total == 40

    _classify(cell, seed, what, attempt, (ad.StoreError,))


def store_damage(front: str, trials: int, seed: int) -> Cell:
    trial = {
        "taskgraph": _graph_store_trial,
        "experiment": _experiment_store_trial,
        "sweeper": _sweeper_store_trial,
    }[front]
    cell = Cell()
    for trial_seed in _seeds(seed, f"store-{front}", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(cell, trial_seed, lambda r=root, s=trial_seed: trial(cell, s, r))
    return cell


# -- a second process on a locked run --------------------------------------------------

LOCK_GRAPH_CHILD = """\
import os, sys, time
from alma_dag import Dispatcher, Store, TaskGraph
root = sys.argv[1]

def slow(i):
    log = os.path.join(root, "calls.log")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"n{i} x\\n".encode())
    os.close(fd)
    time.sleep(0.5)
    return i

g = TaskGraph()
for i in range(8):
    g.add(f"n{i}", slow, (i,))
with Store(os.path.join(root, "run.alma")) as store:
    Dispatcher(g, workers=2, store=store).run()
"""


def _lock_trial(cell: Cell, seed: int, root: Path, front: str) -> None:
    if front == "experiment":
        path, _ = write_experiment(root, sleep=0.5)
        code = f"import alma_dag.experiment as e; e.load({str(path)!r}).run()\n"
    else:
        code = LOCK_GRAPH_CHILD
    session = _start(code, root, "holder")
    try:
        held = _until(session, lambda: len(_lines(root / "calls.log")) >= 1)
        if not held:
            kind = "hangs" if held is None else "unexpected"
            cell.add(kind, seed, f"the holder never ran: {session.errors()}")
            return
        pid = str(session.process.pid)
        if front == "experiment":
            holder = ex.status(path).holder
            if not holder or str(holder.get("pid")) != pid:
                cell.add("unexpected", seed, f"status() named {holder}, not {pid}")

            def second():
                run = ex.load(path)
                try:
                    run.run()
                finally:
                    run.store.close()
        else:

            def second():
                g = TaskGraph()
                for i in range(8):
                    g.add(f"n{i}", abs, (i,))
                with Store(root / "run.alma") as store:
                    Dispatcher(g, workers=2, store=store).run()

        try:
            second()
        except LockedError as exc:
            if pid not in str(exc):
                cell.add("unexpected", seed, f"LockedError names no holder: {exc}")
        except BaseException as exc:  # noqa: BLE001
            cell.add("unexpected", seed, f"second run: {_short(exc)}")
        else:
            cell.add("duplicates", seed, "a second process ran the locked run")
    finally:
        _kill(session)


def locked(front: str, trials: int, seed: int) -> Cell:
    cell = Cell()
    for trial_seed in _seeds(seed, f"locked-{front}", trials):
        with _workdir() as root:
            cell.trials += 1
            _guard(
                cell,
                trial_seed,
                lambda r=root, s=trial_seed: _lock_trial(cell, s, r, front),
            )
    return cell


# -- a full disk ----------------------------------------------------------------------
# Three sessions over one store, in children: the first runs part of the work
# and stops cleanly, so the store exists and has grown; the second runs with
# RLIMIT_FSIZE set a random small margin above the largest file of the
# database (WAL, journal and WAL index included), so a commit mid-run fails
# as on a full disk; the third, without the limit, finishes the work.

#: Bytes of the WAL index (``-shm``) SQLite maps when it opens a WAL
#: database: a limit below it would fail every open, never a write mid-run.
SHM_BYTES = 32768

#: The random part of the file-size limit, in bytes (a page is 4096).
MARGIN = 16 * 1024

DISK_GRAPH_NODES = 30
#: Bytes of each result of a task graph's limited session in "big" trials:
#: more than SQLite's page cache (2 MB), so that the pages of one record
#: spill to the WAL before COMMIT, and the write fails inside the INSERT.
BIG_RESULT = 4_000_000
DISK_INSTANCES = 24
DISK_ELEMENTS = 300

#: What every disk-full child shares: ``report(main)`` runs ``main`` and
#: prints how it ended as one JSON line on stdout -- a pipe, which the
#: limit does not cut -- and ``drive`` runs a dispatcher to its end, or
#: stops it cleanly once ``stop_after`` calls are logged.
DISK_OUTCOME = """\
import json, os, sys

def calls(log):
    try:
        with open(log, "rb") as f:
            return f.read().count(b"\\n")
    except FileNotFoundError:
        return 0

def drive(run, log, stop_after):
    before = calls(log)
    run.start()
    while not run.wait(0.005):
        if stop_after and calls(log) - before >= stop_after:
            run.stop()
            break
    return run.state.value

def report(main):
    try:
        state = main()
    except BaseException as exc:
        from alma_dag import StoreError
        kind = type(exc)
        print(json.dumps({
            "raised": f"{kind.__module__}.{kind.__qualname__}",
            "store_error": isinstance(exc, StoreError),
            "message": str(exc),
        }), flush=True)
        sys.exit(1)
    print(json.dumps({"raised": None, "state": state}), flush=True)

root, stop_after, big = sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["big"]
LOG = os.path.join(root, "calls.log")
"""

DISK_GRAPH_CHILD = (
    DISK_OUTCOME
    + """\
import time, uuid
from alma_dag import Dependency, Dispatcher, Store, TaskGraph

def work(node, pad, *values):
    token = uuid.uuid4().hex
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{node} {token}\\n".encode())
    os.close(fd)
    time.sleep(0.005)
    return token, "x" * pad  # the padding grows the store page by page

def main():
    g = TaskGraph()
    for i in range(N):
        deps = (Dependency(f"n{i - 1}"),) if i % 3 else ()
        pad = BIG_RESULT if big else 500 + i * 613 % 2500
        g.add(f"n{i}", work, (f"n{i}", pad) + deps)
    with Store(os.path.join(root, "run.alma")) as store:
        d = Dispatcher(g, workers=2, store=store, backend=BACKEND)
        return drive(d, LOG, stop_after)

report(main)
"""
)

DISK_EXPERIMENT_CHILD = (
    DISK_OUTCOME
    + """\
import alma_dag.experiment as e

def main():
    run = e.load(PATH, backend=BACKEND)
    try:
        return drive(run, LOG, stop_after)
    finally:
        run.store.close()

report(main)
"""
)

DISK_SWEEPER_CHILD = (
    DISK_OUTCOME
    + """\
from alma_dag.sweeper import ParamSweeper

def append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, line.encode())
    os.close(fd)

def main():
    handed = 0
    with ParamSweeper(os.path.join(root, "sweeps")) as sweeper:
        while (element := sweeper.get_next()) is not None:
            append(LOG, f"{element['i']}\\n")
            sweeper.done(element)
            append(os.path.join(root, "reported.log"), f"{element['i']}\\n")
            handed += 1
            if handed == stop_after:
                return "stopped"
    return "finished"

report(main)
"""
)


def _limit(database: Path, wal: bool, rng: random.Random) -> int:
    """The largest file of ``database`` -- with its WAL, rollback journal
    and WAL index -- plus a random margin."""
    files = [Path(f"{database}{suffix}") for suffix in ("", "-wal", "-journal", "-shm")]
    sizes = [f.stat().st_size for f in files if f.exists()]
    return max([*sizes, SHM_BYTES if wal else 0]) + rng.randint(0, MARGIN)


def _disk_session(
    cell: Cell,
    seed: int,
    root: Path,
    code: str,
    i: int,
    stop_after: int,
    limit: int | None,
    database: Path,
    big: bool = False,
) -> dict | None:
    """Run session ``i`` to its end and check how it ended: None after
    counting what went wrong, else its outcome (a dict)."""
    args = (str(stop_after), "big" if big else "")
    session = _start(code, root, f"s{i}", args, limit, stdout=True)
    problem = _finish(session)
    assert session.process.stdout is not None
    lines = session.process.stdout.read().decode(errors="replace").splitlines()
    session.process.stdout.close()
    what = f"session {i}" + ("" if limit is None else f" (files limited to {limit} B)")
    if problem == "hang":
        cell.add("hangs", seed, f"{what} did not end")
        return None
    try:
        outcome = json.loads(lines[-1])
    except (IndexError, ValueError):
        cell.add("unexpected", seed, f"{what} died without a word: {problem}")
        return None
    raised = outcome["raised"]
    if raised is None:
        if outcome["state"] in ("finished", "stopped"):
            return outcome
        cell.add("unexpected", seed, f"{what} ended {outcome['state']}")
        return None
    if limit is None or not outcome["store_error"]:
        cell.add("unexpected", seed, f"{what} raised {raised}: {outcome['message']}")
        return None
    cell.struck = (cell.struck or 0) + 1
    # Clear: it names the database and what SQLite said of the failed write.
    message = outcome["message"]
    named = f"{database.parent.name}/{database.name}" in message
    if not named or not any(c in message for c in CLEAR):
        cell.add("unexpected", seed, f"{what}: an unclear StoreError: {message}")
    return outcome


#: What SQLite says of a write past the limit (EFBIG, or a short write), or
#: past the end of a full disk (ENOSPC).
CLEAR = ("disk I/O error", "database or disk is full")


def _intact(database: Path) -> str | None:
    """What ``PRAGMA integrity_check`` finds wrong with ``database``, if
    anything."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = [row[0] for row in db.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        db.close()
    return None if rows == ["ok"] else "; ".join(rows[:5])


def _loaded(
    cell: Cell, seed: int, i: int, database: Path, read: Callable[[], object]
) -> object | None:
    """``read()`` after session ``i``: what the store holds, or None after
    counting a store that does not load or is damaged."""
    try:
        held = read()
    except Exception as exc:  # noqa: BLE001 -- counted, with its type
        cell.add(
            "lost", seed, f"after session {i} the store does not load: {_short(exc)}"
        )
        return None
    damage = _intact(database)
    if damage:
        cell.add("lost", seed, f"after session {i} the database is damaged: {damage}")
        return None
    return held


def _disk_full_trial(
    cell: Cell, seed: int, root: Path, front: str, backend: str, big: bool | None
) -> None:
    """One trial on a task graph's or an experiment's store; ``big``: the
    task graph's limited session gives results larger than SQLite's page
    cache (None: at random)."""
    rng = random.Random(seed)
    done_log: Path | None = None
    if front == "taskgraph":
        if big is None:
            big = rng.random() < 0.5
        code = DISK_GRAPH_CHILD.replace("range(N)", f"range({DISK_GRAPH_NODES})")
        code = code.replace("BACKEND", repr(backend))
        code = code.replace("BIG_RESULT", str(BIG_RESULT))
        run_dir = root / "run.alma"
        every = {f"n{i}" for i in range(DISK_GRAPH_NODES)}

        def parse(line: str) -> tuple[str, str]:
            node, token = line.split()
            return node, token

        def read() -> dict[str, object]:
            return {n: r[0] for n, r in _graph_recorded(run_dir).items()}
    else:
        path, nodes = write_experiment(root, sleep=0.005, instances=DISK_INSTANCES)
        code = DISK_EXPERIMENT_CHILD.replace("PATH", repr(str(path)))
        code = code.replace("BACKEND", repr(backend))
        run_dir = path.parent / "faults.alma"
        every = set(nodes.values())
        done_log = root / "done.log"

        def parse(line: str) -> tuple[str, str]:
            name, token = line.split()
            return nodes[name], token

        def read() -> dict[str, object]:
            return _graph_recorded(run_dir)

    database, log = run_dir / "store.sqlite", root / "calls.log"
    segments = []
    unrecorded_done = 0
    for i in range(3):
        before = len(_lines(log))
        before_done = len(_lines(done_log)) if done_log else 0
        stop_after = rng.randint(1, len(every) // 3) if i == 0 else 0
        limit = _limit(database, True, rng) if i == 1 else None
        outcome = _disk_session(
            cell, seed, root, code, i, stop_after, limit, database, big and i == 1
        )
        if outcome is None:
            return
        if i == 2 and outcome["state"] != "finished":
            cell.add("unexpected", seed, f"the last session ended {outcome['state']}")
            return
        after = _loaded(cell, seed, i, database, read)
        if after is None:
            return
        assert isinstance(after, dict)
        interrupted = outcome["raised"] is not None or outcome["state"] != "finished"
        done_lines = (len(_lines(done_log)) - before_done) if done_log else 0
        if interrupted and done_lines and ex.DONE_NODE not in after:
            unrecorded_done += 1
        calls = [parse(line) for line in _lines(log)[before:]]
        segments.append(Segment(interrupted, calls, done_lines, after))
    _check_segments(cell, seed, segments, every)
    _check_done_calls(cell, seed, done_log, unrecorded_done)


def _sweeper_disk_trial(cell: Cell, seed: int, root: Path) -> None:
    """One trial on a ``ParamSweeper``, in WAL or rollback-journal mode."""
    rng = random.Random(seed)
    directory = root / "sweeps"
    wal = rng.random() < 0.5
    elements = sweep({"i": range(DISK_ELEMENTS)})
    ParamSweeper(directory, elements, save_sweeps=True, multi_host=not wal).close()
    database, log = directory / "sweeper.sqlite", root / "calls.log"
    reported = root / "reported.log"

    def read() -> set[str]:
        with ParamSweeper(directory) as sweeper:
            return {str(e["i"]) for e in sweeper.get_done()}

    done_before: set[str] = set()
    for i in range(3):
        before = len(_lines(log))
        stop_after = rng.randint(1, DISK_ELEMENTS // 3) if i == 0 else 0
        limit = _limit(database, wal, rng) if i == 1 else None
        outcome = _disk_session(
            cell, seed, root, DISK_SWEEPER_CHILD, i, stop_after, limit, database
        )
        if outcome is None:
            return
        mode = "WAL" if wal else "journal"
        if i == 2 and outcome["state"] != "finished":
            cell.add(
                "unexpected", seed, f"{mode}: the last session ended {outcome['state']}"
            )
            return
        done_after = _loaded(cell, seed, i, database, read)
        if done_after is None:
            return
        assert isinstance(done_after, set)
        got = _lines(log)[before:]
        again = [e for e in got if e in done_before]
        cell.add(
            "duplicates",
            seed,
            f"{mode}: session {i}: handed out once done {again}",
            len(again),
        )
        twice = [e for e, k in collections.Counter(got).items() if k > 1]
        cell.add(
            "duplicates",
            seed,
            f"{mode}: session {i}: handed out twice {twice}",
            len(twice),
        )
        lost = (set(_lines(reported)) | done_before) - done_after
        cell.add(
            "lost", seed, f"{mode}: session {i}: done lost {sorted(lost)}", len(lost)
        )
        done_before = done_after
    missing = {str(i) for i in range(DISK_ELEMENTS)} - done_before
    cell.add("lost", seed, f"never done {sorted(missing)}", len(missing))


def disk_full(
    front: str,
    trials: int,
    seed: int,
    backend: str = "loky",
    big: bool | None = None,
) -> Cell:
    """The disk fills up mid-run: the run stops with a ``StoreError`` naming
    the database and the failed write, the store loads with everything
    committed before, and a resumed run finishes, losing and repeating
    nothing recorded. ``backend`` runs the tasks of a task graph or an
    experiment (``"inline"``: faster, no worker processes); ``big`` forces
    (or rules out) the task graph's big results, else half the trials have
    them."""
    cell = Cell(struck=0)
    for trial_seed in _seeds(seed, f"disk-full-{front}", trials):
        with _workdir() as root:
            cell.trials += 1
            if front == "sweeper":
                trial = lambda r=root, s=trial_seed: _sweeper_disk_trial(cell, s, r)
            else:
                trial = lambda r=root, s=trial_seed: _disk_full_trial(
                    cell, s, r, front, backend, big
                )
            _guard(cell, trial_seed, trial)
    return cell


# -- the table -------------------------------------------------------------------


class _workdir:
    """A temporary directory, removed after the trial."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="alma-faults-"))
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _seeds(seed: int, name: str, trials: int) -> list[int]:
    rng = random.Random(f"{seed}-{name}")
    return [rng.randrange(2**32) for _ in range(trials)]


def _guard(cell: Cell, seed: int, trial: Callable[[], None]) -> None:
    """Run one trial; an exception escaping it is unexpected."""
    try:
        trial()
    except Exception as exc:  # noqa: BLE001
        cell.add("unexpected", seed, f"{_short(exc)}\n{traceback.format_exc()}")


#: The faults of the table, in its order; ``--fault`` picks some.
FAULTS = ["sigkill", *WORKER_FAULTS, "store-damage", "locked", "disk-full"]


def cells(
    trials: int,
    seed: int,
    fast: bool = False,
    only: list[str] | None = None,
) -> dict[tuple[str, str], Cell]:
    """Every fault (or those in ``only``) on every front end it applies to;
    ``fast`` caps the trials of the slow SIGKILL and lock rows at
    ``trials``."""
    wanted = set(FAULTS if only is None else only)
    table: dict[tuple[str, str], Cell] = {}
    if "sigkill" in wanted:
        table["sigkill", "taskgraph"] = sigkill_taskgraph(trials, seed)
        table["sigkill", "experiment"] = sigkill_experiment(trials, seed)
        table["sigkill", "sweeper"] = sigkill_sweeper(trials, seed)
    small = trials if fast else max(2, trials // 10)
    for fault in WORKER_FAULTS:
        if fault not in wanted:
            continue
        table[fault, "taskgraph"] = worker_faults_taskgraph(fault, small, seed)
        if fault != "timeout":  # experiments and Boss sets have no timeout
            table[fault, "experiment"] = worker_faults_experiment(fault, small, seed)
            table[fault, "boss"] = worker_faults_boss(fault, small, seed)
    if "store-damage" in wanted:
        for front in ("taskgraph", "experiment", "sweeper"):
            table["store-damage", front] = store_damage(front, trials, seed)
    if "locked" in wanted:
        for front in ("taskgraph", "experiment"):
            table["locked", front] = locked(front, small, seed)
    if "disk-full" in wanted and resource is not None:
        # A Boss writes nothing: no disk to fill.
        for front in ("taskgraph", "experiment", "sweeper"):
            table["disk-full", front] = disk_full(front, trials, seed)
    return table


def format_table(table: dict[tuple[str, str], Cell]) -> str:
    header = (
        "fault",
        "front end",
        "trials",
        "lost",
        "duplicates",
        "hangs",
        "unexpected",
    )
    rows = [header]
    for (fault, front), c in table.items():
        counts = (c.trials, c.lost, c.duplicates, c.hangs, c.unexpected)
        rows.append((fault, front, *map(str, counts)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            v.ljust(w) if i < 2 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--fault",
        action="append",
        choices=FAULTS,
        help="run only this fault (repeat for several); default: all",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    # The Boss logs each failed worker: here the failures are the point.
    logging.getLogger("alma_dag").setLevel(logging.CRITICAL)
    print(f"seed {seed} (replay with --seed {seed})", flush=True)
    started = time.monotonic()
    table = cells(args.trials, seed, only=args.fault)
    print(format_table(table))
    print(f"{time.monotonic() - started:.0f} s")
    for (fault, front), c in table.items():
        if c.struck is not None:
            print(f"{fault} x {front}: the fault struck in {c.struck} of {c.trials}")
    for (fault, front), c in table.items():
        for note in c.notes:
            print(f"{fault} x {front}: {note}")
    return 0 if all(c.is_clean for c in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
