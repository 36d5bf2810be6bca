"""example.ipynb runs top to bottom against a live server on the embedded defaults.

Also a script: ``python -m tests.test_notebook [--save]`` executes the notebook against
``$FEATURESTORE_URL`` if set, else a throwaway server on a temporary DATA_DIR, and with
``--save`` writes it back with the outputs of that run (``scripts/run_notebook.sh``).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.fixtures_server import running_server

nbformat = pytest.importorskip("nbformat", reason="requirements-notebook.txt is not installed")
nbclient = pytest.importorskip("nbclient", reason="requirements-notebook.txt is not installed")
pytest.importorskip("ipykernel", reason="requirements-notebook.txt is not installed")
pytest.importorskip("matplotlib", reason="requirements-notebook.txt is not installed")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "example.ipynb"
CELL_TIMEOUT_SECONDS = 120


def execute_notebook(url: str, path: Path = NOTEBOOK) -> "nbformat.NotebookNode":
    """The notebook at `path`, executed top to bottom in a python3 kernel of this interpreter against `url`.

    The kernel runs with the project root as working directory and ``FEATURESTORE_URL=url``; any
    cell's error raises `nbclient.exceptions.CellExecutionError`.
    """
    notebook = nbformat.read(path, as_version=4)
    # The kernelspec's "python" is replaced by sys.executable, so the kernel is this venv's interpreter.
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_SECONDS, kernel_name="python3",
                                     allow_errors=False, record_timing=False,
                                     resources={"metadata": {"path": str(ROOT)}})
    env = {**os.environ, "FEATURESTORE_URL": url}
    env.pop("FEATURESTORE_API_KEY", None)
    client.execute(env=env)
    return notebook


def cell_tagged(notebook: "nbformat.NotebookNode", tag: str) -> "nbformat.NotebookNode":
    [cell] = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell


def text_of(cell: "nbformat.NotebookNode") -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    with running_server(tmp_path / "data") as url:
        notebook = execute_notebook(url)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells)
    assert not [output for cell in code_cells for output in cell.outputs if output["output_type"] == "error"]

    mismatch = text_of(cell_tagged(notebook, "schema-mismatch"))
    assert "HTTP 409 schema_mismatch at stage 'etl'" in mismatch
    missing = next(line for line in mismatch.splitlines() if line.startswith("missing:"))
    assert missing.count("type_") == 3  # four quote types in training, one on a served row

    report = text_of(cell_tagged(notebook, "skew-report"))
    flagged = next(line for line in report.splitlines() if line.startswith("flagged:"))
    assert "'is_mobile'" in flagged and "'minutes_to_bind'" not in flagged  # only iOS users were served
    plot = cell_tagged(notebook, "skew-plot")
    assert any("image/png" in output.get("data", {}) for output in plot.outputs)
    assert "served features equal the training rows for 50 customers" in text_of(cell_tagged(notebook, "shop-served"))


def test_committed_notebook_is_cleared_or_fully_run():
    """Committed outputs come from one real run (every code cell, in order) or there are none."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code_cells]
    if all(count is None for count in counts):
        assert not any(cell.outputs for cell in code_cells)
    else:
        assert counts == list(range(1, len(code_cells) + 1)), counts
        assert not [o for cell in code_cells for o in cell.outputs if o["output_type"] == "error"]


@contextlib.contextmanager
def _service() -> Iterator[str]:
    if os.environ.get("FEATURESTORE_URL"):
        yield os.environ["FEATURESTORE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="featurestore-notebook-server-") as folder:
        with running_server(Path(folder) / "data") as url:
            yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", action="store_true", help="write example.ipynb back with this run's outputs")
    args = parser.parse_args(argv)
    with _service() as url:
        notebook = execute_notebook(url)
    if args.save:
        nbformat.write(notebook, NOTEBOOK)
        print(f"executed and saved {NOTEBOOK.name}")
    else:
        print(f"executed {NOTEBOOK.name} without errors (not saved; --save writes its outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
