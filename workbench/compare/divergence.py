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

from workbench.compare.metrics import MAX_SQNR_DB, METRICS, tensor_metrics
from workbench.errors import WorkbenchError, WorkbenchWarning
from workbench.rknn.names import align, base_name
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

    @property
    def quantized_backend(self) -> str:
        """The run's quantized backend ("simulator", "emulator", ...): the default of every
        per-backend view (a board run's board rows are asked for by name)."""
        found = [
            b for b in dict.fromkeys(self.table.backend) if b != "float" and not str(b).startswith("board:")
        ]
        return found[0] if found else "simulator"

    def summary(self, backend: str | None = None) -> pd.DataFrame:
        """One row per compared layer, over all samples: mean and worst cosine and SQNR,
        the 5th percentile of SQNR and the toolkit's own single-layer cosine. Rows flagged
        :data:`MARKING_CHANGED` (measured on a marked model whose quantization differs from
        the plain one) are left out."""
        backend = backend or self.quantized_backend
        rows = self.table[(self.table.backend == backend) & (self.table.status == "compared")]
        # a Series mask: a plain empty list would select columns, not rows
        rows = rows[rows.flag.map(lambda flag: MARKING_CHANGED not in str(flag).split(",")).astype(bool)]
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

    def worst(self, n: int = 5, backend: str | None = None) -> pd.DataFrame:
        """The ``n`` layers with the lowest mean SQNR."""
        return self.summary(backend).nsmallest(n, "sqnr_db_mean")

    def first_divergence(
        self,
        threshold_db: float = 20.0,
        drop_db: float = 3.0,
        single_cos: float = 0.99,
        backend: str | None = None,
    ) -> pd.DataFrame:
        """Label each compared layer: where error is made vs where it is only inherited, and
        how much of the error each layer makes.

        Verdicts:
        - "origin": the layer's own error is bad. Where the toolkit gives the layer's
          single-layer cosine (snapshot mode; mark-all with ``single_layer=True``, on its
          first sample) that alone decides: below ``single_cos``. A saturating activation
          fused into a layer can hide that layer's error at its boundary, and a layer fed
          such an error can lose SQNR without making any, so a boundary SQNR drop is used
          only where there is no single-layer cosine: its SQNR is below ``threshold_db``
          while the worst compared layer feeding it was above (it crosses the line here), or
          more than ``drop_db`` above it;
        - "inherited": below ``threshold_db`` without being an origin;
        - "ok".

        Columns, most useful first: ``layer``, ``op_type``, ``verdict``, ``share``,
        ``sqnr_db_mean``, ``local_drop_db``, ``local_sqnr_db``, ``upstream_sqnr_db``,
        ``cosine_mean``, then the rest of :meth:`summary` (``single_cos_mean`` last: in
        mark-all mode it comes from the first sample only, and is empty without
        ``single_layer``). One row per compared layer, in topological order.

        - ``upstream_sqnr_db``: SQNR entering the layer (the worst compared layer feeding it,
          looking through layers left out of the summary; :data:`MAX_SQNR_DB` for the first
          layers).
        - ``local_drop_db``: ``upstream_sqnr_db - sqnr_db_mean`` (negative when error shrinks).
        - local noise: the error the layer adds, as noise power over signal power (nmse).
          From the toolkit's single-layer cosine where there is one (``1/cos^2 - 1``, the nmse
          of a tensor plus independent noise at that cosine), else from the drop: the
          layer's nmse minus the nmse entering it (``10^(-sqnr/10)``), at least 0.
          ``local_sqnr_db`` is the same as a SQNR (``-10 log10``, capped at MAX_SQNR_DB).
        - ``share``: the layer's local noise over the sum of local noise of every compared
          layer: its part of the error at the output, assuming relative noise reaches the
          output at the same level it was made (adding up, as independent noise does). A
          ranking, not an exact budget; 0 when no layer adds any error.
        """
        summary = self.summary(backend)
        parents = self.meta.get("parents", {})
        sqnr = dict(zip(summary.layer, summary.sqnr_db_mean))
        upstream, verdicts, local = [], [], []

        def entering_sqnr(layer: str, seen: set[str]) -> list[float]:
            # through parents left out of the summary (flagged) to the compared ones above them
            out = []
            for p in parents.get(layer, []):
                if p in sqnr:
                    out.append(sqnr[p])
                elif p not in seen:
                    seen.add(p)
                    out += entering_sqnr(p, seen)
            return out

        for r in summary.itertuples():
            ups = entering_sqnr(r.layer, set())
            entering = min(ups) if ups else MAX_SQNR_DB
            upstream.append(entering)
            local.append(_local_noise(r.sqnr_db_mean, entering, r.single_cos_mean))
            below = r.sqnr_db_mean < threshold_db
            if not pd.isna(r.single_cos_mean):  # local error measured: it alone decides
                origin = r.single_cos_mean < single_cos
            else:
                origin = below and (entering >= threshold_db or entering - r.sqnr_db_mean > drop_db)
            if origin:
                verdicts.append("origin")
            elif r.sqnr_db_mean < threshold_db:
                verdicts.append("inherited")
            else:
                verdicts.append("ok")
        noise = np.array(local, dtype=float)
        summary["upstream_sqnr_db"] = upstream
        summary["verdict"] = verdicts
        summary["local_drop_db"] = summary.upstream_sqnr_db - summary.sqnr_db_mean
        with np.errstate(divide="ignore"):
            summary["local_sqnr_db"] = np.minimum(-10 * np.log10(noise), MAX_SQNR_DB)
        summary["share"] = noise / noise.sum() if noise.sum() > 0 else 0.0
        first = ["layer", "op_type", "verdict", "share", "sqnr_db_mean", "local_drop_db", "local_sqnr_db"]
        first += ["upstream_sqnr_db", "cosine_mean"]
        rest = [c for c in summary.columns if c not in first and c != "single_cos_mean"]
        return summary[[*first, *rest, "single_cos_mean"]]

    def origins(self, n: int = 3, **kwargs) -> pd.DataFrame:
        """The ``n`` origin layers of :meth:`first_divergence` (same arguments) that make the
        most error, largest ``share`` first: where to look before the other origins."""
        table = self.first_divergence(**kwargs)
        return table[table.verdict == "origin"].sort_values("share", ascending=False).head(n)

    def compare(self, other: Divergence, backend: str | None = None) -> pd.DataFrame:
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
        if not folder.exists() and not any(folder.parent.glob(f".{folder.name}.*")):
            # nothing there, not even an interrupted save to finish: no lock file left behind
            raise WorkbenchError(
                f"{str(folder)!r} holds no saved divergence run (divergence.parquet missing)."
            )
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
    golden: dict[str, np.ndarray] | None = None,
    constants: set[str] | None = None,
) -> list[dict]:
    """Rows of the Divergence table for one sample of one backend.

    Args:
        tensors: the model's TensorInfo list (topological order).
        reference: float tensors by ONNX name.
        quantized: the backend's tensors by its own layer names.
        toolkit_rows: the toolkit's ErrorRow per layer name, when it gave them.
        golden: the toolkit's own float tensors by its layer names (snapshot mode): the
            layout (squeeze/unsqueeze + axis order) under which a layer's golden dump equals
            the float tensor is the one its quantized tensor is read in; a layer for which
            none does is "unaligned", never compared. Without it, only a layout the shapes
            alone make unique is used (see ``_layout``).
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
            # no quantized counterpart: a graph input that was fed, not computed, a constant
            # the toolkit folded away, or a tensor fused inside an RKNN layer
            "status": _unmatched_status(t, constants or set()),
            **dict.fromkeys(METRICS, np.nan),
            "flag": "",
            "toolkit_entire_cos": np.nan,
            "toolkit_single_cos": np.nan,
        }
        if layer is not None:
            err = toolkit_rows.get(layer)
            if err is not None:
                row["rknn_op"] = err.op_type
                row["toolkit_entire_cos"] = _nan(err.values.get("entire_cos"))
                row["toolkit_single_cos"] = _nan(err.values.get("single_cos"))
            ref = reference[t.name]
            layout = _layout(quantized[layer].shape, ref, (golden or {}).get(layer))
            if isinstance(layout, str):  # no mapping that can be trusted: no number either
                rows.append({**row, "status": "unaligned", "flag": layout})
                continue
            test, how = _apply(quantized[layer], layout, ref.shape)
            row.update(tensor_metrics(ref, test))
            row["flag"] = ",".join(f for f in (row["flag"], how) if f)
            row["status"] = "compared"
        rows.append(row)
    extra = _unmapped_rows(toolkit_rows, rows, sample=sample, backend=backend)
    return sorted(rows + extra, key=lambda r: r["index"]) if extra else rows


def _unmatched_status(t, constants: set[str]) -> str:
    if t.producer is None:
        return "input"
    return "constant" if t.op_type == "Constant" or t.name in constants else "fused"


def _unmapped_rows(toolkit_rows: dict, rows: list[dict], *, sample: int, backend: str) -> list[dict]:
    """Rows for the toolkit's layers that no ONNX row stands for, placed after their nearest
    mapped predecessor in the toolkit's (execution) order."""
    at = {r["rknn_layer"]: r["index"] for r in rows if r["rknn_layer"] is not None}
    fused = {r["layer"] for r in rows if r["status"] == "fused"}
    groups: dict[float | None, list] = {}
    previous = None
    for name, err in toolkit_rows.items():
        if name in at:
            previous = at[name]
        elif err.has_dump or base_name(name, fused) is None:  # no-dump layers of fused tensors are listed
            groups.setdefault(previous, []).append(err)
    out = []
    last = max((r["index"] for r in rows), default=-1)
    for previous, errs in groups.items():
        for k, err in enumerate(errs, 1):
            index = last + k if previous is None else previous + k / (len(errs) + 1)
            out.append(
                {
                    "index": index,
                    "layer": err.name,
                    "op_type": err.op_type,
                    "rknn_layer": err.name,
                    "rknn_op": err.op_type,
                    "sample": sample,
                    "backend": backend,
                    "status": "unmapped",
                    **dict.fromkeys(METRICS, np.nan),
                    "flag": ",".join(err.flags),
                    "toolkit_entire_cos": _nan(err.values.get("entire_cos")),
                    "toolkit_single_cos": _nan(err.values.get("single_cos")),
                }
            )
    return out


def constant_tensors(model) -> set[str]:
    """Tensors of ``model`` the toolkit folds to constants: outputs of Constant nodes, Shape
    of a tensor whose shape is known, and outputs of nodes fed by constants and initializers
    only (e.g. the Shape -> Gather -> Concat chains that feed a Reshape)."""
    shapes = {t.name: t.shape for t in model.tensors}
    known = {i.name for i in model.proto.graph.initializer}
    for node in model.proto.graph.node:  # topological order
        inputs = [i for i in node.input if i]
        if (
            node.op_type == "Constant"
            or (node.op_type in ("Shape", "Size") and shapes.get(inputs[0]) is not None)
            or (inputs and all(i in known for i in inputs))
        ):
            known.update(o for o in node.output if o)
    return known - {i.name for i in model.proto.graph.initializer}


#: Cosine between the toolkit's golden dump, laid out by a candidate mapping, and
#: onnxruntime's tensor for the mapping to be trusted (measured: 1.0 under the right one,
#: ~0 under a wrong one).
GOLDEN_COSINE = 0.9999
#: Permutations are tried up to this rank (after squeezing size-1 axes): 5! = 120 at most.
_MAX_PERMUTED_RANK = 5

#: A layout mapping: the permutation of the toolkit tensor's non-1 axes, then a reshape to
#: the ONNX shape (which squeezes/unsqueezes size-1 axes, or merges/splits axes).
Layout = tuple[int, ...]


def _layout(shape: tuple[int, ...], ref: np.ndarray, golden: np.ndarray | None):
    """The mapping from the toolkit's ``shape`` to the ONNX layout of ``ref``, or the reason
    (a str) why none can be trusted.

    With the toolkit's golden dump of the layer, the first candidate under which it matches
    ``ref`` (cosine >= GOLDEN_COSINE) wins, trying the plain order first. Without one (mark-all,
    whose outputs are already in ONNX layout, a board run), a mapping is used only when it
    is the single squeeze/unsqueeze + permutation that gives the ONNX shape (or, for square
    maps, the toolkit's NHWC); any other case is left unaligned.
    """
    if int(np.prod(shape)) != ref.size:
        return f"size {shape} vs ONNX {ref.shape}"
    exact, merged = _candidates(shape, ref.shape)
    if golden is not None:
        if golden.size != ref.size:
            return f"golden dump size {golden.shape} vs ONNX {ref.shape}"
        best = -1.0
        for layout in (*exact, *merged):
            cos = _cosine(_apply(golden.reshape(shape), layout, ref.shape)[0], ref)
            if cos >= GOLDEN_COSINE:
                return layout
            best = max(best, cos)
        return (
            f"shape {shape} vs ONNX {ref.shape}: no squeeze/transpose makes the toolkit's golden dump "
            f"equal the float tensor (best cosine {best:.4f})"
        )
    if len(exact) == 1 or tuple(shape) == tuple(ref.shape):
        return exact[0]
    nhwc = _nhwc(shape)  # square maps: the toolkit's other 4-D layout, NHWC
    if nhwc in exact and len(shape) == len(ref.shape):
        return nhwc
    return f"shape {shape} vs ONNX {ref.shape}: axis order unknown and no golden dump to decide it"


def _candidates(shape, target) -> tuple[list[Layout], list[Layout]]:
    """Permutations of the non-1 axes of ``shape``, identity first: those that give
    ``target``'s non-1 axes exactly, then those that need a merge/split reshape."""
    dims = [d for d in shape if d != 1]
    want = [d for d in target if d != 1]
    identity = tuple(range(len(dims)))
    if len(dims) > _MAX_PERMUTED_RANK:
        perms = [identity]
    else:
        perms = list(itertools.permutations(identity))
    exact = [p for p in perms if [dims[i] for i in p] == want]
    return exact, [p for p in perms if p not in exact]


def _nhwc(shape) -> Layout | None:
    """The layout reading a 4-D NHWC tensor as NCHW, over the non-1 axes of ``shape``."""
    if len(shape) != 4:
        return None
    kept = [i for i in range(4) if shape[i] != 1]
    return tuple(kept.index(i) for i in (0, 3, 1, 2) if shape[i] != 1)


def _apply(tensor: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """``tensor`` in the ONNX ``shape`` under ``layout``, and a flag saying what was done."""
    if tensor.shape == tuple(shape) and layout == tuple(range(len(layout))):
        return tensor, ""
    dims = [d for d in tensor.shape if d != 1]
    out = tensor.reshape(dims).transpose(layout).reshape(shape)
    return out, "transposed" if layout != tuple(range(len(layout))) else "reshaped"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _local_noise(sqnr_db: float, entering_db: float, single_cos: float) -> float:
    """The error one layer adds, as nmse (see Divergence.first_divergence)."""
    if not pd.isna(single_cos):
        cos = min(max(float(single_cos), 1e-6), 1.0)
        return 1.0 / (cos * cos) - 1.0
    return max(10 ** (-sqnr_db / 10) - 10 ** (-entering_db / 10), 0.0)


def _nan(value) -> float:
    return np.nan if value is None else float(value)


MODES = ("mark-all", "snapshot")
#: Flag of rows measured on a marked model whose quantization of that layer differs from the
#: plain model's (see workbench.runners.markall.build_checked): left out of summaries.
MARKING_CHANGED = "marking-changed-quantization"
#: Flag of rows of a boundary left unmarked because marking it changed its quantization.
LEFT_UNMARKED = "left-unmarked"


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
    single_layer: bool = True,
) -> Divergence:
    """Float (onnxruntime) vs simulator (rknn-toolkit2) per layer, over ``samples``.

    Args:
        model: OnnxModel to convert.
        config: BuildConfig (platform, quantization, preprocessing).
        calibration: CalibrationSet used to quantize.
        samples: CalibrationSet to compare on; the first 4 calibration samples by default.
        mode: "mark-all" (layer boundaries as outputs, one inference per sample: fast,
            accumulated error) or "snapshot" (accuracy_analysis per sample: slower, adds
            the toolkit's single-layer error). Mark-all is guarded on the first sample (see
            workbench.runners.markall.build_checked): boundaries whose marking changes their
            quantization are left unmarked (flag ``left-unmarked``) or, if still changed,
            flagged ``marking-changed-quantization`` and left out of summaries and verdicts;
            if the marked model's outputs still differ from the plain model's, the run falls
            back to snapshot mode (with a warning). ``meta["guard"]`` says what was found.
        single_layer: mark-all only: also run the first sample through accuracy_analysis
            on the plain build (one snapshot sample: ~1 s on tiny models, ~8 s on yolov8n).
            Its rows get the toolkit's single-layer and entire cosines, and layers mark-all
            cannot see (fused inside a compiled layer, left unmarked) are measured from the
            snapshot there (flag ``snapshot``): origins come from local error, which a
            saturating activation fused after a conv hides at the boundary.
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
    # mark-all results carry the guard (and the single-layer sample): never reuse older ones
    variant = mode if mode == "snapshot" else f"{mode}+guard{'+single' if single_layer else ''}"
    key = run_key(model, config, calibration, samples, variant)
    cached = _cache_dir() / key
    if cache:
        hit = _cached_run(cached)
        if hit is not None:
            return hit

    reference = FloatRunner(model, config.preprocess)
    rows: list[dict] = []
    constants = constant_tensors(model)

    def snapshot_rows(snap, floats, i):
        errors = {e.name: e for e in snap.errors}
        return layer_rows(
            model.tensors, floats, snap.simulator, errors, sample=i, backend="simulator",
            golden=snap.golden, constants=constants,
        )  # fmt: skip

    guard = None
    if mode == "snapshot":
        quantized = SimulatorRunner(model, config, calibration, workdir=workdir)
    else:
        quantized = MarkAllRunner(
            model, config, calibration, workdir=workdir, check_row=samples.rows[0], single_layer=single_layer
        )
        guard = quantized.guard
        if not guard.same_outputs:
            quantized.close()
            warnings.warn(
                "Marking the layer boundaries changed the model's outputs (cosine "
                f"{guard.outputs_cosine:.6f} to the plain build's on {samples.rows[0][0]}): "
                "measuring in snapshot mode instead.",
                stacklevel=2,
            )
            result = compute_divergence(
                model, config, calibration, samples, mode="snapshot", workdir=workdir, cache=cache,
                progress=progress, on_sample=on_sample,
            )  # fmt: skip
            result.meta["guard"] = {**guard.to_dict(), "fallback": "snapshot"}
            if cache:
                result.save(cached)
            return result
    with quantized:
        bar = tqdm(samples.rows, desc=f"per-layer divergence ({mode})", disable=not progress)
        for i, row in enumerate(bar):
            floats = reference.run(row)
            if mode == "snapshot":
                rows += snapshot_rows(quantized.analyse(row), floats, i)
            else:
                marked = layer_rows(
                    model.tensors, floats, quantized.run(row), sample=i, backend="simulator",
                    constants=constants,
                )  # fmt: skip
                if i == 0 and quantized.snapshot is not None:
                    marked = with_single_layer(marked, snapshot_rows(quantized.snapshot, floats, i))
                rows += flag_guarded(marked, guard)
            if on_sample:
                on_sample(i + 1, len(samples))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    meta = _run_meta(model, config, calibration, samples, table, key, mode)
    if guard is not None:
        meta["guard"] = guard.to_dict()
        meta["single_layer"] = single_layer
    result = Divergence(table, meta)
    if cache:
        result.save(cached)
    return result


def compare_runner(
    model, config, calibration, samples, runner, *, cache: bool = True, progress: bool = True
) -> Divergence:
    """Float vs any runner that keeps the contract (``workbench.runners.Runner``), e.g. the
    emulator: its ``run(row)`` tensors per layer, rows labelled with ``runner.backend``.
    The toolkit's own modes (with their snapshot and guard) are :func:`compute_divergence`.

    ``runner`` is used, not closed: the caller owns it. Cached by content like
    :func:`compute_divergence` (the backend's name in the key)."""
    from tqdm.auto import tqdm

    from workbench.runners.float import FloatRunner

    samples.validate(model.inputs, config.preprocess)
    key = run_key(model, config, calibration, samples, f"runner:{runner.backend}")
    cached = _cache_dir() / key
    if cache:
        hit = _cached_run(cached)
        if hit is not None:
            return hit
    reference, constants, rows = FloatRunner(model, config.preprocess), constant_tensors(model), []
    for i, row in enumerate(
        tqdm(samples.rows, desc=f"per-layer divergence ({runner.backend})", disable=not progress)
    ):
        rows += layer_rows(
            model.tensors,
            reference.run(row),
            runner.run(row),
            sample=i,
            backend=runner.backend,
            constants=constants,
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    result = Divergence(table, _run_meta(model, config, calibration, samples, table, key, runner.backend))
    if cache:
        result.save(cached)
    return result


def _run_meta(model, config, calibration, samples, table: pd.DataFrame, key: str, mode: str) -> dict:
    """What a per-layer run records beside its table."""
    return {
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


def with_single_layer(marked: list[dict], snapshot: list[dict]) -> list[dict]:
    """Mark-all rows of one sample, completed by a snapshot of the same sample: the toolkit's
    entire and single-layer cosines joined by layer; a layer mark-all has no number for (fused
    inside a compiled layer, or left unmarked) but the snapshot compared is taken from the
    snapshot (flag ``snapshot``); the snapshot's ``unmapped`` layers are added."""
    by_layer = {r["layer"]: r for r in snapshot}
    out = []
    for row in marked:
        snap = by_layer.get(row["layer"])
        if snap is None:
            out.append(row)
        elif row["status"] != "compared" and snap["status"] == "compared":
            out.append({**snap, "flag": _join(snap["flag"], "snapshot")})
        else:
            cosines = {k: snap[k] for k in ("toolkit_entire_cos", "toolkit_single_cos")}
            out.append({**row, **cosines, "rknn_op": row["rknn_op"] or snap["rknn_op"]})
    known = {r["layer"] for r in marked}
    out += [r for r in snapshot if r["status"] == "unmapped" and r["layer"] not in known]
    return sorted(out, key=lambda r: r["index"])


def flag_guarded(rows: list[dict], guard) -> list[dict]:
    """``rows`` with the mark-all guard's findings in their flags: ``left-unmarked`` for
    boundaries not marked because marking changed their quantization, and
    :data:`MARKING_CHANGED` for those still marked with a changed quantization (and for the
    former, on rows with no number)."""
    if guard is None or not (guard.unmarked or guard.changed):
        return rows
    out = []
    for row in rows:
        layer = row["layer"]
        measured_here = row["status"] == "compared" and "snapshot" not in row["flag"].split(",")
        if layer in guard.changed and measured_here:
            row = {**row, "flag": _join(row["flag"], MARKING_CHANGED)}
        elif layer in guard.unmarked:
            extra = LEFT_UNMARKED if row["status"] == "compared" else f"{LEFT_UNMARKED},{MARKING_CHANGED}"
            row = {**row, "flag": _join(row["flag"], extra)}
        out.append(row)
    return out


def _join(*flags: str) -> str:
    return ",".join(f for f in flags if f)


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
