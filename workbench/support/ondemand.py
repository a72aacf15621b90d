"""Probe a model's own nodes with the installed toolkit, on demand, cached.

The packaged matrix probes each operator once, alone, in a few attribute variants. A node
whose variant was never probed, or a pattern the compiler fuses as a whole (patterns.py),
needs its own probe: a tiny model holding just those nodes, with their attributes, their
constants and the ranks of their inputs, built with ``verbose=True``; the layer table says
where each node went. Results are cached per (nodes' signature, platform family, toolkit
version) under ``workbench.datasets.cache_dir() / "support-probes"``, so each variant costs
one build (a few seconds) once per machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.datasets import cache_dir
from workbench.dequantize import constant_values
from workbench.errors import ToolkitError, WorkbenchError
from workbench.model import OnnxModel
from workbench.rknn.buildlog import parse_layer_table
from workbench.rknn.session import ToolkitSession
from workbench.support.compile import _random_dataset, map_layers, placements
from workbench.support.matrix import family_of
from workbench.support.patterns import RANDOM_OPS
from workbench.support.probe import _first_error

#: Version of how probe models are built (probe_model): part of the cache key, so a change
#: to the builder never reuses results of the old one.
_BUILDER = 2


@dataclass(frozen=True)
class NodeProbe:
    """Where the toolkit put each node of one on-demand probe."""

    targets: tuple[str, ...]  #: per node, in the given order: NPU, CPU or removed
    rejected: str = ""  #: the toolkit's error when it refused the probe model
    cached: bool = False  #: read from the cache, not built now


def toolkit_version() -> str | None:
    """The installed rknn-toolkit2's version, or None when it is not installed."""

    try:
        return version("rknn-toolkit2")
    except PackageNotFoundError:
        return None


def cache_folder() -> Path:

    return cache_dir() / "support-probes"


def signature(
    model: OnnxModel, nodes: Sequence[onnx.NodeProto], constants: dict[str, np.ndarray]
) -> str | None:
    """What a probe of ``nodes`` depends on: op types, attributes, constants (values when
    small), and the shape class (rank, and which axes are 1) of each computed input.
    None when the nodes cannot be probed alone (a computed non-float input, a subgraph)."""
    made = {o: f"n{i}.{j}" for i, n in enumerate(nodes) for j, o in enumerate(n.output)}
    infos = {t.name: t for t in model.tensors}
    external: dict[str, int] = {}
    parts = []
    for node in nodes:
        if node.op_type in RANDOM_OPS or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
        ):
            return None
        refs = []
        for name in node.input:
            if not name:
                refs.append("-")
            elif name in made:
                refs.append(made[name])
            elif name in constants:
                value = constants[name]
                shown = f"={np.round(value.ravel().astype(float), 6).tolist()}" if value.size <= 16 else ""
                refs.append(f"c:{value.dtype}{list(value.shape)}{shown}")
            else:
                info = infos.get(name)
                if info is None or info.shape is None or info.dtype != "float32":
                    return None
                shape_class = "".join("1" if d == 1 else "n" for d in info.shape)
                refs.append(f"x{external.setdefault(name, len(external))}:{shape_class}")
        attrs = sorted((a.name, repr(helper.get_attribute_value(a))) for a in node.attribute)
        parts.append(f"{node.domain}:{node.op_type}({','.join(refs)}){attrs}")
    return "|".join(parts)


def probe_model(
    model: OnnxModel, nodes: Sequence[onnx.NodeProto], constants: dict[str, np.ndarray]
) -> onnx.ModelProto:
    """A model of just ``nodes`` (renamed ``probe_<i>``), their constants copied, each
    computed input made from graph inputs of its real shape by an NPU op (so no node reads
    an input directly, where the toolkit may merge it into preprocessing)."""
    made = {o for n in nodes for o in n.output}
    infos = {t.name: t for t in model.tensors}
    inits, entry, inputs, rename = [], [], [], {}
    for node in nodes:
        for name in node.input:
            if not name or name in made or name in rename:
                continue
            if name in constants:
                rename[name] = f"const_{len(inits)}"
                inits.append(numpy_helper.from_array(constants[name], rename[name]))
                continue
            k = len(entry)
            entry += _entry(k, infos[name].shape, inits, inputs)
            rename[name] = f"entry_{k}_out"
    read_outside = _read_outside(model, nodes)
    renamed, outputs = [], []
    for i, node in enumerate(nodes):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"probe_{i}"
        for j, name in enumerate(node.output):
            rename[name] = f"probe_{i}_out{j}" if name else ""
        copy.input[:] = [rename.get(n, n) for n in node.input]
        copy.output[:] = [rename[n] for n in node.output]
        renamed.append(copy)
        outputs += [rename[n] for n in node.output if n in read_outside]
    if not outputs:
        outputs = [o for o in renamed[-1].output if o]
    exits, graph_outputs = [], []
    for name in outputs:
        original = next(k for k, v in rename.items() if v == name)
        info = infos.get(original)
        dtype = info.dtype if info else "float32"
        if dtype != "float32":  # the toolkit builds float outputs; cast back as probe_cases does
            entry_name = f"exit_{len(exits)}"
            exits.append(
                helper.make_node("Cast", [name], [f"{entry_name}_out"], name=entry_name, to=TensorProto.FLOAT)
            )
            name = f"{entry_name}_out"
        shape = list(info.shape) if info and info.shape is not None else []
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph([*entry, *renamed, *exits], "probe", inputs, graph_outputs, inits)
    opsets = [o for o in model.proto.opset_import if o.domain in ("", "ai.onnx")]
    return helper.make_model(graph, opset_imports=opsets, ir_version=model.proto.ir_version)


def _entry(k: int, shape: tuple[int, ...], inits: list, inputs: list) -> list[onnx.NodeProto]:
    """Nodes computing the ``k``-th probe input ``entry_<k>_out`` from new graph inputs: a
    depthwise 1x1 conv scaling 0..255 to about -1..1 (4-D), or the sum of two inputs (other
    ranks: a reshape to 4-D and back would be a CPU layer, into which the toolkit folds a
    following scale)."""
    out = f"entry_{k}_out"
    inputs.append(helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, list(shape)))
    if len(shape) != 4:
        inputs.append(helper.make_tensor_value_info(f"x{k}b", TensorProto.FLOAT, list(shape)))
        return [helper.make_node("Add", [f"x{k}", f"x{k}b"], [out], name=f"entry_{k}")]
    channels = shape[1]
    weight = numpy_helper.from_array(np.full((channels, 1, 1, 1), 1 / 128, np.float32), f"entry_{k}_w")
    bias = numpy_helper.from_array(np.full(channels, -1.0, np.float32), f"entry_{k}_b")
    inits += [weight, bias]
    return [
        helper.make_node("Conv", [f"x{k}", weight.name, bias.name], [out], name=f"entry_{k}", group=channels)
    ]


def _read_outside(model, nodes) -> set[str]:
    inside = {id(n) for n in nodes}
    made = {o for n in nodes for o in n.output}
    read = {o.name for o in model.proto.graph.output} & made
    for node in model.proto.graph.node:
        if id(node) not in inside:
            read |= made & set(node.input)
    return read


class OnDemandProber:
    """Probes node groups of one model for one platform, through the cache; one toolkit
    worker for all the misses. Use as a context manager (closes the worker)."""

    def __init__(self, model: OnnxModel, platform: str, *, folder: Path | None = None):

        self.model = model
        self.family = family_of(platform)
        self.version = toolkit_version()
        self.folder = folder or cache_folder()
        self.constants = constant_values(model.proto.graph)
        self._session = None

    def __enter__(self) -> OnDemandProber:
        return self

    def __exit__(self, *exc) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def probe(self, nodes: Sequence[onnx.NodeProto]) -> NodeProbe | None:
        """Where the toolkit puts ``nodes`` built together, or None when they cannot be
        probed (no toolkit installed, a computed non-float input, a subgraph attribute)."""
        if self.version is None:
            return None
        sig = signature(self.model, nodes, self.constants)
        if sig is None:
            return None
        key = f"{self.family}|{self.version}|{_BUILDER}|{sig}"
        path = self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("key") == key:
                    return NodeProbe(tuple(data["targets"]), data.get("rejected", ""), cached=True)
            except (json.JSONDecodeError, KeyError, OSError):
                pass  # a damaged entry is probed again
        result = self._build(nodes)
        if result is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "targets": result.targets, "rejected": result.rejected}))
        tmp.replace(path)
        return result

    def _build(self, nodes) -> NodeProbe | None:

        try:
            probe = OnnxModel.from_proto(probe_model(self.model, nodes, self.constants))
        except WorkbenchError:  # the nodes do not stand alone (e.g. shapes only the model gives)
            return None
        quantize = self.family != "rk2118"  # rk2118 builds fp16 only
        try:
            if self._session is None:
                self._session = ToolkitSession(timeout=300)
            folder = self._session.workdir
            _, log = self._session.call(
                "build",
                model_path=str(probe.save(folder / "ondemand.onnx")),
                config={"target_platform": self.family},
                dataset=str(_random_dataset(probe.inputs, folder)) if quantize else None,
                do_quantization=quantize,
            )
        except ToolkitError as err:
            if self._session is None:  # the worker did not start: no probe, no verdict
                return None
            # a rejection spoils the worker for later builds (probe.py): start a fresh one
            self._session.close()
            self._session = None
            return NodeProbe(("rejected",) * len(nodes), _first_error(str(err)))
        layers = parse_layer_table(log)
        layers["onnx_node"] = map_layers(layers, probe)
        where = placements(probe, layers)
        return NodeProbe(tuple(where[f"probe_{i}"] for i in range(len(nodes))))
