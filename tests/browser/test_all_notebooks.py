"""Every notebook, as a user runs it: JupyterLab on 127.0.0.1 in Debian's chromium, Run All,
then no error output, no "Error displaying widget", and every plotly figure drawn. One
screenshot per notebook is kept in test-artifacts/browser/. (Notebook 04 has its own test,
with a click on the explorer: tests/browser/test_lab_notebook.py.)"""

from pathlib import Path

import pytest

from .lab import (
    CHROMIUM_FLAGS,
    Lab,
    chromium,
    copy_notebook,
    notebook_errors,
    open_notebook,
    run_all_cells,
    wait_until_idle,
)

pytestmark = [pytest.mark.toolkit, pytest.mark.zoo, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb") if not p.name.startswith("04_"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    browser_path = chromium()
    if browser_path is None:
        pytest.skip(
            "Debian's chromium is not installed (make test installs it as root: apt-get install chromium)"
        )
    root = tmp_path_factory.mktemp("lab-all")
    (root / "notebooks").mkdir()
    with Lab(root / "notebooks", root / "settings") as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        yield server, browser, root / "notebooks"
        browser.close()


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_and_reads_in_the_browser(lab, notebook):
    server, browser, folder = lab
    copy_notebook(notebook, folder)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        open_notebook(page, server, notebook)
        run_all_cells(page)
        wait_until_idle(page, timeout_ms=900_000)
        assert notebook_errors(page) == []
        assert page.locator("text=Error displaying widget").count() == 0
        figures = page.locator(".js-plotly-plot")
        drawn = figures.evaluate_all(
            "els => els.map(el => !!el.querySelector('.main-svg') && (el.data || []).length > 0)"
        )
        assert all(drawn), f"{drawn.count(False)} of {len(drawn)} plotly figures were not drawn"
        if len(drawn):  # the screenshot shows the first figure, as a reader scrolls to it
            figures.first.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{Path(notebook).stem}.png"), full_page=False)
    finally:  # the kernel (and any toolkit worker it holds) goes with the page
        page.evaluate("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.shutdown()")
        page.close()
