"""Per-layer sensitivity through the toolkit's hybrid quantization, both views."""

import math

import pytest

from workbench.errors import WorkbenchError
from workbench.fix.sensitivity import sensitivity
from workbench.viz.fix_plots import sensitivity_figure

from .conftest import CONFIG

pytestmark = pytest.mark.toolkit


def test_float16_view_ranks_the_gain_of_one_layer_in_float16(residual_ranking):
    table = residual_ranking
    int8, fp16 = table.iloc[0], table.iloc[1]
    assert int8.op_type == "(all int8)" and 15 < int8.output_sqnr_db < 100
    assert fp16.op_type == "(all float16)" and fp16.output_sqnr_db > int8.output_sqnr_db
    ranked = table[table.layer.notna()]
    assert set(ranked.layer) == set(table.attrs["quantized"]) >= {"conv1_out", "add_out"}
    assert list(ranked.gain_db) == sorted(ranked.gain_db, reverse=True)
    assert ranked.gain_db.iloc[0] > 0.5  # float16 somewhere buys measurable accuracy
    assert not ranked.error.astype(bool).any()


def test_quantized_view_is_the_loss_from_all_float16(residual_ranking):
    table = residual_ranking
    fp16 = table.iloc[1].output_sqnr_db
    ranked = table[table.layer.notna()]
    assert all(math.isclose(q + loss, fp16) for q, loss in zip(ranked.quantized_sqnr_db, ranked.loss_db))
    # Quantizing one layer alone costs less than quantizing all of them.
    assert (ranked.quantized_sqnr_db > table.iloc[0].output_sqnr_db).all()


def test_figure_shows_both_views(residual_ranking):
    fig = sensitivity_figure(residual_ranking)
    assert [t.name for t in fig.data] == ["gain: only this layer float16", "loss: only this layer quantized"]
    assert len(fig.data[0].x) == len(residual_ranking) - 2


def test_unknown_layer_names_are_refused(residual, small_set):
    with pytest.raises(WorkbenchError, match="not quantized tensors.*conv1_out"):
        sensitivity(residual, CONFIG, small_set, small_set.head(1), candidates=["nope"], progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"view": "sideways"}, "view must be"), ({"candidates": 0}, "positive count")]
)
def test_bad_arguments_are_refused(residual, small_set, kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        sensitivity(residual, CONFIG, small_set, small_set.head(1), progress=False, **kwargs)


def test_quantized_view_alone_has_no_float16_column_values(residual, small_set, residual_ranking):
    table = sensitivity(residual, CONFIG, small_set, small_set.head(2), view="quantized", progress=False)
    ranked = table[table.layer.notna()]
    assert not ranked.error.astype(bool).any() and ranked.gain_db.isna().all()
    assert list(ranked.loss_db) == sorted(ranked.loss_db, reverse=True)
