"""The Divergence result: per-layer error of a quantized backend against the float model.

A tidy table, one row per (ONNX tensor, sample, backend), in topological order; plots and
reports are pure functions of it. It saves to a run folder (parquet + json), written
atomically so a failed or interrupted save never damages an earlier run.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.compare.metrics import MAX_SQNR_DB, METRICS, SQNR_OK_DB
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
        threshold_db: float = SQNR_OK_DB,
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


def _local_noise(sqnr_db: float, entering_db: float, single_cos: float) -> float:
    """The error one layer adds, as nmse (see Divergence.first_divergence)."""
    if not pd.isna(single_cos):
        cos = min(max(float(single_cos), 1e-6), 1.0)
        return 1.0 / (cos * cos) - 1.0
    return max(10 ** (-sqnr_db / 10) - 10 ** (-entering_db / 10), 0.0)


#: Flag of rows measured on a marked model whose quantization of that layer differs from the
#: plain model's (see workbench.runners.markall.build_checked): left out of summaries.
MARKING_CHANGED = "marking-changed-quantization"


def load_cached(folder: Path) -> Divergence | None:
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
