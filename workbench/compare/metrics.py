"""Per-tensor error metrics between a reference (float) and a test (quantized) tensor.

SQNR in dB is the headline number: unlike the toolkit's euclidean distance (upstream
issue #104) it does not grow with tensor size, so layers can be compared with each other.
"""

from __future__ import annotations

import math

import numpy as np

#: SQNR reported for an exact match (instead of +inf, which plots and JSON cannot show).
MAX_SQNR_DB = 100.0
METRICS = ("cosine", "sqnr_db", "nmse", "max_abs", "rel_p99")


def tensor_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float | str]:
    """cosine, sqnr_db, nmse, max_abs, rel_p99 and a ``flag`` ("" when all is well).

    - ``nmse``: mean squared error over the reference's mean square.
    - ``rel_p99``: 99th percentile of the absolute error over the reference's max |value|.
    - ``flag``: "nonfinite" when the test tensor holds NaN/Inf (a finding, metrics over the
      finite part), "constant" when the reference is constant (cosine and SQNR then say
      little), "zero" when it is all zeros, "size-mismatch" when sizes differ.
    """
    ref = np.asarray(reference, np.float64).ravel()
    tst = np.asarray(test, np.float64).ravel()
    if ref.size != tst.size:
        return {**dict.fromkeys(METRICS, math.nan), "flag": "size-mismatch"}
    flag = ""
    finite = np.isfinite(tst)
    if not finite.all():
        flag = "nonfinite"
        ref, tst = ref[finite], tst[finite]
        if ref.size == 0:
            return {**dict.fromkeys(METRICS, math.nan), "flag": flag}
    err = ref - tst
    power = float(np.mean(ref * ref))
    noise = float(np.mean(err * err))
    ref_norm, tst_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(tst))
    if ref_norm == 0 and tst_norm == 0:
        cosine = 1.0
    elif ref_norm == 0 or tst_norm == 0:
        cosine = 0.0
    else:
        cosine = float(np.dot(ref, tst) / (ref_norm * tst_norm))
    if not flag:
        if power == 0:
            flag = "zero"
        elif np.ptp(ref) == 0:
            flag = "constant"
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    abs_err = np.abs(err)
    return {
        "cosine": cosine,
        "sqnr_db": _sqnr(power, noise),
        "nmse": noise / power if power > 0 else (0.0 if noise == 0 else math.inf),
        "max_abs": float(abs_err.max()) if abs_err.size else 0.0,
        "rel_p99": float(np.percentile(abs_err, 99)) / peak if peak > 0 else 0.0,
        "flag": flag,
    }


def _sqnr(power: float, noise: float) -> float:
    if noise == 0:
        return MAX_SQNR_DB
    if power == 0:
        return -MAX_SQNR_DB
    return float(min(MAX_SQNR_DB, 10.0 * math.log10(power / noise)))
