"""Before/after: the same per-layer divergence run for the int8, hybrid and auto_hybrid
builds of one model, so the fix can be seen (and its cost weighed) side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd

from workbench.compare.divergence import compute_divergence
from workbench.compare.metrics import SQNR_OK_DB
from workbench.compare.result import Divergence
from workbench.rknn.config import BuildConfig
from workbench.runners.board_adb import AdbBoardRunner


def variant_configs(
    config: BuildConfig, float_layers: Sequence[str] = (), auto_hybrid_cos_thresh: float | None = 0.98
) -> dict[str, BuildConfig]:
    """int8 (``config`` as given), hybrid (``float_layers`` in float16, if any) and the
    toolkit's auto_hybrid (unless ``auto_hybrid_cos_thresh`` is None), by label."""
    plain = replace(config, float_layers=(), auto_hybrid=False)
    variants = {plain.quantized_dtype: plain}
    if float_layers:
        variants["hybrid"] = replace(plain, float_layers=tuple(float_layers))
    if auto_hybrid_cos_thresh is not None:
        variants["auto_hybrid"] = replace(
            plain, auto_hybrid=True, auto_hybrid_cos_thresh=auto_hybrid_cos_thresh
        )
    return variants


def compare_variants(
    model,
    configs: Mapping[str, BuildConfig],
    calibration,
    samples=None,
    *,
    mode: str = "mark-all",
    progress: bool = True,
) -> dict[str, Divergence]:
    """One divergence run (float vs simulator, cached like any run) per labelled config."""
    return {
        label: compute_divergence(model, config, calibration, samples, backend=mode, progress=progress)
        for label, config in configs.items()
    }


def variants_table(runs: Mapping[str, Divergence], outputs: Sequence[str]) -> pd.DataFrame:
    """Per variant: the model outputs' worst mean SQNR and cosine, the worst layer, how
    many layers fall below 20 dB, and the float16 layer count. ``outputs``: the model's
    output names (``list(model.outputs)``)."""
    rows = []
    for label, run in runs.items():
        summary = run.summary()
        at_outputs = summary[summary.layer.isin(list(outputs))]
        worst = summary.nsmallest(1, "sqnr_db_mean")
        config = BuildConfig.from_dict(run.meta["config"])
        rows.append(
            {
                "variant": label,
                "output_sqnr_db": at_outputs.sqnr_db_mean.min() if len(at_outputs) else float("nan"),
                "output_cosine": at_outputs.cosine_mean.min() if len(at_outputs) else float("nan"),
                "worst_layer": worst.layer.iloc[0] if len(worst) else None,
                "worst_sqnr_db": worst.sqnr_db_mean.iloc[0] if len(worst) else float("nan"),
                "layers_below_20db": int((summary.sqnr_db_mean < SQNR_OK_DB).sum()),
                "float16_layers": len(config.float_layers) if not config.auto_hybrid else "toolkit's choice",
            }
        )
    return pd.DataFrame(rows)


def board_costs(model, configs: Mapping[str, BuildConfig], calibration, device_id: str) -> pd.DataFrame:
    """Each config built and timed on a real board with ``eval_perf`` (total µs). Needs a
    board on adb with rknn_server running: ``rknn-workbench board doctor`` checks that."""

    rows = []
    for label, config in configs.items():
        with AdbBoardRunner(model, config, calibration, device_id, mode="snapshot") as runner:
            _, total_us = runner.perf()
        rows.append({"variant": label, "board_time_us": total_us})
    return pd.DataFrame(rows)
