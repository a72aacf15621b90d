"""Dynamically-quantized models back to float: outputs as the float model's, valid, buildable."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.cli import main
from workbench.dequantize import dequantize_model, dynamic_quantization_nodes
from workbench.errors import UnsupportedModelError
from workbench.model import OnnxModel

X_SHAPE = (1, 3, 8, 8)


def float_model() -> onnx.ModelProto:
    """Conv 3->8 (3x3), Relu, Reshape to (1, 8, 64), MatMul 64->10."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1, 8, 64], np.int64), "shape"),
        numpy_helper.from_array(rng.normal(0, 0.2, (64, 10)).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "m"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "float_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(X_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def hand_quantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """What ``quantize_dynamic(weight_type=QInt8)`` of onnxruntime 1.x writes for ``model``
    (read from its output): per-tensor symmetric int8 weights, DynamicQuantizeLinear on the
    activation, ConvInteger / MatMulInteger, Cast to float, Mul by x_scale * w_scale, the
    conv bias as a float Add. For machines without ml_dtypes, which quantize_dynamic needs."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inits, nodes = [], []

    def quantized(name: str) -> tuple[str, str, str]:
        w = weights[name]
        scale = np.float32(np.abs(w).max() / 127)
        inits.extend(
            [
                numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{name}_quantized"),
                numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.array(0, np.int8), f"{name}_zero_point"),
            ]
        )
        return f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"

    def integer(op: str, x: str, weight: str, out: str, name: str, **attrs) -> None:
        w_q, w_scale, w_zp = quantized(weight)
        nodes.extend(
            [
                helper.make_node(
                    "DynamicQuantizeLinear", [x], [f"{x}_q", f"{x}_scale", f"{x}_zp"], name=f"{x}_quantize"
                ),
                helper.make_node("Mul", [f"{x}_scale", w_scale], [f"{name}_scales"], name=f"{name}_scales"),
                helper.make_node(op, [f"{x}_q", w_q, f"{x}_zp", w_zp], [f"{name}_int"], name=name, **attrs),
                helper.make_node("Cast", [f"{name}_int"], [f"{name}_float"], name=f"{name}_cast", to=1),
                helper.make_node("Mul", [f"{name}_float", f"{name}_scales"], [out], name=f"{name}_scaled"),
            ]
        )

    integer("ConvInteger", "x", "w", "c_nobias", "conv_quant", pads=[1, 1, 1, 1])
    inits += [numpy_helper.from_array(weights["b"].reshape(1, 8, 1, 1), "b_reshaped")]
    nodes += [
        helper.make_node("Add", ["c_nobias", "b_reshaped"], ["c"], name="bias"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
    ]
    inits.append(numpy_helper.from_array(weights["shape"], "shape"))
    integer("MatMulInteger", "f", "m", "y", "mm_quant")
    graph = helper.make_graph(nodes, "quantized", list(model.graph.input), list(model.graph.output), inits)
    out = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    out.ir_version = 8
    onnx.checker.check_model(out)
    return out


def onnxruntime_quantized(model: onnx.ModelProto, tmp_path, per_channel: bool) -> onnx.ModelProto:
    pytest.importorskip("ml_dtypes", reason="onnxruntime.quantization needs ml_dtypes")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(model, tmp_path / "float.onnx")
    quantize_dynamic(
        tmp_path / "float.onnx",
        tmp_path / "dynamic.onnx",
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
    )
    return onnx.load(tmp_path / "dynamic.onnx")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].ravel()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(params=["hand", "onnxruntime", "onnxruntime-per-channel"])
def quantized(request, tmp_path) -> onnx.ModelProto:
    model = float_model()
    if request.param == "hand":
        return hand_quantized(model)
    return onnxruntime_quantized(model, tmp_path, per_channel=request.param.endswith("per-channel"))


def test_dequantized_model_computes_what_the_float_model_does(quantized):
    assert sorted(dynamic_quantization_nodes(quantized.graph)) == ["conv_quant", "mm_quant"]
    result = dequantize_model(quantized)
    onnx.checker.check_model(result.model, full_check=True)
    ops = [n.op_type for n in result.model.graph.node]
    assert "Conv" in ops and "MatMul" in ops
    assert not {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "Cast"} & set(ops)
    assert sorted(result.rewritten) == ["conv_quant", "mm_quant"]
    x = np.random.default_rng(1).normal(0, 1, X_SHAPE).astype(np.float32)
    assert _cosine(_run(float_model(), x), _run(result.model, x)) > 0.999


def test_weights_are_the_dequantized_integers(quantized):
    result = dequantize_model(quantized)
    weights = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    original = numpy_helper.to_array(next(t for t in float_model().graph.initializer if t.name == "m"))
    matmul = next(n for n in result.model.graph.node if n.op_type == "MatMul")
    step = np.abs(original).max() / 127  # symmetric int8 per tensor: the largest step
    assert np.abs(weights[matmul.input[1]] - original).max() <= step / 2 + 1e-6


def test_a_float_model_has_nothing_to_dequantize():
    assert dynamic_quantization_nodes(float_model().graph) == []
    with pytest.raises(UnsupportedModelError, match="nothing to dequantize"):
        dequantize_model(float_model())


def test_loading_for_a_build_points_at_the_dequantize_command(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(hand_quantized(float_model()), path)
    with pytest.raises(UnsupportedModelError, match="rknn-workbench dequantize"):
        OnnxModel.load(path)
    assert main(["build", str(path)]) == 2  # the CLI's error, no toolkit started
    inspected = OnnxModel.load(path, allow_custom_ops=True)  # as check loads it
    assert len(inspected.proto.graph.node) == 13


def test_cli_dequantize_writes_a_loadable_float_model(tmp_path, capsys):
    path, out = tmp_path / "dynamic.onnx", tmp_path / "float.onnx"
    onnx.save(hand_quantized(float_model()), path)
    assert main(["dequantize", str(path), "-o", str(out)]) == 0
    assert "2 integer MatMul/Conv back to float" in capsys.readouterr().out
    assert OnnxModel.load(out).inputs == {"x": X_SHAPE}
    assert main(["dequantize", str(out), "-o", str(tmp_path / "again.onnx")]) == 2
    assert "nothing to dequantize" in capsys.readouterr().err


@pytest.mark.toolkit
def test_dequantized_model_builds_with_the_toolkit():
    from workbench.support.compile import compile_check

    result = dequantize_model(hand_quantized(float_model()))
    report = compile_check(OnnxModel.from_proto(result.model), "rk3588")
    assert report.rejected is None and len(report.layers) > 2


def test_onnxruntime_contrib_dynamic_matmul_is_dequantized_too():
    # ORT-optimised files fuse the chain into com.microsoft DynamicQuantizeMatMul
    rng = np.random.default_rng(2)
    w = rng.normal(0, 0.2, (16, 4)).astype(np.float32)
    scale = np.float32(np.abs(w).max() / 127)
    inits = [
        numpy_helper.from_array(np.round(w / scale).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zp"),
    ]
    node = helper.make_node(
        "DynamicQuantizeMatMul", ["x", "w_q", "w_scale", "w_zp"], ["y"], name="dqmm", domain="com.microsoft"
    )
    graph = helper.make_graph(
        [node],
        "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])],
        inits,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    proto = helper.make_model(graph, opset_imports=opsets)
    proto.ir_version = 8
    result = dequantize_model(proto)
    assert [n.op_type for n in result.model.graph.node] == ["MatMul"]
    assert [o.domain for o in result.model.opset_import] == [""]
    x = rng.normal(0, 1, (1, 8, 16)).astype(np.float32)
    assert _cosine(_run(proto, x), _run(result.model, x)) > 0.9999
