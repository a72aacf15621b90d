import numpy as np
import pytest

from workbench.compare.calibration import activation_stats, calibration_insight, toolkit_quant_params
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner

PRE = {"x": Preprocess((127.5,) * 3, (64.0,) * 3)}


def test_activation_stats_match_a_direct_computation(tiny_models, small_set):
    model = tiny_models["conv-relu-sigmoid"]
    stats = activation_stats(model, small_set, PRE, progress=False)
    runner = FloatRunner(model, PRE)
    values = np.concatenate([runner.run(row)["conv1_out"].ravel() for row in small_set.rows])
    row = stats.table.set_index("tensor").loc["conv1_out"]
    assert row["min"] == pytest.approx(values.min()) and row["max"] == pytest.approx(values.max())
    assert row["mean"] == pytest.approx(values.mean(), rel=1e-5)
    assert stats.table.set_index("tensor").loc["relu1_out", "zero_share"] > 0.1  # Relu zeros
    edges, counts = stats.histograms["conv1_out"]
    assert counts.sum() == values.size and len(edges) == len(counts) + 1


@pytest.mark.toolkit
def test_insight_next_to_the_toolkits_quantization(tiny_models, small_set):
    model = tiny_models["conv-relu-sigmoid"]
    config = BuildConfig(preprocess=PRE)
    params = toolkit_quant_params(model, config, small_set)
    assert {"relu1_out", "conv2_out"} <= set(params.tensor)
    assert (params.scale > 0).all()
    insight = calibration_insight(activation_stats(model, small_set, PRE, progress=False), params)
    relu = insight.set_index("tensor").loc["relu1_out"]
    # "normal" calibration takes min/max of these very samples: nothing is clipped.
    assert relu.clipped_share == 0.0 and relu.levels > 100 and not relu.crushed
    assert list(insight["index"]) == sorted(insight["index"])
