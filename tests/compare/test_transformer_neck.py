"""A transformer-style neck (4-D -> 3-D -> 4-D) on the real toolkit, in both modes: the
toolkit dumps its 3-D tensors in another rank and order, which must not read as error."""

import numpy as np
import pytest

from workbench.compare.divergence import compute_divergence
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.synthetic import transformer_neck

pytestmark = pytest.mark.toolkit
CONFIG = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})


@pytest.fixture(scope="module")
def runs(small_set, tmp_path_factory):
    model = OnnxModel.from_proto(transformer_neck())
    return {
        mode: compute_divergence(
            model, CONFIG, small_set, small_set.head(2), backend=mode, cache=False, progress=False
        )
        for mode in ("snapshot", "mark-all")
    }


@pytest.mark.parametrize("mode", ["snapshot", "mark-all"])
def test_no_layer_reads_broken(runs, mode):
    table = runs[mode].table
    compared = table[table.status == "compared"]
    assert "res_out" in set(compared.layer)  # the layer the toolkit dumps as (1,24,1,32)
    assert (compared.cosine > 0.9).all(), compared[["layer", "cosine", "flag"]]


def test_snapshot_agrees_with_the_toolkits_own_cosine(runs):
    table = runs["snapshot"].table
    compared = table[(table.status == "compared") & (table.toolkit_entire_cos > 0.99)]
    assert "res_out" in set(compared.layer)
    np.testing.assert_allclose(compared.cosine, compared.toolkit_entire_cos, atol=1e-4)


def test_modes_agree_on_common_layers(runs):
    a = runs["snapshot"].summary().set_index("layer")
    b = runs["mark-all"].summary().set_index("layer")
    common = a.index.intersection(b.index).drop("x", errors="ignore")
    assert {"stem_out", "res_out", "y"} <= set(common)
    np.testing.assert_allclose(a.loc[common, "cosine_mean"], b.loc[common, "cosine_mean"], atol=1e-3)


def test_compiled_layers_without_onnx_tensor_are_listed(runs):
    """The LayerNorm compiles to the toolkit's own exNorm layer "norm#1": no ONNX tensor."""
    table = runs["snapshot"].table
    table = table[table["sample"] == 0].set_index("layer")
    norm = table.loc["norm#1"]
    assert (norm.status, norm.rknn_layer, norm.rknn_op) == ("unmapped", "norm#1", "exNorm")
    assert norm.toolkit_single_cos > 0.99 and np.isnan(norm.cosine)
    assert table.loc["res_out", "index"] < norm["index"] < table.loc["norm_out", "index"]
    # mark-all lists them from its single-layer sample (the first) only
    markall = runs["mark-all"].table
    assert set(markall[markall.status == "unmapped"]["sample"]) == {0}
    assert "norm#1" in set(markall[markall.status == "unmapped"].layer)
