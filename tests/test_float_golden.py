"""The float reference equals the toolkit's own golden tensors, layer by layer.

This is what makes every divergence number trustworthy: the workbench's onnxruntime run
sees exactly the input the toolkit sees (same decoder, colour order, resize, mean/std).
"""

import numpy as np
import pytest

from workbench.compare.metrics import tensor_metrics
from workbench.datasets import ZOO
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.rknn.names import align
from workbench.runners.float import FloatRunner
from workbench.runners.simulator import SimulatorRunner

pytestmark = pytest.mark.toolkit


def _assert_golden_equal(model, preprocess, calibration, row):
    with SimulatorRunner(model, BuildConfig(preprocess=preprocess), calibration) as sim:
        snapshot = sim.analyse(row)
    floats = FloatRunner(model, preprocess).run(row)
    pairs = align(snapshot.golden, floats)
    assert len(pairs) >= 3, f"only {len(pairs)} golden tensors matched ONNX names"
    for onnx_name, layer in pairs.items():
        ref = floats[onnx_name]
        cosine = tensor_metrics(ref, snapshot.golden[layer].reshape(ref.shape))["cosine"]
        assert cosine >= 0.99999, f"{onnx_name} ({layer}): cosine {cosine}"
    return pairs


@pytest.mark.parametrize("rgb2bgr", [False, True])
@pytest.mark.parametrize("name", ["conv-relu-sigmoid", "concat-resize"])
def test_tiny_models_match_golden(tiny_models, small_set, name, rgb2bgr):
    # Non-uniform mean/std and photos larger than the input exercise colour order and resize.
    pre = {"x": Preprocess((10.0, 120.0, 200.0), (50.0, 60.0, 70.0), rgb2bgr=rgb2bgr)}
    model = tiny_models[name]
    pairs = _assert_golden_equal(model, pre, small_set, small_set.rows[1])
    assert "x" in pairs and "y" in pairs


def test_npy_sample_matches_golden(tiny_models, small_set, tmp_path):
    raw = np.random.default_rng(0).uniform(0, 255, (1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "sample.npy", raw)
    pre = {"x": Preprocess((10.0, 120.0, 200.0), (50.0, 60.0, 70.0))}
    _assert_golden_equal(tiny_models["residual-add"], pre, small_set, (tmp_path / "sample.npy",))


@pytest.mark.zoo
def test_ppocr_cls_matches_golden(zoo, small_set):
    entry = ZOO["ppocr-cls"]
    pairs = _assert_golden_equal(
        zoo("ppocr-cls"), {entry.input_name: entry.preprocess}, small_set, small_set.rows[2]
    )
    assert len(pairs) > 50
