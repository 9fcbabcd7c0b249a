"""Fault injection across the front ends: what a crash, a dying worker or a
damaged store costs.

Run by hand::

    python benchmarks/faults.py [--trials N] [--seed S]

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
  ``LockedError`` naming the holder, and ``status()`` works beside it.

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


def _start(code: str, root: Path, name: str) -> Session:
    marker = f"{uuid.uuid4().hex}-{name}"
    stderr = root / f"{name}.stderr"
    prelude = (
        f"import faulthandler; faulthandler.dump_traceback_later({WAIT}, exit=True)\n"
    )
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", prelude + code, str(root)],
            env={**os.environ, MARK: marker},
            stdout=subprocess.DEVNULL,
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
    if done_log is not None:
        extra = len(_lines(done_log)) - 1 - killed_after_done
        cell.add("duplicates", seed, f"done() ran {extra} more times", max(extra, 0))
        if extra < 0:
            cell.add("lost", seed, "done() never ran")


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
    root: Path, faults: dict[str, str] | None = None, sleep: float = 0.01
) -> tuple[Path, dict[str, str]]:
    """An experiment of ``INSTANCES`` instances, one iteration each; returns
    its file and the node id of each instance's base name."""
    folder = root / "exp"
    (folder / "data").mkdir(parents=True)
    names = [f"data/i{i:02d}.txt" for i in range(INSTANCES)]
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


def cells(trials: int, seed: int, fast: bool = False) -> dict[tuple[str, str], Cell]:
    """Every fault on every front end it applies to; ``fast`` caps the
    trials of the slow SIGKILL and lock rows at ``trials``."""
    table: dict[tuple[str, str], Cell] = {}
    table["sigkill", "taskgraph"] = sigkill_taskgraph(trials, seed)
    table["sigkill", "experiment"] = sigkill_experiment(trials, seed)
    table["sigkill", "sweeper"] = sigkill_sweeper(trials, seed)
    small = trials if fast else max(2, trials // 10)
    for fault in WORKER_FAULTS:
        table[fault, "taskgraph"] = worker_faults_taskgraph(fault, small, seed)
        if fault != "timeout":  # experiments and Boss sets have no timeout
            table[fault, "experiment"] = worker_faults_experiment(fault, small, seed)
            table[fault, "boss"] = worker_faults_boss(fault, small, seed)
    for front in ("taskgraph", "experiment", "sweeper"):
        table["store-damage", front] = store_damage(front, trials, seed)
    for front in ("taskgraph", "experiment"):
        table["locked", front] = locked(front, small, seed)
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
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    # The Boss logs each failed worker: here the failures are the point.
    logging.getLogger("alma_dag").setLevel(logging.CRITICAL)
    print(f"seed {seed} (replay with --seed {seed})", flush=True)
    started = time.monotonic()
    table = cells(args.trials, seed)
    print(format_table(table))
    print(f"{time.monotonic() - started:.0f} s")
    for (fault, front), c in table.items():
        for note in c.notes:
            print(f"{fault} x {front}: {note}")
    return 0 if all(c.is_clean for c in table.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
