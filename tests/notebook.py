"""Execute example.ipynb against a live server: ``python -m tests.notebook [--save]`` (scripts/run_notebook.sh).

Against ``$FEATURESTORE_URL`` if set, else a throwaway server on a temporary DATA_DIR; with
``--save`` the notebook is written back with the outputs of that run. Needs only
requirements-notebook.txt (no pytest): tests/test_notebook.py runs the same code under pytest.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import nbclient
import nbformat

from tests.server_process import running_server

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "example.ipynb"
CELL_TIMEOUT_SECONDS = 120


def execute_notebook(url: str, path: Path = NOTEBOOK) -> nbformat.NotebookNode:
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


def cell_tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    [cell] = [c for c in notebook.cells if tag in c.get("metadata", {}).get("tags", [])]
    return cell


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "".join(parts)


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
