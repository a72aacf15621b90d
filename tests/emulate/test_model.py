"""The emulator graph built from a hand-made step-1 graph, against numpy computed by hand.

The graph is what the toolkit's step 1 writes for input -> pointwise conv + Swish ->
depthwise conv + HardSwish -> output: its custom ops (exDataConvert, exSwish) and a cfg
entry per activation.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.emulate.model import EmulatorError, Step1, emulation_graph
from workbench.emulate.quantize import (
    RULES_2_5_0,
    QParams,
    TensorQuant,
    fake_quant,
    fake_quant_bias,
    fake_quant_weight,
)
from workbench.emulate.runner import EmulatorRunner
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig

W1 = np.array([[0.9, -0.4], [0.3, 0.7]], np.float32).reshape(2, 2, 1, 1)
B1 = np.array([0.05, -0.1], np.float32)
W2 = np.array([1.7, -2.3], np.float32).reshape(2, 1, 1, 1)
B2 = np.array([0.2, 0.1], np.float32)
X = np.array([0.31, -0.77, 0.52, 0.05, -0.23, 0.91, -0.64, 0.18], np.float32).reshape(1, 2, 2, 2)
RANGES = {"x_int8": (-1, 1), "c1": (-2, 2), "s1": (-0.3, 2), "c2": (-3, 3), "y_int8": (-0.375, 3)}


def _cfg(name: str, lo: float, hi: float) -> TensorQuant:
    q = QParams.from_range(lo, hi)
    entry = {
        "dtype": "int8",
        "scale": [q.scale],
        "zero_point": [q.zero_point],
        "ori_min": [lo - 2],
        "ori_max": [hi],
    }
    return TensorQuant.from_cfg(name, entry)


def _inits():
    return [
        numpy_helper.from_array(W1, "w1"),
        numpy_helper.from_array(B1, "b1"),
        numpy_helper.from_array(W2, "w2"),
        numpy_helper.from_array(B2, "b2"),
    ]


def toolkit_step1() -> Step1:
    nodes = [
        helper.make_node("exDataConvert", ["x"], ["x_int8"], name="cvt_in"),
        helper.make_node("Conv", ["x_int8", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("exSwish", ["c1"], ["s1"], name="swish"),
        helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], name="dw", group=2),
        helper.make_node("HardSwish", ["c2"], ["y_int8"], name="hswish"),
        helper.make_node("exDataConvert", ["y_int8"], ["y"], name="cvt_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "step1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
        _inits(),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    tensors = {n: _cfg(n, *r) for n, r in RANGES.items()}
    tensors["x"] = TensorQuant.from_cfg("x", {"dtype": "float32", "scale": []})
    return Step1(proto, tensors, {"c1": {"qmode": "replace"}, "c2": {}})


def onnx_model() -> OnnxModel:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Sigmoid", ["c1"], ["sig"], name="sig"),
        helper.make_node("Mul", ["c1", "sig"], ["s1"], name="mul"),
        helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], name="dw", group=2),
        helper.make_node("HardSwish", ["c2"], ["y"], name="hswish"),
    ]
    graph = helper.make_graph(
        nodes,
        "model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])],
        _inits(),
    )
    return OnnxModel.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _q(name, x):
    q = QParams.from_range(*RANGES[name])
    return fake_quant(x, q.scale, q.zero_point)


def _silu(x):
    return x / (1 + np.exp(-x))


def _hswish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def by_hand(float16_swish: bool = False) -> dict[str, np.ndarray]:
    """The toolkit's int8 arithmetic, in float64 numpy."""
    xq = _q("x_int8", X.astype(np.float64))
    w1, s1w = fake_quant_weight(W1)
    b1 = fake_quant_bias(B1, QParams.from_range(*RANGES["x_int8"]).scale, s1w)
    c1 = np.einsum("oi,nihw->nohw", w1[:, :, 0, 0], xq) + b1.reshape(1, 2, 1, 1)
    if float16_swish:  # the fusion breaks: c1 rounded at its cfg scale, Swish in float16
        c1 = _q("c1", c1).astype(np.float16).astype(np.float64)
        s1 = _q("s1", _silu(c1).astype(np.float16).astype(np.float64))
    else:  # conv + Swish is one layer: c1 stays unrounded
        s1 = _q("s1", _silu(c1))
    w2, s2w = fake_quant_weight(W2)
    b2 = fake_quant_bias(B2, QParams.from_range(*RANGES["s1"]).scale, s2w)
    c2 = _q("c2", w2.reshape(1, 2, 1, 1) * s1 + b2.reshape(1, 2, 1, 1))  # depthwise + HardSwish: rounded
    return {"s1": s1, "c2": c2, "y": _q("y_int8", _hswish(c2))}


def _run(emulation, names):
    import onnxruntime as ort

    proto = emulation.proto
    for name in names:
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(["y", *names], session.run(["y", *names], {"x": X})))


def test_custom_ops_become_standard_onnx_and_the_float_graph_is_the_model():
    emulation = emulation_graph(toolkit_step1(), RULES_2_5_0, quantize=False)
    assert not [n.op_type for n in emulation.proto.graph.node if n.op_type.startswith("ex")]
    onnx.checker.check_model(emulation.proto)
    got = _run(emulation, ["s1"])
    c1 = np.einsum("oi,nihw->nohw", W1[:, :, 0, 0], X) + B1.reshape(1, 2, 1, 1)
    assert got["s1"] == pytest.approx(_silu(c1), abs=1e-6)


def test_int8_only_at_layer_boundaries_as_computed_by_hand():
    emulation = emulation_graph(toolkit_step1(), RULES_2_5_0)
    # pointwise conv + Swish: one layer; depthwise conv + HardSwish: requantized inside
    assert emulation.boundaries == ["x_int8", "s1", "c2", "y_int8"]
    got = _run(emulation, ["s1", "c2"])
    for name, value in by_hand().items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_a_wrong_rule_changes_the_arithmetic():
    no_requantize = RULES_2_5_0.with_changes(requantize=frozenset())
    assert "c2" not in emulation_graph(toolkit_step1(), no_requantize).boundaries
    symmetric = RULES_2_5_0.with_changes(weights="symmetric")
    got = _run(emulation_graph(toolkit_step1(), symmetric), ["s1"])
    assert np.abs(got["s1"] - by_hand()["s1"]).max() > 0


def test_float16_layer_breaks_the_fusion_and_keeps_its_name_for_the_float16_value():
    emulation = emulation_graph(toolkit_step1(), RULES_2_5_0, ["s1"])
    assert emulation.boundaries == ["x_int8", "c1", "s1__int8", "c2", "y_int8"]
    assert emulation.float16 == ["s1"]
    got = _run(emulation, ["s1__int8", "c2"])
    expected = by_hand(float16_swish=True)
    assert got["s1__int8"] == pytest.approx(expected["s1"], abs=1e-6)
    assert got["y"] == pytest.approx(expected["y"], abs=1e-6)


def test_unknown_float_layer_names_the_tensor():
    with pytest.raises(EmulatorError, match="nothere"):
        emulation_graph(toolkit_step1(), RULES_2_5_0, ["nothere"])


def test_runner_returns_onnx_names_and_the_outputs(tmp_path):
    np.save(tmp_path / "x.npy", X)
    runner = EmulatorRunner(onnx_model(), BuildConfig(), step1=toolkit_step1())
    assert runner.backend == "emulator"
    got = runner.run([tmp_path / "x.npy"])
    # c1 is inside the conv + Swish layer: no tensor stands for it
    assert set(got) == {"x", "s1", "c2", "y"}
    expected = by_hand()
    assert got["c2"] == pytest.approx(expected["c2"], abs=1e-6)
    assert runner.outputs([tmp_path / "x.npy"])["y"] == pytest.approx(expected["y"], abs=1e-6)
    variant = runner.variant(["s1"])
    assert variant.float_layers == ("s1",) and variant.step1 is runner.step1
    assert variant.outputs([tmp_path / "x.npy"])["y"] == pytest.approx(by_hand(True)["y"], abs=1e-6)


def test_step1_files_that_are_not_step1_files_say_so(tmp_path):
    (tmp_path / "m.model").write_bytes(b"not onnx")
    (tmp_path / "m.cfg").write_text("quantize_parameters: {}\n")
    with pytest.raises(EmulatorError, match="hybrid_step1"):
        Step1.read({"model": tmp_path / "m.model", "cfg": tmp_path / "m.cfg"})
    with pytest.raises(EmulatorError, match="calibration set"):
        EmulatorRunner(onnx_model(), BuildConfig())


def test_the_data_file_gives_its_table_and_nothing_else(tmp_path):
    import argparse
    import pickle

    from workbench.emulate.model import _read_quant_tab

    good = tmp_path / "good.data"
    good.write_bytes(
        pickle.dumps({"args": argparse.Namespace(a=1), "quant_tab": {"c1": {"qmode": "replace"}}})
    )
    assert _read_quant_tab(good) == {"c1": {"qmode": "replace"}}
    evil = tmp_path / "evil.data"
    evil.write_bytes(pickle.dumps({"quant_tab": {}, "x": __import__("collections").OrderedDict()}))
    assert _read_quant_tab(evil) == {}  # a class other than argparse.Namespace is refused
    assert _read_quant_tab(tmp_path / "missing.data") == {}
