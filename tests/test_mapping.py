"""map_sweep: a function over a ParamSweeper's combinations, on the engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import WAIT

import alma_dag as ad
from alma_dag.mapping import map_sweep
from alma_dag.sweeper import ParamSweeper

PARAMETERS = {"a": [1, 2, 3], "b": [10, 20]}


@pytest.mark.parametrize("backend", ["inline", "loky"])
def test_every_combination_runs_once_and_is_marked(tmp_path, backend):
    offset = 5  # a closure: travels with cloudpickle
    sweeper = ParamSweeper(tmp_path / "sw", ad.sweep(PARAMETERS), save_sweeps=True)
    results = map_sweep(
        lambda c: c["a"] * c["b"] + offset, sweeper, backend=backend, progress=False
    )
    assert results == {c: c["a"] * c["b"] + offset for c in ad.sweep(PARAMETERS)}
    assert len(sweeper.get_done()) == 6 and not sweeper.get_remaining()
    again = ParamSweeper(tmp_path / "sw")
    assert map_sweep(lambda c: 0, again, progress=False) == {}


def test_failures_are_skipped_then_retried_by_the_next_launch(tmp_path):
    sweeper = ParamSweeper(tmp_path / "sw", ad.sweep(PARAMETERS), save_sweeps=True)
    results = map_sweep(
        lambda c: 1 / (c["a"] - 2), sweeper, workers=1, backend="inline", progress=False
    )
    failed = [c for c, r in results.items() if isinstance(r, ad.Err)]
    assert len(failed) == 2 and all(c["a"] == 2 for c in failed)
    assert set(sweeper.get_skipped()) == set(failed)
    relaunched = ParamSweeper(tmp_path / "sw")
    assert set(relaunched.get_remaining()) == set(failed)  # skipped is not kept


def test_small_chunks_and_a_second_process_share_the_work(tmp_path):
    sweeper = ParamSweeper(
        tmp_path / "sw", ad.sweep({"i": list(range(40))}), save_sweeps=True
    )
    results = map_sweep(lambda c: c["i"], sweeper, chunk=7, progress=False)
    assert sorted(results.values()) == list(range(40))


def test_bad_arguments(tmp_path):
    sweeper = ParamSweeper(tmp_path / "sw", ad.sweep(PARAMETERS))
    with pytest.raises(ad.DefinitionError, match="workers"):
        map_sweep(abs, sweeper, workers=0)
    with pytest.raises(ad.DefinitionError, match="chunk"):
        map_sweep(abs, sweeper, chunk=-1)


def test_ctrl_c_gives_claimed_combinations_back(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        import alma_dag as ad
        from alma_dag.mapping import map_sweep
        from alma_dag.sweeper import ParamSweeper

        sweeper = ParamSweeper({str(tmp_path / "sw")!r},
                               ad.sweep({{"i": list(range(200))}}), save_sweeps=True)
        def slow(c):
            time.sleep(0.05)
            return c["i"]
        try:
            map_sweep(slow, sweeper, workers=2, progress=False)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
    )
    database = tmp_path / "sw" / "sweeper.sqlite"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if database.exists() and len(ParamSweeper(tmp_path / "sw").get_done()) >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=WAIT)
    assert "interrupted" in out
    after = ParamSweeper(tmp_path / "sw")
    assert not after.get_inprogress()
    assert 5 <= len(after.get_done()) < 200
    assert len(after.get_done()) + len(after.get_remaining()) == 200
    assert os.path.exists(database)
