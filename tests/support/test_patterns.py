"""The pattern matcher alone: no toolkit."""

import pytest
from onnx import helper

from tests.support.pattern_models import PATTERN_MODELS, gelu_by_parts, hardswish_by_parts, layernorm_by_parts
from workbench.support.patterns import find_patterns


@pytest.mark.parametrize("pattern", list(PATTERN_MODELS))
def test_each_pattern_is_found_with_exactly_its_nodes(pattern):
    build, names = PATTERN_MODELS[pattern]
    matches = find_patterns(build().graph)
    assert [(m.pattern, m.names) for m in matches] == [(pattern, names)]


def test_hardswish_as_x_times_hardsigmoid_by_parts():
    proto = hardswish_by_parts()
    nodes = {n.name: n for n in proto.graph.node}
    # a * (clip(a + 3, 0, 6) / 6): the scale before the product
    nodes["hs_div"].CopyFrom(helper.make_node("Div", ["hs2", "six_b"], ["hs3"], name="hs_div"))
    nodes["hs_mul"].CopyFrom(helper.make_node("Mul", ["hs3", "a"], ["p"], name="hs_mul"))
    order = ["conv_in", "hs_add", "hs_clip", "hs_div", "hs_mul", "conv_out"]
    graph_nodes = [nodes[n] for n in order]
    del proto.graph.node[:]
    proto.graph.node.extend(graph_nodes)
    (match,) = find_patterns(proto.graph)
    assert match.names == ("hs_add", "hs_clip", "hs_div", "hs_mul")


def test_layernorm_with_mul_for_the_square():
    proto = layernorm_by_parts()
    pow_node = next(n for n in proto.graph.node if n.name == "ln_pow")
    pow_node.CopyFrom(helper.make_node("Mul", ["ln2", "ln2"], ["ln3"], name="ln_pow"))
    (match,) = find_patterns(proto.graph)
    assert match.pattern == "LayerNorm" and len(match.names) == 9


def test_an_inner_tensor_read_outside_breaks_the_match():
    proto = gelu_by_parts()
    proto.graph.node.append(helper.make_node("Relu", ["g2"], ["side"], name="reads_erf"))
    proto.graph.output.append(helper.make_tensor_value_info("side", 1, None))
    assert find_patterns(proto.graph) == []


def test_a_plain_model_has_no_pattern(tiny_models):
    for model in tiny_models.values():
        assert find_patterns(model.proto.graph) == []


def test_a_different_op_in_the_chain_is_no_match():
    proto = hardswish_by_parts()
    next(n for n in proto.graph.node if n.name == "hs_clip").op_type = "Relu"
    assert find_patterns(proto.graph) == []
