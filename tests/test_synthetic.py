"""The tiny models do what their names promise, on the real toolkit."""

import re

import numpy as np
import onnxruntime as ort
import pytest

from workbench.rknn.session import ToolkitSession, clean_log
from workbench.synthetic import INPUT_SHAPE, SYNTHETIC


def _placement(model, tmp_path) -> dict[str, str]:
    """{op type: NPU/CPU} from the build's per-layer table."""
    with ToolkitSession(tmp_path) as session:
        path = model.save(tmp_path / "m.onnx")
        _, log = session.call(
            "build",
            model_path=str(path),
            config={"target_platform": "rk3588"},
            dataset=None,
            do_quantization=False,
        )
    rows = re.findall(r"^D RKNN: \[[^\]]+\] +\d+ +(\w+) +\w+ +(NPU|CPU) ", clean_log(log), re.M)
    return dict(rows)


@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_runs_on_onnxruntime(tiny_models, name):
    model = tiny_models[name]
    session = ort.InferenceSession(model.to_bytes(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {n: np.ones(shape, np.float32) for n, shape in model.inputs.items()})
    assert model.inputs["x"] == INPUT_SHAPE
    assert np.isfinite(y).all()


@pytest.mark.toolkit
def test_cpu_fallback_model_puts_sin_on_the_cpu(tiny_models, tmp_path):
    placement = _placement(tiny_models["cpu-fallback"], tmp_path)
    assert placement["Sin"] == "CPU" and placement["Conv"] == "NPU"


@pytest.mark.toolkit
def test_conv_relu_sigmoid_runs_on_the_npu(tiny_models, tmp_path):
    placement = _placement(tiny_models["conv-relu-sigmoid"], tmp_path)
    assert placement and {t for op, t in placement.items() if "Operator" not in op} == {"NPU"}
