"""Model Explorer in a real JupyterLab (127.0.0.1) and Debian's chromium: a notebook cell
shows a tiny model's divergence overlays through jupyter-server-proxy with one node
selected, the page asks nothing from the Internet, and the SQNR colours are painted on
the graph. The screenshot
is kept in test-artifacts/browser/."""

import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from workbench.compare.result import COLUMNS, Divergence
from workbench.model import OnnxModel
from workbench.synthetic import residual_add
from workbench.viz import model_explorer as me

from ..viz.test_model_explorer import FUSED, SQNR, _rows
from .lab import CHROMIUM_FLAGS, Lab, chromium, notebook_errors, open_notebook, run_all_cells, wait_until_idle

pytestmark = [pytest.mark.browser]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CELL = """from workbench.viz.model_explorer import explorer_view

explorer_view("model.onnx", ["node_data_sqnr.json", "node_data_verdict.json", "node_data_support.json"],
              select="add")"""


def _notebook(root: Path) -> None:
    import nbformat

    onnx.save(residual_add(), str(root / "model.onnx"))
    model = OnnxModel.load(root / "model.onnx")
    meta = {"config": {"target_platform": "rk3588"}, "parents": {"add_out": ["relu1_out"], "y": ["add_out"]}}
    me.write_node_data(Divergence(pd.DataFrame(_rows(SQNR, FUSED), columns=list(COLUMNS)), meta), root, model)
    kernel = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    notebook = nbformat.v4.new_notebook(metadata=kernel)
    notebook.cells = [nbformat.v4.new_code_cell(CELL)]
    nbformat.write(notebook, root / "explorer.ipynb")


def _pixels_like(png: bytes, colour: str, tolerance: int = 12) -> int:
    import cv2

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(image - rgb).max(axis=2) <= tolerance).sum())


def test_model_explorer_frame_shows_the_sqnr_overlay_through_the_proxy(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    browser_path = chromium()
    if browser_path is None:
        pytest.skip(
            "Debian's chromium is not installed (make test installs it as root: apt-get install chromium)"
        )
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root)
    with Lab(root, tmp_path / "settings") as lab, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        open_notebook(page, lab, "explorer.ipynb")
        run_all_cells(page)
        wait_until_idle(page, timeout_ms=120_000)
        assert notebook_errors(page) == []
        frame = page.locator(".jp-OutputArea-output iframe").first
        frame.wait_for(timeout=30_000)
        assert frame.get_attribute("src").startswith("/proxy/")  # through Jupyter, not a second port
        app = frame.content_frame
        providers = app.locator("text=SQNR (dB)").first
        providers.wait_for(timeout=60_000)
        info = app.locator("text=NODE INFO").first
        info.wait_for(timeout=30_000)
        panel = " ".join(app.locator("body").inner_text().split())
        node = panel[panel.index("NODE INFO") :]
        # the selected node (the URL's select="add") with its value in each overlay
        assert node.startswith("NODE INFO op name Add id add ")
        assert "NODE DATA PROVIDERS support (rk3588) npu first divergence origin SQNR (dB) 12 " in node
        # the renderer paints the layout after the data arrives; give it a moment
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            png = frame.screenshot()
            if _pixels_like(png, me.sqnr_colour(12.0)) > 200:
                break
            time.sleep(1)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "model_explorer_sqnr.png").write_bytes(png)
        # Add (12 dB) and the first Relu (30 dB) are filled with their SQNR colours
        assert _pixels_like(png, me.sqnr_colour(12.0)) > 200
        assert _pixels_like(png, me.sqnr_colour(30.0)) > 200
        browser.close()
    outside = [u for u in requested if not u.startswith(("http://127.0.0.1:", "data:", "blob:"))]
    assert outside == []  # no fonts, analytics or version checks from the Internet
