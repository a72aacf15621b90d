import math

import numpy as np
import pytest

from workbench.compare.metrics import MAX_SQNR_DB, tensor_metrics


def test_identical_tensors():
    x = np.random.default_rng(0).normal(size=(1, 8, 4, 4))
    m = tensor_metrics(x, x.copy())
    assert m["cosine"] == pytest.approx(1.0) and m["sqnr_db"] == MAX_SQNR_DB
    assert m["nmse"] == 0 and m["max_abs"] == 0 and m["flag"] == ""


def test_known_noise_level():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200_000)
    noise = rng.normal(scale=0.1, size=x.size)  # 20 dB below the signal
    m = tensor_metrics(x, x + noise)
    assert m["sqnr_db"] == pytest.approx(20.0, abs=0.1)
    assert m["nmse"] == pytest.approx(0.01, rel=0.02)
    assert m["cosine"] == pytest.approx(1 / math.sqrt(1.01), abs=1e-3)
    assert m["max_abs"] == pytest.approx(np.abs(noise).max())


def test_sign_flip_is_worst_cosine():
    x = np.arange(1.0, 10.0)
    assert tensor_metrics(x, -x)["cosine"] == pytest.approx(-1.0)


def test_nan_in_quantized_is_a_finding():
    x = np.arange(1.0, 11.0)
    y = x.copy()
    y[3] = np.nan
    m = tensor_metrics(x, y)
    assert m["flag"] == "nonfinite" and m["cosine"] == pytest.approx(1.0)


@pytest.mark.parametrize("ref, flag", [(np.zeros(10), "zero"), (np.full(10, 3.0), "constant")])
def test_constant_reference_flagged_not_nan(ref, flag):
    test = ref + np.linspace(-0.5, 0.5, 10)  # the quantized side is not constant
    m = tensor_metrics(ref, test)
    assert m["flag"] == flag
    assert not any(math.isnan(m[k]) for k in ("cosine", "sqnr_db", "nmse", "max_abs", "rel_p99"))


@pytest.mark.parametrize(
    "ref, test",
    [
        (np.zeros(10), np.zeros(10)),
        (np.full(10, 1e-9), np.zeros(10)),  # float noise vs exact zero: 0 dB by the plain ratio
        (np.full(10, 3.0), np.full(10, 3.0)),
        (np.zeros(10), np.full(10, 1 / 255)),  # one int8 step of a [0, 1] output
        (np.r_[np.zeros(9), 1e-7], np.zeros(10)),
    ],
)
def test_both_empty_agree(ref, test):
    m = tensor_metrics(ref, test)
    assert m["flag"] == "both-empty"
    assert (m["cosine"], m["sqnr_db"], m["nmse"]) == (1.0, MAX_SQNR_DB, 0.0)
    assert m["max_abs"] == pytest.approx(np.abs(ref - test).max())


@pytest.mark.parametrize(
    "ref, test, cosine, sqnr",
    [
        (np.zeros(10), np.full(10, 0.5), 0.0, -MAX_SQNR_DB),  # empty vs a shifted constant
        (np.zeros(4), np.array([0.0, 1.0, 0.0, 1.0]), 0.0, -MAX_SQNR_DB),  # empty vs not
        (np.array([1.0, 2.0, 1.0, 2.0]), np.zeros(4), 0.0, 0.0),  # not vs empty: 0 dB is real here
    ],
)
def test_one_empty_side_keeps_real_numbers(ref, test, cosine, sqnr):
    m = tensor_metrics(ref, test)
    assert m["flag"] != "both-empty"
    assert (m["cosine"], m["sqnr_db"]) == (cosine, pytest.approx(sqnr))


def test_size_mismatch_flagged():
    assert tensor_metrics(np.ones(4), np.ones(5))["flag"] == "size-mismatch"


def test_hand_computed_values():
    ref, test = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    m = tensor_metrics(ref, test)
    assert m["cosine"] == pytest.approx(34 / math.sqrt(30 * 39))
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(7.5 / 0.25))  # mean square 7.5, noise 0.25
    assert m["nmse"] == pytest.approx(0.25 / 7.5)
    assert m["max_abs"] == 1.0
    assert m["rel_p99"] == pytest.approx(0.97 / 4)  # 99th percentile of |err| = [0, 0, 0, 1]
