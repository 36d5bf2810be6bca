"""example.ipynb runs top to bottom against a live server on the embedded defaults (tests/notebook.py runs it;
scripts/run_notebook.sh runs that module without pytest)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_server import running_server

nbformat = pytest.importorskip("nbformat", reason="requirements-notebook.txt is not installed")
pytest.importorskip("nbclient", reason="requirements-notebook.txt is not installed")
pytest.importorskip("ipykernel", reason="requirements-notebook.txt is not installed")
pytest.importorskip("matplotlib", reason="requirements-notebook.txt is not installed")

from tests.notebook import NOTEBOOK, cell_tagged, execute_notebook, text_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    with running_server(tmp_path / "data") as url:
        notebook = execute_notebook(url)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells)
    assert not [output for cell in code_cells for output in cell.outputs if output["output_type"] == "error"]

    refused = text_of(cell_tagged(notebook, "train-serve-mismatch"))
    assert "HTTP 409 train_serve_mismatch" in refused and "registered anyway" in refused
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


def test_the_notebook_script_runs_without_pytest():
    """scripts/run_notebook.sh installs requirements-notebook.txt only (a venv made by serve.sh has no pytest):
    the module it runs must import, and parse its arguments, with pytest unimportable."""
    script = (ROOT / "scripts" / "run_notebook.sh").read_text()
    [module] = re.findall(r"^exec \.venv/bin/python -m ([\w.]+)", script, re.MULTILINE)
    blocked = ("import runpy, sys; sys.modules['pytest'] = None; sys.argv = ['run_notebook', '--help']; "
               f"runpy.run_module({module!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--save" in done.stdout
