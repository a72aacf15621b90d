import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.pattern_models import PATTERN_MODELS
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.support.compile import placements
from workbench.support.matrix import PLATFORM_FAMILIES, SupportMatrix
from workbench.support.static import static_check
from workbench.synthetic import conv_relu_sigmoid


@pytest.fixture(scope="module")
def matrix() -> SupportMatrix:
    return SupportMatrix.load()


def test_shipped_matrix_covers_the_published_list(matrix):
    from workbench.support.probe_cases import PUBLISHED_OPS, UNPROBED

    assert matrix.toolkit_version == "2.5.0"
    assert set(PUBLISHED_OPS) - set(UNPROBED) <= set(matrix.ops)
    for op in ("Conv", "Relu", "Sin", "NonMaxSuppression"):
        for family in PLATFORM_FAMILIES:
            assert matrix.result(op, family) is not None, (op, family)


def test_matrix_records_where_the_published_list_is_wrong(matrix):
    # Atan and GridSample are listed "Not Supported" but build with 2.5.0 (ARCHITECTURE notes).
    disagreements = matrix.disagreements("rk3588")
    assert "Atan" in disagreements and "GridSample" in disagreements
    assert matrix.ops["Atan"]["disagrees_with_published"] == disagreements["Atan"]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("conv-relu-sigmoid", {"npu"}),
        ("cpu-fallback", {"npu", "cpu"}),
        ("toolkit-rejects", {"rejected"}),
    ],
)
def test_synthetic_models_classes(tiny_models, name, expected):
    report = static_check(tiny_models[name], "rk3588", probe=False)
    assert expected <= set(report.nodes.status)
    assert (
        report.exit_code
        == {"npu": 0, "cpu": 1, "rejected": 2}[max(expected, key=["npu", "cpu", "rejected"].index)]
    )


def test_cpu_node_has_reason_and_fix(tiny_models):
    row = static_check(tiny_models["cpu-fallback"], probe=False).nodes.set_index("node").loc["sin"]
    assert row.status == "cpu" and "CPU" in row.reason and "outputs=" in row.fix


def test_needs_attention_for_a_documented_limit_not_probed():
    proto = conv_relu_sigmoid()
    conv = proto.graph.node[0]
    conv.attribute.append(helper.make_attribute("strides", [9, 9]))  # NPU takes 1-7
    del proto.graph.output[0].type.tensor_type.shape.dim[:]
    report = static_check(OnnxModel.from_proto(proto), probe=False)
    row = report.nodes.set_index("node").loc["conv1"]
    assert row.status == "attention" and "stride" in row.reason and report.exit_code == 1


def test_probed_variant_beats_documented_limit():
    proto = conv_relu_sigmoid()
    conv = proto.graph.node[0]
    conv.attribute.append(helper.make_attribute("strides", [8, 8]))  # probed: decomposed on the NPU
    del proto.graph.output[0].type.tensor_type.shape.dim[:]
    row = static_check(OnnxModel.from_proto(proto)).nodes.set_index("node").loc["conv1"]
    assert row.status == "npu"


def test_unknown_platform_lists_valid_ones(tiny_models):
    with pytest.raises(WorkbenchError, match="rk3588.*rv1106"):
        static_check(tiny_models["conv-relu-sigmoid"], "rk9999")


def test_custom_domain_node_is_rejected():
    proto = conv_relu_sigmoid()
    proto.graph.node[1].domain = "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    report = static_check(OnnxModel.from_proto(proto, allow_custom_ops=True))
    assert report.nodes.set_index("node").loc["relu1"].status == "rejected"


def test_batch_above_one_is_a_finding():
    proto = conv_relu_sigmoid()
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    del proto.graph.output[0].type.tensor_type.shape.dim[:]
    report = static_check(OnnxModel.from_proto(proto))
    assert any("batch 2" in f for f in report.findings)


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["yolov8n", "lcnet-orientation"])
def test_real_models_static(zoo, name):
    model = zoo(name)
    report = static_check(model, "rk3588")
    assert len(report.nodes) == len(model.proto.graph.node)
    assert report.counts()["rejected"] == 0


@pytest.mark.parametrize("pattern", list(PATTERN_MODELS))
def test_pattern_nodes_are_not_called_cpu_without_a_probe(pattern):
    # Div / Pow / Sqrt / Erf probed alone land on the CPU; inside the pattern they may not
    build, names = PATTERN_MODELS[pattern]
    nodes = static_check(OnnxModel.from_proto(build()), probe=False).nodes.set_index("node")
    assert "cpu" not in set(nodes.status)
    attention = nodes[nodes.status == "attention"]
    assert len(attention) and set(attention.index) <= set(names)
    assert all(pattern in reason for reason in attention.reason if "written out" in reason)


def _shape_subgraph_model() -> OnnxModel:
    """conv -> Reshape to (1, C, H*W), the target computed from Shape/Gather/Cast/Concat."""
    proto = conv_relu_sigmoid()
    y = proto.graph.output[0]
    nodes = list(proto.graph.node)
    nodes[-1].output[0] = "sig"
    inits = [
        numpy_helper.from_array(np.array([0, 1], np.int64), "first_two"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes += [
        helper.make_node("Shape", ["sig"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "first_two"], ["nc"], name="gather", axis=0),
        helper.make_node("Cast", ["nc"], ["nc_i"], name="cast", to=TensorProto.INT64),
        helper.make_node("Concat", ["nc_i", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["sig", "target"], ["y"], name="reshape"),
    ]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(inits)
    y.type.tensor_type.shape.Clear()
    return OnnxModel.from_proto(proto)


def test_nodes_computed_from_constants_are_folded():
    nodes = static_check(_shape_subgraph_model(), probe=False).nodes.set_index("node")
    for name in ("shape", "gather", "cast", "concat"):
        assert nodes.loc[name].status == "npu" and "folded" in nodes.loc[name].reason, name
    assert "folded" not in nodes.loc["reshape"].reason  # it reads the feature map


def _layers(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["op_type", "target", "onnx_node"])


def test_placements_resolve_fused_nodes_to_their_layer():
    model = _shape_subgraph_model()
    layers = _layers(
        [
            ("InputOperator", "CPU", None),
            ("ConvRelu", "NPU", "conv1"),  # relu1 fused into it
            ("ConvSigmoid", "CPU", "conv2"),  # sigmoid fused into a CPU layer (made up)
            ("Reshape", "NPU", "reshape"),
            ("OutputOperator", "CPU", "reshape"),
        ]
    )
    where = placements(model, layers)
    assert where["relu1"] == "NPU" and where["sigmoid"] == "CPU" and where["reshape"] == "NPU"
    # the shape computation is folded at build time, though it reads a CPU layer's output
    assert where["shape"] == where["gather"] == where["concat"] == "removed"
