"""Static vs compile disagreements, on made-up layer tables: no toolkit."""

import pandas as pd

from workbench.model import OnnxModel
from workbench.support.compare_checks import disagreements
from workbench.support.compile import CompileReport, placements
from workbench.support.static import SupportReport
from workbench.synthetic import conv_relu_sigmoid


def _reports(statuses: dict[str, str], layer_rows) -> tuple[SupportReport, CompileReport]:
    model = OnnxModel.from_proto(conv_relu_sigmoid())
    nodes = pd.DataFrame(
        [
            {"node": n.name, "op_type": n.op_type, "status": statuses.get(n.name, "npu")}
            for n in model.proto.graph.node
        ]
    )
    layers = pd.DataFrame(layer_rows, columns=["op_type", "target", "onnx_node"])
    static = SupportReport("rk3588", nodes, [], "2.5.0")
    return static, CompileReport("rk3588", layers, placements=placements(model, layers))


def test_a_node_fused_into_an_npu_layer_withdraws_a_static_cpu():
    # relu1 has no layer of its own: it runs inside conv1's ConvRelu, on the NPU
    rows = [("ConvRelu", "NPU", "conv1"), ("ConvSigmoid", "NPU", "conv2")]
    static, compiled = _reports({"relu1": "cpu"}, rows)
    assert disagreements(static, compiled) == ["relu1 (Relu): static cpu, compiled on NPU"]


def test_a_node_fused_into_a_cpu_layer_agrees_with_a_static_cpu():
    rows = [("Conv", "NPU", "conv1"), ("Relu", "NPU", "relu1"), ("ConvSigmoid", "CPU", "conv2")]
    static, compiled = _reports({"conv2": "cpu", "sigmoid": "cpu"}, rows)
    assert disagreements(static, compiled) == []
