"""Split mixed-range outputs: cut a graph output before its Concat, join the parts on the host.

A detector head often ends in one Concat of box coordinates (pixels, 0-320) and class scores
(0-1, after a Sigmoid). The toolkit quantizes that output with ONE per-tensor int8 scale, so
the scores get the boxes' step (yolov8n: 1.26 per step): every score below half a step becomes
0 and the rest one impossible 1.26. No float16 choice of inner layers fixes that (the toolkit
returns float16 layers to int8 at the same scale). Making each Concat input its own graph
output gives each its own scale; the host then concatenates the dequantized parts in float,
exactly as the Concat did. rknn_model_zoo exports YOLO heads split for this reason.

Three steps, each a function:

- :func:`mixed_range_outputs` finds such outputs from float ranges on calibration samples;
- :func:`split_outputs` rewrites the ONNX model and gives the host-side join (a callable and
  standalone numpy source, written next to the model by :meth:`SplitModel.save`);
- :func:`verify_split` builds the original and the split model with the toolkit, runs both on
  the simulator and compares the joined output with float.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from workbench.compare.metrics import tensor_metrics
from workbench.datasets import CalibrationSet
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.buildlog import parse_layer_table
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner
from workbench.runners.markall import MarkAllRunner
from workbench.task.adapters.base import TaskAdapter

#: Ratio of the Concat inputs' largest to smallest max |value| from which an output counts as
#: mixed-range. Under a joint int8 scale the narrower input keeps at most 256 / ratio levels:
#: 16 leaves it 16 levels (a 4-bit quantization); yolov8n's ratio is ~320 (1-2 levels).
MIXED_RANGE_RATIO = 16.0

#: Ops between the Concat and the graph output that only move values; the host join replays
#: them (Transpose by its perm, the others as a reshape to the tensor's static shape).
_LAYOUT_OPS = ("Reshape", "Transpose", "Identity", "Flatten", "Squeeze", "Unsqueeze")


@dataclass(frozen=True)
class ConcatPart:
    """One input of the Concat, with its float range over the calibration samples."""

    name: str  #: tensor name
    min: float  #: smallest value seen
    max: float  #: largest value seen
    step: float  #: int8 step of its own range (asymmetric, zero included)
    levels: int  #: int8 levels its range spans under the joint step (rounded), at least 1

    @property
    def max_abs(self) -> float:
        return max(abs(self.min), abs(self.max))


@dataclass(frozen=True)
class Finding:
    """A graph output built by a Concat whose inputs' ranges differ by orders of magnitude."""

    output: str  #: the graph output
    concat: str  #: name of the Concat node
    axis: int  #: the Concat's axis, non-negative
    parts: tuple[ConcatPart, ...]  #: the Concat's inputs, in order
    #: what happens between the Concat and the output: ("reshape", shape) or ("transpose", perm)
    layout: tuple[tuple[str, tuple[int, ...]], ...]
    joint_step: float  #: int8 step of the concatenated range (what every part gets)
    ratio: float  #: largest over smallest max |value| among the parts
    explanation: str  #: one line for a person

    @property
    def narrowest(self) -> ConcatPart:
        """The part that loses most under the joint scale (a detector's class scores)."""
        return min(self.parts, key=lambda p: p.max_abs)


def int8_step(low: float, high: float) -> float:
    """Step of an asymmetric per-tensor int8 range over [min(low, 0), max(high, 0)]."""
    return (max(high, 0.0) - min(low, 0.0)) / 255.0


# ---------------------------------------------------------------------- detection
def mixed_range_outputs(
    model: OnnxModel,
    calibration: CalibrationSet,
    preprocess: Mapping[str, Preprocess] | Preprocess | None = None,
    *,
    ratio: float = MIXED_RANGE_RATIO,
) -> list[Finding]:
    """Graph outputs made by a Concat (possibly through Reshape / Transpose / Identity /
    Flatten / Squeeze / Unsqueeze) whose inputs' max |value| differ by ``ratio`` or more.

    Ranges come from onnxruntime over every sample of ``calibration`` (the set the toolkit
    calibrates with), fed with ``preprocess`` as the toolkit is configured. Concats with an
    initializer or graph input among their inputs, or a layout op of unknown shape, are
    skipped (the rewrite could not make those outputs). Parts that are all zero do not count.

    Returns one :class:`Finding` per such output, in graph-output order; [] when there is none.
    """
    candidates = [c for c in (_concat_chain(model, name) for name in model.outputs) if c]
    if not candidates:
        return []
    keep = sorted({i for _, node, _ in candidates for i in node.input})
    runner = FloatRunner(model, preprocess, keep=keep)
    low = dict.fromkeys(keep, math.inf)
    high = dict.fromkeys(keep, -math.inf)
    for row in calibration.rows:
        for name, value in runner.run(row).items():
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    runner.close()
    findings = []
    for output, node, layout in candidates:
        finding = _finding(model, output, node, layout, low, high)
        if finding.ratio >= ratio:
            findings.append(finding)
    return findings


def _concat_chain(model: OnnxModel, output: str):
    """(output, Concat node, layout steps) when ``output`` comes from a Concat through layout
    ops only, else None."""
    producers = {o: n for n in model.proto.graph.node for o in n.output}
    shapes = {t.name: t.shape for t in model.tensors}
    fed = {i.name for i in model.proto.graph.initializer} | set(model.inputs)
    layout, name = [], output
    while name in producers and producers[name].op_type in _LAYOUT_OPS:
        node = producers[name]
        if node.op_type == "Transpose":
            perm = _attribute(node, "perm")
            rank = len(shapes.get(node.input[0]) or ())
            layout.append(("transpose", tuple(perm) if perm else tuple(range(rank))[::-1]))
        elif shapes.get(name) is None:
            return None
        else:
            layout.append(("reshape", tuple(shapes[name])))
        name = node.input[0]
    node = producers.get(name)
    if node is None or node.op_type != "Concat" or any(i in fed for i in node.input):
        return None
    return output, node, tuple(reversed(layout))


def _finding(model, output, node, layout, low, high) -> Finding:
    rank = len(model.tensor(node.output[0]).shape or ())
    axis = _attribute(node, "axis")
    joint = int8_step(min(low[i] for i in node.input), max(high[i] for i in node.input))
    parts = tuple(
        ConcatPart(
            i,
            low[i],
            high[i],
            int8_step(low[i], high[i]),
            max(1, round((max(high[i], 0.0) - min(low[i], 0.0)) / joint) + 1) if joint else 1,
        )
        for i in node.input
    )
    spans = [p.max_abs for p in parts if p.max_abs > 0]
    ratio = max(spans) / min(spans) if spans else 1.0
    narrow = min(parts, key=lambda p: p.max_abs)
    wide = max(parts, key=lambda p: p.max_abs)
    explanation = (
        f"{output} concatenates {wide.name} ({wide.min:.3g}..{wide.max:.3g}) and {narrow.name} "
        f"({narrow.min:.3g}..{narrow.max:.3g}) in {node.name}: one int8 step of {joint:.3g} for both, "
        f"so {narrow.name} (own step {narrow.step:.3g}) keeps about {narrow.levels} level(s); split the "
        "output before the Concat and join the parts on the host."
    )
    return Finding(output, node.name, axis % rank if rank else axis, parts, layout, joint, ratio, explanation)


def _attribute(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


# ---------------------------------------------------------------------- rewrite
def join_parts(outputs, output, parts, axis, layout, order):
    """Rebuild graph output ``output`` from its ``parts`` as the model's Concat did.

    Args:
        outputs: {tensor name: array} of the split model (parts and any other outputs).
        output: name of the rebuilt output.
        parts: the Concat's input names, in its order.
        axis: the Concat's axis.
        layout: steps after the Concat: ("reshape", shape) or ("transpose", perm).
        order: the original model's output names, in order.

    Returns:
        {name: array} with exactly the original outputs, in their order.
    """
    joined = np.concatenate([np.asarray(outputs[name]) for name in parts], axis=axis)
    for op, arg in layout:
        joined = np.transpose(joined, arg) if op == "transpose" else np.reshape(joined, arg)
    return {name: joined if name == output else outputs[name] for name in order}


_SOURCE = '''"""Host-side join for {model}: rebuilds output {output!r} from the split model's outputs.

{explanation}

The split model returns {split_outputs!r} (in this order from rknn.inference()). The original
output was Concat(axis={axis}) of {parts!r}{layout_text}. Use:

    from join_outputs import join_outputs
    outputs = join_outputs(rknn.inference(inputs=[image]))   # a list in output order, or a dict
    head = outputs[{output!r}]

Needs numpy only. Written by rknn-workbench (workbench.fix.split_outputs).
"""

import numpy as np

OUTPUT = {output!r}
PARTS = {parts!r}
AXIS = {axis!r}
LAYOUT = {layout!r}
ORIGINAL_OUTPUTS = {order!r}
SPLIT_OUTPUTS = {split_outputs!r}


{join_parts}

def join_outputs(outputs):
    """The original model's outputs {{name: array}} from the split model's outputs, given as
    {{name: array}} or as the list rknn.inference() returns (SPLIT_OUTPUTS order)."""
    if not isinstance(outputs, dict):
        outputs = dict(zip(SPLIT_OUTPUTS, outputs, strict=True))
    return join_parts(outputs, OUTPUT, PARTS, AXIS, LAYOUT, ORIGINAL_OUTPUTS)
'''


@dataclass
class SplitModel:
    """The rewritten model and how to join its outputs back into the original ones."""

    model: OnnxModel  #: graph outputs: the Concat's inputs instead of the concatenated output
    finding: Finding  #: what was split
    original_outputs: tuple[str, ...]  #: the original model's output names, in order

    @property
    def parts(self) -> tuple[str, ...]:
        """The Concat's inputs, in its order (now graph outputs)."""
        return tuple(p.name for p in self.finding.parts)

    def join(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The original model's outputs from the split model's ``outputs`` {name: array}:
        the parts concatenated (same axis, same order, then the same layout) in float."""
        f = self.finding
        return join_parts(dict(outputs), f.output, self.parts, f.axis, f.layout, self.original_outputs)

    def source(self) -> str:
        """Standalone Python (numpy only) defining ``join_outputs(outputs)``: the same join."""
        f = self.finding
        layout_text = "".join(
            f", then {op} to {list(arg)}" if op == "reshape" else f", then transposed by {list(arg)}"
            for op, arg in f.layout
        )
        return _SOURCE.format(
            model=self.model.name,
            output=f.output,
            explanation=f.explanation,
            split_outputs=tuple(self.model.outputs),
            axis=f.axis,
            parts=self.parts,
            layout=f.layout,
            layout_text=layout_text,
            order=self.original_outputs,
            join_parts=inspect.getsource(join_parts),
        )

    def save(self, folder: str | Path) -> Path:
        """Write ``model.onnx`` and ``join_outputs.py`` into ``folder`` (created); returns it."""
        folder = Path(folder)
        self.model.save(folder / "model.onnx")
        tmp = folder / "join_outputs.py.tmp"
        tmp.write_text(self.source())
        tmp.replace(folder / "join_outputs.py")
        return folder

    def owner(self) -> np.ndarray:
        """For every element of the joined output, the index of the part it comes from."""
        shapes = {t.name: t.shape for t in self.model.tensors}
        filled = {name: np.full(shapes[name], i, np.int32) for i, name in enumerate(self.parts)}
        f = self.finding
        return join_parts(filled, f.output, self.parts, f.axis, f.layout, (f.output,))[f.output]


def split_outputs(model: OnnxModel, finding: Finding) -> SplitModel:
    """``model`` with ``finding.output`` replaced by the Concat's inputs as graph outputs (at
    its position, each once), nodes and initializers that fed only that output removed,
    everything else identical. Raises WorkbenchError when the model has no such output or
    Concat (a finding from another model)."""
    if finding.output not in model.outputs:
        raise WorkbenchError(
            f"{model.name} has no output {finding.output!r} (its outputs: {list(model.outputs)}); "
            "pass a finding of mixed_range_outputs() on this model."
        )
    if finding.concat not in {n.name for n in model.proto.graph.node}:
        raise WorkbenchError(
            f"{model.name} has no node {finding.concat!r}; pass a finding of mixed_range_outputs() "
            "on this model."
        )
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    infos = {v.name: v for v in [*graph.value_info, *graph.output]}
    tensors = {t.name: t for t in model.tensors}
    outputs = []
    for info in graph.output:
        if info.name != finding.output:
            outputs.append(info)
            continue
        for part in dict.fromkeys(p.name for p in finding.parts):
            if part not in model.outputs:
                outputs.append(infos.get(part) or _value_info(tensors[part]))
    del graph.output[:]
    graph.output.extend(outputs)
    _prune(graph)
    return SplitModel(OnnxModel.from_proto(proto), finding, tuple(model.outputs))


def _value_info(tensor) -> onnx.ValueInfoProto:
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype or "float32"))
    return onnx.helper.make_tensor_value_info(tensor.name, elem, tensor.shape)


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes no graph output depends on, then initializers and value_info nobody uses."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    kept = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(kept)
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


# ---------------------------------------------------------------------- verification
def verify_split(
    model: OnnxModel,
    split: SplitModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    samples: CalibrationSet,
    adapter: TaskAdapter | None = None,
) -> pd.DataFrame:
    """Build the original and the split model with the toolkit, run ``samples`` on the
    simulator, join the split parts on the host, compare with float (onnxruntime).

    Args:
        model: the original model; split: its :func:`split_outputs`.
        config: the BuildConfig of both builds; calibration: their calibration set.
        samples: the samples compared.
        adapter: a task adapter (e.g. DetectionAdapter) to judge the answers, or None.

    Returns:
        One row per variant ("float", "int8", "int8 split") with: ``output_sqnr_db`` (the
        joined output vs float, over all samples), ``score_part`` (the narrowest-range part,
        a detector's class scores), ``score_sqnr_db``, ``score_levels`` (most distinct values
        of that part on one sample), ``score_max``, ``agreement`` (share of samples whose
        answer equals float's) and ``f1`` (mean, detection) when an adapter is given, and
        ``cycles`` (the compile table's estimate; NaN for float).
    """
    reference = FloatRunner(model, config.preprocess, keep=list(model.outputs))
    floats = [reference.run(row) for row in samples.rows]
    reference.close()
    rows = [_variant_row("float", floats, floats, split, adapter, math.nan)]
    for variant, built, join in (("int8", model, dict), ("int8 split", split.model, split.join)):
        with MarkAllRunner(built, config, calibration, outputs_only=True) as simulator:
            got = [join(simulator.run(row)) for row in samples.rows]
            table = parse_layer_table(simulator.build_log)
        cycles = int(table.cycles_total.sum()) if len(table) else math.nan
        rows.append(_variant_row(variant, floats, got, split, adapter, cycles))
    return pd.DataFrame(rows)


def _variant_row(variant: str, floats: Sequence[dict], got: Sequence[dict], split, adapter, cycles) -> dict:
    name = split.finding.output
    narrow = split.finding.narrowest
    mask = split.owner() == split.parts.index(narrow.name)
    ref = np.concatenate([f[name].ravel() for f in floats])
    test = np.concatenate([g[name].ravel() for g in got])
    score_ref = np.concatenate([f[name][mask] for f in floats])
    score_test = np.concatenate([g[name][mask] for g in got])
    row = {
        "variant": variant,
        "output_sqnr_db": tensor_metrics(ref, test)["sqnr_db"],
        "score_part": narrow.name,
        "score_sqnr_db": tensor_metrics(score_ref, score_test)["sqnr_db"],
        "score_levels": max(int(np.unique(g[name][mask]).size) for g in got),
        "score_max": float(score_test.max()),
        "cycles": cycles,
    }
    if adapter is not None:
        judged = [adapter.agreement(adapter.decode(f), adapter.decode(g)) for f, g in zip(floats, got)]
        row["agreement"] = float(np.mean([bool(m["agree"]) for m in judged]))
        if all("f1" in m for m in judged):
            row["f1"] = float(np.mean([m["f1"] for m in judged]))
    return row
