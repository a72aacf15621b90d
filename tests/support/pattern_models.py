"""Tiny models with the patterns the compiler fuses, written out op by op as exporters do.

Each: input x (1, 8, 16, 16) -> Conv 1x1 -> pattern -> Conv 1x1 -> y (LayerNorm: over the last
axis of the conv output, as a (1, 8, 256) sequence). The pattern's nodes are named after
their role ("hs_add", "ln_pow", "gelu_erf") so tests can name them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPE = (1, 8, 16, 16)


def _model(nodes, inits, name: str, out_shape=SHAPE) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    inits = [
        *inits,
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv_in"),
        *nodes,
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"], name="conv_out"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def hardswish_by_parts() -> onnx.ModelProto:
    """a * clip(a + 3, 0, 6) / 6."""
    inits = [_scalar("three", 3), _scalar("zero", 0), _scalar("six", 6), _scalar("six_b", 6)]
    nodes = [
        helper.make_node("Add", ["a", "three"], ["hs1"], name="hs_add"),
        helper.make_node("Clip", ["hs1", "zero", "six"], ["hs2"], name="hs_clip"),
        helper.make_node("Mul", ["a", "hs2"], ["hs3"], name="hs_mul"),
        helper.make_node("Div", ["hs3", "six_b"], ["p"], name="hs_div"),
    ]
    return _model(nodes, inits, "hardswish_by_parts")


def layernorm_by_parts() -> onnx.ModelProto:
    """LayerNorm over the last axis of a (1, 8, 256) sequence, as torch exports it (opset 13):
    ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array([1, 8, 256], np.int64), "seq_shape"),
        numpy_helper.from_array(np.array(SHAPE, np.int64), "map_shape"),
        _scalar("two", 2),
        _scalar("eps", 1e-5),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 256).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.1, 256).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("Reshape", ["a", "seq_shape"], ["s"], name="to_seq"),
        helper.make_node("ReduceMean", ["s"], ["ln1"], name="ln_mean", axes=[-1]),
        helper.make_node("Sub", ["s", "ln1"], ["ln2"], name="ln_sub"),
        helper.make_node("Pow", ["ln2", "two"], ["ln3"], name="ln_pow"),
        helper.make_node("ReduceMean", ["ln3"], ["ln4"], name="ln_var", axes=[-1]),
        helper.make_node("Add", ["ln4", "eps"], ["ln5"], name="ln_eps"),
        helper.make_node("Sqrt", ["ln5"], ["ln6"], name="ln_sqrt"),
        helper.make_node("Div", ["ln2", "ln6"], ["ln7"], name="ln_div"),
        helper.make_node("Mul", ["ln7", "gamma"], ["ln8"], name="ln_gamma"),
        helper.make_node("Add", ["ln8", "beta"], ["ln9"], name="ln_beta"),
        helper.make_node("Reshape", ["ln9", "map_shape"], ["p"], name="to_map"),
    ]
    return _model(nodes, inits, "layernorm_by_parts")


def gelu_by_parts() -> onnx.ModelProto:
    """a * 0.5 * (1 + erf(a / sqrt(2))), as torch exports nn.GELU: Div, Erf, Add, Mul, Mul."""
    inits = [_scalar("sqrt2", 2**0.5), _scalar("one", 1), _scalar("half", 0.5)]
    nodes = [
        helper.make_node("Div", ["a", "sqrt2"], ["g1"], name="gelu_div"),
        helper.make_node("Erf", ["g1"], ["g2"], name="gelu_erf"),
        helper.make_node("Add", ["g2", "one"], ["g3"], name="gelu_add"),
        helper.make_node("Mul", ["a", "g3"], ["g4"], name="gelu_mul"),
        helper.make_node("Mul", ["g4", "half"], ["p"], name="gelu_half"),
    ]
    return _model(nodes, inits, "gelu_by_parts")


#: Model builder and the names of its pattern's nodes, by pattern name.
PATTERN_MODELS = {
    "HardSwish": (hardswish_by_parts, ("hs_add", "hs_clip", "hs_mul", "hs_div")),
    "LayerNorm": (
        layernorm_by_parts,
        ("ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_eps", "ln_sqrt", "ln_div", "ln_gamma", "ln_beta"),
    ),
    "GELU": (gelu_by_parts, ("gelu_div", "gelu_erf", "gelu_add", "gelu_mul", "gelu_half")),
}
