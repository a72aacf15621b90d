"""Parsers for the toolkit's board outputs, on text published from a real rk3588."""

import pandas as pd

from tests.conftest import FIXTURES
from workbench.board.outputs import parse_eval_memory, parse_eval_perf, parse_sdk_version

TEXT = (FIXTURES / "rknn_board_outputs_sample.txt").read_text()


def test_sdk_version():
    assert parse_sdk_version(TEXT) == {"api": "1.5.2", "rknn_server": "1.5.2", "librknnrt": "1.5.3b9"}


def test_eval_perf():
    table, total = parse_eval_perf(TEXT)
    assert total == 14147
    first, conv = table.iloc[0], table.iloc[1]
    assert (first.op_type, first.target, first.time_us, first.full_name) == (
        "InputOperator",
        "CPU",
        7,
        "InputOperator:data",
    )
    assert (conv.op_type, conv.npu_cycles, conv.time_us, conv.rw_kb) == ("ConvRelu", 10584, 428, 543.75)
    assert pd.isna(conv.full_name)  # the published sample cuts that column


def test_eval_memory():
    assert parse_eval_memory(TEXT) == {"total_mib": 5.66, "model_mib": 4.08}
