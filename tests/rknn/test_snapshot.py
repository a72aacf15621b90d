import math

from tests.conftest import FIXTURES
from workbench.rknn.snapshot import parse_error_analysis, parse_name_map

SIMULATOR_ONLY = """
layer_name                          simulator_error
                                entire              single
                             cos      euc        cos      euc
-------------------------------------------------------------------
[Input] x                  1.00000 | 0.00000   1.00000 | 0.00000
[exDataConvert] x_int8     1.00000 | 0.33510   1.00000 | 0.33510
[Conv] c
[Relu] r                   0.99997 | 0.88653   0.99997 | 0.88653
[Sigmoid] y_int8           q_nan | q_nan       1.00000 | 0.10116
"""


def test_simulator_table():
    rows = parse_error_analysis(SIMULATOR_ONLY)
    assert [(r.op_type, r.name) for r in rows] == [
        ("Input", "x"),
        ("exDataConvert", "x_int8"),
        ("Conv", "c"),
        ("Relu", "r"),
        ("Sigmoid", "y_int8"),
    ]
    assert not rows[2].has_dump and rows[3].has_dump
    assert rows[3].values["entire_cos"] == 0.99997 and rows[3].values["single_euc"] == 0.88653
    assert rows[3].values["runtime_entire_cos"] is None
    assert math.isnan(rows[4].values["entire_cos"]) and rows[4].flags == ["q_nan", "q_nan"]


def test_board_table_from_a_real_rk3588():
    text = (FIXTURES / "rknn_board_outputs_sample.txt").read_text()
    rows = parse_error_analysis(text.split("error_analysis.txt")[1])
    relu = next(r for r in rows if r.name == "relu1")
    assert relu.values == {
        "entire_cos": 0.99997,
        "entire_euc": 4.7572,
        "single_cos": 0.99997,
        "single_euc": 4.7572,
        "runtime_entire_cos": 0.99996,
        "runtime_entire_euc": 5.2593,
        "runtime_single_sim_cos": 0.99994,
        "runtime_single_sim_euc": 6.3273,
    }
    assert rows[-1].name == "prob" and rows[-1].values["runtime_single_sim_euc"] == 0.0566
    assert [r.name for r in rows if not r.has_dump][:2] == ["conv1/scale", "conv2_1/expand/scale"]


def test_name_map():
    text = "layer_name   file_name\n------\nx   x.txt\n/model.0/Conv_output_0   _model.0_Conv_output_0.txt\n"
    assert parse_name_map(text) == {"x": "x.txt", "/model.0/Conv_output_0": "_model.0_Conv_output_0.txt"}
