"""alma_dag's dask backend beside plain dask, on the same cluster, one run.

One ``distributed.LocalCluster`` (2 single-threaded worker processes on
loopback, no dashboard) and one ``Client`` serve every measurement. Both
sides are warmed up first, so worker imports and the first connections are
not counted. Two workloads:

1. throughput: ``--tasks`` (20,000) independent trivial tasks. Plain dask:
   ``client.map(f, range(n), pure=False)`` then ``client.gather``.
   alma_dag: a ``TaskGraph`` of the same tasks (string node ids), run by
   ``Dispatcher(graph, workers=2, backend=DaskBackend(client), store=...)``
   -- checkpointing on, a fresh ``Store`` each run -- and, for reference,
   the same without a store. Timed end to end on both sides (building the
   graph, planning and opening the store included). Reported: tasks/s and
   alma_dag's time / client.map's time. Goal: <= 1.5 with the store.
2. makespan: ``bench_dispatch.py``'s random DAG of ``--dag`` (200) sleeps
   of 5-50 ms, same generator and ``--seed``. Plain dask: a
   ``dask.delayed`` graph with the same dependencies and durations, run by
   ``client.compute`` (dask's own scheduler); alma_dag: its heft plan run
   by the dispatcher with ``DaskBackend(client)`` and a store. Reported:
   makespan, the lower bound (critical path or total work / 2, as
   ``bench_dispatch.py`` computes it), makespan / bound. Goal: alma_dag's
   makespan <= dask's.

Every figure is the best of ``--repeat`` (2) runs, except client.map's,
run ``--map-repeat`` (1) times: it takes ~40 s for 20,000 tasks on two
cores. ``--profile`` then runs each alma_dag workload once more, traced:
batches (count, size, submit -> outcome), the top of a cProfile of the
dispatcher thread, and for the DAG the workers' idle time between tasks
(from ``distributed.get_task_stream``), dask's beside alma_dag's, the
latter split by whether the next batch was already queued on the cluster
and, if not, into outcome return, dispatcher and launch latencies.

Run by hand, not by CI::

    python benchmarks/bench_dask.py
    python benchmarks/bench_dask.py --only throughput --tasks 5000 --repeat 1
    python benchmarks/bench_dask.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

import cloudpickle
import dask
import distributed

import alma_dag as ad
from alma_dag.backends.dask import DaskBackend, local_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dispatch import lower_bound, sleep_dag  # noqa: E402

if __name__ != "__main__":  # imported: workers cannot import this module
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORKERS = 2
THROUGHPUT_GOAL = 1.5


def trivial(x):
    return x + 1


def sleep_ms(ms, node, *_inputs):
    """Sleep ``ms``; ``node`` keeps every task distinct."""
    time.sleep(ms / 1000)
    return ms


def best_of(repeat, function, *args):
    """The shortest of ``repeat`` timings ``function(*args)`` returns."""
    return min(function(*args) for _ in range(repeat))


class Stores:
    """Fresh, empty store directories under one temporary root."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench_dask-"))
        self.made: list[ad.Store] = []

    def new(self) -> ad.Store:
        self.made.append(ad.Store(self.root / f"run{len(self.made) + 1}.alma"))
        return self.made[-1]

    def remove(self) -> None:
        for store in self.made:  # open until now: results are read from them
            store.close()
        shutil.rmtree(self.root, ignore_errors=True)


def run_alma(graph, client, store=None, plan=None, backend=None):
    """Run ``graph`` on the cluster through alma_dag; returns the dispatcher."""
    backend = backend or DaskBackend(client)
    dispatcher = ad.Dispatcher(
        graph, workers=WORKERS, backend=backend, store=store, plan=plan
    )
    state = dispatcher.run()
    assert state is ad.RunState.FINISHED, state
    return dispatcher


def warm_up(client, stores):
    """Load on every worker what each side runs: distributed's task
    machinery, alma_dag's batch runner and cloudpickle."""
    assert client.gather(client.map(trivial, range(50), pure=False))[-1] == 50
    client.gather(client.compute([dask.delayed(sleep_ms)(1, i) for i in range(4)]))
    for store in (None, stores.new()):
        graph = ad.TaskGraph()
        for i in range(200):
            graph.add(f"w{i}", trivial, (i,))
        run_alma(graph, client, store)


# -- 1. throughput ----------------------------------------------------------------


def dask_map(client, n):
    start = time.perf_counter()
    futures = client.map(trivial, range(n), pure=False)
    out = client.gather(futures)
    seconds = time.perf_counter() - start
    assert out[-1] == n
    del futures
    return seconds


def independent_graph(n):
    graph = ad.TaskGraph()
    for i in range(n):
        graph.add(f"t{i}", trivial, (i,))
    return graph


def alma_map(client, n, stores=None, backend=None):
    start = time.perf_counter()
    store = stores.new() if stores is not None else None
    dispatcher = run_alma(independent_graph(n), client, store, backend=backend)
    seconds = time.perf_counter() - start
    assert dispatcher.results[f"t{n - 1}"] == n
    return seconds


def throughput(client, stores, n, repeat, map_repeat):
    print(f"\n1. {n:,} independent trivial tasks on {WORKERS} workers")
    times = {
        "dask client.map": best_of(map_repeat, dask_map, client, n),
        "alma_dag + store": best_of(repeat, alma_map, client, n, stores),
        "alma_dag, no store": best_of(repeat, alma_map, client, n),
    }
    base = times["dask client.map"]
    for name, seconds in times.items():
        print(
            f"  {name:<20} {n / seconds:10,.0f} tasks/s  {seconds:7.3f} s  "
            f"{seconds / base:5.2f}x client.map's time"
        )
    ratio = times["alma_dag + store"] / base
    verdict = "met" if ratio <= THROUGHPUT_GOAL else "MISSED"
    print(
        f"  goal: alma_dag + store <= {THROUGHPUT_GOAL}x client.map's time: "
        f"{ratio:.2f}x, {verdict}"
    )
    return ratio


# -- 2. makespan of a DAG of sleeps ------------------------------------------------


def dask_sleep(client, nodes):
    task = dask.delayed(sleep_ms, pure=False)
    values = {}
    for i, ms, deps in nodes:
        values[i] = task(ms, i, *[values[d] for d in deps])
    start = time.perf_counter()
    out = client.gather(client.compute(list(values.values())))
    seconds = time.perf_counter() - start
    assert out == [ms for _, ms, _ in nodes]
    return seconds


def sleep_graph(nodes):
    graph = ad.TaskGraph()
    for i, ms, deps in nodes:
        graph.add(
            f"t{i}", sleep_ms, (ms, i, *[ad.Dependency(f"t{d}") for d in deps]), cost=ms
        )
    return graph


def alma_sleep(client, nodes, stores, backend=None):
    graph = sleep_graph(nodes)
    plan = ad.heft(graph, WORKERS)
    store = stores.new()
    start = time.perf_counter()
    dispatcher = run_alma(graph, client, store, plan=plan, backend=backend)
    seconds = time.perf_counter() - start
    assert dispatcher.results == {f"t{i}": ms for i, ms, _ in nodes}
    return seconds


def makespan(client, stores, n, seed, repeat):
    nodes = sleep_dag(n, seed)
    bound = lower_bound(nodes)
    plan = ad.heft(sleep_graph(nodes), WORKERS)
    print(
        f"\n2. {n}-task DAG of 5-50 ms sleeps on {WORKERS} workers, seed {seed} "
        f"(lower bound {bound:.3f} s; alma_dag's plan: makespan / bound "
        f"{plan.makespan / plan.lower_bound:.3f})"
    )
    times = {
        "dask (client.compute)": best_of(repeat, dask_sleep, client, nodes),
        "alma_dag + store": best_of(repeat, alma_sleep, client, nodes, stores),
    }
    for name, seconds in times.items():
        print(
            f"  {name:<22} makespan {seconds:.3f} s  makespan/bound "
            f"{seconds / bound:.3f}"
        )
    ours, theirs = times["alma_dag + store"], times["dask (client.compute)"]
    verdict = "met" if ours <= theirs else "MISSED"
    print(
        f"  goal: alma_dag's makespan <= dask's: {ours:.3f} s vs {theirs:.3f} s "
        f"({ours / theirs:.3f}x), {verdict}"
    )
    return ours / theirs


# -- --profile: where alma_dag's time goes ----------------------------------------


class TracedBackend(DaskBackend):
    """A ``DaskBackend`` that notes, per batch, its size, when it was
    submitted and when its outcome reached the dispatcher (``time.time()``,
    comparable with the workers' clocks on one machine)."""

    def __init__(self, client):
        super().__init__(client)
        self.sizes: dict[int, int] = {}
        self.submitted: dict[int, float] = {}
        self.reported: dict[int, float] = {}

    def submit(self, batch):
        self.sizes[batch.id] = len(batch.items)
        self.submitted[batch.id] = time.time()
        super().submit(batch)

    def open(self, n_workers, report, store=None):
        def traced(outcome):
            self.reported.setdefault(outcome.batch, time.time())
            report(outcome)

        super().open(n_workers, traced, store)


def ms(values):
    if not values:
        return "n=0"
    return (
        f"n={len(values)}, {sum(values):.3f} s, "
        f"median {statistics.median(values) * 1e3:.1f} ms"
    )


def worker_runs(stream, batch_of=None):
    """Per worker, its tasks' (start, stop, batch) from a task stream."""
    runs: dict[str, list] = {}
    for record in stream.data:
        compute = [s for s in record["startstops"] if s["action"] == "compute"]
        key = str(record["key"])
        batch = batch_of(key) if batch_of else key
        runs.setdefault(record["worker"], []).append(
            (compute[0]["start"], compute[0]["stop"], batch)
        )
    return [sorted(tasks) for tasks in runs.values()]


def batch_of(key):
    """The batch id in a ``DaskBackend`` key, ``alma_dag-batch-<id>-<hex>``."""
    return int(key.split("-")[2])


def print_gaps(backend, runs):
    """Split the workers' idle time between consecutive batches: the next
    batch was already queued on the cluster, or was submitted only after
    the previous one ended -- then by what the time went on."""
    stops = {batch: stop for tasks in runs for _, stop, batch in tasks}
    reports = sorted((t, batch) for batch, t in backend.reported.items())
    queued, later, back, dispatch, launch = [], [], [], [], []
    for tasks in runs:
        for (_, stop, _), (start, _, batch) in pairwise(tasks):
            if backend.submitted[batch] <= stop:
                queued.append(start - stop)
                continue
            later.append(start - stop)
            sent = backend.submitted[batch]
            reported, trigger = max(r for r in reports if r[0] <= sent)
            back.append(reported - stops[trigger])
            dispatch.append(sent - reported)
            launch.append(start - sent)
    print(f"      next batch already queued on the cluster:   {ms(queued)}")
    print(f"      next batch submitted after previous ended:  {ms(later)}")
    print("      ... the latter made of:")
    print(f"        trigger's end on worker -> outcome at dispatcher {ms(back)}")
    print(f"        outcome -> submit (dispatcher thread)            {ms(dispatch)}")
    print(f"        submit -> start on a worker                      {ms(launch)}")


def print_profile(profiler, lines=10):
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(lines)
    body = text.getvalue().strip().splitlines()
    first = next(i for i, line in enumerate(body) if "ncalls" in line)
    print(f"    cProfile of the dispatcher thread, by own time ({body[0].strip()}):")
    for line in body[first:]:
        print(f"      {line}")


def profile(client, stores, n, dag, seed):
    print("\n--profile: one more run of each alma_dag workload (+ store), traced")
    backend = TracedBackend(client)
    profiler = cProfile.Profile()
    seconds = profiler.runcall(alma_map, client, n, stores, backend)
    sizes = list(backend.sizes.values())
    trips = [backend.reported[b] - backend.submitted[b] for b in backend.reported]
    print(
        f"\n  throughput, {n:,} tasks: {seconds:.3f} s under cProfile; "
        f"{len(sizes)} batches, {statistics.mean(sizes):.0f} tasks each on average; "
        f"submit -> outcome median {statistics.median(trips) * 1e3:.1f} ms"
    )
    print_profile(profiler)

    nodes = sleep_dag(dag, seed)
    with distributed.get_task_stream(client) as stream:
        theirs = dask_sleep(client, nodes)
    dask_runs = worker_runs(stream)
    gaps = [b[0] - a[1] for tasks in dask_runs for a, b in pairwise(tasks)]
    backend = TracedBackend(client)
    profiler = cProfile.Profile()
    with distributed.get_task_stream(client) as stream:
        ours = profiler.runcall(alma_sleep, client, nodes, stores, backend)
    print(
        f"\n  sleep DAG, {dag} tasks: alma_dag {ours:.3f} s under cProfile, "
        f"dask {theirs:.3f} s; workers idle between tasks:"
    )
    print(f"    dask: {ms(gaps)}")
    print("    alma_dag, in two kinds:")
    print_gaps(backend, worker_runs(stream, batch_of))
    print_profile(profiler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--dag", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many")
    parser.add_argument(
        "--map-repeat", type=int, default=1, help="runs of client.map (slow)"
    )
    parser.add_argument("--only", choices=["throughput", "makespan"])
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    print(
        f"alma_dag dask benchmark; python {sys.version.split()[0]}, "
        f"distributed {distributed.__version__}, {os.cpu_count()} cpus"
    )
    stores = Stores()
    with (
        local_cluster(WORKERS) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        try:
            warm_up(client, stores)
            if options.only in (None, "throughput"):
                throughput(
                    client, stores, options.tasks, options.repeat, options.map_repeat
                )
            if options.only in (None, "makespan"):
                makespan(client, stores, options.dag, options.seed, options.repeat)
            if options.profile:
                profile(client, stores, options.tasks, options.dag, options.seed)
        finally:
            stores.remove()


if __name__ == "__main__":
    main()
