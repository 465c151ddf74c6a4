"""Every notebook in notebooks/ runs top to bottom (fast mode) and is stored without outputs."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# The only place a notebook could ever be excluded, by file name. Keep it empty.
SKIP: list[str] = []


def test_there_are_notebooks_and_skip_names_real_ones():
    assert NOTEBOOKS
    assert set(SKIP) <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in SKIP], ids=lambda p: p.name)
def test_notebook_runs_without_error(path, monkeypatch):
    monkeypatch.setenv("DYNOPT_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert any(cell.outputs for cell in nb.cells if cell.cell_type == "code"), "the notebook should produce output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
