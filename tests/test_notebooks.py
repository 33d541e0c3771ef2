"""Execute every jupytext notebook of notebooks/ on small data (`make notebooks`).

Each `notebooks/*.py` is converted with jupytext and run cell by cell in a fresh IPython
kernel started with this interpreter (no kernelspec needs to be installed: a user-level
`python3` spec pointing at another Python is ignored). The executed notebook is saved next
to its source as `.ipynb` (gitignored), also when a cell fails, so it can be opened.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.py"))
SMALL_WORLD = {"CASHBACK_NOTEBOOK_CUSTOMERS": "3000"}
CELL_TIMEOUT_SECONDS = 600
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.notebooks


class ThisPythonKernelManager(AsyncKernelManager):
    """An IPython kernel run by this interpreter, whatever kernelspecs are installed."""

    @property
    def kernel_spec(self) -> KernelSpec:
        if self._kernel_spec is None:
            self._kernel_spec = KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                display_name=f"Python 3 ({sys.prefix})",
                language="python",
            )
        return self._kernel_spec


def _failed_cell(nb: nbformat.NotebookNode) -> int:
    """Index of the first cell with an error output (-1 if none)."""
    for index, cell in enumerate(nb.cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return -1


def _text(cell: nbformat.NotebookNode) -> str:
    """The printed text of a code cell."""
    parts: list[Any] = [out.get("text", "") for out in cell.outputs if out.output_type == "stream"]
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_draws_its_plots(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given the notebook and a small world (the kernel inherits this process's environment)
    for name, value in SMALL_WORLD.items():
        monkeypatch.setenv(name, value)
    nb = jupytext.read(path)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        kernel_manager_class=ThisPythonKernelManager,
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    )
    # when every cell runs
    try:
        client.execute()
    except CellExecutionError as error:
        executed = path.with_suffix(".ipynb")
        message = ANSI_ESCAPE.sub("", str(error))
        pytest.fail(
            f"{path.name}: cell {_failed_cell(nb)} failed (see {executed.name}):\n{message}",
            pytrace=False,
        )
    finally:
        nbformat.write(nb, path.with_suffix(".ipynb"))
    # then each cell that shows a plot produced an image, or printed why it skipped it
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "plt.show()" not in cell.source:
            continue
        images = [out for out in cell.outputs if "image/png" in out.get("data", {})]
        assert images or "skipped" in _text(cell), f"{path.name}: cell {index} drew no image"
