"""From answers to layers: which layers are worse on the samples whose answer flips.

The two halves of the workbench meet here. Per-layer divergence is measured on the flipped
samples and on samples that keep their answer; a layer whose SQNR is much lower where the
answer changes is a better suspect than one that is equally bad everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.datasets import CalibrationSet
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.task.evaluate import TaskResult


def contrast_samples(answers: TaskResult, backend: str = "simulator", kept: int = 8) -> CalibrationSet:
    """The flipped samples of ``backend`` followed by up to ``kept`` samples that keep their
    answer (the first ones), as a set to measure per-layer divergence on."""
    table = answers.table[(answers.table.backend == backend) & (answers.table.status == "ok")]
    flipped = table[table.agree == False]  # noqa: E712
    if flipped.empty:
        raise WorkbenchError(f"No answer of {backend} differs from float: there is no flip to explain.")
    same = table[table.agree == True].head(kept)  # noqa: E712
    return CalibrationSet([(Path(p),) for p in [*flipped.path, *same.path]], None)


def flip_layers(answers: TaskResult, divergence: Divergence, backend: str = "simulator") -> pd.DataFrame:
    """Per layer: mean SQNR on the flipped samples and on the kept ones, ranked by how much
    worse the layer is where the answer changes (``gap_db`` = kept - flipped, largest first).

    ``divergence`` must cover samples of ``answers`` (matched by file path), e.g. a run on
    :func:`contrast_samples`; only single-input samples are matched.
    """
    flips = _paths(answers, backend, agree=False)
    keeps = _paths(answers, backend, agree=True)
    sample_paths = {i: str(row[0]) for i, row in enumerate(divergence.meta.get("samples", []))}
    rows = divergence.table[(divergence.table.backend == backend) & (divergence.table.status == "compared")]
    rows = rows.assign(group=rows["sample"].map(sample_paths).map(lambda p: _group(p, flips, keeps)))
    if not (rows.group == "flipped").any() or not (rows.group == "kept").any():
        raise WorkbenchError(
            "The per-layer run holds no flipped sample or no kept sample of these answers: "
            "measure it on contrast_samples(answers) (the flipped samples and some kept ones)."
        )
    table = rows.pivot_table(
        index=["index", "layer", "op_type"], columns="group", values="sqnr_db", aggfunc="mean"
    )
    table = table.rename(columns={"flipped": "sqnr_db_flipped", "kept": "sqnr_db_kept"}).reset_index()
    table["gap_db"] = table.sqnr_db_kept - table.sqnr_db_flipped
    table.columns.name = None
    return table.sort_values("gap_db", ascending=False, ignore_index=True)[
        ["layer", "op_type", "gap_db", "sqnr_db_flipped", "sqnr_db_kept", "index"]
    ]


def explain_flips(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    answers: TaskResult,
    backend: str = "simulator",
    *,
    kept: int = 8,
    progress: bool = True,
) -> tuple[pd.DataFrame, Divergence]:
    """Measure per-layer divergence on the flipped and some kept samples (simulator, mark-all)
    and rank the layers by :func:`flip_layers`. Returns the ranking and the per-layer run."""
    samples = contrast_samples(answers, backend, kept)
    divergence = compute_divergence(model, config, calibration, samples, progress=progress)
    return flip_layers(answers, divergence, backend), divergence


def _paths(answers: TaskResult, backend: str, agree: bool) -> set[str]:
    t = answers.table
    return set(t[(t.backend == backend) & (t.status == "ok") & (t.agree == agree)].path)


def _group(path, flips: set[str], keeps: set[str]):
    if path in flips:
        return "flipped"
    return "kept" if path in keeps else np.nan
