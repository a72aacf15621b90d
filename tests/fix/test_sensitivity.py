"""Per-layer sensitivity through the toolkit's hybrid quantization (first part of #6)."""

import math

import pytest

from workbench.errors import WorkbenchError
from workbench.fix.sensitivity import sensitivity
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig

pytestmark = pytest.mark.toolkit
CONFIG = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})


def test_ranked_gain_of_keeping_one_layer_in_float16(tiny_models, small_set):
    table = sensitivity(
        tiny_models["residual-add"], CONFIG, small_set, small_set.head(2), progress=False, jobs=2
    )
    baseline = table.iloc[0]
    assert baseline.op_type == "(all int8)" and 15 < baseline.output_sqnr_db < 100
    ranked = table.iloc[1:]
    assert {"conv1_out", "add_out"} <= set(ranked.layer)
    assert list(ranked.gain_db) == sorted(ranked.gain_db, reverse=True)
    assert ranked.gain_db.iloc[0] > 0.5  # float16 somewhere buys measurable accuracy
    assert not any(math.isnan(v) for v in ranked.output_sqnr_db)


def test_unknown_layer_names_are_refused(tiny_models, small_set):
    with pytest.raises(WorkbenchError, match="not quantized tensors.*conv1_out"):
        sensitivity(
            tiny_models["residual-add"],
            CONFIG,
            small_set,
            small_set.head(1),
            candidates=["nope"],
            progress=False,
        )
