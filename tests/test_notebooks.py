"""Every notebook runs top to bottom in a fresh kernel (committed without outputs)."""

import warnings
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _browser_runs_them() -> bool:
    """The browser tests (tests/browser/) run every notebook in JupyterLab when chromium and
    Playwright are here; running them twice would only double the suite's time."""
    from importlib.util import find_spec

    from tests.browser.lab import chromium

    return chromium() is not None and find_spec("playwright") is not None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a cell without an id, which nbformat will refuse
        notebook = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    if _browser_runs_them():
        pytest.skip("run in JupyterLab by tests/browser/test_all_notebooks.py and test_lab_notebook.py")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
