"""The example notebook runs end to end in a fresh kernel, as a user would
run it; any cell that raises fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip(
    "nbformat", reason="running the notebook needs nbformat (pip install nbformat)"
)
nbclient = pytest.importorskip(
    "nbclient", reason="running the notebook needs nbclient (pip install nbclient)"
)
pytest.importorskip(
    "ipykernel", reason="running the notebook needs ipykernel (pip install ipykernel)"
)

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    errors = [
        output
        for cell in nb.cells
        for output in cell.get("outputs", ())
        if output.output_type == "error"
    ]
    assert not errors, errors
    # The notebook cleans up its temporary folder in the working directory.
    assert not list(tmp_path.glob("alma_dag_tour_*"))
