"""The toolkit's step-1 files turned into an onnxruntime graph with its fake quantization.

``hybrid_quantization_step1`` writes ``<name>.model`` (an ONNX protobuf of the toolkit's own
optimised graph: BN folded, Swish fused as ``exSwish``, concat + conv split, head tensors
re-laid; tensor names are the cfg's), ``<name>.quantization.cfg`` (per-activation int8
parameters, ranges already clipped to what the next op uses) and ``<name>.data`` (a pickle
holding, among others, the toolkit's full quantization table ``quant_tab``, weights
included). Mapping the toolkit's few custom ops back to standard ONNX makes the graph
runnable; quantize/dequantize pairs at the compiled layer boundaries and int8-rounded
weights make it the toolkit's int8 model (rules in workbench.emulate.quantize).
"""

from __future__ import annotations

import argparse
import pickle
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import yaml
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from workbench.emulate.quantize import QParams, Rules, TensorQuant, fake_quant_bias, fake_quant_weight
from workbench.errors import EmulatorError

_RAW, _Q, _F16 = "__emu_raw", "__emu_q", "__emu_f16"


@dataclass
class Step1:
    """What the toolkit's hybrid step 1 wrote, read into memory."""

    proto: onnx.ModelProto  #: the toolkit's optimised graph (its tensor names)
    tensors: dict[str, TensorQuant]  #: the .quantization.cfg, per activation
    quant_tab: dict = field(default_factory=dict, repr=False)  #: the .data file's table (may be {})
    #: what variants share: int8 weights per weight rule (computed on first use)
    cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, files: Mapping[str, str | Path]) -> Step1:
        """Read ``{"model": ..., "data": ..., "cfg": ...}`` as the worker's hybrid_step1 returns.

        Raises:
            EmulatorError: a file is missing or not what step 1 writes.
        """
        try:
            proto = onnx.load(str(files["model"]), load_external_data=False)
            cfg = yaml.safe_load(Path(files["cfg"]).read_text()) or {}
        except (OSError, KeyError, ValueError, DecodeError, yaml.YAMLError) as err:
            raise EmulatorError(
                f"Cannot read the toolkit's step-1 files {dict(files)}: {err}. Run hybrid_step1 "
                "again (workbench.fix.evaluate.step1_session shows how)."
            ) from err
        params = cfg.get("quantize_parameters") or {}
        tensors = {name: TensorQuant.from_cfg(name, entry) for name, entry in params.items()}
        return cls(proto, tensors, _read_quant_tab(files.get("data")))


class _ToolkitData(pickle.Unpickler):
    """Unpickle step 1's .data file allowing only plain containers and argparse.Namespace
    (the file is the toolkit's; nothing else may be built from it)."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("argparse", "Namespace"):
            return argparse.Namespace
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in the toolkit's .data file")


def _read_quant_tab(path) -> dict:
    if not path or not Path(path).is_file():
        return {}
    try:
        with open(path, "rb") as f:
            data = _ToolkitData(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return {}  # another toolkit version's layout: the rules then stand unchecked
    return data.get("quant_tab", {}) if isinstance(data, dict) else {}


@dataclass
class Emulation:
    """A runnable graph and what was done to each tensor."""

    proto: onnx.ModelProto
    boundaries: list[str]  #: tensors rounded to int8 (toolkit names), in graph order
    fused: dict[str, bool]  #: conv outputs read by one op: True when the rules fuse the pair
    requantized: set[str] = field(default_factory=set)  #: fused, but rounded to int8 all the same
    float16: list[str] = field(default_factory=list)  #: float16 ops' outputs (their float16 values)

    def unrounded(self) -> dict[str, bool]:
        """{conv output: True when it stays unrounded inside its layer} (for check_rules)."""
        return {t: inside and t not in self.requantized for t, inside in self.fused.items()}


def emulation_graph(
    step1: Step1,
    rules: Rules,
    float_layers: Iterable[str] = (),
    *,
    quantize: bool = True,
    per_channel: bool = True,
) -> Emulation:
    """The step-1 graph in standard ONNX with the toolkit's int8 fake quantization.

    Args:
        step1: the toolkit's step-1 files.
        rules: the fake-quantization rules (workbench.emulate.quantize.RULES_2_5_0).
        float_layers: tensors (cfg names) whose producing op runs in float16, with the
            toolkit's semantics (measured on 2.5.0 with its snapshots): the op's inputs and
            weights in float16, its output (still named ``<name>``) back to int8 at the
            same cfg scale for the next int8 layer (``<name>__int8``), and the fusion broken:
            the pre-activation between an int8 conv and a float16 activation (or a float16
            conv and an int8 activation) rounded to int8 at its cfg scale.
        quantize: False gives the plain float graph (to check the mapping to ONNX).
        per_channel: conv weights per output channel (``quantized_method="channel"``), else
            one scale per tensor ("layer").

    Raises:
        EmulatorError: a float layer is not a tensor of the graph.
    """
    proto = onnx.ModelProto()
    proto.CopyFrom(step1.proto)
    graph = proto.graph
    pairs = _pairs(graph)  # on the toolkit's own ops, before exSwish becomes two nodes
    fused = {t: pair in rules.fuse for t, pair in pairs.items()}
    converted = _standard_ops(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    float_layers = list(dict.fromkeys(float_layers))
    f16_nodes = _float16_nodes(graph, producers, float_layers)
    requantized = {t for t, pair in pairs.items() if pair in rules.fuse and pair in rules.requantize}
    plan = _activation_plan(graph, step1.tensors, fused, requantized, consumers, f16_nodes, rules)
    for name in converted:  # a model input read by float16 ops only goes to float16 directly
        if consumers.get(name) and all(id(u) in f16_nodes for u in consumers[name]):
            plan.pop(name, None)
    if not quantize:  # the same tensors, unrounded
        order = [*(i.name for i in graph.input), *(o for n in graph.node for o in n.output)]
        return Emulation(proto, [t for t in order if t in plan], fused, requantized)
    inits = {i.name: i for i in graph.initializer}
    _quantize_weights(graph, inits, step1, rules, f16_nodes, per_channel)
    boundaries = _insert(graph, plan, f16_nodes, inits)
    return Emulation(proto, boundaries, fused, requantized, float_layers)


def _float16_nodes(graph, producers, float_layers: list[str]) -> set[int]:
    """ids of the nodes that run in float16: the producer of each float layer (an exSwish
    is both its Sigmoid and its Mul)."""
    unknown = [t for t in float_layers if t not in producers]
    if unknown:
        raise EmulatorError(
            f"float_layers names {unknown[:5]}, which no op of the toolkit's graph writes; use "
            "tensor names of the .quantization.cfg (ONNX tensor names for most)."
        )
    by_name = {n.name: n for n in graph.node}
    nodes = set()
    for t in float_layers:
        node = producers[t]
        partner = by_name.get(f"{node.name}__sigmoid")
        nodes |= {id(node), *([id(partner)] if partner is not None else [])}
    return nodes


def _standard_ops(graph: onnx.GraphProto) -> set[str]:
    """The toolkit's custom ops as standard ONNX: exSwish -> x * Sigmoid(x), exSoftmax13
    -> Softmax, exDataConvert -> Identity (its int8 rounding is inserted with the rest).
    Returns the tensors exDataConvert writes."""
    nodes, converted = [], set()
    for n in graph.node:
        if n.op_type == "exSwish":
            sig = f"{n.output[0]}__emu_sigmoid"
            nodes.append(helper.make_node("Sigmoid", [n.input[0]], [sig], name=f"{n.name}__sigmoid"))
            nodes.append(helper.make_node("Mul", [n.input[0], sig], [n.output[0]], name=n.name))
            continue
        if n.op_type == "exSoftmax13":
            axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
            n = helper.make_node("Softmax", [n.input[0]], list(n.output), name=n.name, axis=axis)
        elif n.op_type == "exDataConvert":
            n = helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name)
            converted.update(n.output)
        elif n.op_type.startswith("ex"):
            raise EmulatorError(
                f"The toolkit's graph uses its custom op {n.op_type} (node {n.name}), which the "
                "emulator cannot map to standard ONNX yet: use the simulator for this model."
            )
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    return converted


def _kind(node) -> str:
    """A producer's kind for the rule table: conv, depthwise or the op type."""
    if node.op_type != "Conv":
        return node.op_type
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return "depthwise" if group > 1 else "conv"


def _pairs(graph) -> dict[str, tuple[str, str]]:
    """The rule-table key of every Conv output read by one op: (producer kind, op); the op
    is "Add:first" when the tensor is an Add's first input (the toolkit fuses a conv into
    the Add that reads it second: ConvAdd). Graph outputs are never inside a layer."""
    outputs = {o.name for o in graph.output}
    readers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    pairs = {}
    for n in graph.node:
        t = n.output[0] if n.output else ""
        users = readers.get(t, [])
        if n.op_type != "Conv" or len(users) != 1 or t in outputs:
            continue
        op = users[0].op_type
        pairs[t] = (_kind(n), "Add:first" if op == "Add" and users[0].input[0] == t else op)
    return pairs


def _quantize_weights(graph, inits, step1: Step1, rules: Rules, f16_nodes, per_channel: bool) -> None:
    """Conv weights to int8 (per channel or per tensor) and biases to the int32 grid (a
    float16 conv: its weights to float16). The int8 ones are computed once per Step1 and
    weight rule."""
    cache = step1.cache.setdefault(("weights", rules.weights, per_channel), {})
    for n in graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        if id(n) in f16_nodes:  # float16 weights; the bias stays float32 (measured: exact)
            w = numpy_helper.to_array(inits[n.input[1]])
            _set(inits[n.input[1]], w.astype(np.float16).astype(np.float32))
            continue
        if n.name not in cache:
            cache[n.name] = _int8_weights(n, inits, step1.tensors, rules, per_channel)
        for init in cache[n.name]:
            inits[init.name].CopyFrom(init)


def _int8_weights(
    node, inits, tensors: Mapping[str, TensorQuant], rules: Rules, per_channel: bool
) -> list[onnx.TensorProto]:
    w = numpy_helper.to_array(inits[node.input[1]])
    quantized, scales = fake_quant_weight(w, rules.weights, per_channel)
    out = [numpy_helper.from_array(quantized.astype(w.dtype), node.input[1])]
    source = tensors.get(node.input[0])
    if len(node.input) > 2 and node.input[2] in inits and source is not None and source.params:
        b = numpy_helper.to_array(inits[node.input[2]])
        out.append(
            numpy_helper.from_array(
                fake_quant_bias(b, source.params.scale, scales).astype(b.dtype), node.input[2]
            )
        )
    return out


def _set(init: onnx.TensorProto, value: np.ndarray) -> None:
    init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype), init.name))


def _activation_plan(graph, tensors, fused, requantized, consumers, f16_nodes, rules) -> dict[str, QParams]:
    """The int8 parameters of every tensor rounded to int8 (a layer boundary): a fused
    pre-activation only when the rules requantize it or a float16 op breaks the fusion; a
    float16 op's output unless only float16 ops read it."""
    producers = {o: n for n in graph.node for o in n.output}
    plan: dict[str, QParams] = {}
    for name in [*(i.name for i in graph.input), *(o for n in graph.node for o in n.output)]:
        entry = tensors.get(name)
        if entry is None or entry.params is None or entry.params.bits != 8:
            continue
        users = consumers.get(name, [])
        feeds_f16 = bool(users) and all(id(u) in f16_nodes for u in users)
        made_f16 = name in producers and id(producers[name]) in f16_nodes
        if made_f16 and feeds_f16:
            continue  # float16 from op to op
        if fused.get(name) and not (made_f16 or feeds_f16 or name in requantized):
            continue  # inside its layer
        broken = fused.get(name) and feeds_f16 and not made_f16
        ori = broken and rules.float16_preactivation == "ori" and entry.ori_params
        plan[name] = entry.ori_params if ori else entry.params
    return plan


def _insert(graph, plan: Mapping[str, QParams], f16_nodes, inits) -> list[str]:
    """QuantizeLinear/DequantizeLinear after each planned tensor, float16 casts around
    float16 ops. An int8 op's output keeps its name (rounded); a float16 op's output keeps
    its name for the float16 value and its int8 copy is ``<name>__int8``, read by the int8
    ops after it (the toolkit's own names). Returns the rounded tensors, in graph order."""
    nodes, rounded, int8_copy = [], [], {}
    for i in graph.input:
        if i.name in plan:
            nodes += _qdq(i.name, plan[i.name], graph)
    for n in graph.node:
        f16 = id(n) in f16_nodes
        for k, name in enumerate(n.input):
            if not f16 and name in int8_copy:
                n.input[k] = int8_copy[name]
            elif f16 and name and name not in inits:
                nodes += _casts(name, f"{name}{_F16}_{n.name}")
                n.input[k] = f"{name}{_F16}_{n.name}"
        outs = list(n.output)
        for k, name in enumerate(outs):
            if f16 or name in plan:
                n.output[k] = f"{name}{_F16 if f16 else _RAW}"
        nodes.append(n)
        for name in outs:
            if f16:
                nodes += _casts(f"{name}{_F16}", name)
                if name in plan:
                    int8_copy[name] = f"{name}__int8"
                    nodes += _qdq(int8_copy[name], plan[name], graph, source=name)
                    rounded.append(int8_copy[name])
            elif name in plan:
                nodes += _qdq(name, plan[name], graph, source=f"{name}{_RAW}")
                rounded.append(name)
    del graph.node[:]
    graph.node.extend(nodes)
    return rounded


def _qdq(name: str, q: QParams, graph, source: str | None = None) -> list:
    """Nodes rounding ``source`` (the tensor itself for a graph input) to int8 as ``name``."""
    scale = numpy_helper.from_array(np.array(q.scale, np.float32), f"{name}__emu_scale")
    zero = numpy_helper.from_array(np.array(q.zero_point, np.int8), f"{name}__emu_zero")
    graph.initializer.extend([scale, zero])
    if source is None:  # a graph input: its consumers read the rounded copy
        source = name
        rounded = f"{name}__emu_int8"
        for n in graph.node:
            for k, i in enumerate(n.input):
                if i == name:
                    n.input[k] = rounded
        name = rounded
    return [
        helper.make_node(
            "QuantizeLinear", [source, scale.name, zero.name], [f"{name}{_Q}"], name=f"{name}__q"
        ),
        helper.make_node(
            "DequantizeLinear", [f"{name}{_Q}", scale.name, zero.name], [name], name=f"{name}__dq"
        ),
    ]


def _casts(source: str, target: str) -> list:
    """``source`` rounded to float16 and back, as ``target``."""
    half = f"{target}__half"
    return [
        helper.make_node("Cast", [source], [half], name=f"{target}__to16", to=onnx.TensorProto.FLOAT16),
        helper.make_node("Cast", [half], [target], name=f"{target}__to32", to=onnx.TensorProto.FLOAT),
    ]
