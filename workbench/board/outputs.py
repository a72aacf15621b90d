"""Parsers for what the toolkit prints about a real board: get_sdk_version(), eval_perf()
and eval_memory() (formats as published in the toolkit's npu_device_test example)."""

from __future__ import annotations

import re

import pandas as pd

_PERF_ROW = re.compile(
    r"^(?P<id>\d+)\s+(?P<op_type>\S+)\s+(?P<dtype>\S+)\s+(?P<target>NPU|CPU)\s+(?P<inputs>\S+)\s+"
    r"(?P<output>\S+)\s+(?P<ddr_cycles>\d+)\s+(?P<npu_cycles>\d+)\s+(?P<total_cycles>\d+)\s+"
    r"(?P<time_us>\d+)\s+(?P<mac_usage>\S+)\s+(?P<workload>\S+ - Up:\S+)\s+(?P<tasks>\d+)\s+"
    r"(?P<luts>\d+)\s+(?P<rw_kb>\S+)(?:\s+(?P<full_name>\S+))?$"
)


def parse_sdk_version(text: str) -> dict[str, str]:
    """{"api": ..., "rknn_server": ..., "librknnrt": ...} from get_sdk_version()'s text."""
    found = {}
    for key, pattern in (
        ("api", r"librknn_api version:\s*(\S+)"),
        ("rknn_server", r"rknn_server:\s*(\S+)"),
        ("librknnrt", r"rknnrt:\s*(\S+)"),
    ):
        match = re.search(pattern, text)
        if match:
            found[key] = match.group(1)
    return found


def parse_eval_perf(text: str) -> tuple[pd.DataFrame, int | None]:
    """Per-layer rows of eval_perf() (time in µs per layer) and the total time in µs."""
    rows = [m.groupdict() for m in (_PERF_ROW.match(line.strip()) for line in text.splitlines()) if m]
    table = pd.DataFrame(rows)
    for col in ("id", "ddr_cycles", "npu_cycles", "total_cycles", "time_us", "tasks", "luts"):
        if col in table:
            table[col] = table[col].astype(int)
    if "rw_kb" in table:
        table["rw_kb"] = pd.to_numeric(table["rw_kb"], errors="coerce")
    total = re.search(r"Total Operator Elapsed Time\(us\):\s*(\d+)", text)
    return table, int(total.group(1)) if total else None


def parse_eval_memory(text: str) -> dict[str, float]:
    """{"total_mib": ..., "model_mib": ...} from eval_memory()'s text."""
    out = {}
    total = re.search(r"Total Memory:\s*([\d.]+)\s*MiB", text)
    model = re.search(r"current model size is:\s*([\d.]+)\s*MiB", text)
    if total:
        out["total_mib"] = float(total.group(1))
    if model:
        out["model_mib"] = float(model.group(1))
    return out
