"""Per-tensor error metrics between a reference (float) and a test (quantized) tensor.

SQNR in dB is the headline number: unlike the toolkit's euclidean distance (upstream
issue #104) it does not grow with tensor size, so layers can be compared with each other.
"""

from __future__ import annotations

import math

import numpy as np

#: SQNR reported for an exact match (instead of +inf, which plots and JSON cannot show).
MAX_SQNR_DB = 100.0
#: The workbench's one "deserves a look" line: below it a layer's error is worth a look
#: (about 3 bits of signal lost); plots, reports, overlays and the outputs task use it.
SQNR_OK_DB = 20.0
METRICS = ("cosine", "sqnr_db", "nmse", "max_abs", "rel_p99")
#: A tensor is "empty" (all zero or constant) when its spread (max - min) is at most this
#: fraction of max(1, max |value|): float noise around zero counts as zero.
EMPTY_SPREAD = 1e-5
#: Two empty tensors agree when their levels differ by at most this fraction of
#: max(1, |reference level|): one int8 step of a [0, 1] range (1/255) agrees, 0 vs 0.5 does not.
EMPTY_LEVEL = 1e-2


def tensor_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float | str]:
    """cosine, sqnr_db, nmse, max_abs, rel_p99 and a ``flag`` ("" when all is well).

    - ``nmse``: mean squared error over the reference's mean square.
    - ``rel_p99``: 99th percentile of the absolute error over the reference's max |value|.
    - ``flag``: "nonfinite" when the test tensor holds NaN/Inf (a finding, metrics over the
      finite part), "constant" when the reference is constant (cosine and SQNR then say
      little), "zero" when it is all zeros, "size-mismatch" when sizes differ, "both-empty"
      when reference and test are both (near) all-zero or constant at the same level (see
      :data:`EMPTY_SPREAD`, :data:`EMPTY_LEVEL`): they agree, so cosine is 1.0, SQNR is
      :data:`MAX_SQNR_DB` and nmse 0 (on such tensors the ratios would only measure float
      noise, e.g. 0 dB for 1e-9 against 0). One empty and the other not keeps its real numbers.
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
    abs_err = np.abs(err)
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel_p99 = float(np.percentile(abs_err, 99)) / peak if peak > 0 else 0.0
    max_abs = float(abs_err.max()) if abs_err.size else 0.0
    if not flag and _both_empty(ref, tst):
        return {
            "cosine": 1.0,
            "sqnr_db": MAX_SQNR_DB,
            "nmse": 0.0,
            "max_abs": max_abs,
            "rel_p99": rel_p99,
            "flag": "both-empty",
        }
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
    return {
        "cosine": cosine,
        "sqnr_db": _sqnr(power, noise),
        "nmse": noise / power if power > 0 else (0.0 if noise == 0 else math.inf),
        "max_abs": max_abs,
        "rel_p99": rel_p99,
        "flag": flag,
    }


def _empty(x: np.ndarray) -> bool:
    return x.size == 0 or float(np.ptp(x)) <= EMPTY_SPREAD * max(1.0, float(np.max(np.abs(x))))


def _both_empty(ref: np.ndarray, tst: np.ndarray) -> bool:
    if not (_empty(ref) and _empty(tst)) or ref.size == 0:
        return False
    level = float(np.mean(ref))
    return abs(level - float(np.mean(tst))) <= EMPTY_LEVEL * max(1.0, abs(level))


def _sqnr(power: float, noise: float) -> float:
    if noise == 0:
        return MAX_SQNR_DB
    if power == 0:
        return -MAX_SQNR_DB
    return float(min(MAX_SQNR_DB, 10.0 * math.log10(power / noise)))
