"""Parsers for the tables ``RKNN(verbose=True).build()`` prints into its log."""

from __future__ import annotations

import re

import pandas as pd

from workbench.rknn.session import clean_log

_PREFIX = re.compile(r"^[DIWE] RKNN: \[[^\]]*\] ?")
_ROW = re.compile(
    r"^(?P<id>\d+)\s+(?P<op_type>\S+)\s+(?P<dtype>\S+)\s+(?P<target>NPU|CPU)\s+(?P<inputs>\S+)\s+"
    r"(?P<output>\S+)\s+(?P<cycles_ddr>\d+)/(?P<cycles_npu>\d+)/(?P<cycles_total>\d+)\s+(?P<rw_kb>\S+)\s+(?P<full_name>\S+)"
)
LAYER_COLUMNS = (
    "id",
    "op_type",
    "dtype",
    "target",
    "inputs",
    "output",
    "cycles_ddr",
    "cycles_npu",
    "cycles_total",
    "rw_kb",
    "full_name",
    "onnx_node",
)


def parse_layer_table(log: str) -> pd.DataFrame:
    """The last Network Layer Information Table of a build log, one row per layer."""
    lines = [_PREFIX.sub("", line) for line in clean_log(log).splitlines()]
    starts = [i for i, line in enumerate(lines) if "Network Layer Information Table" in line]
    rows = []
    for line in lines[starts[-1] :] if starts else []:
        match = _ROW.match(line.strip())
        if match:
            rows.append(match.groupdict())
        elif rows and line.startswith("---"):
            break  # the table's closing rule
    table = pd.DataFrame(rows, columns=[c for c in LAYER_COLUMNS if c != "onnx_node"])
    for col in ("id", "cycles_ddr", "cycles_npu", "cycles_total"):
        table[col] = table[col].astype(int)
    table["rw_kb"] = pd.to_numeric(table["rw_kb"], errors="coerce")
    return table


_FEATURE_ROW = re.compile(r"^\d+\s+\S+\s+(?P<tensor>\S+)\s+\S+\s+\S+\s+\(")


def parse_feature_tensors(log: str) -> list[str]:
    """Tensor names of the last Feature Tensor Information Table, in order, once each.

    These tensors live in the NPU's feature memory between layers: they are exactly the
    layer boundaries of the compiled graph (a fused layer's inner tensors are absent).
    """
    lines = [_PREFIX.sub("", line) for line in clean_log(log).splitlines()]
    starts = [i for i, line in enumerate(lines) if "Feature Tensor Information Table" in line]
    names: list[str] = []
    for line in lines[starts[-1] :] if starts else []:
        match = _FEATURE_ROW.match(line.strip())
        if match and match["tensor"] not in names:
            names.append(match["tensor"])
        elif names and line.startswith("---"):
            break
    return names


def build_facts(log: str) -> dict:
    """What a verbose build's layer table says about the compiled model: its own layers
    (the toolkit's ``*Operator`` bookkeeping rows left out), those on the CPU, those in
    float16 and the estimated cycles (the ``build`` command prints these)."""
    layers = parse_layer_table(log)
    own = layers[~layers.op_type.str.endswith("Operator")]
    return {
        "layers": len(own),
        "cpu_layers": own[own.target == "CPU"][["id", "op_type", "full_name"]].to_dict("records"),
        "float16_layers": int((own.dtype == "FLOAT16").sum()),
        "cycles_total": int(layers.cycles_total.sum()),
    }
