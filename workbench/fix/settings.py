"""The toolkit's own knobs, swept in one call and judged by the answers: calibration
algorithm (normal / kl_divergence / mmse, as the toolkit computes them) x quantization
method (per channel / per layer). One build per combination; the cheapest remedy to try
before float16 layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
from tqdm.auto import tqdm

from workbench.datasets import CalibrationSet
from workbench.errors import ToolkitError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.task.evaluate import evaluate
from workbench.task.labels import LabelledSet

ALGORITHMS = ("normal", "kl_divergence", "mmse")
METHODS = ("channel", "layer")


def sweep_settings(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    data: LabelledSet | CalibrationSet,
    adapter,
    *,
    algorithms: Sequence[str] = ALGORITHMS,
    methods: Sequence[str] = METHODS,
    progress: bool = True,
) -> pd.DataFrame:
    """One row per (algorithm, method): the int8 answers' agreement with float, the flips,
    the accuracy (labelled data), and whether it is ``config``'s own setting; best first.
    A combination the toolkit refuses is a row with its ``error``, not the end of the sweep.
    Each combination is cached like any evaluation."""
    rows = []
    combos = [(a, m) for a in algorithms for m in methods]
    for algorithm, method in tqdm(combos, desc="toolkit settings", disable=not progress):
        variant = replace(config, quantized_algorithm=algorithm, quantized_method=method)
        row = {
            "algorithm": algorithm,
            "method": method,
            "current": (algorithm, method) == (config.quantized_algorithm, config.quantized_method),
            "error": "",
        }
        try:
            answers = evaluate(model, variant, calibration, data, adapter, progress=False)
        except ToolkitError as err:
            rows.append({**row, "error": str(err).splitlines()[0]})
            continue
        s = answers.summary().set_index("backend").loc["simulator"]
        rows.append({**row, "agreement": s.agreement, "flips": int(s.flips), "accuracy": s.accuracy})
    table = pd.DataFrame(rows)
    return table.sort_values(
        ["agreement", "current"], ascending=[False, False], na_position="last", ignore_index=True
    )


def settings_advice(table: pd.DataFrame) -> str:
    """One line: keep the current setting, or switch to the best one with its measured effect."""
    current = table[table.current]
    best = table.dropna(subset=["agreement"]).iloc[0]
    if current.empty or pd.isna(current.agreement.iloc[0]):
        return f"best setting: {best.algorithm} / {best.method} (agreement {best.agreement:.0%})"
    now = current.iloc[0]
    if best.agreement <= now.agreement:
        return (
            f"keep {now.algorithm} / {now.method}: no other algorithm or method agrees more with "
            f"float ({now.agreement:.0%})"
        )
    return (
        f"switch to {best.algorithm} / {best.method}: agreement with float {now.agreement:.0%} -> "
        f"{best.agreement:.0%} ({int(now.flips)} -> {int(best.flips)} flips), measured"
    )
