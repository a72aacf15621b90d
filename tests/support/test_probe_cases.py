"""The probe models: one per published operator, each valid, runnable and true to the contract."""

from collections import Counter
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from workbench.errors import WorkbenchError
from workbench.support.probe_cases import (
    DEFAULT_OPSET,
    PROBE_INPUT_SHAPE,
    PUBLISHED_OPS,
    UNPROBED,
    ProbeCase,
    probe_cases,
    probe_opset,
)

CASES = probe_cases()
#: Probes onnxruntime cannot run, with the reason. onnxruntime 1.26 runs every one.
ORT_CANNOT_RUN: dict[str, str] = {}
#: Ops whose probe must take two computed operands (nothing to constant-fold).
BINARY_OPS = (
    "Add Sub Mul Div Pow Max Min Mean Sum Equal Greater GreaterOrEqual Less LessOrEqual "
    "And Or Xor BitwiseAnd BitwiseOr BitwiseXor BitShift Mod Einsum Concat"
).split()


@cache
def _model(case: ProbeCase) -> onnx.ModelProto:
    return case.build()


def _ids(case: ProbeCase) -> str:
    return f"{case.op}[{case.variant}]"


def _all_nodes(graph: onnx.GraphProto):
    """Nodes of ``graph`` and of its subgraphs (If branches, Loop and Scan bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                yield from _all_nodes(sub)


def test_published_list_is_packaged():
    assert len(PUBLISHED_OPS) == 185
    assert PUBLISHED_OPS["Conv"] == "" and PUBLISHED_OPS["Abs"] == "Not Supported"


def test_every_published_op_is_probed_or_explained():
    probed = {case.op for case in CASES}
    assert set(PUBLISHED_OPS) == probed | set(UNPROBED)
    assert not probed & set(UNPROBED)
    assert all(UNPROBED.values())


def test_cases_follow_the_op_list_with_unique_variants():
    order = list(PUBLISHED_OPS)
    ranks = [order.index(case.op) for case in CASES]
    assert ranks == sorted(ranks)
    assert not [key for key, n in Counter((c.op, c.variant) for c in CASES).items() if n > 1]


def test_attribute_variants_are_there():
    variants = {(case.op, case.variant) for case in CASES}
    for op, wanted in {
        "Conv": {"default", "kernel=7", "kernel=33", "stride=2", "stride=8", "group=8", "dilation=2"},
        "ConvTranspose": {"stride=2", "stride=3", "stride=4"},
        "Resize": {"mode=nearest", "mode=linear,half_pixel", "mode=linear,align_corners", "mode=cubic"},
        "MaxPool": {"kernel=2,stride=2", "kernel=3,pads=1", "kernel=16"},
        "AveragePool": {"kernel=2,stride=2", "kernel=3,pads=1", "kernel=16"},
        "Reshape": {"5d"},
        "Transpose": {"5d"},
        "Softmax": {"axis=1", "axis=-1"},
        "Pad": {"mode=constant", "mode=reflect", "mode=edge"},
        "MatMul": {"const_b", "computed"},
    }.items():
        assert {(op, v) for v in wanted} <= variants, op


def test_selection_by_op_name():
    assert {c.op for c in probe_cases(["Conv", "Relu"])} == {"Conv", "Relu"}
    assert probe_cases("Conv") == probe_cases(["Conv"])
    assert probe_cases(["GroupNormalization"]) == []  # unprobed, but known
    with pytest.raises(WorkbenchError, match="NoSuchOp"):
        probe_cases(["NoSuchOp"])


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_probe_model_follows_the_contract(case):
    model = _model(case)
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph

    (x,) = graph.input
    assert x.name == "x" and x.type.tensor_type.elem_type == TensorProto.FLOAT
    assert tuple(d.dim_value for d in x.type.tensor_type.shape.dim) == PROBE_INPUT_SHAPE

    (probe,) = [node for node in _all_nodes(graph) if node.name == "probe"]
    assert probe.op_type == case.op and probe in graph.node

    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # x feeds 1x1 convs 8->8 only, so the probe never sits on the input
        if "x" in node.input:
            assert node.op_type == "Conv" and node.input[0] == "x", node.name
            assert inits[node.input[1]].shape == (8, 8, 1, 1), node.name
    tensors = {name for node in _all_nodes(graph) for name in [*node.input, *node.output]}
    theirs = set(probe.output) | {f"probe_in{i}" for i in range(len(probe.input))}
    assert {name for name in tensors if name.startswith("probe")} <= theirs  # "probe*" names are the probe's

    downstream = set(probe.output)  # the probe is not dead code: an output depends on it
    for node in graph.node:  # nodes are in topological order
        if downstream & set(node.input):
            downstream |= set(node.output)
    assert downstream & {out.name for out in graph.output}

    if case.op in BINARY_OPS:
        assert not set(probe.input) & set(inits), "binary probes take computed operands"

    (opset,) = model.opset_import
    assert opset.domain == "" and opset.version == probe_opset(case.op) <= 19
    assert opset.version == DEFAULT_OPSET or not _exists_at(case.op, DEFAULT_OPSET)
    assert model.ir_version == (9 if opset.version >= 19 else 8)


def _exists_at(op: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op, opset)
    except onnx.defs.SchemaError:
        return False
    return True


@pytest.mark.parametrize("case", CASES[:: max(1, len(CASES) // 20)], ids=_ids)
def test_builds_are_deterministic(case):
    assert case.build().SerializeToString() == _model(case).SerializeToString()


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_runs_on_onnxruntime(case):
    if case.op in ORT_CANNOT_RUN:
        pytest.skip(ORT_CANNOT_RUN[case.op])
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own shape-merge warnings are noise here
    session = ort.InferenceSession(
        _model(case).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).uniform(0, 255, PROBE_INPUT_SHAPE).astype(np.float32)  # as the probe
    outputs = session.run(None, {"x": x})
    for out in outputs:
        if out.dtype.kind == "f":
            assert np.isfinite(out).all()
