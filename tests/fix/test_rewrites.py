"""Cross-layer equalization (exact in float, equal channel ranges, a gain the simulator
confirms under per-tensor quantization) and empirical bias correction (a hand-computed
shift, a gain the simulator confirms)."""

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.fix.rewrites import ConvPair, equalizable_pairs, equalize
from workbench.model import OnnxModel
from workbench.runners.float import FloatRunner

from .conftest import CONFIG

#: Output channel i of conv1 is multiplied by SCALES[i] and input channel i of conv2 divided
#: by it: the float model is a plain conv pair, its channels 2500x apart in range.
SCALES = np.geomspace(0.02, 50, 8).astype(np.float32)


def _model(nodes, inits, name: str, out_channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, 32, 32])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def badly_scaled(activation: str = "Relu", depthwise: bool = False) -> onnx.ModelProto:
    """Conv 3x3 3->8, ``activation``, Conv 3x3 8->8 (or depthwise), channels badly scaled."""
    rng = np.random.default_rng(0)
    w2_shape = (8, 1, 3, 3) if depthwise else (8, 8, 3, 3)
    inits = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32) * SCALES[:, None, None, None],
        "b1": rng.normal(0, 0.1, 8).astype(np.float32) * SCALES,
        "w2": rng.normal(0, 0.2, w2_shape).astype(np.float32)
        / (SCALES[:, None, None, None] if depthwise else SCALES[None, :, None, None]),
        "b2": rng.normal(0, 0.1, 8).astype(np.float32),
    }
    extra = {"group": 8} if depthwise else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node(activation, ["c1"], ["r1"], name="act1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2", pads=[1] * 4, **extra),
    ]
    return _model(nodes, inits, "badly_scaled", 8)


def off_grid(channels: int = 64) -> onnx.ModelProto:
    """Conv 1x1 3->64, ReLU (mean ~2: bias 2), Conv 1x1 64->4, ReLU. Each row of conv2 holds
    one weight 1.0 (its int8 range [0, 1], step 1/255) and 63 weights (k + 0.45) / 255: each
    rounds down by 0.45 / 255, so conv2's int8 output is low by 0.45 / 255 x (sum of the 63
    inputs) on every pixel: a bias no rounding noise averages away."""
    rng = np.random.default_rng(0)
    k = rng.integers(20, 120, (4, channels)).astype(np.float64)
    w2 = ((k + 0.45) / 255).astype(np.float32)
    w2[:, 0] = 1.0
    inits = {
        "w1": rng.normal(0, 0.3, (channels, 3, 1, 1)).astype(np.float32),
        "b1": np.full(channels, 2.0, np.float32),
        "w2": w2.reshape(4, channels, 1, 1),
        "b2": np.zeros(4, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu2"),
    ]
    return _model(nodes, inits, "off_grid", 4)


def _weights(model: OnnxModel) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in model.proto.graph.initializer}


def _float_outputs(model: OnnxModel, rows) -> list:
    runner = FloatRunner(model, CONFIG.preprocess, keep=["y"])
    return [runner.run(r)["y"] for r in rows]


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu"])
def test_equalize_leaves_float_outputs_equal_and_evens_the_channel_ranges(activation, small_set):
    model = OnnxModel.from_proto(badly_scaled(activation))
    equalized, pairs = equalize(model)
    assert pairs == [ConvPair("conv1", "conv2", activation)]
    for a, b in zip(_float_outputs(model, small_set.rows[:2]), _float_outputs(equalized, small_set.rows[:2])):
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())
    w = _weights(equalized)
    r1 = np.abs(w["w1"]).reshape(8, -1).max(1)
    r2 = np.abs(w["w2"]).transpose(1, 0, 2, 3).reshape(8, -1).max(1)
    before = np.abs(_weights(model)["w1"]).reshape(8, -1).max(1)
    assert before.max() / before.min() > 1000  # the badly scaled model
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # CLE's fixed point: r1_i = r2_i
    assert r1.max() / r1.min() < 10


def test_equalize_a_depthwise_second_conv(small_set):
    model = OnnxModel.from_proto(badly_scaled(depthwise=True))
    equalized, pairs = equalize(model)
    assert len(pairs) == 1
    a, b = _float_outputs(model, small_set.rows[:1])[0], _float_outputs(equalized, small_set.rows[:1])[0]
    np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())
    w = _weights(equalized)
    np.testing.assert_allclose(
        np.abs(w["w1"]).reshape(8, -1).max(1), np.abs(w["w2"]).reshape(8, -1).max(1), rtol=1e-5
    )


@pytest.mark.parametrize("activation", ["HardSwish", "Sigmoid"])
def test_pairs_through_a_non_homogeneous_activation_are_left_alone(activation):
    model = OnnxModel.from_proto(badly_scaled(activation))
    assert equalizable_pairs(model) == []
    assert equalize(model) == (model, [])


def test_batchnorm_folds_into_its_conv_by_hand_and_then_equalizes(small_set):
    # conv1 -> BN -> Relu -> conv2: the BN scales channel c by gamma_c / sqrt(var_c + eps)
    base = badly_scaled()
    bn = {
        "gamma": np.linspace(0.5, 2.0, 8).astype(np.float32),
        "beta": np.linspace(-0.2, 0.2, 8).astype(np.float32),
        "mean": np.linspace(-1.0, 1.0, 8).astype(np.float32),
        "var": np.linspace(0.5, 4.0, 8).astype(np.float32),
    }
    graph = base.graph
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in bn.items())
    graph.node[1].input[0] = "bn_out"
    graph.node.insert(
        1, helper.make_node("BatchNormalization", ["c1", *bn], ["bn_out"], name="bn", epsilon=1e-5)
    )
    model = OnnxModel.from_proto(base)
    from workbench.fix.rewrites import fold_batchnorm

    folded = fold_batchnorm(model)
    assert [n.op_type for n in folded.proto.graph.node] == ["Conv", "Relu", "Conv"]
    assert folded.proto.graph.node[0].output[0] == "bn_out"  # the name the toolkit gives it
    w = _weights(folded)
    k = bn["gamma"] / np.sqrt(bn["var"] + 1e-5)
    b1 = _weights(model)["b1"]
    np.testing.assert_allclose(w["conv1__folded_bias"], (b1 - bn["mean"]) * k + bn["beta"], rtol=1e-5)
    np.testing.assert_allclose(w["w1"], _weights(model)["w1"] * k[:, None, None, None], rtol=1e-5)
    equalized, pairs = equalize(model)
    assert pairs == [ConvPair("conv1", "conv2", "Relu")]
    for a, b in zip(_float_outputs(model, small_set.rows[:1]), _float_outputs(equalized, small_set.rows[:1])):
        np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())


@pytest.mark.toolkit
def test_equalization_gain_is_confirmed_by_the_simulator_under_per_tensor_quantization(small_set):
    from workbench.fix.evaluate import prepare_job, score_config

    config = dataclasses.replace(CONFIG, quantized_method="layer")
    model = OnnxModel.from_proto(badly_scaled())
    job = prepare_job(model, config, small_set, small_set.head(2))
    int8 = score_config(job, config)
    equalized = score_config(dataclasses.replace(job, model=equalize(model)[0]), config)
    # measured: -0.4 dB -> 32.0 dB (one weight scale and one activation scale for all channels)
    assert int8.sqnr_db < 10 and equalized.sqnr_db > 25, (int8, equalized)


@pytest.mark.toolkit
def test_bias_correction_removes_the_hand_computed_shift(small_set):
    from workbench.fix.evaluate import prepare_job, score_config
    from workbench.fix.rewrites import correct_bias

    model = OnnxModel.from_proto(off_grid())
    corrected, shifts = correct_bias(model, CONFIG, small_set)
    # conv2's int8 output is low by 0.45 / 255 x the float mean of its 63 off-grid inputs
    r1 = FloatRunner(model, CONFIG.preprocess, keep=["r1"])
    mean_r1 = np.mean([r1.run(row)["r1"].mean((0, 2, 3)) for row in small_set.rows], 0)
    expected = -0.45 / 255 * mean_r1[1:].sum()
    assert expected == pytest.approx(-0.22, abs=0.02)
    np.testing.assert_allclose(shifts["c2"], expected, rtol=0.1)
    b2 = numpy_helper.to_array({i.name: i for i in corrected.proto.graph.initializer}["b2"])
    np.testing.assert_allclose(b2, -shifts["c2"], rtol=1e-6)
    job = prepare_job(model, CONFIG, small_set, small_set.head(2))
    int8 = score_config(job, CONFIG)
    fixed = score_config(dataclasses.replace(job, model=corrected), CONFIG)
    # measured: 44.3 dB -> 57.4 dB
    assert fixed.sqnr_db > int8.sqnr_db + 5, (int8, fixed)
