"""The quickstart notebooks: stored executed, in sync with their sources, and they still run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOK_DIR / "build_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_source_has_a_stored_notebook():
    sources = sorted(p.stem for p in (NOTEBOOK_DIR / "src").glob("*.py"))
    assert sources == [p.stem for p in NOTEBOOKS] and len(sources) == 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_notebook_is_valid_executed_and_matches_its_source(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    expected = _builder().build_notebook(NOTEBOOK_DIR / "src" / f"{path.stem}.py")
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ], f"{path.name} is out of date: run python notebooks/build_notebooks.py {path.stem}"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure was stored"
    claims = [cell for cell in code if "assert" in cell.source]
    assert claims, "the notebook checks none of its results"  # they run again in the slow test


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_from_a_clean_state(path, tmp_path, monkeypatch):
    builder = _builder()
    for name, value in builder.isolated_environment(tmp_path).items():
        monkeypatch.setenv(name, value)  # the kernel inherits them: nothing cached is reused
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    builder.execute(nb, tmp_path)  # raises CellExecutionError naming the failing cell
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    assert list((tmp_path / "figures").glob("*.png")), "the notebook wrote no figure"
