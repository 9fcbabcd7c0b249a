"""A fast subset of ``benchmarks/faults.py``: each fault on each front end
it applies to, with two or three trials and a fixed seed. Every count but
the trials must be zero; a failure prints the trial's seed and what
happened (``python benchmarks/faults.py --seed SEED`` replays the lot)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import faults  # noqa: E402

SEED = 20240701

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGKILL and segfaults are POSIX"
)


def assert_clean(cell: faults.Cell, trials: int) -> None:
    assert cell.trials == trials
    assert cell.is_clean, "\n".join(cell.notes)


@posix_only
@pytest.mark.parametrize("front", ["taskgraph", "experiment", "sweeper"])
def test_sigkill_loses_nothing_and_reruns_nothing(front):
    run = getattr(faults, f"sigkill_{front}")
    assert_clean(run(2, SEED), 2)


@posix_only
@pytest.mark.parametrize("fault", faults.WORKER_FAULTS)
@pytest.mark.parametrize("front", ["taskgraph", "experiment", "boss"])
def test_worker_fault_fails_only_its_task(front, fault):
    if fault == "timeout" and front != "taskgraph":
        pytest.skip("experiments and Boss sets have no timeout")
    run = getattr(faults, f"worker_faults_{front}")
    assert_clean(run(fault, 2, SEED), 2)


@pytest.mark.parametrize("front", ["taskgraph", "experiment", "sweeper"])
def test_damaged_store_is_a_clear_error(front):
    assert_clean(faults.store_damage(front, 3, SEED), 3)


@posix_only
@pytest.mark.parametrize("front", ["taskgraph", "experiment"])
def test_second_process_is_refused(front):
    assert_clean(faults.locked(front, 2, SEED), 2)


no_rlimit = pytest.mark.skipif(
    faults.resource is None, reason="RLIMIT_FSIZE needs the resource module (POSIX)"
)


@no_rlimit
@pytest.mark.parametrize("front", ["taskgraph", "experiment", "sweeper"])
def test_full_disk_is_a_clear_error_and_loses_nothing(front):
    # One trial, tasks run inline: a few seconds. The fault must strike.
    cell = faults.disk_full(front, 1, SEED, backend="inline", big=False)
    assert_clean(cell, 1)
    assert cell.struck == 1, "the file-size limit was never reached"


@no_rlimit
def test_full_disk_with_results_larger_than_the_page_cache():
    # The write fails inside the INSERT, and SQLite rolls back by itself:
    # the StoreError must still say the disk failed.
    cell = faults.disk_full("taskgraph", 1, SEED, backend="inline", big=True)
    assert_clean(cell, 1)
