"""Answers: what each backend decides on each sample, against float and against labels.

The float model (onnxruntime), the quantized model on the simulator (built once, unmarked:
the model as deployed) and optionally a board run the same samples; a task adapter decodes
each backend's outputs into a prediction, and the per-sample table says whether the
quantized answer agrees with float and whether it is correct. This is the user's first
question ("did quantization change my model's answers, on which inputs?"); per-layer
numbers (compare/) are the second.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.board.ssh import BoardError
from workbench.compare.divergence import run_key
from workbench.datasets import CalibrationSet, cache_dir
from workbench.errors import ToolkitError, WorkbenchError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.runners import open_backend
from workbench.runners.board import backend_label, run_on_board
from workbench.runners.float import FloatRunner
from workbench.runners.markall import MarkAllRunner
from workbench.storage import folder_lock, recover, staged_files
from workbench.task.adapters import ADAPTERS, CallableAdapter, TaskAdapter, get_adapter
from workbench.task.labels import LabelledSet, check_matches, load_labelled

FLOAT = "float"
_TABLE, _META = "answers.parquet", "answers.json"
#: columns every answers table has, before the adapter's own metric columns
BASE_COLUMNS = ("sample", "path", "backend", "status", "prediction", "label", "correct", "agree", "error")


@dataclass
class TaskResult:
    """Per-sample answers of every backend (one row per sample x backend) and their summary.

    ``table`` columns: ``sample`` (index into the evaluated set), ``path`` (its first file),
    ``backend`` ("float", "simulator", "board:<name>"), ``status`` ("ok" or "error"),
    ``prediction`` (the adapter's short text), ``prediction_json``, ``label`` (text, or None
    when unlabelled), ``correct`` (vs the label), ``agree`` (vs float; None on float rows),
    ``error`` (the adapter's or backend's message), then the adapter's metrics: agreement
    metrics by their names (``top1_agree``, ``cer``, ``f1``, ...) and label metrics as
    ``label_<name>``.
    """

    table: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta.get("task", "outputs")

    @property
    def backends(self) -> list[str]:
        """The quantized backends, in the order they ran."""
        return [b for b in dict.fromkeys(self.table.backend) if b != FLOAT]

    @property
    def labelled(self) -> bool:
        return bool(self.table.label.notna().any())

    def summary(self) -> pd.DataFrame:
        """One row per backend: samples, errors, accuracy (labelled sets), agreement with
        float, flips (answers that differ from float) and the mean of each metric."""
        rows = []
        for backend, group in self.table.groupby("backend", sort=False):
            ok = group[group.status == "ok"]
            row = {
                "backend": backend,
                "samples": len(group),
                "errors": int((group.status != "ok").sum()),
                "accuracy": _mean(ok.correct) if self.labelled else np.nan,
                "agreement": np.nan if backend == FLOAT else _mean(ok.agree),
                "flips": 0 if backend == FLOAT else int((ok.agree == False).sum()),  # noqa: E712
            }
            for col in self._metric_columns():
                row[col] = pd.to_numeric(ok[col], errors="coerce").mean()
            rows.append(row)
        columns = ["backend", "samples", "accuracy", "agreement", "flips", "errors"]
        return pd.DataFrame(rows, columns=[*columns, *self._metric_columns()])

    def flips(self, backend: str | None = None) -> pd.DataFrame:
        """Samples whose ``backend`` answer (default: the first quantized one) differs from
        float: float's and the backend's prediction side by side, with the label."""
        backend = backend or (self.backends[0] if self.backends else "simulator")
        mine = self.table[(self.table.backend == backend) & (self.table.agree == False)]  # noqa: E712
        ref = self.table[self.table.backend == FLOAT].set_index("sample")
        out = mine[["sample", "path", "label", "prediction", "correct"]].rename(
            columns={"prediction": backend, "correct": f"correct_{backend}"}
        )
        out.insert(3, FLOAT, out["sample"].map(ref.prediction))
        return out.reset_index(drop=True)

    def verdict(self) -> str:
        """One line per quantized backend: accuracy vs float and how many answers flip, e.g.
        ``classification on 32 samples: float 100 % correct; simulator 91 % correct, 3 of 32
        answers differ from float``."""
        summary = self.summary().set_index("backend")
        n = int(summary.loc[FLOAT, "samples"]) if FLOAT in summary.index else len(self.table)
        parts = [f"{self.task} on {n} samples"]
        if self.labelled and FLOAT in summary.index:
            parts.append(f"float {_pct(summary.loc[FLOAT, 'accuracy'])} correct")
        for backend in self.backends:
            s = summary.loc[backend]
            judged = int(s.samples - s.errors)
            text = f"{backend} " + (f"{_pct(s.accuracy)} correct, " if self.labelled else "")
            text += f"{int(s.flips)} of {judged} answers differ from float"
            if s.errors:
                text += f" ({int(s.errors)} samples failed)"
            parts.append(text)
        if self.meta.get("partial"):
            parts.append(f"PARTIAL: {self.meta['partial']['error']}")
        return "; ".join(parts) + "".join(f". {note}" for note in self.notes())

    def notes(self) -> list[str]:
        """The adapter's explanation of what went wrong in a backend's raw outputs (e.g. a
        detector's scores collapsed to two levels), from the diagnostics kept per sample
        (their maximum over the samples)."""

        diagnostics = list(self.meta.get("diagnostics", []))
        explain = getattr(ADAPTERS.get(self.task), "explain", None)  # adapters that can say why
        if not diagnostics or explain is None:
            return []
        means = self.table[self.table.status == "ok"].groupby("backend")[diagnostics].max()
        if FLOAT not in means.index:
            return []
        notes = []
        for backend in self.backends:
            if backend in means.index:
                note = explain(means.loc[FLOAT].to_dict(), means.loc[backend].to_dict())
                if note:
                    notes.append(f"{backend}: {note}")
        return notes

    def check(self, min_agreement: float | None = None, max_drop: float | None = None) -> list[str]:
        """Why the answers miss the targets (empty when they meet them): agreement with float
        below ``min_agreement`` (0-1), or accuracy lower than float's by more than
        ``max_drop`` (0-1, as NNCF's max_drop), on any backend; a partial run always misses."""
        reasons = []
        summary = self.summary().set_index("backend")
        if self.meta.get("partial"):
            reasons.append(f"partial run: {self.meta['partial']['error']}")
        for backend in self.backends:
            s = summary.loc[backend]
            if min_agreement is not None and not s.agreement >= min_agreement:
                reasons.append(f"{backend}: agreement {_pct(s.agreement)} < {_pct(min_agreement)}")
            if max_drop is not None:
                if not self.labelled:
                    reasons.append("--max-drop needs labels: give --data a labelled set")
                    break
                drop = summary.loc[FLOAT, "accuracy"] - s.accuracy
                if not drop <= max_drop:
                    reasons.append(f"{backend}: accuracy drop {_pct(drop)} > {_pct(max_drop)}")
        return reasons

    def _metric_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in BASE_COLUMNS and c != "prediction_json"]

    def save(self, folder: str | Path) -> Path:
        """Write ``answers.parquet`` and ``answers.json`` into ``folder`` (a new folder or a
        run folder) together, under the folder's lock: an interrupted save leaves the earlier
        files whole, and every other file in the folder is kept."""
        folder = Path(folder).resolve()
        if folder.exists() and not folder.is_dir():
            raise WorkbenchError(f"{str(folder)!r} is a file: save the answers into a folder.")
        with staged_files(folder) as stage:
            self.table.to_parquet(stage / _TABLE, index=False)
            (stage / _META).write_text(json.dumps(self.meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TaskResult:
        """Read the answers saved in a run folder."""
        folder = Path(folder)
        if not (folder / _TABLE).is_file():
            raise WorkbenchError(f"{str(folder)!r} holds no saved answers ({_TABLE} missing).")
        try:
            with folder_lock(folder):
                recover(folder)
                table = pd.read_parquet(folder / _TABLE)
                meta = json.loads((folder / _META).read_text()) if (folder / _META).is_file() else {}
        except Exception as err:  # a damaged file: say which, never a traceback
            raise WorkbenchError(
                f"Answers in {str(folder)!r} cannot be read ({err}); run evaluate again."
            ) from None
        return cls(table, meta)

    @classmethod
    def exists(cls, folder: str | Path) -> bool:
        return (Path(folder) / _TABLE).is_file()


def evaluate(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    data: LabelledSet | CalibrationSet | str | Path,
    adapter: TaskAdapter | str = "outputs",
    *,
    board=None,
    quantized: bool = True,
    mode: str = "simulator",
    cache: bool = True,
    progress: bool = True,
) -> TaskResult:
    """The answers of float, the simulator and (optionally) ``board`` on every sample of ``data``.

    Args:
        model: the OnnxModel to convert (input shapes fixed).
        config: BuildConfig of the quantized model.
        calibration: the calibration set the toolkit quantizes with.
        data: the samples to judge: a LabelledSet, a CalibrationSet (unlabelled), or a path
            that ``load_labelled`` reads (folder per class, CSV, COCO json, PaddleOCR label
            file, dataset.txt).
        adapter: a TaskAdapter or a name for ``get_adapter`` (its settings from the model).
        board: a ``workbench.board.config.Board`` to run on as well (model outputs only).
        quantized: False runs float only (labels vs float: is the set itself right?).
        mode: the quantized backend: "simulator" (the toolkit's, the model as deployed) or
            "emulator" (workbench.emulate: the toolkit's int8 arithmetic in onnxruntime,
            for fast what-ifs; check its fidelity first).
        cache: reuse an identical earlier evaluation (same model, config, calibration,
            samples, labels, adapter); user callables are never cached.

    Raises:
        WorkbenchError (ConfigError, DatasetError) before any build; ToolkitError if the
        toolkit fails; WorkbenchError if the adapter fails on every float sample.
    """

    if mode not in ANSWER_BACKENDS:
        raise WorkbenchError(f"Unknown mode {mode!r} for answers: use one of {', '.join(ANSWER_BACKENDS)}.")
    data = _as_labelled(data)
    if isinstance(adapter, str):
        adapter = get_adapter(adapter, model=model)
    config.check_model(model)
    vocabulary = getattr(adapter, "classes", None) or getattr(adapter, "characters", None)
    check_matches(data, adapter.name, vocabulary)
    data.samples.validate(model.inputs, config.preprocess)
    if quantized:
        calibration.validate(model.inputs, config.preprocess)
    key = _key(model, config, calibration, data, adapter, board, quantized, mode)
    cached = cache_dir() / "answers" / key if key else None
    if cache and cached is not None and TaskResult.exists(cached):
        # Same content, maybe another place: the rows name this call's files.
        result = TaskResult.load(cached)
        result.table["path"] = result.table["sample"].map(lambda i: str(data.samples.rows[i][0]))
        result.meta["model"] = model.summary()
        result.meta.setdefault("data", {})["source"] = str(data.source)
        result.meta.setdefault("calibration", {})["source"] = str(calibration.source)
        return result

    judge = _Judge(adapter, data)
    rows_in = data.samples.rows
    reference = FloatRunner(model, config.preprocess, keep=list(model.outputs))
    floats = []
    for i, row in enumerate(tqdm(rows_in, desc="answers (float)", disable=not progress)):
        floats.append(judge.row(i, row, FLOAT, lambda r=row: _outputs(reference.run(r), model)))
    if all(r["status"] != "ok" for r in floats):
        raise WorkbenchError(
            f"The {adapter.name} adapter failed on every sample of the float model: {floats[0]['error']}. "
            "Check the task (--task) and its settings for this model."
        )
    rows = list(floats)
    partial = None
    if quantized:
        with open_backend(ANSWER_BACKENDS[mode], model, config, calibration, outputs_only=True) as runner:
            for i, row in enumerate(tqdm(rows_in, desc=f"answers ({runner.backend})", disable=not progress)):
                rows.append(judge.row(i, row, runner.backend, lambda r=row: runner.outputs(r)))
        if board is not None:
            board_rows, partial = _board_answers(judge, model, config, calibration, board, rows_in, progress)
            rows += board_rows
    table = pd.DataFrame(rows)
    for col in ("correct", "agree"):
        table[col] = table[col].astype("boolean")
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": key,
        "task": adapter.name,
        "adapter": repr(adapter),
        "model": model.summary(),
        "config": config.to_dict(),
        "data": {"source": str(data.source), "kind": data.kind, "size": len(data)},
        "calibration": {"source": str(calibration.source), "size": len(calibration)},
        "dataset_metrics": judge.dataset_metrics(table),
        "diagnostics": judge.diagnostics,
    }
    if partial:
        meta["partial"] = partial
    result = TaskResult(table, meta)
    if cache and cached is not None and not partial:
        result.save(cached)
    return result


#: the quantized backends answers can come from: mode -> backend in ``runners.BACKENDS``,
#: opened with ``outputs_only`` (the model as deployed: one unmarked build).
ANSWER_BACKENDS = {"simulator": "mark-all", "emulator": "emulator"}


def collect_outputs(
    model: OnnxModel, config: BuildConfig, calibration: CalibrationSet, samples: CalibrationSet
) -> dict[str, list[dict[str, np.ndarray]]]:
    """The raw graph outputs of float and of the simulator on each sample, for looking at
    what an adapter sees (e.g. a detector's score distribution): {backend: [outputs, ...]}."""

    reference = FloatRunner(model, config.preprocess, keep=list(model.outputs))
    out = {FLOAT: [_outputs(reference.run(row), model) for row in samples.rows]}
    with MarkAllRunner(model, config, calibration, outputs_only=True) as simulator:
        out["simulator"] = [_outputs(simulator.run(row), model) for row in samples.rows]
    return out


class _Judge:
    """Decodes one backend's outputs for one sample and judges them against float and the label."""

    def __init__(self, adapter: TaskAdapter, data: LabelledSet):
        self.adapter, self.data = adapter, data
        self.float_predictions: dict[int, object] = {}
        self.diagnostics: list[str] = []  #: names of the adapter's diagnose() columns
        self.predictions: dict[str, dict[int, object]] = {}

    def row(self, i: int, files: Sequence[Path], backend: str, outputs) -> dict:
        label = self.data.labels[i] if self.data.labels is not None else None
        row = {
            "sample": i,
            "path": str(files[0]),
            "backend": backend,
            "status": "ok",
            "prediction": None,
            "prediction_json": None,
            "label": None if label is None else _label_text(label),
            "correct": None,
            "agree": None,
            "error": None,
        }
        try:
            raw = outputs()
            prediction = self.adapter.decode(raw)
            if hasattr(self.adapter, "diagnose"):
                facts = self.adapter.diagnose(raw)
                self.diagnostics = list(dict.fromkeys([*self.diagnostics, *facts]))
                row |= {k: _cell(v) for k, v in facts.items()}
            row["prediction"] = self.adapter.describe(prediction)
            row["prediction_json"] = json.dumps(self.adapter.to_json(prediction), default=_json_default)
            self.predictions.setdefault(backend, {})[i] = prediction
            if label is not None:
                scored = self.adapter.score(prediction, label)
                row["correct"] = bool(scored["correct"])
                row |= {f"label_{k}": _cell(v) for k, v in scored.items() if k != "correct"}
            if backend == FLOAT:
                self.float_predictions[i] = prediction
            elif i in self.float_predictions:
                agreed = self.adapter.agreement(self.float_predictions[i], prediction)
                row["agree"] = bool(agreed["agree"])
                row |= {k: _cell(v) for k, v in agreed.items() if k != "agree"}
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one sample's failure is a row, not the end of the run
            row |= {"status": "error", "error": f"{type(err).__name__}: {err}"}
        return row

    def dataset_metrics(self, table: pd.DataFrame) -> dict:
        """The adapter's dataset-level numbers (e.g. mAP) per backend, when labelled."""
        method = getattr(self.adapter, "dataset_metrics", None)
        if method is None or self.data.labels is None:
            return {}
        out = {}
        for backend, predictions in self.predictions.items():
            done = sorted(predictions)
            try:
                out[backend] = method([predictions[i] for i in done], [self.data.labels[i] for i in done])
            except Exception as err:  # report it, keep the per-sample answers
                out[backend] = {"error": f"{type(err).__name__}: {err}"}
        return out


def _board_answers(judge: _Judge, model, config, calibration, board, rows_in, progress: bool):
    """Rows of the board backend; a board failure keeps the samples done (partial)."""

    backend, rows, done = backend_label(board), [], 0
    bar = tqdm(total=len(rows_in), desc=f"answers ({backend})", disable=not progress)
    try:
        runs = run_on_board(model, config, calibration, board, rows_in, outputs_only=True)
        for i, outputs in enumerate(runs):
            rows.append(judge.row(i, rows_in[i], backend, lambda o=outputs: _outputs(o, model)))
            done = i + 1
            bar.update()
    except (BoardError, ToolkitError) as err:
        return rows, {"backend": backend, "samples_done": done, "samples": len(rows_in), "error": str(err)}
    finally:
        bar.close()
    return rows, None


def _outputs(tensors: dict[str, np.ndarray], model: OnnxModel) -> dict[str, np.ndarray]:
    """The graph outputs, in graph order, as float32."""
    return {name: np.asarray(tensors[name], np.float32) for name in model.outputs}


def _as_labelled(data) -> LabelledSet:
    if isinstance(data, LabelledSet):
        return data
    if isinstance(data, CalibrationSet):
        return LabelledSet(data, None, data.source, "list")
    return load_labelled(data)


def _key(
    model, config, calibration, data: LabelledSet, adapter, board, quantized: bool, mode: str
) -> str | None:
    """Content hash of an evaluation; None (never cached) for a user's own adapter."""
    if isinstance(adapter, CallableAdapter):
        return None
    labels = json.dumps(data.labels, default=_json_default, sort_keys=True)
    what = f"answers|{adapter!r}|{labels}|{getattr(board, 'name', '')}|{quantized}|{mode}"
    return run_key(model, config, calibration, data.samples, what)


def _label_text(label) -> str:
    if isinstance(label, dict) and "boxes" in label:
        return f"{len(label['boxes'])} boxes"
    return str(label)


def _cell(value):
    """A metric value as a table cell (numbers stay numbers, the rest becomes text)."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return None if value is None else str(value)


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.astype(float).mean()) if len(values) else np.nan


def _pct(value: float) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.0f} %"
