"""Load: many tiny tasks through one dispatcher, many sweepers on one directory.

Two checks, each run once (issue 7, item 3):

1. ``--tasks`` tiny independent tasks through ``Dispatcher(graph, workers=2)``
   with a ``Store`` on a temporary directory. A ``Callbacks`` subclass samples
   the dispatcher process's RSS every ``--every`` finished tasks. Every
   result is checked, every node must be recorded done in the store, and the
   memory must be flat after warm-up: the least-squares slope of RSS against
   the task count, over the second half of the samples, in bytes per task,
   must stay under ``--max-slope``.

   With a store, the dispatcher keeps in memory only the results an
   unfinished task still needs (none here), the times and attempt counts
   of tasks not yet committed, and failures; what is committed is read
   back from the store when asked for (``results`` after the run). Its
   per-node bookkeeping is allocated when the run starts and only shrinks,
   so the raw RSS slope should be near zero: a few bytes per task here
   (before results were let go, when every result, timing and attempt
   count stayed in memory, it was ~230-370 bytes per task, most of it
   dicts doubling their capacity). The sampler also measures what the
   dispatcher keeps by design at each sample (``sys.getsizeof`` of its
   dicts and of the results they hold in memory), and the check is on the
   slope of RSS minus that, limit ``--max-slope`` 200. A real leak (a
   batch, an outcome, a pickled payload or a row kept per task) would be
   hundreds of bytes to kilobytes per task.

2. ``--sweepers`` processes started together, each draining one
   ``ParamSweeper`` directory of ``--combinations`` elements (created once by
   this process with ``save_sweeps=True``) with ``get_next`` + ``done`` until
   None, and logging what it got to its own file. Every combination must be
   handed out exactly once, and a fresh instance must see them all done.
   Reports pairs per second (all processes together).

Run by hand: ``python benchmarks/load.py [--tasks 50000 --sweepers 8
--combinations 8000]``. Not run by CI (``tests/test_load.py`` is its small,
fast version).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

import alma_dag as ad

WORKERS = 2


# -- 1. many tiny tasks ---------------------------------------------------------


def square(x: int) -> int:
    return x * x


class RssSampler(ad.Callbacks):
    """Samples this process's RSS every ``every`` finished tasks, beside the
    bytes the dispatcher keeps by design at that moment (see ``kept``)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.done = 0
        #: (tasks finished, rss bytes, bytes kept by design)
        self.samples: list[tuple[int, int, int]] = []
        self._process = psutil.Process()
        self._dispatcher: ad.Dispatcher | None = None

    def on_start(self, dispatcher) -> None:
        self._dispatcher = dispatcher

    def on_task_done(self, node, result) -> None:
        self.done += 1
        if self.done % self.every == 0:
            rss = self._process.memory_info().rss
            self.samples.append((self.done, rss, self.kept()))

    def kept(self) -> int:
        """Bytes the dispatcher keeps by design: its dicts of results kept
        in memory, timings, attempt counts and consumer counts, and the
        results and ``(start, finish)`` tuples they hold. Dicts grow by
        doubling, so their ``getsizeof`` (allocated capacity, not the slots
        used) jumps at each resize, as the RSS does. Reads private
        attributes: a benchmark's licence."""
        d = self._dispatcher
        ledger = d._ledger
        timings = d._timings
        dicts = [ledger.results, ledger.attempts, ledger.consumers, timings]
        per_timing = sys.getsizeof((0.0, 0.0)) + 2 * sys.getsizeof(0.0)
        return (
            sum(sys.getsizeof(x) for x in dicts)
            + sum(sys.getsizeof(r) for r in ledger.results.values())
            + len(timings) * per_timing
        )


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of y against x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def many_tasks(n: int, every: int, directory: Path) -> dict:
    """Runs ``n`` tiny tasks with a store in ``directory``; checks the results
    and the store; returns the measurements."""
    graph = ad.TaskGraph()
    for i in range(n):
        graph.add(f"t{i}", square, (i,))
    sampler = RssSampler(every)
    store = ad.Store(directory)
    try:
        start = time.perf_counter()
        dispatcher = ad.Dispatcher(
            graph, workers=WORKERS, store=store, callbacks=[sampler]
        )
        state = dispatcher.run()
        seconds = time.perf_counter() - start
        kept_at_end = len(dispatcher._ledger.results)
        # read back from the store: the dispatcher no longer holds them
        read = time.perf_counter()
        results = dispatcher.results
        read = time.perf_counter() - read
    finally:
        store.close()
    assert state is ad.RunState.FINISHED, state
    wrong = [i for i in range(n) if results.get(f"t{i}") != i * i]
    assert not wrong, f"{len(wrong)} wrong or missing results, first t{wrong[0]}"
    with ad.Store(directory, readonly=True) as reader:
        recorded = reader.done_ids()
    missing = {f"t{i}" for i in range(n)} - recorded
    assert not missing, f"{len(missing)} tasks not recorded done, e.g. {min(missing)}"
    assert sampler.done == n, (sampler.done, n)
    second_half = sampler.samples[len(sampler.samples) // 2 :]
    return {
        "tasks": n,
        "seconds": seconds,
        # results the dispatcher still holds in memory at the end
        "kept_at_end": kept_at_end,
        "read_seconds": read,
        "samples": sampler.samples,
        # bytes per task, least squares over the second half of the samples
        "slope": slope([(done, rss) for done, rss, _ in second_half]),
        "kept_slope": slope([(done, kept) for done, _, kept in second_half]),
        "unexplained_slope": slope(
            [(done, rss - kept) for done, rss, kept in second_half]
        ),
    }


# -- 2. many sweepers on one directory ------------------------------------------

#: Run by each sweeper process: waits for the go file, drains the directory,
#: logs one JSON line per combination it got, then "END" with its seconds.
DRAIN = """
import json, os, sys, time
from alma_dag import ParamSweeper
directory, log, go = sys.argv[1:4]
sweeper = ParamSweeper(directory)
while not os.path.exists(go):
    time.sleep(0.001)
start = time.perf_counter()
with open(log, "w") as out:
    while (combination := sweeper.get_next()) is not None:
        out.write(json.dumps(combination, sort_keys=True) + "\\n")
        sweeper.done(combination)
    out.write("END %r\\n" % (time.perf_counter() - start))
sweeper.close()
"""


def combinations(n: int) -> list:
    every = ad.sweep(
        {
            "solver": ["heft", "random", "greedy", "ilp"],
            "size": range(500),
            "ratio": [0.5, 1.0, 2.0, 4.0, 8.0],
            "seed": range(5),
        }
    )
    assert len(every) >= n
    return every[:n]


def many_sweepers(processes: int, n: int, directory: Path, timeout: float) -> dict:
    """Drains one sweeper directory of ``n`` combinations with ``processes``
    processes started together; checks each was handed out exactly once and
    all are done; returns the measurements."""
    elements = combinations(n)
    sweeps = directory / "sweeps"
    ad.ParamSweeper(sweeps, elements, save_sweeps=True).close()
    go = directory / "go"
    logs = [directory / f"drain-{k}.log" for k in range(processes)]
    children = [
        subprocess.Popen([sys.executable, "-c", DRAIN, str(sweeps), str(log), str(go)])
        for log in logs
    ]
    try:
        time.sleep(1.0)  # let every interpreter start and open the database
        start = time.perf_counter()
        go.touch()
        for child in children:
            assert child.wait(timeout=timeout) == 0, (
                f"drainer exited {child.returncode}"
            )
        seconds = time.perf_counter() - start
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    got: list[str] = []
    per_process = []
    for log in logs:
        lines = log.read_text().splitlines()
        assert lines and lines[-1].startswith("END "), f"{log}: no END line"
        per_process.append(len(lines) - 1)
        got.extend(lines[:-1])
    expected = {json.dumps(e, sort_keys=True) for e in elements}
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} handed out twice"
    assert set(got) == expected, (
        f"{len(expected - set(got))} never handed out, "
        f"{len(set(got) - expected)} unknown"
    )
    with ad.ParamSweeper(sweeps) as fresh:
        assert len(fresh.get_done()) == n, len(fresh.get_done())
        assert not fresh.get_remaining() and not fresh.get_inprogress()
    return {
        "processes": processes,
        "combinations": n,
        "seconds": seconds,
        "per_process": per_process,
        "pairs_per_second": n / seconds,
    }


# -- report -----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=500, help="tasks per sample")
    parser.add_argument("--max-slope", type=float, default=200.0)
    parser.add_argument("--sweepers", type=int, default=8)
    parser.add_argument("--combinations", type=int, default=8000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as temporary:
        base = Path(temporary)
        print(
            f"alma_dag load, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cpus, {WORKERS} workers"
        )

        r = many_tasks(args.tasks, args.every, base / "run.alma")
        samples = r["samples"]
        mib = 1 / 2**20
        print(
            f"\n1. {r['tasks']:,} tiny tasks with a store: {r['seconds']:.1f} s, "
            f"{r['tasks'] / r['seconds']:,.0f} tasks/s; all results right and "
            "recorded done"
        )
        print(
            f"   RSS: {samples[0][1] * mib:.1f} MiB after {samples[0][0]:,} tasks, "
            f"{samples[len(samples) // 2][1] * mib:.1f} MiB at half, "
            f"{samples[-1][1] * mib:.1f} MiB at the end"
        )
        print(
            f"   RSS slope over the second half: {r['slope']:.0f} bytes/task, "
            f"of which kept by design {r['kept_slope']:.0f}"
        )
        print(
            f"   unexplained (RSS - kept): {r['unexplained_slope']:.0f} "
            f"bytes/task (limit {args.max_slope:.0f})"
        )
        print(
            f"   results held in memory at the end: {r['kept_at_end']:,}; "
            f"results read back from the store in {r['read_seconds']:.2f} s"
        )
        assert r["unexplained_slope"] < args.max_slope, "memory grows per task"

        s = many_sweepers(args.sweepers, args.combinations, base, timeout=600)
        print(
            f"\n2. {s['processes']} sweeper processes on one directory, "
            f"{s['combinations']:,} combinations: {s['seconds']:.1f} s, "
            f"{s['pairs_per_second']:,.0f} pairs/s"
        )
        print(
            f"   each handed out exactly once, all done in a fresh instance; "
            f"per process: {s['per_process']}"
        )


if __name__ == "__main__":
    main()
