"""Boss throughput: alma_dag's Boss beside taylorism's, in one run.

N trivial instruction sets (each worker returns its one instruction),
``MaxThreadsScheduler(2)``, timed from building the Boss to the end of
``wait_till_finished()``, the final report included:

- taylorism (``pip install taylorism footprints``; skipped when missing),
  which forks one process per set and polls its pipes every 10 ms;
- alma_dag, cold: the first Boss of the process, so the time includes
  starting the pool's two worker processes;
- alma_dag, warm: a second Boss, on the pool the first one left running
  (as every Boss after the first of a session).

taylorism runs first, before alma_dag has started any thread, since it
forks. Each alma_dag report is checked to hold every set, in order.

Run by hand: ``python benchmarks/bench_workers.py [--sets N]``. Not run by
CI. The issue's goal: alma_dag at least 20 times taylorism's sets per
second.
"""

from __future__ import annotations

import argparse
import time

import alma_dag as ad

THREADS = 2


class Echo(ad.Worker):
    """Returns its instruction: the cheapest possible worker."""

    echo: int

    def _task(self):
        return self.echo


def alma_boss(n: int) -> float:
    start = time.perf_counter()
    boss = ad.Boss(scheduler=ad.MaxThreadsScheduler(THREADS))
    boss.set_instructions({}, {"echo": list(range(n))})
    boss.make_them_work()
    boss.wait_till_finished()
    report = boss.get_report()
    elapsed = time.perf_counter() - start
    assert report["status"] == "finished", report["status"]
    assert sorted(e["report"] for e in report["workers_report"]) == list(range(n))
    return elapsed


def taylorism_boss(n: int) -> float | None:
    try:
        import footprints
        import taylorism
    except ImportError:
        return None

    class TaylorismEcho(taylorism.Worker):
        _footprint = dict(attr=dict(echo=dict(type=int)))

        def _task(self):
            return self.echo

    start = time.perf_counter()
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=THREADS)
    boss = taylorism.Boss(scheduler=scheduler)
    boss.set_instructions({}, {"echo": list(range(n))})
    boss.make_them_work()
    boss.wait_till_finished()
    report = boss.get_report()
    elapsed = time.perf_counter() - start
    assert len(report["workers_report"]) == n, report["status"]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=2000)
    n = parser.parse_args().sets

    rows = [("taylorism", taylorism_boss(n))]
    rows.append(("alma_dag, cold pool", alma_boss(n)))
    rows.append(("alma_dag, warm pool", alma_boss(n)))

    base = rows[0][1]
    print(f"{n} trivial instruction sets, MaxThreadsScheduler({THREADS})")
    print(f"{'':22}{'seconds':>9}{'sets/s':>10}{'vs taylorism':>14}")
    for name, seconds in rows:
        if seconds is None:
            print(f"{name:22}{'skipped (pip install taylorism footprints)':>33}")
            continue
        ratio = f"{base / seconds:.1f}x" if base else ""
        print(f"{name:22}{seconds:9.2f}{n / seconds:10.0f}{ratio:>14}")


if __name__ == "__main__":
    main()
