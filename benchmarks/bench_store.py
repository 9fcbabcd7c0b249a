"""What the checkpoint store costs: per run() call, and at the scale of a
million nodes.

Run by hand, not by CI::

    python benchmarks/bench_store.py
    python benchmarks/bench_store.py --only checkpoint --instances 2000 --iterations 10
    python benchmarks/bench_store.py --only scale --profile

1. checkpoint cost: an experiment of ``--instances`` x ``--iterations``
   trivial ``run(instance)`` calls (20,000 by default) on 2 workers, run as
   users run it, ``load(path).run()``, from an empty store each time; beside
   it the very graph that ``load`` compiled, run by a plain
   ``Dispatcher(graph, workers=2)`` with no store. The loky pool is warm for
   both. Reported: the best of ``--repeat`` runs of each, and the ratios
   store / no store, of the runs alone and of load + run. Goal: <= 1.3.
2. scale: an experiment of ``--scale-instances`` x ``--scale-iterations``
   nodes (1,000,000 by default) whose store records ``--done-fraction``
   (90 %) of them done, written straight into the ``nodes`` table; then,
   in a fresh interpreter so that its peak memory is its own,
   ``load(path)`` and the re-plan of what is left,
   ``heft(run.graph, workers)``. run() is never called. Goals: load +
   re-plan < 10 s, peak resident memory < 2 GB. ``--profile`` adds the
   top of a cProfile of the same steps.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pickle
import pstats
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import alma_dag as ad
from alma_dag.experiment import load, read_experiment
from alma_dag.plan import heft
from alma_dag.store import DATABASE, Store

WORKERS = 2

RUN_MODULE = """\
def run(instance):
    return len(instance)


def done():
    pass
"""


def trivial(x):
    return x + 1


def warm_pool() -> None:
    """Start alma_dag's shared loky pool of WORKERS workers."""
    graph = ad.TaskGraph()
    for i in range(WORKERS * 4):
        graph.add(i, trivial, (i,))
    ad.Dispatcher(graph, workers=WORKERS).run()


def write_experiment(folder: Path, instances: int, iterations: int) -> Path:
    """An experiment of ``instances`` fake instance names (the files need
    not exist: run() only measures the name)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data/instance-{i:06d}.txt" for i in range(instances)]
    (folder / "bench.batch").write_text(json.dumps({"instances": names}))
    (folder / "bench.py").write_text(RUN_MODULE)
    spec = {
        "load": "bench.py",
        "workers": WORKERS,
        "iterations": iterations,
        "batch": "bench.batch",
    }
    path = folder / "bench.experiment"
    path.write_text(json.dumps(spec))
    return path


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b else "   -"


# -- 1. checkpoint cost -----------------------------------------------------------


def with_store(path: Path) -> tuple[float, float, int]:
    """Seconds of load() and of run() from an empty store; calls made."""
    shutil.rmtree(read_experiment(path).run_dir, ignore_errors=True)
    start = time.perf_counter()
    run = load(path)
    loaded = time.perf_counter()
    state = run.run()
    ended = time.perf_counter()
    assert state is ad.RunState.FINISHED, state
    calls = len(run.graph)
    run.store.close()
    return loaded - start, ended - loaded, calls


def without_store(graph: ad.TaskGraph) -> float:
    dispatcher = ad.Dispatcher(graph, workers=WORKERS)
    start = time.perf_counter()
    state = dispatcher.run()
    seconds = time.perf_counter() - start
    assert state is ad.RunState.FINISHED, state
    return seconds


def bench_checkpoint(root: Path, instances: int, iterations: int, repeat: int):
    path = write_experiment(root / "checkpoint", instances, iterations)
    n = instances * iterations
    print(
        f"\n1. checkpoint cost: {n:,} trivial run() calls "
        f"({instances:,} instances x {iterations} iterations), {WORKERS} workers, "
        f"best of {repeat}"
    )
    warm_pool()
    # The graph load() compiles, with the same functions and arguments.
    run = load(path)
    graph = run.graph
    run.store.close()
    loads, runs, plain = [], [], []
    for _ in range(repeat):  # alternate, so drift hurts both alike
        seconds_load, seconds_run, calls = with_store(path)
        assert calls == n + 1  # the runs and the done() node
        loads.append(seconds_load)
        runs.append(seconds_run)
        plain.append(without_store(graph))
    load_s, run_s, plain_s = min(loads), min(runs), min(plain)
    rows = [
        ("no store: Dispatcher(graph).run()", plain_s, plain_s),
        ("store: load(path).run(), run()", run_s, plain_s),
        ("store: load(path).run(), load + run", load_s + run_s, plain_s),
    ]
    print(f"  {'':<38} {'seconds':>8} {'per call':>10} {'ratio':>7}")
    for name, seconds, base in rows:
        print(
            f"  {name:<38} {seconds:8.3f} {seconds / n * 1e6:8.1f} us "
            f"{ratio(seconds, base)}"
        )
    print(f"  (load alone: {load_s:.3f} s)")
    verdict = "met" if run_s / plain_s <= 1.3 else "MISSED"
    print(f"  goal run() ratio <= 1.3: {verdict}")
    return run_s / plain_s


# -- 2. scale ---------------------------------------------------------------------


def fill_store(path: Path, fraction: float, seed: int) -> tuple[int, int]:
    """Record ``fraction`` of the experiment's run nodes done, chosen at
    random, straight into the nodes table; returns (done, total)."""
    experiment = read_experiment(path)
    shutil.rmtree(experiment.run_dir, ignore_errors=True)
    Store(experiment.run_dir).close()  # the layout, as alma_dag makes it
    ids = experiment.node_ids()
    rng = random.Random(seed)
    done = rng.sample(ids, round(len(ids) * fraction))
    result = pickle.dumps(24, protocol=pickle.HIGHEST_PROTOCOL)
    db = sqlite3.connect(experiment.run_dir / DATABASE, isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=OFF")  # set-up only
        db.execute("BEGIN")
        t = 1.7e9
        db.executemany(
            "INSERT INTO nodes VALUES (?, 1, 1, ?, NULL, ?, ?)",
            (
                (node, result, t, t + 0.001 + 0.001 * (i % 7))
                for i, node in enumerate(done)
            ),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return len(done), len(ids)


def scale_child(path: str, workers: int, profile: bool) -> None:
    """In a fresh interpreter: load, re-plan, print figures as JSON."""
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    run = load(path, workers=workers)
    loaded = time.perf_counter()
    plan = heft(run.graph, workers)
    planned = time.perf_counter()
    if profiler:
        profiler.disable()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
    figures = {
        "load": loaded - start,
        "plan": planned - loaded,
        "peak": peak,
        "nodes": len(run.graph),
        "prior": run.progress().done,
        "makespan": plan.makespan,
    }
    run.store.close()
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(20)
        figures["profile"] = text.getvalue()
    print(json.dumps(figures))


def bench_scale(root: Path, instances, iterations, fraction, seed, profile):
    n = instances * iterations
    print(
        f"\n2. scale: {instances:,} instances x {iterations} iterations = "
        f"{n:,} nodes, {fraction:.0%} recorded done, {WORKERS} workers"
    )
    path = write_experiment(root / "scale", instances, iterations)
    start = time.perf_counter()
    done, total = fill_store(path, fraction, seed)
    size = (read_experiment(path).run_dir / DATABASE).stat().st_size
    print(
        f"  set-up: {done:,} of {total:,} recorded in "
        f"{time.perf_counter() - start:.1f} s; store.sqlite {size / 1e6:.0f} MB"
    )
    command = [sys.executable, __file__, "--scale-child", str(path)]
    if profile:
        command.append("--profile")
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode:
        print(out.stderr)
        raise SystemExit(f"the scale child failed with {out.returncode}")
    figures = json.loads(out.stdout.splitlines()[-1])
    assert figures["nodes"] == total - done + 1, figures  # + the done() node
    both = figures["load"] + figures["plan"]
    gb = figures["peak"] / 2**30
    print(f"  {'load(path)':<30} {figures['load']:8.2f} s")
    print(
        f"  {'heft(run.graph, 2) re-plan':<30} {figures['plan']:8.2f} s   "
        f"({figures['nodes']:,} nodes left, {figures['prior']:,} done before)"
    )
    print(
        f"  {'load + re-plan':<30} {both:8.2f} s   goal < 10 s: "
        f"{'met' if both < 10 else 'MISSED'}"
    )
    print(
        f"  {'peak resident memory':<30} {gb:8.2f} GiB goal < 2 GB: "
        f"{'met' if figures['peak'] < 2e9 else 'MISSED'}"
    )
    if profile:
        print("\n  cProfile of load + re-plan (in the child):\n")
        print(figures["profile"])
    return both, figures["peak"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["checkpoint", "scale"])
    parser.add_argument("--instances", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale-instances", type=int, default=10_000)
    parser.add_argument("--scale-iterations", type=int, default=100)
    parser.add_argument("--done-fraction", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dir", help="keep the experiments here, not in a temp dir")
    parser.add_argument("--scale-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child:
        scale_child(args.scale_child, WORKERS, args.profile)
        return
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_store-"))
    print(
        f"alma_dag store benchmark; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpus, experiments in {root}"
    )
    try:
        if args.only in (None, "checkpoint"):
            bench_checkpoint(root, args.instances, args.iterations, args.repeat)
        if args.only in (None, "scale"):
            bench_scale(
                root,
                args.scale_instances,
                args.scale_iterations,
                args.done_fraction,
                args.seed,
                args.profile,
            )
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
        from alma_dag.backends.loky import shutdown_pool

        shutdown_pool()


if __name__ == "__main__":
    main()
