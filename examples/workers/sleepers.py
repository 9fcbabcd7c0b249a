"""taylorism's sleepers, on alma_dag: a Boss, its Workers and their reports.

Sleepers sleep a given time and say a sentence when they wake up. The Boss
runs them on a reusable pool of worker processes, at most ``max_threads``
at once (or within a memory budget), and is halted, resumed and asked for
reports on the way. The Sleeper class is defined right here, in
``__main__``: it travels to the worker processes with cloudpickle.

Run it with ``python examples/workers/sleepers.py [--scale S]
[--scheduler threads|memory|laxist]``; ``--scale 0.01`` turns taylorism's
seconds into hundredths.
"""

from __future__ import annotations

import argparse
import os
import time

import alma_dag as ad


class Sleeper(ad.Worker):
    """Sleeps ``sleeping_time`` seconds, then says ``wakeup_sentence``."""

    sleeping_time: float
    wakeup_sentence: str = "Hello !"

    def _task(self):
        time.sleep(self.sleeping_time)
        return (
            f"{self.wakeup_sentence} Woke up after {self.sleeping_time:g} s "
            f"sleep in process {os.getpid()}"
        )


def make_scheduler(kind: str) -> ad.BaseScheduler:
    if kind == "threads":
        return ad.MaxThreadsScheduler(max_threads=3)
    if kind == "memory":
        # Each sleeper declares 400 MiB of a 1,000 MiB budget: two at once.
        return ad.MaxMemoryScheduler(1.0, total_system_memory=1000)
    return ad.LaxistScheduler()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument(
        "--scheduler", choices=["threads", "memory", "laxist"], default="threads"
    )
    args = parser.parse_args()
    seconds = [4, 9, 2, 1]

    boss = ad.run_as_server(
        common_instructions={"wakeup_sentence": "Hello Dolly !", "memory": 400},
        individual_instructions={"sleeping_time": [s * args.scale for s in seconds]},
        scheduler=make_scheduler(args.scheduler),
        verbose=True,
    )
    time.sleep(5 * args.scale)
    interim = boss.get_report()
    print(f"interim report: {len(interim['workers_report'])} reported,", end=" ")
    print(f"{len(interim['pending'])} pending")

    # Halted, the Boss starts nothing new; the sleepers already running
    # finish and report.
    boss.halt()
    boss.set_instructions({}, {"sleeping_time": [3 * args.scale], "name": ["late"]})
    boss.make_them_work()

    boss.wait_till_finished()
    report = boss.get_report()
    print(f"status: {report['status']}")
    for entry in report["workers_report"]:
        print(f"{entry['name']}: {entry['report']}")


if __name__ == "__main__":
    main()
