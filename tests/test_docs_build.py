"""The documentation site builds with one command, warnings as errors.

``mkdocs build --strict`` fails on any warning: a broken link or anchor, a
page missing from the nav, a docstring mkdocstrings cannot parse, an API
entry that does not resolve. The site is built into a temporary directory,
so nothing is written into the repository.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What ``pip install ".[docs]"`` provides, by importable module name.
REQUIRED = ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing() -> list[str]:
    missing = []
    for name in REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def test_site_builds_strict(tmp_path: Path):
    missing = _missing()
    if missing:
        pytest.skip(
            f"the docs tools are not installed ({', '.join(missing)} not "
            'importable); pip install ".[docs]" to build the site'
        )
    site = tmp_path / "site"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, (
        f"mkdocs build --strict failed (status {completed.returncode}):\n"
        f"{completed.stdout}{completed.stderr}"
    )
    assert (site / "index.html").is_file()
    api = site / "api" / "index.html"
    assert api.is_file()
    # mkdocstrings rendered the public API, not just the page's heading.
    text = api.read_text(encoding="utf-8")
    for name in ("alma_dag.Dispatcher", "alma_dag.TaskGraph", "alma_dag.Err"):
        assert f'id="{name}"' in text, f"{name} is missing from the API page"
