"""Every example runs, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import WAIT

ROOT = Path(__file__).resolve().parents[1]


def test_taskgraph_pipeline(tmp_path):
    script = ROOT / "examples" / "taskgraph" / "pipeline.py"
    done = subprocess.run(
        [sys.executable, str(script), "--shards", "5", "--words", "300"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "lower bound" in lines[0]
    assert lines[1].startswith("15 tasks done, 0 failed")
    counts = [int(line.split(":")[1]) for line in lines[2:]]
    assert len(counts) == 3 and counts == sorted(counts, reverse=True)
