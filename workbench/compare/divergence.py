"""The Divergence result: per-layer error of a quantized backend against the float model.

A tidy table, one row per (ONNX tensor, sample, backend), in topological order; plots and
reports are pure functions of it. It saves to a run folder (parquet + json), written
atomically so a failed or interrupted save never damages an earlier run.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.compare.align import align
from workbench.compare.metrics import MAX_SQNR_DB, METRICS, tensor_metrics
from workbench.errors import WorkbenchError, WorkbenchWarning
from workbench.storage import folder_lock, recover, remove_folder, staged_files

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

    def first_divergence(
        self,
        threshold_db: float = 20.0,
        drop_db: float = 3.0,
        single_cos: float = 0.99,
        backend: str = "simulator",
    ) -> pd.DataFrame:
        """Label each compared layer: where error is made vs where it is only inherited.

        - "origin": the layer's own error is bad: the toolkit's single-layer cosine is
          below ``single_cos`` (snapshot mode), or its SQNR is below ``threshold_db`` while
          the worst compared layer feeding it was above (it crosses the line here), or
          more than ``drop_db`` above it;
        - "inherited": below ``threshold_db`` only because its inputs already were;
        - "ok".
        """
        summary = self.summary(backend)
        parents = self.meta.get("parents", {})
        sqnr = dict(zip(summary.layer, summary.sqnr_db_mean))
        upstream, verdicts = [], []
        for r in summary.itertuples():
            ups = [sqnr[p] for p in parents.get(r.layer, []) if p in sqnr]
            entering = min(ups) if ups else MAX_SQNR_DB
            upstream.append(entering)
            single_bad = not pd.isna(r.single_cos_mean) and r.single_cos_mean < single_cos
            below = r.sqnr_db_mean < threshold_db
            if single_bad or (below and (entering >= threshold_db or entering - r.sqnr_db_mean > drop_db)):
                verdicts.append("origin")
            elif r.sqnr_db_mean < threshold_db:
                verdicts.append("inherited")
            else:
                verdicts.append("ok")
        summary["upstream_sqnr_db"] = upstream
        summary["verdict"] = verdicts
        return summary

    def compare(self, other: Divergence, backend: str = "simulator") -> pd.DataFrame:
        """Per-layer mean SQNR and cosine of this run (``_a``) and ``other`` (``_b``), and the
        change b - a, on the layers both compared."""
        cols = ["index", "layer", "op_type", "sqnr_db_mean", "cosine_mean", "sqnr_db_worst"]
        a, b = self.summary(backend)[cols], other.summary(backend)[cols]
        both = a.merge(b, on=["index", "layer", "op_type"], suffixes=("_a", "_b"))
        both["sqnr_db_delta"] = both.sqnr_db_mean_b - both.sqnr_db_mean_a
        return both.sort_values("index", ignore_index=True)

    def save(self, folder: str | Path) -> Path:
        """Write ``divergence.parquet`` and ``meta.json`` into ``folder``, atomically.

        The folder must be new, empty or an earlier run; every other file and subfolder in
        it (a report, your notes or plots) is kept. A failed or interrupted save leaves the
        earlier run whole; concurrent saves of the same folder take turns (see storage.py).

        Raises:
            WorkbenchError: ``folder`` holds files but no saved run.
        """
        folder = Path(folder).resolve()
        if folder.exists() and not folder.is_dir():
            raise WorkbenchError(f"{str(folder)!r} is a file: save the run into a folder (new or empty).")
        with staged_files(folder) as stage:
            if folder.exists() and any(folder.iterdir()) and not (folder / _TABLE).is_file():
                raise WorkbenchError(
                    f"{str(folder)!r} is not empty and holds no saved run: save into a new or empty folder."
                )
            self.table.to_parquet(stage / _TABLE, index=False)
            (stage / _META).write_text(json.dumps(self.meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Divergence:
        """Read a run folder written by :meth:`save`.

        Raises:
            WorkbenchError: no run there, or its files are damaged (cut short, not parquet,
                not JSON).
        """
        folder = Path(folder).resolve()
        with folder_lock(folder):
            recover(folder)
            table_path, meta_path = folder / _TABLE, folder / _META
            if not table_path.is_file():
                raise WorkbenchError(
                    f"{str(folder)!r} holds no saved divergence run (divergence.parquet missing)."
                )
            try:
                table = pd.read_parquet(table_path)
                meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid and JSONDecodeError are ValueErrors
                raise WorkbenchError(
                    f"The run in {str(folder)!r} is damaged and cannot be read ({type(err).__name__}: "
                    f"{str(err)[:200]}). Run the comparison again to replace it."
                ) from None
        if not isinstance(meta, dict):
            raise WorkbenchError(
                f"The run in {str(folder)!r} is damaged: meta.json is not an object. Run the comparison "
                "again to replace it."
            )
        return cls(table, meta)


_TABLE, _META = "divergence.parquet", "meta.json"


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
            # no quantized counterpart: a graph input that was fed, not computed, or a
            # tensor fused inside an RKNN layer
            "status": "fused" if t.producer else "input",
            **dict.fromkeys(METRICS, np.nan),
            "flag": "",
            "toolkit_entire_cos": np.nan,
            "toolkit_single_cos": np.nan,
        }
        if layer is not None:
            ref = reference[t.name]
            test, layout = _like(quantized[layer], ref.shape)
            if layout == "unaligned":  # same size, axis order unknown: no honest comparison
                rows.append({**row, "status": "unaligned", "flag": f"shape {test.shape} vs {ref.shape}"})
                continue
            row.update(tensor_metrics(ref, test))
            row["flag"] = ",".join(f for f in (row["flag"], layout) if f)
            row["status"] = "compared"
            err = toolkit_rows.get(layer)
            if err is not None:
                row["rknn_op"] = err.op_type
                row["toolkit_entire_cos"] = _nan(err.values.get("entire_cos"))
                row["toolkit_single_cos"] = _nan(err.values.get("single_cos"))
        rows.append(row)
    return rows


def _like(tensor: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """The backend tensor in the ONNX layout, and a flag saying what was done.

    The toolkit dumps some tensors in its own axis order (e.g. (4,16,1,2100) for an ONNX
    (1,16,4,2100)); when exactly one axis permutation gives the ONNX shape, it is used (for
    ambiguous square maps, NHWC -> NCHW); otherwise the layer is "unaligned", not compared.
    """
    if tensor.shape == shape:
        return tensor, ""
    if tensor.ndim == len(shape):
        perms = [
            p
            for p in itertools.permutations(range(tensor.ndim))
            if tuple(tensor.shape[i] for i in p) == shape
        ]
        if len(perms) == 1:
            return tensor.transpose(perms[0]), "transposed"
        if (0, 3, 1, 2) in perms:  # ambiguous (square maps): NHWC is the toolkit's other layout
            return tensor.transpose(0, 3, 1, 2), "transposed"
        return tensor, "unaligned"
    return tensor.reshape(-1), "reshaped"  # flat text dumps and merged axes keep NCHW order


def _nan(value) -> float:
    return np.nan if value is None else float(value)


MODES = ("mark-all", "snapshot")


def compute_divergence(
    model,
    config,
    calibration,
    samples=None,
    *,
    mode: str = "mark-all",
    workdir: str | Path | None = None,
    cache: bool = True,
    progress: bool = True,
    on_sample=None,
) -> Divergence:
    """Float (onnxruntime) vs simulator (rknn-toolkit2) per layer, over ``samples``.

    Args:
        model: OnnxModel to convert.
        config: BuildConfig (platform, quantization, preprocessing).
        calibration: CalibrationSet used to quantize.
        samples: CalibrationSet to compare on; the first 4 calibration samples by default.
        mode: "mark-all" (layer boundaries as outputs, one inference per sample: fast,
            accumulated error) or "snapshot" (accuracy_analysis per sample: slower, adds
            the toolkit's single-layer error).
        workdir: scratch folder for the toolkit (temporary by default).
        cache: reuse the saved result of an identical earlier call (same model bytes,
            config, calibration and sample file contents, mode).
        progress: show a progress bar. ``on_sample(done, total)`` is called after each sample.

    Raises:
        ConfigError, DatasetError before any build; ToolkitError if the toolkit fails.
    """
    from tqdm.auto import tqdm

    from workbench.runners.float import FloatRunner
    from workbench.runners.markall import MarkAllRunner
    from workbench.runners.simulator import SimulatorRunner

    if mode not in MODES:
        raise WorkbenchError(f"Unknown mode {mode!r}: use one of {', '.join(MODES)}.")
    samples = samples if samples is not None else calibration.head(4)
    config.check_model(model)
    calibration.validate(model.inputs, config.preprocess)
    samples.validate(model.inputs, config.preprocess)
    key = run_key(model, config, calibration, samples, mode)
    cached = _cache_dir() / key
    if cache:
        hit = _cached_run(cached)
        if hit is not None:
            return hit

    reference = FloatRunner(model, config.preprocess)
    runner_cls = MarkAllRunner if mode == "mark-all" else SimulatorRunner
    rows: list[dict] = []
    with runner_cls(model, config, calibration, workdir=workdir) as quantized:
        bar = tqdm(samples.rows, desc=f"per-layer divergence ({mode})", disable=not progress)
        for i, row in enumerate(bar):
            floats = reference.run(row)
            if mode == "snapshot":
                snap = quantized.analyse(row)
                tensors, errors = snap.simulator, {e.name: e for e in snap.errors}
            else:
                tensors, errors = quantized.run(row), None
            rows += layer_rows(model.tensors, floats, tensors, errors, sample=i, backend="simulator")
            if on_sample:
                on_sample(i + 1, len(samples))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": key,
        "mode": mode,
        "model": model.summary(),
        "config": config.to_dict(),
        "calibration": {"source": str(calibration.source), "size": len(calibration)},
        "samples": [[str(p) for p in r] for r in samples.rows],
        "toolkit_version": _toolkit_version(),
        "parents": compared_parents(model, set(table.loc[table.status == "compared", "layer"])),
        "support": support_summary(model, config.target_platform),
    }
    result = Divergence(table, meta)
    if cache:
        result.save(cached)
    return result


def support_summary(model, platform: str) -> dict:
    """The static operator-support check, as plain data for the run's meta and report."""
    from workbench.support.static import static_check

    report = static_check(model, platform)
    problems = report.problems()[["node", "op_type", "status", "reason", "fix"]]
    return {"platform": platform, "counts": report.counts(), "problems": problems.to_dict("records")}


def _cached_run(folder: Path) -> Divergence | None:
    """The cached run in ``folder``, or None; a damaged entry (cut short, bad JSON) is
    deleted with a warning, so the caller rebuilds it instead of failing on it forever."""
    if not (folder / _TABLE).is_file():
        return None
    try:
        return Divergence.load(folder)
    except WorkbenchError as err:
        warnings.warn(f"Discarded a damaged cached run; rebuilding it. {err}", WorkbenchWarning, stacklevel=3)
        remove_folder(folder)
        return None


def run_key(model, config, calibration, samples, mode: str) -> str:
    """Content hash of everything a divergence run depends on, including the workbench's own
    code (an editable install keeps its version number while its code changes)."""
    h = hashlib.sha256()
    h.update(model.to_bytes())
    h.update(config.digest().encode())
    h.update(mode.encode())
    h.update(_toolkit_version().encode())
    h.update(_version("rknn-workbench").encode())  # a fixed workbench must not reuse old results
    h.update(code_digest().encode())
    for group in (calibration, samples):
        h.update(b"|")
        for row in group.rows:
            for path in row:
                h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()[:24]


@functools.cache
def code_digest() -> str:
    """sha256 of the workbench package's .py sources (computed once per process)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _cache_dir() -> Path:
    from workbench.datasets import cache_dir

    return cache_dir() / "runs"


def compared_parents(model, compared: set[str]) -> dict[str, list[str]]:
    """For each compared tensor, the nearest compared tensors upstream of it (walking
    through fused ones), so error can be told apart: made here, or inherited."""
    producers = {o: n for n in model.proto.graph.node for o in n.output}
    memo: dict[str, set[str]] = {}

    def upstream(tensor: str) -> set[str]:
        if tensor not in memo:
            node = producers.get(tensor)
            found: set[str] = set()
            for i in node.input if node is not None else []:
                if i in compared:
                    found.add(i)
                elif i in producers:
                    found |= upstream(i)
            memo[tensor] = found
        return memo[tensor]

    order = [t.name for t in model.tensors]
    return {t: sorted(upstream(t), key=order.index) for t in order if t in compared}


def _toolkit_version() -> str:
    return _version("rknn-toolkit2")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
