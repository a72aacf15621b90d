import pytest
from onnx import helper

from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
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
    report = static_check(tiny_models[name], "rk3588")
    assert expected <= set(report.nodes.status)
    assert (
        report.exit_code
        == {"npu": 0, "cpu": 1, "rejected": 2}[max(expected, key=["npu", "cpu", "rejected"].index)]
    )


def test_cpu_node_has_reason_and_fix(tiny_models):
    row = static_check(tiny_models["cpu-fallback"]).nodes.set_index("node").loc["sin"]
    assert row.status == "cpu" and "CPU" in row.reason and "outputs=" in row.fix


def test_needs_attention_for_a_documented_limit_not_probed():
    proto = conv_relu_sigmoid()
    conv = proto.graph.node[0]
    conv.attribute.append(helper.make_attribute("strides", [9, 9]))  # NPU takes 1-7
    del proto.graph.output[0].type.tensor_type.shape.dim[:]
    report = static_check(OnnxModel.from_proto(proto))
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
