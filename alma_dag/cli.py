"""The ``alma-dag`` command: a thin layer over ``alma_dag.experiment``.

::

    alma-dag run EXPERIMENT [--workers N] [--backend NAME]
    alma-dag status EXPERIMENT
    alma-dag plan EXPERIMENT [--workers N] [--gantt PLAN.png]
    alma-dag report EXPERIMENT --gantt RUN.png
    alma-dag reset EXPERIMENT
    alma-dag sweeper status DIRECTORY

``plan`` plans what is left with HEFT and prints its makespan, lower
bound and lanes; ``report`` draws the recorded runs from the store (lanes
are not recorded: they are re-derived by interval partitioning). Both
write a PNG with ``--gantt`` (matplotlib needed).

``--backend`` takes ``loky`` (the default), ``inline``, ``dask`` or a dask
scheduler's address. ``run`` shows a progress bar; Ctrl-C stops the run
cleanly (running calls are aborted, everything finished is kept) and a
later ``run`` continues.
An ``AlmaDagError`` is printed as ``TypeName: message`` without a
traceback and exits with status 2; any other exception is a bug and shows
its traceback.

Exit status: 0 when the experiment finished, 1 when some run failed, 2 on
bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tqdm import tqdm

from . import __version__
from .dispatch import RunState
from .errors import AlmaDagError
from .experiment import (
    ExperimentError,
    ExperimentRun,
    load,
    read_experiment,
    reset,
    status,
)
from .plan import heft
from .store import Store
from .sweep import sweep_stats
from .sweeper import ParamSweeper

#: A sweeper's states, in the order they are shown.
STATES = ("done", "inprogress", "skipped", "remaining")

__all__ = ["main"]

#: Seconds between progress bar updates.
REFRESH = 0.2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alma-dag",
        description="Plan, run, pause and resume experiments described by "
        ".experiment files.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run what is left of an experiment")
    run.add_argument("experiment", help="the .experiment file")
    run.add_argument("--workers", type=int, help="override the file's workers")
    run.add_argument(
        "--backend",
        default="loky",
        metavar="NAME",
        help="where runs execute: loky (default, a process pool), inline, dask "
        "(a local dask cluster) or a dask scheduler's address (tcp://host:8786)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    show = commands.add_parser("status", help="show an experiment's progress")
    show.add_argument("experiment", help="the .experiment file")
    plan = commands.add_parser("plan", help="plan what is left of an experiment")
    plan.add_argument("experiment", help="the .experiment file")
    plan.add_argument("--workers", type=int, help="override the file's workers")
    plan.add_argument("--gantt", metavar="PNG", help="save the plan's Gantt chart")
    report = commands.add_parser("report", help="draw the recorded runs")
    report.add_argument("experiment", help="the .experiment file")
    report.add_argument(
        "--gantt", metavar="PNG", required=True, help="save the runs' Gantt chart"
    )
    forget = commands.add_parser("reset", help="forget an experiment's checkpoints")
    forget.add_argument("experiment", help="the .experiment file")
    sweeper = commands.add_parser("sweeper", help="look into a ParamSweeper")
    sweeper_commands = sweeper.add_subparsers(dest="sweeper_command", required=True)
    sweeper_status = sweeper_commands.add_parser(
        "status", help="totals, and counts per factor and level"
    )
    sweeper_status.add_argument("directory", help="the sweeper's persistence_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    options = _parser().parse_args(argv)
    try:
        if options.command == "run":
            return _run(options)
        if options.command == "status":
            return _status(options.experiment)
        if options.command == "plan":
            return _plan(options)
        if options.command == "report":
            return _report(options.experiment, options.gantt)
        if options.command == "sweeper":
            return _sweeper_status(options.directory)
        return _reset(options.experiment)
    except AlmaDagError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _run(options: argparse.Namespace) -> int:
    run = load(options.experiment, workers=options.workers, backend=options.backend)
    progress = run.progress()
    name = run.experiment.name
    print(
        f"{name}: {progress.total - progress.done} of {progress.total} tasks to run "
        f"on {run.workers} workers"
    )
    bar = tqdm(
        total=progress.total,
        initial=progress.done,
        unit="task",
        disable=options.quiet,
        desc=name,
        dynamic_ncols=True,
    )
    try:
        run.start()
        try:
            while not run.wait(REFRESH):
                _update(bar, run)
        except KeyboardInterrupt:
            bar.write("interrupted: stopping (finished runs are kept)...")
            run.stop()
            _update(bar, run)
            bar.close()
            print(f"{name}: stopped; `alma-dag run` continues where it stopped")
            return 130
        _update(bar, run)
    finally:
        bar.close()
    return _summary(run)


def _update(bar: tqdm, run: ExperimentRun) -> None:
    progress = run.progress()
    bar.n = progress.done + progress.failed
    bar.set_postfix(failed=progress.failed, running=progress.running, refresh=False)
    bar.refresh()


def _summary(run: ExperimentRun) -> int:
    progress = run.progress()
    name = run.experiment.name
    print(
        f"{name}: {run.state.value}: {progress.done} done, {progress.failed} failed, "
        f"of {progress.total}, in {progress.elapsed:.1f} s"
    )
    if run.state is RunState.FINISHED:
        return 0
    failures = run.store.failures()
    for node, error in sorted(failures.items())[:20]:
        print(f"  failed {node}: {error}")
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more (alma-dag status shows them)")
    return 1


def _status(path: str) -> int:
    info = status(path)
    experiment = info.experiment
    failed = len(info.failures)
    left = info.total - info.done - failed
    print(f"{experiment.name} ({experiment.path})")
    print(
        f"  {info.done} done, {failed} failed, {left} to run, of {info.total} runs "
        f"({len(experiment.instances)} instances x {experiment.iterations} iterations"
        + (
            f" x {len(experiment.combinations)} combinations)"
            if experiment.combinations is not None
            else ")"
        )
    )
    if info.finished:
        print("  finished: done() has run")
    if info.holder:
        print(
            f"  running now: process {info.holder.get('pid')} on "
            f"{info.holder.get('host')}"
        )
    for node, error in sorted(info.failures.items()):
        print(f"  failed {node}: {error}")
    return 0


def _plan(options: argparse.Namespace) -> int:
    run = load(options.experiment, workers=options.workers, backend="inline")
    try:
        plan = heft(run.graph, run.workers)
    finally:
        run.store.close()
    print(
        f"{run.experiment.name}: {len(plan)} tasks on {plan.n_processes} lanes: "
        f"makespan {plan.makespan:g}, lower bound {plan.lower_bound:g}"
    )
    for lane, nodes in enumerate(plan.lanes):
        shown = ", ".join(map(str, nodes[:5])) + (", ..." if len(nodes) > 5 else "")
        print(f"  lane {lane}: {len(nodes)} tasks: {shown}")
    if options.gantt:
        plan.gantt(title=f"{run.experiment.name}: plan").savefig(options.gantt)
        print(f"  Gantt chart saved to {options.gantt}")
    return 0


def _report(path: str, gantt: str) -> int:
    # Here, not at the top: viz needs numpy and matplotlib, which only the
    # drawing commands require.
    from .viz import _timings_gantt

    experiment = read_experiment(path)
    if not (experiment.run_dir / "store.sqlite").exists():
        raise ExperimentError(
            "nothing recorded yet; `alma-dag run` it first",
            path=str(experiment.path),
        )
    with Store(experiment.run_dir, readonly=True) as store:
        timings = store.timings()
        # Nodes never started (their dependency failed) have no bar to mark.
        failed = [node for node in store.failures() if node in timings]
    figure = _timings_gantt(
        timings, failed, title=f"{experiment.name}: {len(timings)} recorded tasks"
    )
    figure.savefig(gantt)
    print(
        f"{experiment.name}: {len(timings)} recorded tasks, {len(failed)} failed; "
        f"Gantt chart saved to {gantt}"
    )
    return 0


def _sweeper_status(directory: str) -> int:
    with ParamSweeper(directory) as sweeper:
        stats = sweeper.stats()
    counts = ", ".join(f"{len(stats[state])} {state}" for state in STATES)
    print(f"{directory}: {len(stats['total'])} combinations: {counts}")
    table = sweep_stats(stats)
    for factor, levels in table["total"].items():
        print(f"  {factor}:")
        for level, count in levels.items():
            cells = ", ".join(
                f"{table[state][factor][level]} {state}" for state in STATES
            )
            print(f"    {level!r}: {count} combinations: {cells}")
    return 0


def _reset(path: str) -> int:
    if reset(path):
        print(f"{path}: checkpoints forgotten")
    else:
        print(f"{path}: nothing to forget")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
