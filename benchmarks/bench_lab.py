"""Time from starting JupyterLab (as `make lab` does) to the first verdict on the answers
of notebook 00 on screen, then to its first per-layer divergence plot, in a real browser
(Debian's chromium through Playwright), setup done. Two runs side by side: a cold run
cache (the notebook quantizes and compares) and a warm one (the run is cached by content,
as after `make demo`).

    .venv/bin/python benchmarks/bench_lab.py

Target: the first verdict under 60 s on a 2-core machine (warm).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.lab import (  # noqa: E402
    CHROMIUM_FLAGS,
    Lab,
    chromium,
    copy_notebook,
    open_notebook,
    run_all_cells,
)
from workbench.datasets import cache_dir, fetch_model  # noqa: E402

NOTEBOOK = "00_quickstart.ipynb"
TARGET_S = 60.0


def first_plot_seconds(cache: Path, scratch: Path) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    os.environ["RKNN_WORKBENCH_CACHE"] = str(cache)  # the kernel inherits it from Lab
    copy_notebook(NOTEBOOK, scratch / "notebooks")
    marks = {}
    with Lab(scratch / "notebooks", scratch / "settings") as lab, sync_playwright() as p:
        marks["server up"] = time.perf_counter() - lab.started
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_notebook(page, lab, NOTEBOOK)
        marks["kernel ready"] = time.perf_counter() - lab.started
        run_all_cells(page)
        verdict = page.locator(".jp-OutputArea-output", has_text="answers differ from float").first
        verdict.wait_for(timeout=300_000)
        marks["first verdict"] = time.perf_counter() - lab.started
        plot = page.locator(".js-plotly-plot", has_text="Per-layer SQNR").first
        plot.locator(".scatterlayer .trace").first.wait_for(timeout=300_000)
        marks["first divergence plot"] = time.perf_counter() - lab.started
        browser.close()
    return marks


def main() -> None:
    if chromium() is None:
        sys.exit("Debian's chromium is missing: apt-get install chromium")
    fetch_model("lcnet-orientation")
    models = cache_dir() / "models"
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cold = Path(tmp) / "cold-cache"
        cold.mkdir()
        (cold / "models").symlink_to(models)  # models fetched (setup done); no runs cached
        rows["cold run cache"] = first_plot_seconds(cold, Path(tmp) / "cold")
        rows["warm run cache"] = first_plot_seconds(cold, Path(tmp) / "warm")  # the cold run filled it
    print(f"notebook {NOTEBOOK}: seconds from starting JupyterLab")
    stages = list(next(iter(rows.values())))
    print(f"{'':<16}" + "".join(f"{s:>24}" for s in stages))
    for name, marks in rows.items():
        print(f"{name:<16}" + "".join(f"{marks[s]:>24.1f}" for s in stages))
    for name, marks in rows.items():
        print(f"{name}: first verdict / {TARGET_S:.0f} s target = {marks['first verdict'] / TARGET_S:.2f}")


if __name__ == "__main__":
    main()
