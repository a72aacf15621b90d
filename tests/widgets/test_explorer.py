"""DivergenceExplorer: filters redraw the per-layer plot; a click shows the layer's
tensors and rings it in the graph; a run reopened from disk can be explored."""

from types import SimpleNamespace

import numpy as np
import pytest

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.widgets.explorer import MEAN, DivergenceExplorer

pytestmark = pytest.mark.toolkit


@pytest.fixture(scope="module")
def explorer(tiny_models, small_set, tmp_path_factory):
    model = tiny_models["residual-add"]
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    result = compute_divergence(model, config, small_set, small_set.head(2), progress=False)
    folder = result.save(tmp_path_factory.mktemp("runs") / "run")
    explorer = DivergenceExplorer(Divergence.load(folder), model)
    yield explorer
    explorer.close()


def click(explorer, layer):
    trace = explorer.layers.data[0]
    explorer._on_click(trace, SimpleNamespace(point_inds=[list(trace.customdata).index(layer)]), None)


def test_filters_redraw_the_plot(explorer):
    trace = explorer.layers.data[0]
    assert "relu1_out" in trace.customdata and explorer.sample.value == MEAN
    mean = list(trace.y)
    explorer.sample.value = "sample 1"
    assert list(trace.y) != mean and "sample 1" in explorer.layers.layout.title.text
    explorer.metric.value = "cosine"
    assert all(0.9 < v <= 1.0 for v in trace.y)
    explorer.sample.value, explorer.metric.value = MEAN, "sqnr_db"
    assert list(trace.y) == mean


def test_click_shows_the_tensors_and_rings_the_layer_in_the_graph(explorer):
    click(explorer, "relu1_out")
    assert explorer.selected == "relu1_out"
    kinds = [t.type for t in explorer.detail.data]
    assert kinds == ["scattergl", "scatter", "histogram", "histogram", "bar"]
    per_channel = explorer.detail.data[-1].y
    channels = {t.name: t.shape for t in explorer.model.tensors}["relu1_out"][1]
    assert len(per_channel) == channels > 1 and all(np.isfinite(per_channel))
    mark = explorer.layers.data[1]
    assert list(mark.x) == [explorer.rows().set_index("layer").at["relu1_out", "index"]]
    ring = explorer.graph.data[-1]
    assert ring.name == "selected" and len(ring.x) == 1
    assert "relu1_out" in explorer.status.value and "sqnr_db" in explorer.status.value


def test_sample_filter_follows_the_clicked_layer(explorer):
    click(explorer, "y")
    first = np.asarray(explorer.detail.data[0].y)
    explorer.sample.value = "sample 1"
    assert explorer.selected == "y" and "sample 1" in explorer.status.value
    assert not np.array_equal(first, np.asarray(explorer.detail.data[0].y))
    explorer.sample.value = MEAN


def test_headline_leads_with_the_output_then_the_origins():
    import pandas as pd

    from workbench.compare.result import Divergence
    from workbench.widgets.explorer import headline

    rows = [
        {
            "index": i,
            "layer": name,
            "op_type": "Conv",
            "rknn_layer": name,
            "sample": 0,
            "backend": "simulator",
            "status": "compared",
            "flag": "",
            "sqnr_db": db,
            "cosine": 0.9,
            "toolkit_single_cos": float("nan"),
        }
        for i, (name, db) in enumerate([("a", 40.0), ("b", 12.0), ("y", 11.0)])
    ]
    result = Divergence(
        pd.DataFrame(rows), {"model": {"outputs": {"y": [1, 8]}}, "parents": {"b": ["a"], "y": ["b"]}}
    )
    text = headline(result)
    assert "model output y: SQNR 11.0 dB mean" in text
    assert text.index("Verdict") < text.index("Where") < text.index("Next")
    assert "b (Conv" in text  # the layer that makes the error
