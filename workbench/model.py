"""OnnxModel: load and validate an ONNX file, fix its input shapes, infer every tensor's shape.

This is the first stage of the pipeline; every later stage (support check, build, runners)
takes an OnnxModel, so a model that loads here has fixed input shapes, a checked graph in
topological order and a name on every node.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import ModelProto, TensorProto, helper

from workbench.dequantize import dynamic_quantization_nodes
from workbench.errors import (
    InputShapeError,
    ModelError,
    UnsupportedModelError,
    WorkbenchWarning,
)

#: Highest default-domain opset rknn-toolkit2 2.x accepts.
TOOLKIT_MAX_OPSET = 19
#: Largest model input accepted, in elements (2**28 = 268M, 1 GiB of float32): far above any
#: NPU input (a 4K RGB image is 25M), and below what makes onnxruntime and OpenCV fail
#: allocating (a 1x3x1000000000x1 input asks for 12 GB).
MAX_INPUT_ELEMENTS = 2**28
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph, in topological order."""

    name: str  #: tensor name, as in the ONNX graph
    shape: tuple[int, ...] | None  #: inferred static shape; None when inference could not tell
    dtype: str  #: numpy dtype name ("float32", ...); "" when unknown
    producer: str | None  #: name of the node that writes it; None for a graph input
    op_type: str | None  #: op type of that node; None for a graph input
    index: int  #: position in topological order (graph inputs first)


class OnnxModel:
    """A validated ONNX model with fixed input shapes and inferred tensor shapes.

    Build one with :meth:`load` (from a file) or :meth:`from_proto`.
    """

    def __init__(self, proto: ModelProto, path: Path | None = None):
        self.proto = proto
        self.path = path
        self._tensors: list[TensorInfo] | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | Path,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        *,
        allow_custom_ops: bool = False,
    ) -> OnnxModel:
        """Load, validate and prepare an ONNX file.

        Args:
            path: the .onnx file. External data files are looked up next to it.
            input_shapes: fixed shape per input name, required for every input with a
                dynamic dimension, e.g. ``{"images": [1, 3, 320, 320]}``.
            allow_custom_ops: load models with operators outside the standard ONNX
                domain, or dynamically quantized by onnxruntime (the toolkit cannot
                convert them; useful only for inspection, as ``check`` does).

        Raises:
            ModelError: missing, not ONNX, truncated, external data missing, invalid graph.
            InputShapeError: a dynamic input has no shape in ``input_shapes``, or a given
                shape does not fit the input.
            UnsupportedModelError: custom-domain operators, or an onnxruntime dynamically
                quantized model (fix: ``rknn-workbench dequantize``), and
                ``allow_custom_ops`` is False.
        """
        path = Path(path)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ModelError(f"ONNX model {str(path)!r} {what}. Check the path.")
        proto = _parse(path)
        _load_external_data(proto, path)
        return cls.from_proto(proto, input_shapes, allow_custom_ops=allow_custom_ops, path=path)

    @classmethod
    def from_proto(
        cls,
        proto: ModelProto,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        *,
        allow_custom_ops: bool = False,
        path: Path | None = None,
    ) -> OnnxModel:
        """Validate and prepare an in-memory model; arguments as for :meth:`load`."""
        where = str(path) if path else "the model"
        proto = ModelProto.FromString(proto.SerializeToString())  # never edit the caller's
        _check_domains(proto, where, allow_custom_ops)
        _name_nodes(proto)
        _sort_topologically(proto)  # the checker refuses unsorted graphs; sorting is safe
        try:
            onnx.checker.check_model(proto)
        except (onnx.checker.ValidationError, ValueError) as err:
            raise ModelError(
                f"{where} is not a valid ONNX model: {err}. Re-export it, or repair it "
                "with onnx.checker / onnxsim."
            ) from err
        _check_opset(proto, where)
        _fix_input_shapes(proto, input_shapes or {}, where)
        try:
            proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
        except Exception as err:  # onnx raises several types here
            raise ModelError(
                f"Shape inference failed on {where}: {err}. Check the input shapes given."
            ) from err
        _complete_shapes(proto)
        return cls(proto, path)

    # ------------------------------------------------------------------ queries
    @property
    def name(self) -> str:
        """File stem, or the graph name for in-memory models."""
        return self.path.stem if self.path else (self.proto.graph.name or "model")

    @property
    def opset(self) -> int:
        """Version of the default ONNX domain."""
        return next((o.version for o in self.proto.opset_import if o.domain in _STANDARD_DOMAINS), 0)

    @property
    def inputs(self) -> dict[str, tuple[int, ...]]:
        """Graph inputs (initializers excluded) and their fixed shapes."""
        inits = {t.name for t in self.proto.graph.initializer}
        return {i.name: _static_shape(i) for i in self.proto.graph.input if i.name not in inits}

    @property
    def outputs(self) -> dict[str, tuple[int, ...] | None]:
        """Graph outputs and their inferred shapes."""
        return {o.name: _static_shape(o) for o in self.proto.graph.output}

    @property
    def tensors(self) -> list[TensorInfo]:
        """Every graph input and node output in topological order, with shape and producer."""
        if self._tensors is None:
            self._tensors = self._list_tensors()
        return self._tensors

    def tensor(self, name: str) -> TensorInfo:
        """The TensorInfo of one tensor; KeyError if the model has none of that name."""
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(f"No tensor {name!r} in {self.name}.")

    def summary(self) -> dict:
        """Plain-data overview for reports: counts, opset, inputs, outputs, op histogram."""
        ops: dict[str, int] = {}
        for node in self.proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        # Some exporters (paddle2onnx) keep weights in Constant nodes, not initializers.
        constants = [
            a.t
            for n in self.proto.graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        ]
        params = sum(_numel(t.dims) for t in [*self.proto.graph.initializer, *constants])
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "opset": self.opset,
            "nodes": len(self.proto.graph.node),
            "parameters": params,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "outputs": {k: list(v) if v else None for k, v in self.outputs.items()},
            "op_types": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        }

    def to_bytes(self) -> bytes:
        """The prepared model (fixed shapes, named nodes) serialised."""
        return self.proto.SerializeToString()

    def save(self, path: str | Path) -> Path:
        """Write the prepared model, e.g. for the toolkit, which needs fixed shapes."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path

    def __repr__(self) -> str:
        return (
            f"OnnxModel({self.name!r}, opset={self.opset}, nodes={len(self.proto.graph.node)}, "
            f"inputs={self.inputs})"
        )

    def _list_tensors(self) -> list[TensorInfo]:
        graph = self.proto.graph
        infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
        out: list[TensorInfo] = []
        for name in self.inputs:
            out.append(_tensor_info(name, infos.get(name), None, None, len(out)))
        for node in graph.node:
            for name in node.output:
                if name:
                    out.append(_tensor_info(name, infos.get(name), node.name, node.op_type, len(out)))
        return out


# ---------------------------------------------------------------------- helpers
def _parse(path: Path) -> ModelProto:
    data = path.read_bytes()
    if not data:
        raise ModelError(f"{str(path)!r} is empty (0 bytes): re-download or re-export the model.")
    try:
        proto = ModelProto.FromString(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise ModelError(_parse_failure(path, data)) from err
    if not proto.graph.node and not proto.graph.input:
        raise ModelError(_parse_failure(path, data))
    return proto


def _parse_failure(path: Path, data: bytes) -> str:
    # An ONNX file starts with field 1 (ir_version, varint): tag byte 0x08. A file that starts
    # like that but does not parse was cut short or damaged in transfer.
    if data[:1] == b"\x08" and len(data) > 16:
        return (
            f"{str(path)!r} starts like an ONNX model but cannot be parsed: it is truncated "
            f"or corrupted ({len(data):,} bytes). Download or export it again and compare "
            "its size or checksum with the original."
        )
    return (
        f"{str(path)!r} is not an ONNX model (its first bytes are {data[:8]!r}). Pass the "
        ".onnx file exported from your framework (torch.onnx.export, tf2onnx, paddle2onnx)."
    )


def _load_external_data(proto: ModelProto, path: Path) -> None:
    base = path.parent
    for tensor in proto.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        _check_external_location(path, tensor.name, location)
        if not (base / location).is_file():
            raise ModelError(
                f"{str(path)!r} keeps the weights of {tensor.name!r} in an external file "
                f"{location!r}, which is not in {str(base)!r}. Copy that file next to the "
                "model, or re-save the model with onnx.save(model, path, "
                "save_as_external_data=False)."
            )
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError, onnx.checker.ValidationError) as err:
        raise ModelError(f"Could not read the external data of {str(path)!r}: {err}") from err


def _check_external_location(path: Path, tensor: str, location: str) -> None:
    """Refuse external data outside the model's folder: an absolute path, ``..`` or a
    symlink leading out (a model file must not make the workbench read /etc/passwd)."""
    base = path.parent.resolve()
    target = (base / location).resolve()
    if Path(location).is_absolute() or ".." in Path(location).parts or not target.is_relative_to(base):
        raise ModelError(
            f"{str(path)!r}: the weights of {tensor!r} point outside the model's folder "
            f"(external data location {location!r} -> {str(target)!r}). Only files inside "
            f"{str(base)!r} are read: put the data file there (not a link to elsewhere), or "
            "re-save the model with onnx.save(model, path, save_as_external_data=False)."
        )


def _check_domains(proto: ModelProto, where: str, allow: bool) -> None:
    if allow:
        return
    dynamic = dynamic_quantization_nodes(proto.graph)
    if dynamic:
        source = "MODEL" if where == "the model" else where
        shown = ", ".join(dynamic[:5]) + (f" and {len(dynamic) - 5} more" if len(dynamic) > 5 else "")
        raise UnsupportedModelError(
            f"{where} is an onnxruntime dynamically-quantized model (quantize_dynamic: "
            f"DynamicQuantizeLinear feeding integer MatMul/Conv, at {shown}). rknn-toolkit2 takes no "
            "integer ops and quantizes the float model itself. Rewrite it back to float with "
            f"`rknn-workbench dequantize {source} -o float.onnx` and use float.onnx."
        )
    custom = sorted(
        {f"{n.domain}::{n.op_type}" for n in proto.graph.node if n.domain not in _STANDARD_DOMAINS}
    )
    if custom:
        raise UnsupportedModelError(
            f"{where} uses operators outside the standard ONNX domain: {', '.join(custom)}. "
            "rknn-toolkit2 cannot convert them. Re-export without custom operators (for "
            "onnxruntime-optimised files, export the original model instead). "
            "`rknn-workbench check MODEL` lists every node the toolkit cannot take "
            "(in Python: OnnxModel.load(path, allow_custom_ops=True))."
        )


def _check_opset(proto: ModelProto, where: str) -> None:
    opset = next((o.version for o in proto.opset_import if o.domain in _STANDARD_DOMAINS), 0)
    if opset > TOOLKIT_MAX_OPSET:
        warnings.warn(
            f"{where} uses opset {opset}; rknn-toolkit2 supports opset up to "
            f"{TOOLKIT_MAX_OPSET}. Operators whose definition changed after opset "
            f"{TOOLKIT_MAX_OPSET} may be rejected or converted wrongly. Re-export with "
            f"opset_version={TOOLKIT_MAX_OPSET}.",
            WorkbenchWarning,
            stacklevel=3,
        )


def _fix_input_shapes(proto: ModelProto, shapes: Mapping[str, Sequence[int]], where: str) -> None:
    graph = proto.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise InputShapeError(f"input_shapes names {unknown}, but {where} has the inputs {names}.")
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        current = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        given = shapes.get(inp.name)
        if given is None:
            if None in current:
                shown = [d.dim_param or "?" if v is None else v for d, v in zip(dims, current)]
                # batch 1; 640 stands for "your real size" in the spatial axes
                example = [v if v is not None else (1 if i == 0 else 640) for i, v in enumerate(current)]
                dims = ",".join(map(str, example))
                raise InputShapeError(
                    f"Input {inp.name!r} of {where} has dynamic dimensions {shown}; the NPU "
                    f"needs a fixed shape. Pass one, e.g. input_shapes={{{inp.name!r}: {example}}} "
                    f"in Python or --input-shape {inp.name}:{dims} on the command line (use your real sizes)."
                )
            continue
        given = [int(v) for v in given]
        if len(given) != len(current) or any(v <= 0 for v in given):
            raise InputShapeError(
                f"Shape {given} for input {inp.name!r} of {where} does not fit: the input has "
                f"rank {len(current)} and every dimension must be a positive integer."
            )
        clash = [(i, c, g) for i, (c, g) in enumerate(zip(current, given)) if c and c != g]
        if clash:
            raise InputShapeError(
                f"Shape {given} for input {inp.name!r} of {where} contradicts its fixed "
                f"dimensions {[c or '?' for c in current]} (axis {clash[0][0]})."
            )
        for dim, value in zip(dims, given):
            dim.Clear()
            dim.dim_value = value
    for inp in inputs:
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if _numel(dims) > MAX_INPUT_ELEMENTS:
            raise InputShapeError(
                f"Input {inp.name!r} of {where} has shape {dims}: {_numel(dims):,} elements, above the "
                f"limit of {MAX_INPUT_ELEMENTS:,} (workbench.model.MAX_INPUT_ELEMENTS; 1 GiB of float32). "
                "No NPU takes an input that large: check the shape (e.g. 1,3,640,640)."
            )
    # Shapes computed from the old symbolic dims are stale now: let inference redo them.
    del graph.value_info[:]
    for out in graph.output:
        if any(d.dim_param or d.dim_value <= 0 for d in out.type.tensor_type.shape.dim):
            out.type.tensor_type.ClearField("shape")


def _name_nodes(proto: ModelProto) -> None:
    taken = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _sort_topologically(proto: ModelProto) -> None:
    graph = proto.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            names = ", ".join(n.name for n in pending[:5])
            raise ModelError(
                f"The graph has a cycle or reads tensors nobody writes (at nodes {names}). "
                "Re-export the model; onnx.checker.check_model(model, full_check=True) "
                "shows details."
            )
        keep = {id(n) for n in progress}
        for node in progress:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if id(n) not in keep]
    if [n.name for n in ordered] != [n.name for n in graph.node]:
        copies = [helper.make_node("Identity", [], []) for _ in ordered]
        for copy, node in zip(copies, ordered):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)


def _complete_shapes(proto: ModelProto) -> None:
    """Fill in shapes static inference could not tell (e.g. Reshape to a Shape-computed
    target) by running the model once on zeros; with fixed inputs every shape is static."""
    graph = proto.graph
    infos = {v.name: v for v in [*graph.value_info, *graph.output]}
    unknown = [
        o for n in graph.node for o in n.output if o and (o not in infos or _static_shape(infos[o]) is None)
    ]
    if not unknown:
        return
    import numpy as np
    import onnxruntime as ort

    probe = ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    elem = {name: info.type.tensor_type.elem_type for name, info in infos.items()}
    for name in unknown:
        probe.graph.output.append(
            helper.make_tensor_value_info(name, elem.get(name) or TensorProto.FLOAT, None)
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feeds = {
            i.name: np.zeros(
                i.shape,
                helper.tensor_dtype_to_np_dtype(
                    next(v for v in graph.input if v.name == i.name).type.tensor_type.elem_type
                ),
            )
            for i in session.get_inputs()
        }
        values = session.run(unknown, feeds)
    except Exception:  # shapes stay unknown; every other feature still works
        return
    for name, value in zip(unknown, values):
        value = np.asarray(value)
        info = helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        )
        if name in infos:
            infos[name].CopyFrom(info)
        else:
            graph.value_info.append(info)


def _static_shape(info: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    tt = info.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
    return None if any(d < 0 for d in dims) else tuple(dims)


def _tensor_info(name, info, producer, op_type, index) -> TensorInfo:
    shape = _static_shape(info) if info is not None else None
    dtype = ""
    if info is not None and info.type.tensor_type.elem_type:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).name
    return TensorInfo(name, shape, dtype, producer, op_type, index)


def _numel(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n
