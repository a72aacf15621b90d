"""The HTML report: one self-contained file with the model summary, operator support,
settings, divergence plots and the worst-layer table."""

import re

import pytest

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.viz.report import write_report

pytestmark = pytest.mark.toolkit


@pytest.fixture(scope="module")
def run(tiny_models, small_set, tmp_path_factory):
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    result = compute_divergence(
        tiny_models["cpu-fallback"], config, small_set, small_set.head(1), progress=False
    )
    return result.save(tmp_path_factory.mktemp("runs") / "run")


def test_report_has_every_section_and_opens_offline(run):
    text = write_report(Divergence.load(run), run / "report.html").read_text()
    for heading in (
        "Worst layers",
        "Along the graph",
        "Model",
        "Operator support",
        "Conversion settings",
        "Calibration",
    ):
        assert f"<h2>{heading}" in text, heading
    support = text.split("<h2>Operator support</h2>")[1].split("<h2>")[0]
    assert "Sin" in support and "cpu" in support.lower()  # the Sin node falls back to the CPU
    assert text.count("plotly.js v") == 1 and not re.search(r"<script src=[\"']http", text)
    assert "&quot;target_platform&quot;: &quot;rk3588&quot;" in text


def test_run_without_support_record_still_reports(run, tmp_path):
    result = Divergence.load(run)
    result.meta.pop("support")
    text = write_report(result, tmp_path / "r.html").read_text()
    assert "Not recorded in this run" in text
