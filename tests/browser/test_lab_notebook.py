"""A real JupyterLab on 127.0.0.1 and Debian's chromium (through Playwright): notebook
04 runs top to bottom in the browser, its plotly figures render, and the divergence
explorer answers a click on a layer. Screenshots are kept in test-artifacts/browser/."""

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
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
NOTEBOOK = "04_layer_divergence.ipynb"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    browser_path = chromium()
    if browser_path is None:
        pytest.skip(
            "Debian's chromium is not installed (make test installs it as root: apt-get install chromium)"
        )
    root = tmp_path_factory.mktemp("lab")
    copy_notebook(NOTEBOOK, root / "notebooks")
    with Lab(root / "notebooks", root / "settings") as lab, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_notebook(page, lab, NOTEBOOK)
        run_all_cells(page)
        wait_until_idle(page, timeout_ms=600_000)
        yield page
        browser.close()


def test_the_answers_are_the_first_thing_seen(page):
    first_outputs = page.locator(".jp-CodeCell").first.locator(".jp-OutputArea")
    assert "answers differ from float" in first_outputs.inner_text()  # the verdict, before any plot
    page.locator(".jp-Cell").first.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "04_layer_divergence.png"), full_page=False)


def test_notebook_runs_in_the_browser_and_plots_render(page):
    assert notebook_errors(page) == []
    plots = page.locator(".js-plotly-plot")
    assert plots.count() >= 5  # per-layer, heatmap, overlay, explorer (plot, detail, graph), drill-down
    per_layer = page.locator(".js-plotly-plot", has_text="Per-layer SQNR").first
    assert per_layer.locator(".scatterlayer .trace").count() >= 2  # band + mean line drawn
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    per_layer.screenshot(path=str(ARTIFACTS / "04_per_layer.png"))


def test_explorer_reacts_to_a_click_on_a_layer(page):
    explorer = page.locator(".js-plotly-plot", has_text="per layer: simulator vs float").first
    explorer.scroll_into_view_if_needed()
    point = explorer.locator(".scatterlayer .trace .points path").nth(3)
    box = point.bounding_box()
    assert box is not None, "the explorer's points were not drawn"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.up()
    status = page.locator(".widget-html", has_text="simulator vs float")
    status.first.wait_for(timeout=180_000)  # first click builds the model once
    layer = status.first.locator("b").inner_text()
    detail = page.locator(".js-plotly-plot", has_text=f"Tensor comparison: {layer}")
    detail.first.wait_for(timeout=60_000)
    assert "SQNR per channel" in detail.first.inner_text()
    assert detail.first.locator(".barlayer .trace").count() >= 3  # two histograms + per-channel bars
    graph = page.locator(".js-plotly-plot", has_text="the clicked layer is ringed").first
    ring = graph.evaluate("el => { const t = el.data[el.data.length - 1]; return [t.name, t.x.length]; }")
    assert ring == ["selected", 1]  # the clicked layer's node is ringed
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(".jp-OutputArea-output", has=explorer).first.screenshot(
        path=str(ARTIFACTS / "04_explorer_click.png")
    )
