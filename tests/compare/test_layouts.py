"""layer_rows maps the toolkit's tensor layouts to ONNX with the golden dump as oracle."""

import numpy as np
import pytest

from workbench.compare.rows import layer_rows
from workbench.model import TensorInfo
from workbench.rknn.snapshot import ErrorRow

RNG = np.random.default_rng(0)


def _rows(onnx_shape, float_value, dumped, golden=None, toolkit_shape=None):
    """One ONNX tensor "t" (produced by a node), its float value and the toolkit's dump."""
    tensors = [TensorInfo("t", onnx_shape, "float32", "n", "Add", 0)]
    errors = {"t-rs": ErrorRow("Conv", "t-rs", {"entire_cos": 0.999, "single_cos": 0.9995})}
    golden = None if golden is None else {"t-rs": golden}
    (row,) = layer_rows(
        tensors, {"t": float_value}, {"t-rs": dumped}, errors, sample=0, backend="simulator", golden=golden
    )
    return row


def _noisy(x):
    return x + RNG.normal(0, 0.01, x.shape).astype(np.float32)


def test_rank_changed_dump_is_transposed_back():
    """ONNX (1,32,24) dumped as (1,24,1,32): the old flattening read cosine ~0 here."""
    value = RNG.normal(size=(1, 32, 24)).astype(np.float32)
    golden = value.transpose(0, 2, 1).reshape(1, 24, 1, 32)
    row = _rows((1, 32, 24), value, _noisy(golden), golden)
    assert row["status"] == "compared" and "transposed" in row["flag"]
    assert row["cosine"] > 0.999 and row["toolkit_entire_cos"] == 0.999


def test_square_layout_decided_by_golden():
    """(1,32,32) dumped as (1,32,1,32) is ambiguous by shape: the golden dump says transpose."""
    value = RNG.normal(size=(1, 32, 32)).astype(np.float32)
    golden = value.transpose(0, 2, 1).reshape(1, 32, 1, 32)
    row = _rows((1, 32, 32), value, _noisy(golden), golden)
    assert row["status"] == "compared" and row["cosine"] > 0.999
    without = _rows((1, 32, 32), value, _noisy(golden), None)
    assert without["status"] == "unaligned" and "no golden" in without["flag"]
    assert np.isnan(without["cosine"])


def test_same_shape_but_transposed_data_is_caught():
    value = RNG.normal(size=(1, 16, 16)).astype(np.float32)
    golden = value.transpose(0, 2, 1).copy()
    row = _rows((1, 16, 16), value, _noisy(golden), golden)
    assert row["status"] == "compared" and row["cosine"] > 0.999 and row["flag"] == "transposed"


def test_merged_axes_found():
    """Tokens (1,64,24) held by the toolkit as an NCHW map (1,24,8,8)."""
    value = RNG.normal(size=(1, 64, 24)).astype(np.float32)
    golden = value.transpose(0, 2, 1).reshape(1, 24, 8, 8)
    row = _rows((1, 64, 24), value, _noisy(golden), golden)
    assert row["status"] == "compared" and row["cosine"] > 0.999


def test_no_mapping_means_unaligned_with_the_reason():
    value = RNG.normal(size=(1, 32, 24)).astype(np.float32)
    scrambled = RNG.permutation(value.ravel()).reshape(1, 24, 1, 32)
    row = _rows((1, 32, 24), value, _noisy(scrambled), scrambled)
    assert row["status"] == "unaligned" and "best cosine" in row["flag"]
    assert np.isnan(row["cosine"]) and np.isnan(row["sqnr_db"])


@pytest.mark.parametrize("dumped_shape", [(1, 24, 32), (1, 24, 1, 32)])
def test_plain_order_kept_when_golden_agrees(dumped_shape):
    value = RNG.normal(size=(1, 24, 32)).astype(np.float32)
    golden = value.reshape(dumped_shape)
    row = _rows((1, 24, 32), value, _noisy(golden), golden)
    assert row["status"] == "compared" and row["flag"] in ("", "reshaped") and row["cosine"] > 0.999


def test_without_golden_a_unique_mapping_is_used_and_a_merge_is_not():
    value = RNG.normal(size=(1, 32, 24)).astype(np.float32)
    dumped = _noisy(value.transpose(0, 2, 1).reshape(1, 24, 1, 32))
    assert _rows((1, 32, 24), value, dumped)["cosine"] > 0.999
    merged = _rows((1, 64, 24), RNG.normal(size=(1, 64, 24)), RNG.normal(size=(1, 24, 8, 8)))
    assert merged["status"] == "unaligned"


def test_markall_outputs_only_get_size1_axes_restored():
    """Mark-all outputs come back in ONNX layout (measured); a reshape that would reorder
    elements is never applied blindly: such an output keeps its shape for layer_rows."""
    from workbench.model import OnnxModel
    from workbench.runners.markall import match_outputs
    from workbench.synthetic import transformer_neck

    model = OnnxModel.from_proto(transformer_neck())
    arrays = [np.zeros((1, 8, 32)), np.zeros((1, 24, 1, 32)), np.zeros((1, 24, 1, 32))]
    out = match_outputs(["y", "stem_out", "res_out"], arrays, "", model)
    assert out["y"].shape == (1, 8, 1, 32)  # only a size-1 axis differs
    assert out["stem_out"].shape == (1, 24, 1, 32) and out["res_out"].shape == (1, 24, 1, 32)
