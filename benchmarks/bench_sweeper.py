"""ParamSweeper beside execo_engine's, in one run, on the same disk.

Three workloads, each run by ``alma_dag.sweeper.ParamSweeper`` and by
execo_engine's (``pip install execo``; skipped when missing), on the same
combinations (a 5-factor ``sweep``) in directories under ``--dir``:

1. one process, 20,000 combinations: ``get_next`` + ``done`` until empty,
   in pairs per second;
2. 4 processes (spawned) on one directory, 8,000 combinations, started
   together: pairs per second, and every combination handed out exactly
   once is verified;
3. constructing over 100,000 combinations (in a new directory; and saving
   them), then resuming at 50% done: a new instance given the sweeps, and
   one loading them, each to its first ``get_next``.

The crash guarantee is the same: a ``done()`` that returned survives a
SIGKILL of its process. alma_dag commits each call to SQLite (WAL,
``synchronous=NORMAL``) before it returns; execo appends a pickle and
fsyncs its files at every call, which also survives a power loss, as
alma_dag's ``durable=True`` does (shown beside, for that comparison).

execo runs stop after ``--budget`` seconds (its rate is steady), and the
table says how many pairs they made. Run by hand:
``python benchmarks/bench_sweeper.py [--dir DIR]``. Not run by CI.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import platform
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from alma_dag.sweep import HashableDict, sweep
from alma_dag.sweeper import ParamSweeper

PROCESSES = 4


def combinations(n: int) -> list[HashableDict]:
    """The first ``n`` combinations of a sweep shaped like an experiment's."""
    every = sweep(
        {
            "solver": ["heft", "random", "greedy", "ilp"],
            "size": range(500),
            "ratio": [0.5, 1.0, 2.0, 4.0, 8.0],
            "seed": range(5),
            "check": [True, False],
        }
    )
    assert len(every) >= n
    return every[:n]


def execo_sweeper():
    try:
        from execo_engine.sweep import ParamSweeper as ExecoSweeper
    except ImportError:
        return None
    return ExecoSweeper


def open_sweeper(kind: str, directory: Path, sweeps=None, **options):
    if kind == "execo":
        return execo_sweeper()(str(directory), sweeps, **options)
    durable = kind == "alma_dag durable"
    return ParamSweeper(directory, sweeps, durable=durable, **options)


def close(sweeper) -> None:
    if isinstance(sweeper, ParamSweeper):
        sweeper.close()


def identity(combination: dict) -> tuple:
    return tuple(sorted(combination.items()))


# -- 1. one process ---------------------------------------------------------------


def one_process(kind: str, directory: Path, n: int, budget: float) -> tuple[int, float]:
    sweeper = open_sweeper(kind, directory, combinations(n))
    pairs = 0
    start = time.perf_counter()
    deadline = start + budget
    while (combination := sweeper.get_next()) is not None:
        sweeper.done(combination)
        pairs += 1
        if pairs % 100 == 0 and time.perf_counter() > deadline:
            break
    seconds = time.perf_counter() - start
    close(sweeper)
    return pairs, seconds


# -- 2. processes -------------------------------------------------------------------


def drain(kind: str, directory: str, budget: float, ready, start, results) -> None:
    sweeper = open_sweeper(kind, Path(directory))
    ready.put(os.getpid())
    start.wait()
    deadline = time.time() + budget
    got = []
    while (combination := sweeper.get_next()) is not None:
        sweeper.done(combination)
        got.append(identity(combination))
        if len(got) % 50 == 0 and time.time() > deadline:
            break
    close(sweeper)
    results.put(got)


def processes(kind: str, directory: Path, n: int, budget: float) -> tuple[int, float]:
    every = combinations(n)
    close(open_sweeper(kind, directory, every, save_sweeps=True))
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=drain,
            args=(kind, str(directory), budget, ready, start, results),
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)
    began = time.perf_counter()
    start.set()
    got = [results.get(timeout=min(budget, 3600) + 300) for _ in workers]
    seconds = time.perf_counter() - began
    for worker in workers:
        worker.join(60)
    handed = [item for part in got for item in part]
    assert len(handed) == len(set(handed)), f"{kind}: a combination handed out twice"
    if len(handed) < n:
        print(f"  ({kind}: stopped at the budget, {len(handed):,} of {n:,} pairs)")
    else:
        assert set(handed) == set(map(identity, every)), f"{kind}: one left out"
    final = open_sweeper(kind, directory)
    assert len(final.get_done()) == len(handed), f"{kind}: a done is not recorded"
    close(final)
    return len(handed), seconds


# -- 3. construct and resume ----------------------------------------------------------


def construct_and_resume(kind: str, directory: Path, n: int) -> dict[str, float]:
    every = combinations(n)
    times = {}
    start = time.perf_counter()
    close(open_sweeper(kind, directory.with_name(directory.name + "-unsaved"), every))
    times["construct"] = time.perf_counter() - start
    start = time.perf_counter()
    sweeper = open_sweeper(kind, directory, every, save_sweeps=True)
    times["construct, saving"] = time.perf_counter() - start
    sweeper.done_batch(every[::2])
    close(sweeper)
    start = time.perf_counter()
    sweeper = open_sweeper(kind, directory, every)
    first = sweeper.get_next()
    times["resume, sweeps given"] = time.perf_counter() - start
    assert first is not None and identity(first) not in set(map(identity, every[::2]))
    close(sweeper)
    start = time.perf_counter()
    sweeper = open_sweeper(kind, directory)
    sweeper.get_next()
    times["resume, sweeps loaded"] = time.perf_counter() - start
    assert len(sweeper.get_done()) == (n + 1) // 2
    close(sweeper)
    return times


# -- the run ----------------------------------------------------------------------


def fsync_latency(directory: Path) -> float:
    path = directory / "fsync-probe"
    with open(path, "wb") as file:
        start = time.perf_counter()
        for _ in range(50):
            file.write(b"x" * 100)
            file.flush()
            os.fsync(file.fileno())
        seconds = (time.perf_counter() - start) / 50
    path.unlink()
    return seconds


def kinds(durable: bool) -> list[str]:
    found = ["alma_dag"]
    if durable:
        found.append("alma_dag durable")
    if execo_sweeper() is not None:
        found.append("execo")
    else:
        print("  (execo_engine is not installed: pip install execo)")
    return found


def rate_rows(title: str, results: dict[str, tuple[int, float]]) -> None:
    print(f"\n{title}")
    execo = results.get("execo")
    for kind, (pairs, seconds) in results.items():
        rate = pairs / seconds
        ratio = ""
        if execo and kind != "execo":
            ratio = f"{rate / (execo[0] / execo[1]):7.1f}x execo"
        print(
            f"  {kind:<18} {rate:10,.0f} pairs/s  ({pairs:,} pairs in "
            f"{seconds:.2f} s)  {ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to work")
    parser.add_argument("--one", type=int, default=20_000)
    parser.add_argument("--many", type=int, default=8_000)
    parser.add_argument("--resume", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--no-durable", action="store_true")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_sweeper-", dir=options.dir))
    try:
        print(
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} cores; working in {root}; one fsync takes "
            f"{fsync_latency(root) * 1e3:.2f} ms there"
        )
        contenders = kinds(not options.no_durable)

        results = {}
        for kind in contenders:
            budget = math.inf if kind == "alma_dag" else options.budget
            results[kind] = one_process(kind, root / f"one-{kind}", options.one, budget)
        rate_rows(
            f"1. one process, {options.one:,} combinations, get_next + done", results
        )

        results = {}
        for kind in contenders:
            if kind == "alma_dag durable":
                continue
            budget = math.inf if kind == "alma_dag" else options.budget
            results[kind] = processes(kind, root / f"many-{kind}", options.many, budget)
        rate_rows(
            f"2. {PROCESSES} processes, {options.many:,} combinations, "
            "each handed out exactly once (verified)",
            results,
        )

        print(
            f"\n3. {options.resume:,} combinations: construct, then resume at "
            "50% done, to the first get_next (seconds)"
        )
        for kind in contenders:
            if kind == "alma_dag durable":
                continue
            times = construct_and_resume(kind, root / f"resume-{kind}", options.resume)
            text = "  ".join(f"{name} {seconds:.3f}" for name, seconds in times.items())
            print(f"  {kind:<18} {text}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
