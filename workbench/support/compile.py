"""Compile check: build with the installed toolkit and read where each layer runs.

``RKNN(verbose=True).build()`` prints a "Network Layer Information Table" (ID, OpType,
DataType, Target NPU/CPU, shapes, cycles, RW, FullName). It is the ground truth for the
installed toolkit. FullName is ``OpType:name`` where name is the FIRST ONNX node of a fused
layer, an ONNX node with a toolkit suffix (``Slice_2sp``, ``Div_1_2mul``), or a tensor the
toolkit inserted (``output0-rs``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.errors import ToolkitError
from workbench.model import OnnxModel
from workbench.rknn.buildlog import LAYER_COLUMNS, parse_layer_table
from workbench.rknn.config import BuildConfig
from workbench.rknn.names import base_name
from workbench.rknn.session import ToolkitSession
from workbench.support.patterns import folded_nodes


def map_layers(table: pd.DataFrame, model: OnnxModel) -> pd.Series:
    """The ONNX node each layer's FullName stands for (None for toolkit-inserted layers)."""
    nodes = [n.name for n in model.proto.graph.node]
    node_set = set(nodes)
    producers = {o: n.name for n in model.proto.graph.node for o in n.output}
    by_length = sorted(nodes, key=len, reverse=True)

    def lookup(full_name: str) -> str | None:
        name = full_name.split(":", 1)[-1]
        if name in node_set:
            return name
        tensor = base_name(name, set(producers))
        if tensor is not None:
            return producers[tensor]
        # A toolkit suffix on a node name (Slice_2sp, Div_1_2mul): longest node-name prefix.
        return next((n for n in by_length if name.startswith(n) and len(n) >= len(name) // 2), None)

    return table["full_name"].map(lookup)


@dataclass
class CompileReport:
    """What the installed toolkit made of a model for one platform."""

    platform: str
    layers: pd.DataFrame  #: the layer table plus ``onnx_node``
    node_targets: dict[str, str] = field(default_factory=dict)  #: ONNX node -> NPU/CPU/fused
    #: ONNX node -> NPU/CPU, fused nodes resolved to their layer's target; "removed" for nodes
    #: folded away (constants, no-ops)
    placements: dict[str, str] = field(default_factory=dict)
    rejected: str | None = None  #: the toolkit's error when the build failed
    log: str = ""

    @property
    def cpu_layers(self) -> pd.DataFrame:
        """Layers of the model itself (not Input/OutputOperator) that run on the CPU."""
        return self.layers[(self.layers.target == "CPU") & ~self.layers.op_type.str.endswith("Operator")]

    @property
    def transitions(self) -> int:
        """NPU<->CPU switches along the layer order (each costs a copy and a sync)."""
        targets = [t for t, op in zip(self.layers.target, self.layers.op_type) if not op.endswith("Operator")]
        return sum(a != b for a, b in zip(targets, targets[1:]))

    @property
    def exit_code(self) -> int:
        """0 all on the NPU, 1 some layers on the CPU, 2 rejected."""
        return 2 if self.rejected else (1 if len(self.cpu_layers) else 0)


def compile_check(
    model: OnnxModel,
    platform: str = "rk3588",
    *,
    quantize: bool = True,
    config: BuildConfig | None = None,
    dataset: str | Path | None = None,
    timeout: float | None = 1800,
) -> CompileReport:
    """Build ``model`` for ``platform`` in a toolkit worker and report each layer's target.

    Placement does not depend on the calibration values, so without ``dataset`` one random
    sample per input is used. A failed build or a toolkit crash is reported in
    ``rejected`` (with the toolkit's words), never raised: rejection is a check result.
    """
    quantize = quantize and platform != "rk2118"  # rk2118 builds float16 only
    config = config or BuildConfig(target_platform=platform, do_quantization=quantize)
    quantize = quantize and config.do_quantization
    with tempfile.TemporaryDirectory(prefix="rknn-wb-compile-") as tmp:
        tmp = Path(tmp)
        path = model.save(tmp / "model.onnx")
        if quantize and dataset is None:
            dataset = _random_dataset(model.inputs, tmp)
        session = ToolkitSession(tmp, timeout=timeout)
        try:
            _, log = session.call(
                "build",
                model_path=str(path),
                config={**config.toolkit_kwargs(model.inputs), "target_platform": platform},
                dataset=str(dataset) if quantize else None,
                do_quantization=quantize,
            )
        except ToolkitError as err:
            return CompileReport(platform, pd.DataFrame(columns=list(LAYER_COLUMNS)), rejected=str(err))
        finally:
            session.close()
    layers = parse_layer_table(log)
    layers["onnx_node"] = map_layers(layers, model)
    return CompileReport(platform, layers, _node_targets(model, layers), placements(model, layers), log=log)


def _random_dataset(inputs: Mapping[str, tuple[int, ...]], folder: Path) -> Path:
    rng = np.random.default_rng(0)
    files = []
    for shape in inputs.values():
        path = folder / f"random_{len(files)}.npy"
        np.save(path, rng.uniform(0, 255, shape).astype(np.float32))
        files.append(str(path))
    dataset = folder / "random_dataset.txt"
    dataset.write_text(" ".join(files) + "\n")
    return dataset


def _node_targets(model: OnnxModel, layers: pd.DataFrame) -> dict[str, str]:
    """NPU/CPU for nodes a layer names; "fused" for nodes folded into a neighbour layer
    (the toolkit names a fused layer after its first node only)."""
    out: dict[str, str] = {}
    for node, target in zip(layers.onnx_node, layers.target):
        if node and node not in out:
            out[node] = target
    for node in model.proto.graph.node:
        out.setdefault(node.name, "fused")
    return out


def placements(model: OnnxModel, layers: pd.DataFrame) -> dict[str, str]:
    """Where every ONNX node runs: NPU or CPU, or "removed" when it compiled into no layer.

    A layer is named after the FIRST node it fuses, so a node no layer names ran inside the
    layer of its nearest ancestor a layer names (latest in topological order): it gets that
    layer's target. A node computed from constants only (patterns.folded_nodes), or with no
    such ancestor, was folded away at build time. ``layers`` needs the ``onnx_node`` column.
    """
    named: dict[str, str] = {}
    for node, target, op in zip(layers.onnx_node, layers.target, layers.op_type):
        # Input/OutputOperator rows name the tensor they carry, not a layer that computes it
        if isinstance(node, str) and node not in named and not op.endswith("Operator"):
            named[node] = target
    nodes = list(model.proto.graph.node)
    order = {n.name: i for i, n in enumerate(nodes)}
    producer = {o: n.name for n in nodes for o in n.output}
    inputs = {n.name: [producer[i] for i in n.input if i in producer] for n in nodes}
    folded = folded_nodes(model.proto.graph, {t.name: t.shape for t in model.tensors})
    out: dict[str, str] = {}
    for node in nodes:
        if node.name in folded and node.name not in named:
            out[node.name] = "removed"
            continue
        if node.name in named:
            out[node.name] = named[node.name]
            continue
        heads = _named_ancestors(node.name, inputs, named)
        out[node.name] = named[max(heads, key=order.__getitem__)] if heads else "removed"
    return out


def _named_ancestors(name: str, inputs: dict[str, list[str]], named: dict[str, str]) -> set[str]:
    """The nearest ancestors of ``name`` that a layer names (each path stops at the first)."""
    heads, seen, todo = set(), {name}, list(inputs[name])
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in named:
            heads.add(current)
        else:
            todo.extend(inputs[current])
    return heads
