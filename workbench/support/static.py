"""Static check: every node classified in milliseconds, before any conversion.

Combines the probed support matrix (what the installed toolkit does with each operator)
with the limits the toolkit documents for attributes and shapes. Every finding carries a
reason and a concrete next step. The compile check (compile.py) is the authority; this is
the instant first look.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pandas as pd
from onnx import helper

from workbench.dequantize import dynamic_quantization_nodes
from workbench.model import TOOLKIT_MAX_OPSET, OnnxModel
from workbench.support.matrix import CPU, NPU, REJECTED, REMOVED, SupportMatrix, family_of
from workbench.support.ondemand import OnDemandProber
from workbench.support.patterns import find_patterns, folded_nodes

#: Classes of the static check, from best to worst.
STATUSES = ("npu", "cpu", "attention", "rejected")
CUT_GRAPH = "cut the graph before it with load_onnx(outputs=[...]) and run the rest as post-processing"


@dataclass
class SupportReport:
    """Per-node verdicts of a static check."""

    platform: str
    nodes: pd.DataFrame  #: index, node, op_type, status, reason, fix, output_shape
    findings: list[str]  #: model-level findings (opset, batch, ...)
    toolkit_version: str

    def counts(self) -> dict[str, int]:
        return {s: int((self.nodes.status == s).sum()) for s in STATUSES}

    @property
    def exit_code(self) -> int:
        """0 all on the NPU, 1 some CPU fallback or attention, 2 something rejected."""
        counts = self.counts()
        return 2 if counts["rejected"] else (1 if counts["cpu"] or counts["attention"] else 0)

    def problems(self) -> pd.DataFrame:
        """Nodes that are not plain NPU nodes."""
        return self.nodes[self.nodes.status != "npu"]


def static_check(
    model: OnnxModel,
    platform: str = "rk3588",
    matrix: SupportMatrix | None = None,
    *,
    probe: bool = True,
) -> SupportReport:
    """Classify every node of ``model`` for ``platform``: npu, cpu, attention or rejected.

    Nodes computed from constants only are folded at build time (npu). Patterns the
    compiler fuses (HardSwish, LayerNorm, GELU written out; see patterns.py) are judged as a
    whole, and nodes whose attribute variant the matrix never probed, or that it puts on the
    CPU, are probed as themselves: with ``probe`` (default) and the toolkit installed, each
    such variant is built once with the toolkit and cached (ondemand.py), so a node is
    called "cpu" only where the toolkit puts it on the CPU. Without, those verdicts stay
    the matrix's, and pattern nodes the matrix puts on the CPU are "attention".
    """
    family_of(platform)  # validates the name, listing the valid ones
    matrix = matrix or SupportMatrix.load()
    shapes = {t.name: t.shape for t in model.tensors}
    shapes.update({i.name: tuple(i.dims) for i in model.proto.graph.initializer})
    initializers = frozenset(i.name for i in model.proto.graph.initializer) | frozenset(
        o for n in model.proto.graph.node if n.op_type == "Constant" for o in n.output
    )
    verdicts = [_verdict(node, platform, matrix, shapes, initializers) for node in model.proto.graph.node]
    _refine(model, platform, verdicts, shapes, probe)
    _point_at_dequantize(model, verdicts)
    rows = []
    for index, node in enumerate(model.proto.graph.node):
        status, reason, fix = verdicts[index]
        out_shape = shapes.get(node.output[0]) if node.output else None
        rows.append(
            {
                "index": index,
                "node": node.name,
                "op_type": node.op_type,
                "status": status,
                "reason": reason,
                "fix": fix,
                "output_shape": str(out_shape) if out_shape else "?",
            }
        )
    return SupportReport(platform, pd.DataFrame(rows), _model_findings(model), matrix.toolkit_version)


def _verdict(node, platform: str, matrix: SupportMatrix, shapes, initializers) -> tuple[str, str, str]:
    if node.domain not in ("", "ai.onnx"):
        return (
            "rejected",
            f"custom-domain operator {node.domain}::{node.op_type}",
            "re-export without custom operators, or register it with the toolkit's custom-op API",
        )
    matched = matrix.match(node.op_type, platform, node_tokens(node, shapes, initializers))
    variant, probed = matched if matched else ("", None)
    if probed is None:
        tried = ", ".join(matrix.variants(node.op_type, platform)) or "none"
        return (
            "attention",
            f"{node.op_type} with these attributes was not probed with toolkit "
            f"{matrix.toolkit_version} (probed variants: {tried})",
            "run the compile check (check --compile) for the authoritative answer",
        )
    probe = node.op_type + (f" ({variant})" if variant != "default" else "")
    if probed.status == REJECTED:
        return (
            "rejected",
            f"the toolkit refuses {probe}: {probed.message}".strip(),
            f"replace {node.op_type} with supported operators, or {CUT_GRAPH}",
        )
    limit = _attribute_limits(node, shapes)
    probed_keys = {part.split("=")[0] for part in variant.split(",")}
    if limit and limit[0] not in probed_keys:  # a probe of this very attribute beats the document
        _, reason, fix = limit
        return (
            "attention",
            reason,
            f"{fix}; or force it onto the CPU with config(op_target={{{node.name!r}: 'cpu'}})",
        )
    unknown = [o for o in node.output if o and shapes.get(o) is None]
    if unknown:
        return (
            "attention",
            f"output shape of {node.op_type} unknown after inference: a dynamic shape the NPU cannot take",
            "fix the input shapes (input_shapes=...), or simplify the graph (onnxsim) so shapes are static",
        )
    if probed.status == CPU:
        return (
            "cpu",
            f"{probe} runs on the CPU: every NPU<->CPU switch costs a copy",
            f"replace {node.op_type} with NPU operators, or move it to post-processing ({CUT_GRAPH})",
        )
    if probed.status in (NPU, REMOVED):
        return ("npu", "", "")
    return ("attention", f"unexpected probe status {probed.status!r}", "run the compile check")


#: Ops of an onnxruntime dynamically-quantized model that ``rknn-workbench dequantize`` removes.
_DYNAMIC_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"})


def dequantize_command(model: OnnxModel) -> str:
    """The command that rewrites ``model`` back to float."""
    source = str(model.path) if model.path else "MODEL"
    return f"rknn-workbench dequantize {source} -o {model.name}-float.onnx"


def _point_at_dequantize(model: OnnxModel, verdicts: list) -> None:
    """In a dynamically-quantized model, the fix of its integer ops is the dequantize command."""
    if not dynamic_quantization_nodes(model.proto.graph):
        return
    for i, node in enumerate(model.proto.graph.node):
        status, reason, _ = verdicts[i]
        if node.op_type in _DYNAMIC_OPS and status != "npu":
            fix = f"{dequantize_command(model)} (integer ops back to float), then check the float model"
            verdicts[i] = (status, reason, fix)


def _refine(model: OnnxModel, platform: str, verdicts: list, shapes, probe: bool) -> None:
    """Correct the per-op verdicts in place: folded constants, fused patterns, and nodes
    probed as themselves (see static_check)."""
    graph = model.proto.graph
    index = {n.name: i for i, n in enumerate(graph.node)}
    folded = {index[n] for n in folded_nodes(graph, shapes) if verdicts[index[n]][0] != "rejected"}
    for i in folded:
        verdicts[i] = ("npu", "computed from constants only: folded at build time", "")
    matches = [m for m in find_patterns(graph) if not folded & {index[n] for n in m.names}]
    with contextlib.ExitStack() as stack:
        prober = stack.enter_context(OnDemandProber(model, platform)) if probe else None
        for match in matches:
            _judge_pattern(match, [index[n] for n in match.names], verdicts, prober)
        in_patterns = {n for m in matches for n in m.names}
        for i, node in enumerate(graph.node):
            status, reason, _ = verdicts[i]
            if prober is None or node.name in in_patterns or i in folded:
                continue
            if status == "cpu" or (status == "attention" and not reason.startswith("output shape")):
                _judge_node(node, i, verdicts, prober)


def _judge_pattern(match, positions: list[int], verdicts: list, prober) -> None:
    probed = prober.probe(match.nodes) if prober else None
    version = prober.version if prober else ""
    if probed is None or probed.rejected:
        for i in positions:  # the single-op verdict stands, but never as a CPU claim
            if verdicts[i][0] == "cpu":
                verdicts[i] = (
                    "attention",
                    f"part of a {match.pattern} written out, which the compiler may fuse onto the NPU "
                    "(not probed as a whole here)",
                    "run the compile check (check --compile) for the authoritative answer",
                )
        return
    for i, target in zip(positions, probed.targets):
        if target == "CPU":
            verdicts[i] = (
                "cpu",
                f"part of a {match.pattern} written out; probed as a whole with toolkit {version}, "
                "this node runs on the CPU",
                f"replace the {match.pattern} by its ONNX operator or a fused form, or {CUT_GRAPH}",
            )
        elif verdicts[i][0] in ("cpu", "attention", "npu"):
            verdicts[i] = ("npu", f"part of a {match.pattern} the compiler fuses onto the NPU", "")


def _judge_node(node, i: int, verdicts: list, prober) -> None:
    probed = prober.probe([node])
    if probed is None:
        return
    how = f"probed as itself (its attributes, constants and input ranks) with toolkit {prober.version}"
    if probed.rejected:
        verdicts[i] = (
            "rejected",
            f"the toolkit refuses {node.op_type} {how}: {probed.rejected}".strip(),
            f"replace {node.op_type} with supported operators, or {CUT_GRAPH}",
        )
    elif probed.targets[0] == "CPU":
        verdicts[i] = (
            "cpu",
            f"{node.op_type} {how}: runs on the CPU; every NPU<->CPU switch costs a copy",
            f"replace {node.op_type} with NPU operators, or move it to post-processing ({CUT_GRAPH})",
        )
    else:
        verdicts[i] = ("npu", f"{how}: on the NPU", "")


def node_tokens(node, shapes, initializers: frozenset[str] = frozenset()) -> set[str]:
    """Attribute facts of a node in the probe variants' vocabulary: "mode=linear",
    "align_corners", "kernel=3", "stride=2", "group=8", "dilation=2", "5d"."""
    tokens = set()
    for name, value in _DEFAULT_ATTRIBUTES.get(node.op_type, {}).items():
        if not any(a.name == name for a in node.attribute):
            tokens |= {f"{name}={value}", value}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name == "to":  # Cast: the probes name the dtype
            tokens.add(f"to={helper.tensor_dtype_to_np_dtype(value).name}")
            continue
        if isinstance(value, bytes):
            tokens |= {f"{a.name}={value.decode()}", value.decode()}
        elif isinstance(value, int | float):
            tokens.add(f"{a.name}={value}")
        elif isinstance(value, list) and value and len(set(value)) == 1:
            tokens.add(f"{a.name}={value[0]}")
    aliases = {"kernel_shape": "kernel", "strides": "stride", "dilations": "dilation"}
    for token in list(tokens):
        name, _, value = token.partition("=")
        if name in aliases:
            tokens.add(f"{aliases[name]}={value}")
    if node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1]):
        kernel = shapes[node.input[1]][2:]
        if kernel and len(set(kernel)) == 1:
            tokens.add(f"kernel={kernel[0]}")
    if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
        tokens.add("const_b" if node.input[1] in initializers else "computed")
    ranks = [len(shapes[t]) for t in [*node.input, *node.output] if t and shapes.get(t)]
    if ranks and max(ranks) > 4:
        tokens.add("5d")
    return tokens


#: ONNX defaults of attributes that select a probe variant.
_DEFAULT_ATTRIBUTES = {"Resize": {"mode": "nearest", "coordinate_transformation_mode": "half_pixel"}}


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _attribute_limits(node, shapes) -> tuple[str, str, str] | None:
    """The first documented NPU limit (RKNN op-support list) the node breaks, as (attribute
    key in the probe variants' vocabulary, reason, fix); None when it is within them."""
    ranks = [len(shapes[t]) for t in [*node.input, *node.output] if t and shapes.get(t)]
    if ranks and max(ranks) > 4:
        return (
            "5d",
            f"{max(ranks)}-D tensor: the NPU works on tensors of at most 4 dimensions",
            "reshape to 4-D around this node (merge axes), or expect a CPU fallback",
        )
    op = node.op_type
    if op == "Conv":
        weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
        kernel = list(_attr(node, "kernel_shape", weight[2:] if weight else []))
        strides = list(_attr(node, "strides", [1] * len(kernel)))
        pads = list(_attr(node, "pads", [0] * 2 * len(kernel)))
        if any(not 1 <= k <= 31 for k in kernel):
            return (
                "kernel",
                f"Conv kernel {kernel} outside the NPU's 1-31",
                "split the kernel into smaller convs",
            )
        if any(not 1 <= s <= 7 for s in strides):
            return (
                "stride",
                f"Conv stride {strides} outside the NPU's 1-7",
                "use stride <= 7 (e.g. stride then pool)",
            )
        if any(not 0 <= p <= 15 for p in pads):
            return (
                "pads",
                f"Conv padding {pads} outside the NPU's 0-15",
                "pad with an explicit Pad node, or less",
            )
    if op == "ConvTranspose":
        strides = list(_attr(node, "strides", [1, 1]))
        if any(s not in (1, 2, 4, 8) for s in strides):
            return (
                "stride",
                f"ConvTranspose stride {strides}: the NPU takes 1, 2, 4 or 8",
                "use Resize + Conv instead, or a supported stride",
            )
    if op == "Resize":
        mode = _as_str(_attr(node, "mode", "nearest"))
        transform = _as_str(_attr(node, "coordinate_transformation_mode", "half_pixel"))
        if mode not in ("nearest", "linear"):
            return (
                "mode",
                f"Resize mode {mode!r}: the NPU does nearest and (bi)linear",
                "re-export with mode='linear' or 'nearest'",
            )
        if transform == "tf_crop_and_resize":
            return (
                "coordinate_transformation_mode",
                "Resize with tf_crop_and_resize",
                "crop with Slice, then Resize",
            )
    return None


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _model_findings(model: OnnxModel) -> list[str]:
    findings = []
    dynamic = dynamic_quantization_nodes(model.proto.graph)
    if dynamic:
        findings.append(
            f"onnxruntime dynamically-quantized model (quantize_dynamic: {len(dynamic)} integer "
            "MatMul/Conv fed by DynamicQuantizeLinear): the toolkit takes no integer ops and quantizes "
            f"the float model itself; rewrite it back to float with `{dequantize_command(model)}`"
        )
    if model.opset > TOOLKIT_MAX_OPSET:
        findings.append(
            f"opset {model.opset} is above the toolkit's {TOOLKIT_MAX_OPSET}: re-export with "
            f"opset_version={TOOLKIT_MAX_OPSET}"
        )
    for name, shape in model.inputs.items():
        if shape and shape[0] > 1:
            findings.append(
                f"input {name!r} has batch {shape[0]}: the NPU runs batch 1; export with batch 1 "
                "and use build(rknn_batch_size=N) for batching"
            )
    return findings
