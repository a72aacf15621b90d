import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import FIXTURES
from workbench.rknn.snapshot import ERROR_COLUMNS, parse_error_analysis, parse_name_map

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


# Measured on rknn-toolkit2 2.5.0 (synthetic transformer-neck model): every value has 5 decimals,
# columns are `{cos:<8}| {euc:<10}` after a name column padded to the longest name + 5.
TOOLKIT_250 = """
layer_name                          simulator_error
                                entire              single
                             cos      euc        cos      euc
-------------------------------------------------------------------
[Input] x                  1.00000 | 0.00000   1.00000 | 0.00000
[Conv] res_out-rs          0.99966 | 1.11683   0.99992 | 0.53634
[exNorm] norm#1            0.99929 | 1.08750   0.99993 | 0.34916
"""


def test_wide_values_run_together():
    """A euc wider than its column runs into the next cos: split by the 5 decimals."""
    text = (
        TOOLKIT_250
        + "[Conv] wide               0.99822 | 850.779910.99969 | 1.23456\n"
        + "[Conv] wider              0.99001 | 1111.028440.99991 | 12.50000\n"
        + "[Sigmoid] odd             f_zero | q_nan      -0.50000 | rt_inf\n"
    )
    rows = {r.name: r for r in parse_error_analysis(text)}
    assert rows["res_out-rs"].values["single_euc"] == 0.53634
    assert rows["wide"].values == {
        **dict.fromkeys(
            ["runtime_entire_cos", "runtime_entire_euc", "runtime_single_sim_cos", "runtime_single_sim_euc"]
        ),
        "entire_cos": 0.99822,
        "entire_euc": 850.77991,
        "single_cos": 0.99969,
        "single_euc": 1.23456,
    }
    assert (rows["wider"].values["entire_euc"], rows["wider"].values["single_cos"]) == (1111.02844, 0.99991)
    odd = rows["odd"]
    assert odd.flags == ["f_zero", "q_nan", "rt_inf"] and odd.values["single_cos"] == -0.5
    assert all(math.isnan(odd.values[c]) for c in ("entire_cos", "entire_euc", "single_euc"))


def test_misread_cosine_and_unsplittable_runs_are_flagged():
    rows = parse_error_analysis("[Conv] a   48.90000 | 1.00000\n[Conv] b   0.9|9 | 1.2.3\n")
    assert math.isnan(rows[0].values["entire_cos"]) and rows[0].flags == ["entire_cos:out-of-range"]
    assert rows[1].flags == ["unparsed"] and all(math.isnan(v) for v in rows[1].values.values())


TOKENS = ("q_nan", "rt_inf", "f_zero", "q_inf", "rt_nan")
_names = st.text(
    st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="/._-:#@"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.isascii())
_ops = st.sampled_from(["Conv", "exSwish", "Add", "exNorm", "exDataConvert", "Concat", "MatMul"])
_cos = st.one_of(st.floats(-1, 1), st.sampled_from(TOKENS))
_euc = st.one_of(st.floats(0, 99999), st.sampled_from(TOKENS))
_groups = st.lists(st.tuples(_cos, _euc), min_size=0, max_size=4)


def _render(rows, euc_width: int) -> str:
    """An error_analysis table as the toolkit lays it out (2.5.0 widths; euc width 9 or 10)."""
    labels = [f"[{op}] {name}" for op, name, _ in rows]
    width = max(map(len, labels)) + 5
    lines = ["layer_name   simulator_error", "-" * 40]
    for label, (_, _, groups) in zip(labels, rows):
        cells = "".join(f"{_fmt(c):<8}| {_fmt(e):<{euc_width}}" for c, e in groups)
        lines.append(f"{label:<{width}}{cells}")
    return "\n".join(lines)


def _fmt(value) -> str:
    return value if isinstance(value, str) else f"{value:.5f}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ops, _names, _groups), min_size=1, max_size=8), st.sampled_from([9, 10]))
def test_parser_round_trips_generated_tables(rows, euc_width):
    parsed = parse_error_analysis(_render(rows, euc_width))
    assert [(r.op_type, r.name) for r in parsed] == [(op, name) for op, name, _ in rows]
    for row, (_, _, groups) in zip(parsed, rows):
        printed = [v for pair in groups for v in pair]
        assert row.has_dump == bool(printed)
        for column, value in zip(ERROR_COLUMNS, printed):
            got = row.values[column]
            if isinstance(value, str):
                assert math.isnan(got) and value in row.flags
            else:
                assert got == float(_fmt(value))  # round-trips at the printed precision
        assert all(row.values[c] is None for c in ERROR_COLUMNS[len(printed) :])
        for column in ERROR_COLUMNS[::2]:
            cos = row.values[column]
            assert cos is None or -1 <= cos <= 1 or (math.isnan(cos) and row.flags)
