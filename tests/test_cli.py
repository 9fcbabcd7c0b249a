"""The alma-dag command, driven in-process (and once as a real process for
Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import WAIT

from alma_dag.cli import main

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"


@pytest.fixture
def quickstart(tmp_path):
    folder = tmp_path / "quickstart"
    shutil.copytree(
        QUICKSTART, folder, ignore=shutil.ignore_patterns("*.alma", "done.txt")
    )
    return folder / "example.experiment"


def test_run_status_reset(quickstart, capsys):
    assert main(["run", str(quickstart), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "finished: 21 done, 0 failed, of 21" in out
    assert (quickstart.parent / "done.txt").exists()

    assert main(["status", str(quickstart)]) == 0
    out = capsys.readouterr().out
    assert "20 done, 0 failed, 0 to run, of 20 runs" in out
    assert "finished: done() has run" in out

    assert main(["run", str(quickstart), "--quiet"]) == 0
    assert "0 of 21 tasks to run" in capsys.readouterr().out

    assert main(["reset", str(quickstart)]) == 0
    assert "checkpoints forgotten" in capsys.readouterr().out
    assert not quickstart.with_name("example.alma").exists()
    assert main(["reset", str(quickstart)]) == 0
    assert "nothing to forget" in capsys.readouterr().out


def test_workers_override(quickstart, capsys):
    assert main(["run", str(quickstart), "--quiet", "--workers", "1"]) == 0
    assert "on 1 workers" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.experiment"
    bad.write_text('{"load": "x.py", "workers": 0}')
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ExperimentError: ")
    assert "bad.experiment" in err and "Traceback" not in err


def test_failures_exit_1_and_show_in_status(quickstart, capsys):
    module = quickstart.with_name("example.py")
    module.write_text(
        module.read_text() + "\n\n_run = run\n\n\ndef run(instance, save, state):\n"
        "    if 'gamma' in instance:\n        raise ValueError('bad file')\n"
        "    return _run(instance, save, state)\n"
    )
    assert main(["run", str(quickstart), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "failed data/gamma.txt#0: ValueError: bad file" in out
    assert main(["status", str(quickstart)]) == 0
    out = capsys.readouterr().out
    assert "15 done, 5 failed, 0 to run" in out
    assert not (quickstart.parent / "done.txt").exists()


def test_ctrl_c_stops_cleanly(quickstart):
    experiment = json.loads(quickstart.read_text())
    experiment["iterations"] = 40
    quickstart.write_text(json.dumps(experiment))
    process = subprocess.Popen(
        [sys.executable, "-m", "alma_dag.cli", "run", str(quickstart), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = quickstart.with_name("example.alma") / "store.sqlite"
    deadline = time.monotonic() + WAIT
    while not store.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let some runs finish
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 130, err
    assert "stopped" in out
    assert main(["status", str(quickstart)]) == 0


def test_status_of_a_fresh_experiment(quickstart, capsys):
    assert main(["status", str(quickstart)]) == 0
    assert "0 done, 0 failed, 20 to run" in capsys.readouterr().out
    assert not os.path.exists(quickstart.with_name("example.alma"))


def test_sweeper_status(tmp_path, capsys):
    import alma_dag as ad
    from alma_dag.sweeper import ParamSweeper

    directory = tmp_path / "sw"
    with ParamSweeper(
        directory, ad.sweep({"a": [1, 2], "b": ["x", "y", "z"]}), save_sweeps=True
    ) as sweeper:
        sweeper.done(sweeper.get_next())
        sweeper.skip(sweeper.get_next())
        held = sweeper.get_next()
        assert main(["sweeper", "status", str(directory)]) == 0
        sweeper.cancel(held)
    out = capsys.readouterr().out
    assert "6 combinations: 1 done, 1 inprogress, 0 skipped, 4 remaining" in out
    assert "  a:\n    1: 3 combinations: 1 done, 1 inprogress" in out


def test_sweeper_status_of_nothing(tmp_path, capsys):
    assert main(["sweeper", "status", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("StoreError: ")


def test_plan_prints_and_saves_gantt(quickstart, tmp_path, capsys):
    from matplotlib.image import imread

    png = tmp_path / "plan.png"
    assert main(["plan", str(quickstart), "--workers", "3", "--gantt", str(png)]) == 0
    out = capsys.readouterr().out
    assert "21 tasks on 3 lanes: makespan" in out and "lower bound" in out
    assert "  lane 2: " in out
    assert imread(png).shape[2] == 4


def test_unknown_backend_is_bad_input(quickstart, capsys):
    assert main(["run", str(quickstart), "--backend", "nope", "--quiet"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_report_draws_recorded_runs(quickstart, tmp_path, capsys):
    from matplotlib.image import imread

    png = tmp_path / "run.png"
    assert main(["report", str(quickstart), "--gantt", str(png)]) == 2
    assert "nothing recorded yet" in capsys.readouterr().err
    module = quickstart.with_name("example.py")
    module.write_text(
        module.read_text() + "\n\n_run = run\n\n\ndef run(instance, save, state):\n"
        "    if 'gamma' in instance:\n        raise ValueError('bad file')\n"
        "    return _run(instance, save, state)\n"
    )
    assert main(["run", str(quickstart), "--quiet", "--backend", "inline"]) == 1
    capsys.readouterr()
    assert main(["report", str(quickstart), "--gantt", str(png)]) == 0
    out = capsys.readouterr().out
    assert "20 recorded tasks, 5 failed" in out
    assert imread(png).shape[2] == 4
