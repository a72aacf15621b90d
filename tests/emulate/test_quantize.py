"""The fake-quantization arithmetic and the rule check, on hand-computed values."""

import numpy as np
import pytest

from workbench.emulate.quantize import (
    RULES_2_5_0,
    QParams,
    TensorQuant,
    check_rules,
    fake_quant,
    fake_quant_bias,
    fake_quant_weight,
    rules_for,
    weight_params,
)


def test_range_to_params_as_the_toolkit_writes_them():
    # yolov8n's /model.0/act/Mul_output_0 in the toolkit's .quantization.cfg:
    # min -0.27846455574035645, max 38.62816619873047 -> scale 0.15257502256655225, zp -126
    q = QParams.from_range(-0.27846455574035645, 38.62816619873047)
    assert q.scale == pytest.approx(0.15257502256655225, rel=1e-12)
    assert q.zero_point == -126
    # zero is always representable: a positive-only range starts at 0
    assert QParams.from_range(2.0, 4.0) == QParams(4.0 / 255, -128)


def test_fake_quant_rounds_half_to_even_and_saturates():
    out = fake_quant(np.array([0.5, 1.5, 2.5, -0.5, 300.0, -300.0]), 1.0, 0)
    assert out.tolist() == [0.0, 2.0, 2.0, -0.0, 127.0, -128.0]
    assert fake_quant(np.array([0.26]), 0.1, -3).tolist() == pytest.approx([0.3])


def test_weights_per_channel_over_a_range_holding_zero():
    w = np.array([[0.5, -0.25, 1.0], [0.2, 0.4, 0.6]], np.float32)
    scale, zero = weight_params(w)
    # channel 0: [-0.25, 1.0]; channel 1: [0, 0.6] (zero included)
    assert scale.tolist() == pytest.approx([1.25 / 255, 0.6 / 255])
    assert zero.tolist() == [-128 - round(-0.25 / (1.25 / 255)), -128]
    quantized, _ = fake_quant_weight(w)
    assert np.abs(quantized - w).max() <= scale.max() / 2 + 1e-7
    assert quantized[1, 0] == pytest.approx(round(0.2 / (0.6 / 255)) * 0.6 / 255)


def test_weights_per_layer_share_one_range_over_the_whole_tensor():
    w = np.array([[0.5, -0.25, 1.0], [0.2, 0.4, 0.6]], np.float32)
    scale, zero = weight_params(w, per_channel=False)
    # one range [-0.25, 1.0] for both channels
    assert scale.tolist() == pytest.approx([1.25 / 255] * 2)
    assert zero.tolist() == [-128 - round(-0.25 / (1.25 / 255))] * 2
    quantized, _ = fake_quant_weight(w, per_channel=False)
    assert quantized[1, 0] == pytest.approx((round(0.2 / (1.25 / 255))) * 1.25 / 255)  # the coarser step


def test_symmetric_weights_are_a_different_rule():
    w = np.array([[0.5, -0.25, 1.0]], np.float32)
    scale, zero = weight_params(w, "symmetric")
    assert scale.tolist() == pytest.approx([1.0 / 127]) and zero.tolist() == [0.0]


def test_bias_on_the_int32_grid_of_input_times_weight_scale():
    b = fake_quant_bias(np.array([0.1234, -0.5]), 0.01, np.array([0.1, 0.2]))
    assert b.tolist() == pytest.approx([0.123, -0.5])  # grids 0.001 and 0.002


def test_cfg_entry_keeps_its_scale_and_the_unclipped_range():
    entry = {
        "dtype": "int8",
        "min": [-3.0],
        "max": [14.705574035644531],
        "scale": [0.06943362366919424],
        "zero_point": [-85],
        "ori_min": [-8.293715476989746],
        "ori_max": [14.705574035644531],
    }
    t = TensorQuant.from_cfg("p2o.pd_op.batch_norm_.0.0", entry)
    assert t.params == QParams(0.06943362366919424, -85)
    assert t.ori_params.scale == pytest.approx((14.705574035644531 + 8.293715476989746) / 255)
    assert TensorQuant.from_cfg("x", {"dtype": "float32", "scale": []}).params is None


def test_rule_check_names_the_tensors_each_side_fuses():
    table = {"a": {"qmode": "replace"}, "b": {}, "c": {"qmode": "replace"}}
    assert check_rules({"a": True, "b": True, "c": False, "gone": True}, table) == {
        "rules_fuse": ["b"],
        "toolkit_fuses": ["c"],
    }


def test_rules_of_an_unmeasured_version_fall_back_to_the_newest():
    assert rules_for("2.5.0") is RULES_2_5_0
    assert rules_for("9.9.9") is RULES_2_5_0
    assert ("depthwise", "HardSwish") in RULES_2_5_0.requantize
    assert ("conv", "HardSwish") not in RULES_2_5_0.requantize
