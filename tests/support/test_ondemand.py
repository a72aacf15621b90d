"""On-demand probes: the probe model and its cache key without the toolkit; the verdicts
against the compile table with it."""

import numpy as np
import pytest
from onnx import helper, numpy_helper

from tests.support.pattern_models import PATTERN_MODELS, hardswish_by_parts
from workbench.dequantize import constant_values
from workbench.model import OnnxModel
from workbench.support.compare_checks import disagreements
from workbench.support.ondemand import probe_model, signature
from workbench.support.patterns import find_patterns
from workbench.support.static import static_check
from workbench.synthetic import conv_relu_sigmoid


def _pattern(model: OnnxModel):
    (match,) = find_patterns(model.proto.graph)
    return match.nodes


def test_probe_model_holds_just_the_pattern_behind_an_entry_conv():
    model = OnnxModel.from_proto(hardswish_by_parts())
    probe = OnnxModel.from_proto(probe_model(model, _pattern(model), constant_values(model.proto.graph)))
    ops = [n.op_type for n in probe.proto.graph.node]
    assert ops == ["Conv", "Add", "Clip", "Mul", "Div"]
    assert probe.inputs == {"x0": (1, 8, 16, 16)} and list(probe.outputs) == ["probe_3_out0"]
    assert [n.name for n in probe.proto.graph.node[1:]] == ["probe_0", "probe_1", "probe_2", "probe_3"]


def test_signature_keeps_shape_class_and_constants_not_sizes():
    small, big = hardswish_by_parts(), hardswish_by_parts()
    for proto, side in ((small, 16), (big, 32)):
        for value in [*proto.graph.input, *proto.graph.output]:
            value.type.tensor_type.shape.dim[2].dim_value = side
            value.type.tensor_type.shape.dim[3].dim_value = side

    def sig(proto):
        model = OnnxModel.from_proto(proto)
        return signature(model, _pattern(model), constant_values(model.proto.graph))

    assert sig(small) == sig(big)  # same rank, same axes of size 1
    three = next(t for t in big.graph.initializer if t.name == "three")
    three.CopyFrom(numpy_helper.from_array(np.array(2.5, np.float32), "three"))
    assert sig(small) != sig(big)  # another constant is another probe


@pytest.mark.toolkit
@pytest.mark.parametrize("pattern", list(PATTERN_MODELS))
def test_pattern_nodes_match_the_compile_table(pattern, tmp_path, monkeypatch):
    from workbench.support.compile import compile_check

    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path))  # probe for real, not from the cache
    build, names = PATTERN_MODELS[pattern]
    model = OnnxModel.from_proto(build())
    static = static_check(model)
    compiled = compile_check(model)
    rows = static.nodes.set_index("node")
    assert compiled.rejected is None
    for name in names:
        placed = compiled.placements[name]
        assert rows.loc[name].status == ("cpu" if placed == "CPU" else "npu"), (name, placed)
    assert "cpu" not in set(rows.loc[list(names)].status)  # measured: all fused onto the NPU
    assert disagreements(static, compiled) == []


@pytest.mark.toolkit
def test_unseen_variant_is_probed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path))
    proto = conv_relu_sigmoid()
    relu = next(n for n in proto.graph.node if n.name == "relu1")
    # a MaxPool 5x5 stride 1 (yolov8n's SPPF): no probed variant of the matrix has kernel 5
    relu.CopyFrom(
        helper.make_node(
            "MaxPool", ["conv1_out"], ["relu1_out"], name="relu1", kernel_shape=[5, 5], pads=[2, 2, 2, 2]
        )
    )
    model = OnnxModel.from_proto(proto)
    assert static_check(model, probe=False).nodes.set_index("node").loc["relu1"].status == "attention"
    first = static_check(model).nodes.set_index("node").loc["relu1"]
    assert first.status == "npu" and "probed as itself" in first.reason
    assert len(list((tmp_path / "support-probes").glob("*.json"))) == 1

    def no_toolkit(*args, **kwargs):
        raise AssertionError("the cached probe started the toolkit")

    monkeypatch.setattr("workbench.rknn.session.ToolkitSession", no_toolkit)
    again = static_check(model).nodes.set_index("node").loc["relu1"]
    assert (again.status, again.reason) == (first.status, first.reason)


@pytest.mark.toolkit
@pytest.mark.zoo
@pytest.mark.parametrize("name", ["yolov8n", "lcnet-orientation", "ppocr-cls"])
def test_zoo_models_no_node_called_cpu_that_compiles_on_the_npu(zoo, name):
    from workbench.support.compile import compile_check

    model = zoo(name)
    static = static_check(model)  # on-demand probes: from the user cache after the first run
    where = compile_check(model).placements
    rows = static.nodes
    called_cpu = set(rows[rows.status == "cpu"].node)
    assert {n for n in called_cpu if where[n] != "CPU"} == set()
    assert static.counts()["attention"] == 0  # measured: Split / MaxPool variants probed on demand
