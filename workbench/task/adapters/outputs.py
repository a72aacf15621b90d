"""Generic task for any model: the outputs themselves, compared by SQNR and cosine."""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.compare.metrics import SQNR_OK_DB, tensor_metrics
from workbench.errors import WorkbenchError
from workbench.task.adapters.base import Metrics, settings_repr

#: Relative size under which a tensor's spread (and two tensors' difference) counts as nothing.
EMPTY_TOL = 1e-6


class OutputsAdapter:
    """Every graph output, as it is; agreement per output by SQNR and cosine.

    Outputs that are both (near) all-zero or the same constant (e.g. a mask head with nothing
    to show) are "both_empty" and agree: their SQNR says nothing, so it is never reported as 0 dB.

    Args:
        min_sqnr_db: float and quantized agree when every output's SQNR reaches this (the
            workbench's 20 dB line, as in ``Divergence.first_divergence``).
    """

    name = "outputs"
    __repr__ = settings_repr

    def __init__(self, model: Any = None, *, min_sqnr_db: float = SQNR_OK_DB):
        self.min_sqnr_db = min_sqnr_db

    def decode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs unchanged (by name, in graph-output order)."""
        return dict(outputs)

    def agreement(self, reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> Metrics:
        """Per output ``sqnr_db[name]``, ``cosine[name]``, and over all outputs: ``sqnr_db`` and
        ``cosine`` (the worst non-empty output), ``both_empty`` (every output empty in both),
        ``flag`` (non-finite or size mismatches, as "name: flag"); agree = no flag and every
        non-empty output at ``min_sqnr_db`` or more.

        Raises:
            WorkbenchError: an output of the reference is missing from the test.
        """
        missing = [name for name in reference if name not in test]
        if missing:
            raise WorkbenchError(
                f"outputs: the quantized run has no output {missing} (it has {list(test)}). "
                "Both runs must return the model's graph outputs by ONNX name."
            )
        result: Metrics = {}
        worst_sqnr, worst_cos, flags, empties = np.inf, np.inf, [], []
        for name, ref in reference.items():
            if both_empty(ref, test[name]):
                result[f"sqnr_db[{name}]"], result[f"cosine[{name}]"] = np.nan, np.nan
                empties.append(name)
                continue
            m = tensor_metrics(ref, test[name])
            result[f"sqnr_db[{name}]"], result[f"cosine[{name}]"] = m["sqnr_db"], m["cosine"]
            worst_sqnr, worst_cos = min(worst_sqnr, m["sqnr_db"]), min(worst_cos, m["cosine"])
            if m["flag"] in ("nonfinite", "size-mismatch"):
                flags.append(f"{name}: {m['flag']}")
        all_empty = len(empties) == len(reference)
        agree = not flags and (all_empty or worst_sqnr >= self.min_sqnr_db)
        return {
            "agree": bool(agree),
            "sqnr_db": float(worst_sqnr) if not all_empty else np.nan,
            "cosine": float(worst_cos) if not all_empty else np.nan,
            "both_empty": all_empty,
            "flag": "; ".join(flags),
            **result,
        }

    def score(self, prediction: Any, label: Any) -> Metrics:
        raise WorkbenchError(
            "The 'outputs' task compares backends with each other and cannot judge labels: raw "
            "tensors have no right answer. Choose a task adapter that decodes answers "
            "(classification, detection, ctc, map) or a CallableAdapter with score=."
        )

    def describe(self, prediction: dict[str, np.ndarray]) -> str:
        """E.g. ``"output0 (1, 84, 2100) [0, 320]"``, one part per output."""
        return "; ".join(f"{name} {tuple(np.shape(a))} {_range(a)}" for name, a in prediction.items())

    def to_json(self, prediction: dict[str, np.ndarray]) -> dict:
        """Per output: shape, min, max, mean (the tensors themselves are not stored)."""
        return {
            name: {
                "shape": list(np.shape(a)),
                "min": _stat(np.min, a),
                "max": _stat(np.max, a),
                "mean": _stat(np.mean, a),
            }
            for name, a in prediction.items()
        }


def both_empty(reference: np.ndarray, test: np.ndarray, tol: float = EMPTY_TOL) -> bool:
    """True when both tensors are (near) constant and equal to each other (all zeros included),
    within ``tol`` relative to their largest magnitude (at least 1)."""
    ref = np.asarray(reference, np.float64)
    tst = np.asarray(test, np.float64)
    if ref.size == 0 and tst.size == 0:
        return True
    if ref.size == 0 or tst.size == 0 or not (np.isfinite(ref).all() and np.isfinite(tst).all()):
        return False
    scale = tol * max(1.0, float(np.abs(ref).max()), float(np.abs(tst).max()))
    return bool(np.ptp(ref) <= scale and np.ptp(tst) <= scale and abs(ref.mean() - tst.mean()) <= scale)


def _stat(fn, a) -> float | None:
    return float(fn(a)) if np.size(a) else None


def _range(a) -> str:
    return f"[{float(np.min(a)):.4g}, {float(np.max(a)):.4g}]" if np.size(a) else "[]"
