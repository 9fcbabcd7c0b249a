"""Load, small and fast: the version of ``benchmarks/load.py`` that CI runs.

5,000 tiny tasks through a dispatcher with a store, nothing lost, no result
kept in memory, and memory flat after warm-up (with looser bounds than the
benchmark's: fewer samples, so allocator noise weighs more); 4 sweeper
processes draining 400 combinations from one directory, each handed out
exactly once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "load.py"


@pytest.fixture(scope="module")
def load():
    """``benchmarks/load.py`` as a module (``benchmarks`` is no package)."""
    spec = importlib.util.spec_from_file_location("alma_dag_load", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slope_is_least_squares(load):
    assert load.slope([(0, 5), (1, 7), (2, 9)]) == pytest.approx(2.0)
    assert load.slope([(0, 1), (1, 3), (2, 2), (3, 4)]) == pytest.approx(0.8)


def test_many_tiny_tasks_nothing_lost_memory_flat(load, tmp_path):
    r = load.many_tasks(5000, every=100, directory=tmp_path / "run.alma")
    assert r["tasks"] == 5000
    assert len(r["samples"]) == 50
    # With a store, the dispatcher lets go of each committed result no task
    # needs any more (read back from the store by ``results``).
    assert r["kept_at_end"] == 0, f"{r['kept_at_end']} results kept in memory"
    # RSS over the second half: 0 to ~70 bytes/task at this size, where
    # allocator slack hides most growth (over 50,000 tasks load.py measures
    # 0-3 now, ~230-370 when every result, timing and attempt count was
    # kept): the bounds are loose and catch a gross leak only; kept_at_end
    # above is the precise check.
    unexplained = r["unexplained_slope"]
    assert unexplained < 600, f"RSS grows {unexplained:.0f} bytes/task unexplained"
    assert r["slope"] < 300, f"RSS grows {r['slope']:.0f} bytes/task"


def test_many_sweepers_each_combination_once(load, tmp_path):
    s = load.many_sweepers(4, 400, tmp_path, timeout=60)
    assert sum(s["per_process"]) == 400
    assert s["pairs_per_second"] > 0
