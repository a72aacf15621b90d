"""Figures are pure functions of results: tested on their data, no browser needed."""

import numpy as np
import pandas as pd
import pytest

from workbench.compare.result import COLUMNS, Divergence
from workbench.model import OnnxModel
from workbench.synthetic import conv_relu_sigmoid
from workbench.viz.plots import (
    compare_figure,
    divergence_overlay,
    heatmap_figure,
    per_layer_figure,
    tensor_figure,
)


def _result(offset: float = 0.0) -> Divergence:
    rows = []
    for sample in range(3):
        for index, (layer, sqnr) in enumerate(
            [("x", 100.0), ("relu1_out", 30.0), ("conv2_out", 12.0), ("y", 25.0)]
        ):
            rows.append(
                {
                    "index": index,
                    "layer": layer,
                    "op_type": "Relu",
                    "rknn_layer": layer,
                    "rknn_op": "Relu",
                    "sample": sample,
                    "backend": "simulator",
                    "status": "compared",
                    "cosine": 0.99,
                    "sqnr_db": sqnr + offset - sample,
                    "nmse": 0.0,
                    "max_abs": 0.0,
                    "rel_p99": 0.0,
                    "flag": "",
                    "toolkit_entire_cos": np.nan,
                    "toolkit_single_cos": 0.999,
                }
            )
    return Divergence(
        pd.DataFrame(rows, columns=list(COLUMNS)),
        {"model": {"name": "tiny"}, "parents": {"y": ["conv2_out"], "conv2_out": ["relu1_out"]}},
    )


def test_per_layer_figure_mean_worst_band_threshold_and_labels():
    fig = per_layer_figure(_result(), "sqnr_db", label_worst=1)
    mean = next(t for t in fig.data if "mean" in t.name)
    assert list(mean.y) == [99.0, 29.0, 11.0, 24.0] and list(mean.customdata)[2] == "conv2_out"
    assert [a.text for a in fig.layout.annotations if a.text != "threshold 20"] == ["conv2_out"]
    assert fig.layout.shapes[0].y0 == 20.0


def test_cosine_view_shows_the_toolkits_single_layer_error():
    fig = per_layer_figure(_result(), "cosine")
    assert any(t.name == "toolkit single-layer cosine" for t in fig.data)
    with pytest.raises(ValueError):
        per_layer_figure(_result(), "euclid")


def test_heatmap_is_layer_by_sample():
    fig = heatmap_figure(_result())
    assert np.asarray(fig.data[0].z).shape == (4, 3) and list(fig.data[0].y)[2] == "conv2_out"


def test_tensor_figure_scatter_and_histograms():
    ref = np.linspace(-1, 1, 500)
    fig = tensor_figure(ref, np.round(ref * 10) / 10, "conv1_out")
    assert [t.type for t in fig.data] == ["scattergl", "scatter", "histogram", "histogram"]
    with pytest.raises(ValueError, match="500 values"):
        tensor_figure(ref, ref[:10], "conv1_out")


def test_tensor_figure_per_channel_sqnr_finds_the_bad_channel():
    ref = np.random.default_rng(1).normal(size=(1, 4, 8, 8))
    quant = ref.copy()
    quant[0, 2] += 0.5  # channel 2 alone is damaged
    fig = tensor_figure(ref, quant, "conv1_out")
    bars = fig.data[-1]
    assert bars.type == "bar" and len(bars.y) == 4
    assert int(np.argmin(bars.y)) == 2 and bars.y[0] == 100.0


def test_compare_figure_and_table():
    a, b = _result(), _result(offset=5.0)
    both = a.compare(b)
    assert (both.sqnr_db_delta == 5.0).all()
    fig = compare_figure(a, b, ("int8", "mmse"))
    assert [t.name for t in fig.data] == ["int8", "mmse"]


def test_first_divergence_origin_vs_inherited():
    result = _result()
    result.table["toolkit_single_cos"] = np.nan  # no single-layer error: the SQNR drop decides
    verdicts = result.first_divergence().set_index("layer").verdict
    assert verdicts["conv2_out"] == "origin"  # 29 dB in, 11 dB out
    assert verdicts["relu1_out"] == "ok"


def test_overlay_coloured_by_sqnr():
    model = OnnxModel.from_proto(conv_relu_sigmoid())
    fig = divergence_overlay(model, _result())
    coloured = next(t for t in fig.data if t.name == "SQNR (dB)")
    assert sorted(coloured.customdata) == ["conv2", "relu1", "sigmoid"]


def test_pareto_leaves_out_configs_with_no_cost():
    import pandas as pd

    from workbench.viz.fix_plots import pareto_figure

    trail = pd.DataFrame(
        {
            "stage": ["baseline", "emulated", "confirm"],
            "layers": [(), ("a",), ("a",)],
            "n_float16": [0, 1, 1],
            "sqnr_db": [30.0, 33.0, 32.5],
            "cycles": [100.0, float("nan"), 110.0],
            "error": ["", "", ""],
        }
    )
    names = [t.name for t in pareto_figure(trail).data]
    assert names == ["baseline", "confirm", "Pareto front"]
