"""Dispatch overhead and plan fidelity: alma_dag beside its peers, one run.

Three workloads, each run by alma_dag and by the peers installed with
``pip install -e ".[bench]"`` (missing peers are skipped):

1. throughput: N independent trivial tasks on 2 workers -- alma_dag, a raw
   loky executor (one submit per task), joblib ``Parallel(backend="loky")``
   (auto-batching), dask's process scheduler, and ampeg executing two
   hand-made task lists (its planner is quadratic and would dominate);
2. a chain of trivial tasks, each needing the previous: wall time per link
   for alma_dag, dask's threaded scheduler and a raw loky round trip;
3. a random DAG of sleeps (5-50 ms, costs known) on 2 workers: realized
   makespan / lower bound for alma_dag, dask's process scheduler, dask
   distributed, and ampeg's execution of its own plan (planning excluded).

Run by hand: ``python benchmarks/bench_dispatch.py``. Not run by CI.
"""

from __future__ import annotations

import argparse
import random
import time

import alma_dag as ad

WORKERS = 2


def trivial(x):
    return x + 1


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def warm_loky():
    """Start every pool the contenders use, so nobody pays for spawning:
    loky's reusable executor (raw loky, joblib) and alma_dag's shared pool."""
    import loky

    executor = loky.get_reusable_executor(max_workers=WORKERS, timeout=300)
    list(executor.map(trivial, range(WORKERS * 4)))
    graph = ad.TaskGraph()
    for i in range(WORKERS * 4):
        graph.add(i, trivial, (i,))
    ad.Dispatcher(graph, workers=WORKERS).run()
    return executor


# -- 1. throughput --------------------------------------------------------------


def alma_independent(n):
    graph = ad.TaskGraph()
    for i in range(n):
        graph.add(i, trivial, (i,))
    dispatcher = ad.Dispatcher(graph, workers=WORKERS)
    dispatcher.run()
    assert dispatcher.results[n - 1] == n
    return dispatcher


def loky_independent(n):
    executor = warm_loky()
    futures = [executor.submit(trivial, i) for i in range(n)]
    assert futures[-1].result() == n


def joblib_independent(n):
    from joblib import Parallel, delayed

    out = Parallel(n_jobs=WORKERS, backend="loky")(
        delayed(trivial)(i) for i in range(n)
    )
    assert out[-1] == n


def dask_independent(n):
    import dask

    tasks = [dask.delayed(trivial)(i) for i in range(n)]
    out = dask.compute(*tasks, scheduler="processes", num_workers=WORKERS)
    assert out[-1] == n


def ampeg_independent(n):
    import ampeg

    lists = [[(trivial, i) for i in range(lane, n, WORKERS)] for lane in range(WORKERS)]
    out = ampeg.execute_task_lists(lists)
    assert len(out) == n


def throughput(n):
    print(f"\n1. {n} independent trivial tasks on {WORKERS} workers")
    warm_loky()
    rows = [
        ("alma_dag", alma_independent),
        ("raw loky", loky_independent),
        ("joblib", joblib_independent),
        ("dask processes", dask_independent),
        ("ampeg (execution)", ampeg_independent),
    ]
    _report(rows, n, "tasks/s")


def _report(rows, n, unit):
    times = {}
    for name, function in rows:
        try:
            seconds, _ = timed(function, n)
        except ImportError as exc:
            print(f"  {name:<20} skipped ({exc})")
            continue
        times[name] = seconds
    base = times.get("alma_dag")
    for name, seconds in times.items():
        ratio = f"{seconds / base:6.2f}x alma_dag's time" if base else ""
        print(f"  {name:<20} {n / seconds:12,.0f} {unit}  {seconds:8.3f} s  {ratio}")


# -- 2. chain -------------------------------------------------------------------


def alma_chain(n):
    graph = ad.TaskGraph()
    prev = graph.add(0, trivial, (0,))
    for i in range(1, n):
        prev = graph.add(i, trivial, (prev,))
    dispatcher = ad.Dispatcher(graph, workers=WORKERS)
    dispatcher.run()
    assert dispatcher.results[n - 1] == n


def dask_threaded_chain(n):
    import dask

    value = dask.delayed(trivial)(0)
    for _ in range(1, n):
        value = dask.delayed(trivial)(value)
    assert value.compute(scheduler="threads") == n


def loky_round_trip_chain(n):
    executor = warm_loky()
    value = 0
    for _ in range(n):
        value = executor.submit(trivial, value).result()
    assert value == n


def chain(n):
    print(f"\n2. a chain of {n} trivial tasks (each needs the previous)")
    warm_loky()
    for name, function in [
        ("alma_dag", alma_chain),
        ("dask threads", dask_threaded_chain),
        ("raw loky round trip", loky_round_trip_chain),
    ]:
        try:
            seconds, _ = timed(function, n)
        except ImportError as exc:
            print(f"  {name:<22} skipped ({exc})")
            continue
        print(f"  {name:<22} {seconds / n * 1e3:8.4f} ms per link  ({seconds:.3f} s)")


# -- 3. plan fidelity on a DAG of sleeps -------------------------------------------


def sleep_ms(ms, node, *_inputs):
    """Sleep ``ms``; ``node`` keeps every task distinct (ampeg merges
    tasks with equal arguments)."""
    time.sleep(ms / 1000)
    return ms


def sleep_dag(n, seed):
    """Random layered DAG: node i depends on up to 3 earlier nodes."""
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        deps = rng.sample(range(max(0, i - 20), i), min(i, rng.randint(0, 3)))
        nodes.append((i, rng.randint(5, 50), deps))
    return nodes


def lower_bound(nodes):
    finish = {}
    for i, ms, deps in nodes:
        finish[i] = ms + max((finish[d] for d in deps), default=0)
    total = sum(ms for _, ms, _ in nodes)
    return max(max(finish.values()), total / WORKERS) / 1000


def alma_sleep(nodes):
    graph = ad.TaskGraph()
    for i, ms, deps in nodes:
        graph.add(i, sleep_ms, (ms, i, *[ad.Dependency(d) for d in deps]), cost=ms)
    plan = ad.heft(graph, WORKERS)
    print(
        f"  (alma_dag's plan: makespan / bound {plan.makespan / plan.lower_bound:.3f})"
    )
    dispatcher = ad.Dispatcher(graph, workers=WORKERS, plan=plan)
    start = time.perf_counter()
    dispatcher.run()
    seconds = time.perf_counter() - start
    assert dispatcher.results == {i: ms for i, ms, _ in nodes}
    return seconds


def dask_graph(nodes):
    return {
        f"t{i}": (sleep_ms, ms, i, *[f"t{d}" for d in deps]) for i, ms, deps in nodes
    }


def dask_processes_sleep(nodes):
    import dask

    graph = dask_graph(nodes)
    start = time.perf_counter()
    dask.get  # noqa: B018 -- import check
    from dask.multiprocessing import get

    get(graph, list(graph), num_workers=WORKERS)
    return time.perf_counter() - start


def dask_distributed_sleep(nodes):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: None)
        graph = dask_graph(nodes)
        start = time.perf_counter()
        client.get(graph, list(graph))
        return time.perf_counter() - start


def ampeg_sleep(nodes):
    import ampeg

    graph = {
        i: (sleep_ms, (ms, i, *[ampeg.Dependency(d, None, 0) for d in deps]), ms)
        for i, ms, deps in nodes
    }
    lists, ids = ampeg.earliest_finish_time(graph, WORKERS)
    start = time.perf_counter()
    results = ampeg.execute_task_lists(lists, ids)
    seconds = time.perf_counter() - start
    failed = sum(isinstance(r, ampeg.Err) for r in results.values())
    if failed:
        print(f"  (ampeg: {failed} of {len(nodes)} tasks failed inside ampeg)")
    return seconds


def fidelity(n, seed):
    nodes = sleep_dag(n, seed)
    bound = lower_bound(nodes)
    print(
        f"\n3. {n}-task DAG of 5-50 ms sleeps on {WORKERS} workers "
        f"(lower bound {bound:.3f} s)"
    )
    warm_loky()
    for name, function in [
        ("alma_dag", alma_sleep),
        ("dask processes", dask_processes_sleep),
        ("dask distributed", dask_distributed_sleep),
        ("ampeg (execution)", ampeg_sleep),
    ]:
        try:
            seconds = function(nodes)
        except ImportError as exc:
            print(f"  {name:<20} skipped ({exc})")
            continue
        print(
            f"  {name:<20} makespan {seconds:.3f} s  "
            f"makespan/bound {seconds / bound:.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--chain", type=int, default=2_000)
    parser.add_argument("--dag", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["throughput", "chain", "fidelity"])
    options = parser.parse_args()
    if options.only in (None, "throughput"):
        throughput(options.tasks)
    if options.only in (None, "chain"):
        chain(options.chain)
    if options.only in (None, "fidelity"):
        fidelity(options.dag, options.seed)


if __name__ == "__main__":
    main()
