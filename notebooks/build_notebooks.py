"""Write the quickstart notebooks from the cell sources in ``notebooks/src/`` and execute them.

Each ``src/<name>.py`` is a notebook written as plain Python: a line ``# %% [markdown]`` starts a
markdown cell (its lines are ``# ``-prefixed text), a line ``# %%`` starts a code cell. This script
turns every source into ``<name>.ipynb`` (nbformat v4), runs it top to bottom with nbclient in a
fresh temporary working folder, and stores it with its outputs.

Run from anywhere::

    python notebooks/build_notebooks.py            # all notebooks
    python notebooks/build_notebooks.py 01_fmri_encoder
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
CELL_TIMEOUT_S = 300


def parse_cells(text: str) -> list[nbformat.NotebookNode]:
    """Split a ``# %%``-delimited source into notebook cells (empty cells are dropped)."""
    cells: list[nbformat.NotebookNode] = []
    kind, lines = None, []

    def flush() -> None:
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(
                line[2:] if line.startswith("# ") else line.lstrip("#")
                for line in body.splitlines()
            )
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif kind == "code" and body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """The (unexecuted) notebook of one source file."""
    nb = nbformat.v4.new_notebook()
    nb.cells = parse_cells(source.read_text(encoding="utf-8"))
    for number, cell in enumerate(nb.cells):
        cell.id = f"cell-{number:02d}"  # stable ids keep rebuilt notebooks diff-friendly
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def isolated_environment(workdir: str | os.PathLike) -> dict[str, str]:
    """Environment variables that keep a run's data, caches and progress bars inside ``workdir``."""
    return {
        "NEUROTORCH_DATA": str(Path(workdir) / "data"),
        "NEUROTORCH_CACHE": str(Path(workdir) / "cache"),
        "NEUROTORCH_PROGRESS": "0",
    }


def execute(nb: nbformat.NotebookNode, workdir: str | os.PathLike) -> nbformat.NotebookNode:
    """Run ``nb`` in ``workdir`` with a fresh kernel; raises on the first failing cell."""
    NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()  # fmt: skip
    return nb


def relative_paths(nb: nbformat.NotebookNode, workdir: str | os.PathLike) -> None:
    """Show paths inside the temporary working folder relative to it (``./data/...``) in outputs."""
    prefixes = {str(workdir), os.path.realpath(workdir)}

    def relative(text: str) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, ".")
        return text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if isinstance(output.get("text"), str):
                output["text"] = relative(output["text"])
            plain = output.get("data", {}).get("text/plain")
            if isinstance(plain, str):
                output["data"]["text/plain"] = relative(plain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: every source)")
    args = parser.parse_args(argv)
    sources = [SOURCES / f"{name}.py" for name in args.names] or sorted(SOURCES.glob("*.py"))
    for source in sources:
        nb = build_notebook(source)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="neurotorch-quickstart-") as workdir:
            os.environ.update(isolated_environment(workdir))
            execute(nb, workdir)
            relative_paths(nb, workdir)
        nbformat.validate(nb)
        target = HERE / f"{source.stem}.ipynb"
        nbformat.write(nb, target)
        print(
            f"{target.name}: {len(nb.cells)} cells, executed in {time.perf_counter() - start:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
