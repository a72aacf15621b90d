"""Turn an onnxruntime dynamically-quantized model back into a float model.

``onnxruntime.quantization.quantize_dynamic`` replaces each MatMul / Conv by integer ops:
``DynamicQuantizeLinear(x) -> MatMulInteger / ConvInteger(x_q, w_int8, x_zp, w_zp) -> Cast ->
Mul(x_scale * w_scale)``. rknn-toolkit2 takes none of them (integer dtypes, and a quantization
computed at run time: a "dynamic graph"), but it quantizes a float model itself. This module
rewrites every such chain back to ``MatMul(x, w)`` / ``Conv(x, w)`` with the weights
dequantized, ``w = (w_int8 - w_zp) * w_scale``, and drops what is left unused
(DynamicQuantizeLinear, the scale Mul), so the model runs in float as before quantization,
up to the weights' rounding. ``rknn-workbench dequantize MODEL -o float.onnx`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import ModelError, UnsupportedModelError

#: The integer ops quantize_dynamic writes, and the float op each stands for.
INTEGER_OPS = {"MatMulInteger": "MatMul", "ConvInteger": "Conv"}
#: onnxruntime's contrib op for a dynamically quantized MatMul (ORT-optimised files).
_CONTRIB_MATMUL = "DynamicQuantizeMatMul"


def dynamic_quantization_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes that make ``graph`` an onnxruntime dynamically-quantized model:
    DynamicQuantizeLinear feeding MatMulInteger / ConvInteger, and com.microsoft
    DynamicQuantizeMatMul. Empty for any other model (QDQ models included)."""
    producers = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        fed = node.input and getattr(producers.get(node.input[0]), "op_type", "") == "DynamicQuantizeLinear"
        if (node.op_type in INTEGER_OPS and fed) or node.op_type == _CONTRIB_MATMUL:
            found.append(node.name)
    return found


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs by tensor name."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            value = helper.get_attribute_value(attr)
            if isinstance(value, TensorProto):
                value = numpy_helper.to_array(value)
            values[node.output[0]] = np.asarray(value)
    return values


@dataclass
class DequantizeResult:
    """What :func:`dequantize_model` rewrote."""

    model: onnx.ModelProto  #: the float model (checked with onnx.checker)
    rewritten: list[str]  #: integer nodes replaced by float ones
    removed: int  #: nodes dropped as unused after the rewrite


def dequantize_model(proto: onnx.ModelProto) -> DequantizeResult:
    """Rewrite every dynamically-quantized MatMul / Conv of ``proto`` (not modified) back to float.

    Raises:
        UnsupportedModelError: the model has no dynamically-quantized node, or one whose
            chain is not the one quantize_dynamic writes (names the node).
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    targets = dynamic_quantization_nodes(graph)
    if not targets:
        raise UnsupportedModelError(
            f"{graph.name or 'the model'} has no dynamically-quantized node (DynamicQuantizeLinear "
            "feeding MatMulInteger / ConvInteger): there is nothing to dequantize. "
            "Check it with `rknn-workbench check MODEL`."
        )
    constants = constant_values(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replacements: dict[int, onnx.NodeProto] = {}  # id(node replaced) -> float node
    dropped: set[int] = set()
    for node in graph.node:
        if node.name not in targets:
            continue
        if node.op_type == _CONTRIB_MATMUL:
            new, gone, weight = _contrib_matmul(node, constants)
        else:
            new, gone, weight = _integer_chain(node, constants, producers, consumers)
        graph.initializer.append(weight)
        replacements[id(gone[-1])] = new
        dropped |= {id(n) for n in gone[:-1]}
    nodes = [replacements.get(id(n), n) for n in graph.node if id(n) not in dropped]
    before = len(nodes)
    nodes = _drop_unused(nodes, {o.name for o in graph.output})
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    _drop_unused_domains(model)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise UnsupportedModelError(f"The dequantized model is not valid ONNX: {err}") from err
    return DequantizeResult(model, targets, len(dropped) + before - len(nodes))


def dequantize(path: str | Path, out: str | Path) -> DequantizeResult:
    """Read the model at ``path``, dequantize it (dequantize_model) and write it to ``out``."""

    path, out = Path(path), Path(out)
    if not path.is_file():
        raise ModelError(f"ONNX model {str(path)!r} does not exist. Check the path.")
    result = dequantize_model(onnx.load(str(path)))
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(result.model, str(out))
    return result


def _integer_chain(node, constants, producers, consumers):
    """The float node for a MatMulInteger / ConvInteger and the nodes it replaces, the one
    whose output it takes last: [integer op, Cast, Mul by scale]."""
    where = f"node {node.name!r} ({node.op_type})"
    quantizer = producers[node.input[0]]
    inputs = list(node.input) + [""] * (4 - len(node.input))
    a_q, w_q, a_zp, w_zp = inputs[:4]
    if w_q not in constants or (w_zp and w_zp not in constants) or a_zp not in ("", quantizer.output[2]):
        raise _chain_error(where, "its weight and weight zero point are not constants")
    cast = _only(consumers.get(node.output[0], []), "Cast")
    mul = _only(consumers.get(cast.output[0], []) if cast else [], "Mul")
    if cast is None or mul is None:
        raise _chain_error(where, "its output does not go through Cast and Mul by the scale")
    scale_name = next(i for i in mul.input if i != cast.output[0])
    scale_mul = producers.get(scale_name)
    if scale_mul is None or scale_mul.op_type != "Mul" or quantizer.output[1] not in scale_mul.input:
        raise _chain_error(where, "its output scale is not x_scale * w_scale")
    w_scale_name = next(i for i in scale_mul.input if i != quantizer.output[1])
    if w_scale_name not in constants:
        raise _chain_error(where, "its weight scale is not a constant")
    weight = _dequantized(
        constants[w_q], constants.get(w_zp, np.zeros(1)), constants[w_scale_name], node.op_type
    )
    weight_name = f"{node.name}_weight"
    op = INTEGER_OPS[node.op_type]
    new = helper.make_node(op, [quantizer.input[0], weight_name], [mul.output[0]], name=node.name)
    new.attribute.extend(node.attribute)  # ConvInteger's attributes are Conv's
    return new, [node, cast, mul], numpy_helper.from_array(weight, weight_name)


def _contrib_matmul(node, constants):
    """com.microsoft DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias) -> MatMul (+ Add)."""
    where = f"node {node.name!r} ({node.op_type})"
    inputs = list(node.input) + [""] * (5 - len(node.input))
    a, b, b_scale, b_zp, bias = inputs[:5]
    if b not in constants or b_scale not in constants or (b_zp and b_zp not in constants):
        raise _chain_error(where, "its weight, scale and zero point are not constants")
    if bias:
        raise _chain_error(where, "a bias input is not handled")
    weight = _dequantized(constants[b], constants.get(b_zp, np.zeros(1)), constants[b_scale], "MatMulInteger")
    name = f"{node.name}_weight"
    new = helper.make_node("MatMul", [a, name], list(node.output), name=node.name)
    return new, [node], numpy_helper.from_array(weight, name)


def _dequantized(w_q: np.ndarray, zero: np.ndarray, scale: np.ndarray, op: str) -> np.ndarray:
    """(w_q - zero) * scale, per tensor or per output channel (Conv: axis 0; MatMul: the last)."""
    zero, scale = np.asarray(zero, np.float32), np.asarray(scale, np.float32)
    if scale.size > 1 or zero.size > 1:  # per channel
        shape = (-1,) + (1,) * (w_q.ndim - 1) if op == "ConvInteger" else (1,) * (w_q.ndim - 1) + (-1,)
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((w_q.astype(np.float32) - zero) * scale).astype(np.float32)


def _only(nodes, op_type: str):
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None


def _chain_error(where: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Cannot dequantize {where}: {why}, unlike what onnxruntime's quantize_dynamic writes. "
        "Export the float model again from its framework instead of quantizing it."
    )


def _drop_unused(nodes: list, outputs: set[str]) -> list:
    """Nodes minus those whose outputs nobody reads (repeatedly), graph outputs kept."""
    while True:
        read = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(kept) == len(nodes):
            return nodes
        nodes = kept


def _drop_unused_initializers(graph) -> None:
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    stored = {t.name for t in graph.initializer}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [i for i in graph.input if i.name in read or i.name not in stored]
    del graph.input[:]
    graph.input.extend(inputs)


def _drop_unused_domains(model) -> None:
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
