"""Calibration insight: what the float activations look like over the calibration set,
next to the quantization parameters the toolkit chose for them.

A tensor loses accuracy in int8 in two ways: values outside the chosen [min, max] are
clipped, or the values it really takes cover only a few of the 256 levels ("crushed",
typically when a few outliers stretch the range). Both are computed per tensor here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from workbench.rknn.names import base_name
from workbench.rknn.session import ToolkitSession
from workbench.runners.float import FloatRunner

#: Fewer int8 levels than this across the bulk (0.1-99.9 %) of a tensor's values is "crushed".
CRUSHED_LEVELS = 16


@dataclass
class ActivationStats:
    """Per-tensor float statistics over a calibration set, plus histograms."""

    table: pd.DataFrame  #: tensor, index, op_type, min, max, p0_1, p99_9, mean, std, zero_share
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  #: edges, counts


def activation_stats(
    model, calibration, preprocess, *, bins: int = 128, progress: bool = True
) -> ActivationStats:
    """Two passes of the float model over ``calibration``: ranges, then histograms over them.

    Memory stays at one sample's tensors plus ``bins`` counts per tensor.
    """

    runner = FloatRunner(model, preprocess)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    moments: dict[str, np.ndarray] = {}  # count, sum, sum of squares, zeros
    for row in tqdm(calibration.rows, desc="activation ranges", disable=not progress):
        for name, value in runner.run(row).items():
            v = np.asarray(value, np.float64).ravel()
            if v.size == 0 or not np.issubdtype(np.asarray(value).dtype, np.floating):
                continue
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
            m = np.array([v.size, v.sum(), (v * v).sum(), (v == 0).sum()])
            moments[name] = moments.get(name, 0) + m
    hists = {n: np.zeros(bins, np.int64) for n in lo}
    edges = {n: np.linspace(lo[n], hi[n] if hi[n] > lo[n] else lo[n] + 1e-6, bins + 1) for n in lo}
    for row in tqdm(calibration.rows, desc="activation histograms", disable=not progress):
        for name, value in runner.run(row).items():
            if name in hists:
                hists[name] += np.histogram(np.asarray(value).ravel(), edges[name])[0]
    info = {t.name: t for t in model.tensors}
    rows = []
    for name in lo:
        n, s1, s2, zeros = moments[name]
        mean = s1 / n
        rows.append(
            {
                "tensor": name,
                "index": info[name].index,
                "op_type": info[name].op_type or "Input",
                "min": lo[name],
                "max": hi[name],
                "p0_1": _percentile(edges[name], hists[name], 0.001),
                "p99_9": _percentile(edges[name], hists[name], 0.999),
                "mean": mean,
                "std": float(np.sqrt(max(s2 / n - mean * mean, 0.0))),
                "zero_share": zeros / n,
            }
        )
    table = pd.DataFrame(rows).sort_values("index", ignore_index=True)
    return ActivationStats(table, {n: (edges[n], hists[n]) for n in lo})


def _percentile(edges: np.ndarray, counts: np.ndarray, q: float) -> float:
    cdf = np.cumsum(counts) / max(counts.sum(), 1)
    return float(edges[1:][np.searchsorted(cdf, q)]) if counts.sum() else float(edges[0])


def toolkit_quant_params(model, config, calibration, workdir: str | Path | None = None) -> pd.DataFrame:
    """The quantization parameters the toolkit chooses for ``config`` (its
    ``hybrid_quantization_step1`` .quantization.cfg), one row per quantized tensor."""

    with ToolkitSession(workdir) as session:
        result, _ = session.call(
            "hybrid_step1",
            model_path=str(model.save(session.workdir / "model.onnx")),
            config=config.toolkit_kwargs(model.inputs),
            dataset=str(calibration.write_list(session.workdir / "dataset.txt")),
        )
        cfg = yaml.safe_load(Path(result["cfg"]).read_text())
    known = {t.name for t in model.tensors}
    rows = []
    for name, p in (cfg.get("quantize_parameters") or {}).items():
        if not p.get("scale"):  # float tensors (model inputs/outputs before conversion)
            continue
        rows.append(
            {
                "rknn_tensor": name,
                "tensor": base_name(name, known),
                "dtype": p.get("dtype"),
                "qmethod": p.get("qmethod"),
                "min": min(p["min"]),
                "max": max(p["max"]),
                "scale": float(np.mean(p["scale"])),
                "zero_point": float(np.mean(p["zero_point"])),
                "ori_min": min(p["ori_min"]),
                "ori_max": max(p["ori_max"]),
            }
        )
    return pd.DataFrame(rows)


def calibration_insight(stats: ActivationStats, params: pd.DataFrame) -> pd.DataFrame:
    """Float ranges next to the toolkit's quantization, per tensor, in topological order.

    ``clipped_share``: share of calibration values outside the quantized [min, max].
    ``levels``: int8 levels spanned by the bulk (0.1-99.9 %) of the values; ``crushed``
    when below CRUSHED_LEVELS.
    """
    params = params.dropna(subset=["tensor"]).drop_duplicates("tensor")
    merged = stats.table.merge(params, on="tensor", how="inner", suffixes=("", "_q"))
    clipped, levels = [], []
    for r in merged.itertuples():
        edges, counts = stats.histograms[r.tensor]
        centres = (edges[:-1] + edges[1:]) / 2
        outside = counts[(centres < r.min_q) | (centres > r.max_q)].sum()
        clipped.append(outside / max(counts.sum(), 1))
        bulk = min(r.p99_9, r.max_q) - max(r.p0_1, r.min_q)
        levels.append(max(bulk, 0.0) / r.scale if r.scale > 0 else 0.0)
    merged["clipped_share"] = clipped
    merged["levels"] = levels
    merged["crushed"] = merged["levels"] < CRUSHED_LEVELS
    columns = [
        "index",
        "tensor",
        "op_type",
        "min",
        "max",
        "p0_1",
        "p99_9",
        "min_q",
        "max_q",
        "scale",
        "zero_point",
        "dtype",
        "clipped_share",
        "levels",
        "crushed",
    ]
    return merged[columns].sort_values("index", ignore_index=True)
