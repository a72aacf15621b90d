"""Nothing silently absent: compiled layers with no ONNX tensor, constants apart from fused."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from workbench.compare.rows import constant_tensors, layer_rows
from workbench.model import OnnxModel, TensorInfo
from workbench.rknn.snapshot import parse_error_analysis

TABLE = """
[Input] x                  1.00000 | 0.00000   1.00000 | 0.00000
[exDataConvert] x_int8     0.99998 | 0.43301   0.99998 | 0.43301
[Conv] a                   0.99970 | 0.69411   0.99988 | 0.43347
[exNorm] norm#1            0.99929 | 1.08750   0.99993 | 0.34916
[MatMul] attn_sdpa         0.98000 | 2.00000   0.99000 | 1.00000
[Conv] y                   0.99893 | 1.01320   0.99994 | 0.24887
[Conv] tail_exSecondary    0.99800 | 1.00000   0.99990 | 0.10000
[Conv] b
"""


def _tensors():
    return [
        TensorInfo("x", (1, 4), "float32", None, None, 0),
        TensorInfo("a", (1, 4), "float32", "conv_a", "Conv", 1),
        TensorInfo("b", (1, 4), "float32", "conv_b", "Conv", 2),
        TensorInfo("shape", (2,), "int64", "c", "Constant", 3),
        TensorInfo("y", (1, 4), "float32", "conv_y", "Conv", 4),
    ]


def test_unmapped_layers_get_rows_after_their_predecessor():
    errors = {e.name: e for e in parse_error_analysis(TABLE)}
    value = np.arange(1.0, 5.0).reshape(1, 4)
    reference = {n: value for n in ("x", "a", "b", "shape", "y")}
    quantized = {n: value for n in ("x", "x_int8", "a", "norm#1", "attn_sdpa", "y", "tail_exSecondary")}
    rows = layer_rows(_tensors(), reference, quantized, errors, sample=0, backend="simulator")
    table = {r["layer"]: r for r in rows}
    assert [r["layer"] for r in rows] == [
        "x", "x_int8", "a", "norm#1", "attn_sdpa", "b", "shape", "y", "tail_exSecondary"
    ]  # fmt: skip
    unmapped = {k: r for k, r in table.items() if r["status"] == "unmapped"}
    assert set(unmapped) == {"x_int8", "norm#1", "attn_sdpa", "tail_exSecondary"}
    sdpa = unmapped["attn_sdpa"]
    assert (sdpa["rknn_layer"], sdpa["op_type"], sdpa["toolkit_single_cos"]) == ("attn_sdpa", "MatMul", 0.99)
    assert np.isnan(sdpa["cosine"])  # the toolkit's numbers only, never ours
    assert table["a"]["index"] < table["norm#1"]["index"] < sdpa["index"] < table["b"]["index"]
    assert unmapped["tail_exSecondary"]["index"] > table["y"]["index"]
    assert table["b"]["status"] == "fused" and table["shape"]["status"] == "constant"


def test_constant_tensors_include_folded_shape_chains():
    """Shape -> Gather -> Concat feeding a Reshape folds away; a Constant node too."""
    idx = numpy_helper.from_array(np.array([1], np.int64), "idx")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["c"], axis=0),
        helper.make_node("Constant", [], ["minus1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["c", "minus1"], ["new_shape"], axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "folded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 16])],
        [idx],
    )
    model = OnnxModel.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert constant_tensors(model) == {"s", "c", "minus1", "new_shape"}
