"""The Divergence result: per-layer error of a quantized backend against the float model.

A tidy table, one row per (ONNX tensor, sample, backend), in topological order; plots and
reports are pure functions of it. It saves to a run folder (parquet + json), written
atomically so a failed or interrupted save never damages an earlier run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.compare.align import align
from workbench.compare.metrics import METRICS, tensor_metrics
from workbench.errors import WorkbenchError

COLUMNS = (
    "index",
    "layer",
    "op_type",
    "rknn_layer",
    "rknn_op",
    "sample",
    "backend",
    "status",
    *METRICS,
    "flag",
    "toolkit_entire_cos",
    "toolkit_single_cos",
)


@dataclass
class Divergence:
    """Per-layer divergence table plus what produced it (model, config, samples)."""

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    def summary(self, backend: str = "simulator") -> pd.DataFrame:
        """One row per compared layer, over all samples: mean and worst cosine and SQNR,
        the 5th percentile of SQNR and the toolkit's own single-layer cosine."""
        rows = self.table[(self.table.backend == backend) & (self.table.status == "compared")]
        grouped = rows.groupby(["index", "layer", "op_type", "rknn_layer"], sort=True)
        out = grouped.agg(
            samples=("sample", "nunique"),
            cosine_mean=("cosine", "mean"),
            cosine_worst=("cosine", "min"),
            sqnr_db_mean=("sqnr_db", "mean"),
            sqnr_db_worst=("sqnr_db", "min"),
            sqnr_db_p5=("sqnr_db", lambda s: float(np.percentile(s, 5))),
            single_cos_mean=("toolkit_single_cos", "mean"),
        )
        return out.reset_index()

    def worst(self, n: int = 5, backend: str = "simulator") -> pd.DataFrame:
        """The ``n`` layers with the lowest mean SQNR."""
        return self.summary(backend).nsmallest(n, "sqnr_db_mean")

    def save(self, folder: str | Path) -> Path:
        """Write ``divergence.parquet`` and ``meta.json`` into ``folder``, atomically."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.table.to_parquet(tmp / "divergence.parquet", index=False)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
            _replace_dir(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Divergence:
        """Read a run folder written by :meth:`save`."""
        folder = Path(folder)
        table_path = folder / "divergence.parquet"
        if not table_path.is_file():
            raise WorkbenchError(
                f"{str(folder)!r} holds no saved divergence run (divergence.parquet missing)."
            )
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return cls(pd.read_parquet(table_path), meta)


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; the old content stays whole until the new is in place."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def layer_rows(
    tensors,
    reference: dict[str, np.ndarray],
    quantized: dict[str, np.ndarray],
    toolkit_rows: dict | None = None,
    *,
    sample: int,
    backend: str,
) -> list[dict]:
    """Rows of the Divergence table for one sample of one backend.

    Args:
        tensors: the model's TensorInfo list (topological order).
        reference: float tensors by ONNX name.
        quantized: the backend's tensors by its own layer names.
        toolkit_rows: the toolkit's ErrorRow per layer name, when it gave them.
    """
    toolkit_rows = toolkit_rows or {}
    # Layers the toolkit lists without numbers were fused into a neighbour: their dumps
    # (if any) do not stand for the ONNX tensor.
    usable = [name for name in quantized if name not in toolkit_rows or toolkit_rows[name].has_dump]
    mapping = align(usable, reference)
    rows = []
    for t in tensors:
        if t.name not in reference:
            continue
        layer = mapping.get(t.name)
        row = {
            "index": t.index,
            "layer": t.name,
            "op_type": t.op_type or "Input",
            "rknn_layer": layer,
            "rknn_op": None,
            "sample": sample,
            "backend": backend,
            "status": "fused",
            **dict.fromkeys(METRICS, np.nan),
            "flag": "",
            "toolkit_entire_cos": np.nan,
            "toolkit_single_cos": np.nan,
        }
        if layer is not None:
            ref = reference[t.name]
            row.update(tensor_metrics(ref, _like(quantized[layer], ref.shape)))
            row["status"] = "compared"
            err = toolkit_rows.get(layer)
            if err is not None:
                row["rknn_op"] = err.op_type
                row["toolkit_entire_cos"] = _nan(err.values.get("entire_cos"))
                row["toolkit_single_cos"] = _nan(err.values.get("single_cos"))
        rows.append(row)
    return rows


def _like(tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The backend tensor in the ONNX layout (the toolkit may dump 4-D tensors as NHWC)."""
    if tensor.shape == shape:
        return tensor
    if tensor.ndim == 4 and len(shape) == 4 and tensor.shape == (shape[0], shape[2], shape[3], shape[1]):
        return tensor.transpose(0, 3, 1, 2)
    return tensor.reshape(-1)


def _nan(value) -> float:
    return np.nan if value is None else float(value)


def compute_divergence(
    model,
    config,
    calibration,
    samples=None,
    *,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> Divergence:
    """Float (onnxruntime) vs simulator (rknn-toolkit2) per layer, over ``samples``.

    Args:
        model: OnnxModel to convert.
        config: BuildConfig (platform, quantization, preprocessing).
        calibration: CalibrationSet used to quantize.
        samples: CalibrationSet to compare on; the first 4 calibration samples by default.
        workdir: scratch folder for the toolkit (temporary by default).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    from workbench.runners.float import FloatRunner
    from workbench.runners.simulator import SimulatorRunner

    samples = samples if samples is not None else calibration.head(4)
    reference = FloatRunner(model, config.preprocess)
    rows: list[dict] = []
    with SimulatorRunner(model, config, calibration, workdir=workdir) as simulator:
        for i, row in enumerate(tqdm(samples.rows, desc="per-layer divergence", disable=not progress)):
            floats = reference.run(row)
            snap = simulator.analyse(row)
            errors = {e.name: e for e in snap.errors}
            rows += layer_rows(model.tensors, floats, snap.simulator, errors, sample=i, backend="simulator")
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.summary(),
        "config": config.to_dict(),
        "calibration": {"source": str(calibration.source), "size": len(calibration)},
        "samples": [[str(p) for p in r] for r in samples.rows],
        "toolkit_version": _toolkit_version(),
    }
    return Divergence(table, meta)


def _toolkit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rknn-toolkit2")
    except PackageNotFoundError:
        return "unknown"
