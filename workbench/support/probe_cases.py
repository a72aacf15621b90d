"""Probe models: one tiny ONNX model per operator (and attribute variant) of the published list.

Every model has one float input ``x`` of ``PROBE_INPUT_SHAPE`` that first goes through a 1x1
conv, so the probed node (named ``probe``) never reads the input directly, where the toolkit may
merge it into preprocessing. The entry convs are scaled so that an image-range input (0..255, as
the probe calibrates with) gives values of order 1, which keeps exp-like ops finite.

Naming, for reading the toolkit's layer table: only the probed node is named ``probe``; its
outputs are ``probe_out``, ``probe_out1``..., the computed tensors it reads ``probe_in<i>``, and
helper nodes are named after their op type in lower case (``conv_1``, ``sigmoid_4``). The toolkit
names the layers it makes when it rewrites an op after that op or its input tensors
(``probe#1``, ``probe_2deconv``, ``probe_in0_tp``), so those names start with "probe" too.
The probe's inputs made by a conv are also model outputs, which stops the toolkit from folding
the probe into that conv (``ConvRelu``, BatchNormalization merged into the weights).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import WorkbenchError

PROBE_INPUT_SHAPE = (1, 8, 16, 16)
#: Default-domain opset of the probes; an op that first appears later gets its first opset.
DEFAULT_OPSET = 13
_N, _C, _H, _W = PROBE_INPUT_SHAPE
_HIDDEN = 4  # recurrent hidden size: small keeps weights tiny
# Ops the toolkit may drop as no-ops: with their input also an output, two outputs would be one
# tensor, and toolkit 2.5.0's quantized build fails on that (KeyError) instead of dropping them.
_NO_TAPS = frozenset({"Identity", "Dropout", "Cast"})
_F32, _I64 = np.float32, np.int64


def _read_published() -> dict[str, str]:
    text = resources.files("workbench.support").joinpath("data/onnx_op_support_2.3.2.csv").read_text()
    return {row["onnx_op"]: row["doc_remark"] for row in csv.DictReader(io.StringIO(text))}


#: The operators rknn-toolkit2 2.3.2 documents, with the documented remark ("" = supported).
PUBLISHED_OPS: dict[str, str] = _read_published()

#: Ops of the published list without a probe, with the reason.
UNPROBED: dict[str, str] = {
    "GroupNormalization": (
        "GroupNormalization-18 is deprecated (onnx's checker rejects it) and its replacement, "
        "GroupNormalization-21, needs opset 21, above the toolkit's maximum of 19; exporters usually emit it "
        "decomposed (Reshape, InstanceNormalization, Mul, Add) instead"
    ),
}


@dataclass(frozen=True)
class ProbeCase:
    """One probe: the op, a variant label and a deterministic model builder."""

    op: str
    variant: str
    build: Callable[[], onnx.ModelProto]


def probe_cases(ops: Iterable[str] | None = None) -> list[ProbeCase]:
    """All cases (or those for the given op names), in op-list order."""
    if isinstance(ops, str):  # a lone name, not its letters
        ops = [ops]
    wanted = None if ops is None else set(ops)
    if wanted is not None:
        unknown = wanted - {case.op for case in _REGISTRY} - set(UNPROBED)
        if unknown:
            raise WorkbenchError(
                f"No probe for {sorted(unknown)}: probes exist for the {len(PUBLISHED_OPS)} operators "
                "of the toolkit's published list (ONNX op type names, e.g. Conv, Resize)."
            )
    rank = {op: i for i, op in enumerate(PUBLISHED_OPS)}
    cases = [case for case in _REGISTRY if wanted is None or case.op in wanted]
    return sorted(cases, key=lambda case: rank.get(case.op, len(rank)))  # stable: variants keep order


@cache
def probe_opset(op: str) -> int:
    """The opset a probe of ``op`` uses: DEFAULT_OPSET, or the op's first opset if later."""
    first = min(s.since_version for s in onnx.defs.get_all_schemas_with_history() if s.name == op)
    return max(DEFAULT_OPSET, first)


class _Graph:
    """A probe graph under construction: nodes, initializers, fresh names and helpers."""

    def __init__(self, op: str) -> None:
        self.op_type = op
        self.opset = probe_opset(op)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)  # a fresh seed per build: the same model every time
        self.float_out = True
        self.hints: dict[str, onnx.ValueInfoProto] = {}  # output types shape inference cannot give
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, value, dtype=_F32) -> str:
        """An initializer holding ``value``."""
        name = self.fresh("const")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def ops(self, op_type: str, *inputs: str, n_out: int = 1, name: str | None = None, **attrs) -> list[str]:
        name = name or self.fresh(op_type.lower())
        outputs = [f"{name}_out{i}" if i else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, name=name, **attrs))
        return outputs

    def hint(self, name: str, shape=PROBE_INPUT_SHAPE, elem: int = TensorProto.FLOAT) -> str:
        """Declare ``name``'s type where shape inference leaves it open; returns ``name``."""
        self.hints[name] = _tensor_value_info(name, elem, shape)
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        return self.ops(op_type, *inputs, **attrs)[0]

    def probe(self, *inputs: str, n_out: int = 1, **attrs) -> str:
        return self.probes(*inputs, n_out=n_out, **attrs)[0]

    def probes(self, *inputs: str, n_out: int = 1, **attrs) -> list[str]:
        return self.ops(self.op_type, *inputs, n_out=n_out, name="probe", **attrs)

    # -- operands computed from x ------------------------------------------------------------
    def feat(self) -> str:
        """A new 1x1 conv 8->8 of x; values of order 1 for an input in 0..255."""
        w = self.rng.normal(0, 1 / (128 * np.sqrt(_C)), (_C, _C, 1, 1))
        b = self.rng.normal(0, 0.1, _C)
        return self.op("Conv", "x", self.const(w), self.const(b))

    def conv(self, src: str, cout: int) -> str:
        """A 1x1 conv of a feature map (8 channels) to ``cout`` channels."""
        w = self.rng.normal(0, 1 / np.sqrt(_C), (cout, _C, 1, 1))
        return self.op("Conv", src, self.const(w), self.const(np.zeros(cout)))

    def unit(self, src: str | None = None) -> str:
        """Values in (0, 1), for ops defined on a limited domain."""
        return self.op("Sigmoid", src or self.feat())

    def mask(self) -> str:
        """A bool tensor computed from x."""
        return self.op("Greater", self.feat(), self.const(0.0))

    def ints(self, dtype: int, lo: int, hi: int, src: str | None = None) -> str:
        """Integers in [lo, hi) computed from x: Cast of a scaled Sigmoid."""
        scaled = self.op("Mul", self.unit(src), self.const(hi - lo))
        return self.op("Cast", self.op("Add", scaled, self.const(lo)), to=dtype)

    def reshape(self, src: str, shape) -> str:
        return self.op("Reshape", src, self.const(shape, _I64))

    def reduce_mean(self, src: str, axes: list[int] | None, keepdims: int) -> str:
        if axes is None:
            return self.op("ReduceMean", src, keepdims=keepdims)
        if self.opset >= 18:  # axes moved from attribute to input
            return self.op("ReduceMean", src, self.const(axes, _I64), keepdims=keepdims)
        return self.op("ReduceMean", src, axes=axes, keepdims=keepdims)

    # -- finishing -----------------------------------------------------------------------------
    def model(self, outputs: list[str]) -> onnx.ModelProto:
        """The checked model; int, bool and string outputs are cast to float unless float_out is off."""
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(PROBE_INPUT_SHAPE))]
        outputs = self._name_probe_inputs(outputs)
        types = self._infer(inputs) | self.hints
        final = []
        for name in outputs:
            elem = types[name].type.tensor_type.elem_type  # UNDEFINED for sequences and optionals
            if self.float_out and elem not in (TensorProto.FLOAT, TensorProto.UNDEFINED):
                name = self.op("Cast", name, to=TensorProto.FLOAT)
            final.append(name)
        # The probe's inputs made by a conv are outputs too. Otherwise the toolkit folds a probe that
        # follows a conv into it (Relu into ConvRelu, BatchNormalization or a channel Gather into the
        # weights) and the probe vanishes from the layer table.
        if self.op_type not in _NO_TAPS:
            convs = {node.output[0] for node in self.nodes if node.op_type == "Conv" and node.name != "probe"}
            probe = next(node for node in self.nodes if node.name == "probe")
            final += [name for name in dict.fromkeys(probe.input) if name in convs and name not in final]
        types = self._infer(inputs) | self.hints
        graph = helper.make_graph(
            self.nodes, f"probe_{self.op_type}", inputs, [types[name] for name in final], self.inits
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 9 if self.opset >= 19 else 8  # IR 8 covers opsets up to 18
        onnx.checker.check_model(model, full_check=True)
        return model

    def _name_probe_inputs(self, outputs: list[str]) -> list[str]:
        """Rename the computed tensors the probe reads to ``probe_in<i>``; returns ``outputs`` renamed.

        Layers the toolkit inserts when it rewrites an op (a Transpose before an Einsum, the tiles of
        a large conv) are named after the op's input tensors, so these names start with "probe" too.
        """
        probe = next(node for node in self.nodes if node.name == "probe")
        made = {name for node in self.nodes for name in node.output}
        renames: dict[str, str] = {}
        for i, name in enumerate(probe.input):
            if name in made and name not in renames:
                renames[name] = f"probe_in{i}"
        _rename(self.nodes, renames)
        return [renames.get(name, name) for name in outputs]

    def _infer(self, inputs) -> dict[str, onnx.ValueInfoProto]:
        graph = helper.make_graph(self.nodes, "infer", inputs, [], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 9 if self.opset >= 19 else 8
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        return {vi.name: vi for vi in inferred.graph.value_info}


def _rename(nodes: Iterable[onnx.NodeProto], renames: dict[str, str]) -> None:
    """Rename tensors in ``nodes`` and in their subgraphs, which may read outer tensors."""
    for node in nodes:
        for field in (node.input, node.output):
            field[:] = [renames.get(name, name) for name in field]
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                _rename(sub.node, renames)


_Body = Callable[[_Graph], "str | list[str]"]
_REGISTRY: list[ProbeCase] = []


def _build(op: str, body: _Body) -> onnx.ModelProto:
    graph = _Graph(op)
    outputs = body(graph)
    return graph.model([outputs] if isinstance(outputs, str) else list(outputs))


def _add(op: str, variant: str, body: Callable[..., str | list[str]], **params) -> None:
    body = partial(body, **params) if params else body
    _REGISTRY.append(ProbeCase(op, variant, partial(_build, op, body)))


def _case(op: str, variant: str = "default") -> Callable[[_Body], _Body]:
    def register(body: _Body) -> _Body:
        _add(op, variant, body)
        return body

    return register


def _tensor_value_info(name: str, elem: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


# -- element-wise ----------------------------------------------------------------------------------
def _unary(g: _Graph, **attrs) -> str:
    return g.probe(g.feat(), **attrs)


def _unary_unit(g: _Graph, offset: float = 0.0) -> str:
    src = g.unit()
    return g.probe(g.op("Add", src, g.const(offset)) if offset else src)


def _binary(g: _Graph, **attrs) -> str:
    return g.probe(g.feat(), g.feat(), **attrs)


for _op in (
    "Abs Asinh Atan Ceil Cos Cosh Elu Erf Exp Floor HardSigmoid HardSwish Identity IsInf IsNaN "
    "LeakyRelu Mish Neg Relu Round Selu Celu Shrink Sigmoid Sign Sin Sinh Softplus Softsign Tan Tanh "
    "ThresholdedRelu Dropout Hardmax Trilu Det NonZero Unique Shape Size Flatten "
    "GlobalAveragePool GlobalMaxPool GlobalLpPool"
).split():
    _add(_op, "default", _unary)
# onnx cannot infer this function op with its default axes: they are spelled out
_add("MeanVarianceNormalization", "default", _unary, axes=[0, 2, 3])
_add("DynamicQuantizeLinear", "default", lambda g: g.probes(g.feat(), n_out=3)[0])  # y; scale and zero unused
_add("LRN", "default", _unary, size=3)
_add("SpaceToDepth", "default", _unary, blocksize=2)
_add("DepthToSpace", "mode=DCR", _unary, blocksize=2)
_add("DepthToSpace", "mode=CRD", _unary, blocksize=2, mode="CRD")
_add("LpNormalization", "default", _unary, axis=1, p=2)
_add("LpPool", "default", _unary, kernel_shape=[2, 2], strides=[2, 2], p=2)
for _op in ("ArgMax", "ArgMin"):
    _add(_op, "default", _unary, axis=1, keepdims=1)
for _op in ("Softmax", "LogSoftmax"):
    _add(_op, "axis=1", _unary, axis=1)
    _add(_op, "axis=-1", _unary, axis=-1)
for _op in ("Acos", "Asin", "Atanh", "Log", "Sqrt", "Reciprocal"):  # defined on (0, 1) at least
    _add(_op, "default", _unary_unit)
_add("Acosh", "default", _unary_unit, offset=1.0)  # Acosh needs >= 1
for _op in "Add Sub Mul Max Min Mean Sum Equal Greater GreaterOrEqual Less LessOrEqual".split():
    _add(_op, "default", _binary)
_add("Einsum", "default", _binary, equation="nchw,nchw->nhw")
_add("Concat", "default", _binary, axis=1)


@_case("Div")
def _div(g: _Graph) -> str:
    return g.probe(g.feat(), g.unit())  # a divisor bounded away from 0


@_case("Pow")
def _pow(g: _Graph) -> str:
    return g.probe(g.unit(), g.feat())  # a positive base


@_case("Mod", "fmod=1")
def _mod_float(g: _Graph) -> str:
    return g.probe(g.feat(), g.unit(), fmod=1)  # float Mod needs fmod=1


@_case("Mod", "int32")
def _mod_int(g: _Graph) -> str:
    return g.probe(g.ints(TensorProto.INT32, -8, 8), g.ints(TensorProto.INT32, 1, 5))  # no zero divisor


def _logical(g: _Graph, arity: int) -> str:
    return g.probe(*(g.mask() for _ in range(arity)))


def _bitwise(g: _Graph, arity: int) -> str:
    return g.probe(*(g.ints(TensorProto.INT32, -8, 8) for _ in range(arity)))


for _op in ("And", "Or", "Xor"):
    _add(_op, "default", _logical, arity=2)
_add("Not", "default", _logical, arity=1)
for _op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
    _add(_op, "default", _bitwise, arity=2)
_add("BitwiseNot", "default", _bitwise, arity=1)


@_case("BitShift")
def _bitshift(g: _Graph) -> str:
    return g.probe(g.ints(TensorProto.UINT8, 0, 16), g.ints(TensorProto.UINT8, 0, 4), direction="LEFT")


@_case("Where")
def _where(g: _Graph) -> str:
    return g.probe(g.mask(), g.feat(), g.feat())


@_case("PRelu")
def _prelu(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(np.linspace(0.05, 0.4, _C).reshape(_C, 1, 1)))


@_case("Clip")
def _clip(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(-0.5), g.const(0.5))


@_case("CumSum")
def _cumsum(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(1, _I64))


@_case("Cast", "to=int32")
def _cast_int(g: _Graph) -> str:
    g.float_out = False  # the dtype change is the point
    return g.probe(g.feat(), to=TensorProto.INT32)


@_case("Cast", "to=float16")
def _cast_half(g: _Graph) -> str:
    g.float_out = False
    return g.probe(g.feat(), to=TensorProto.FLOAT16)


@_case("CastLike")
def _castlike(g: _Graph) -> str:
    g.float_out = False
    return g.probe(g.feat(), g.const([0], np.int32))


@_case("Bernoulli")
def _bernoulli(g: _Graph) -> str:
    return g.probe(g.unit(), seed=0.0)  # probabilities in (0, 1)


def _random(g: _Graph, like: bool) -> str:
    a = g.feat()
    noise = g.probe(a, seed=0.0) if like else g.probe(shape=list(PROBE_INPUT_SHAPE), seed=0.0)
    return g.op("Add", a, noise)  # the output still depends on x, so the graph is not all constant


for _op in ("RandomNormalLike", "RandomUniformLike"):
    _add(_op, "default", _random, like=True)
for _op in ("RandomNormal", "RandomUniform"):
    _add(_op, "default", _random, like=False)


# -- convolution and pooling ---------------------------------------------------------------------
def _conv(g: _Graph, k: int = 3, stride: int = 1, group: int = 1, dilation: int = 1) -> str:
    w = g.const(g.rng.normal(0, 1 / np.sqrt(_C // group * k * k), (_C, _C // group, k, k)))
    pad = dilation * (k - 1) // 2
    return g.probe(
        g.feat(),
        w,
        g.const(np.zeros(_C)),
        kernel_shape=[k, k],
        strides=[stride] * 2,
        pads=[pad] * 4,
        group=group,
        dilations=[dilation] * 2,
    )


_add("Conv", "default", _conv)
_add("Conv", "kernel=7", _conv, k=7)
_add("Conv", "kernel=33", _conv, k=33)  # above the documented 1..31
_add("Conv", "stride=2", _conv, stride=2)
_add("Conv", "stride=8", _conv, stride=8)  # above the documented 1..7
_add("Conv", "group=8", _conv, group=_C)  # depthwise
_add("Conv", "dilation=2", _conv, dilation=2)


def _conv_transpose(g: _Graph, stride: int) -> str:
    w = g.const(g.rng.normal(0, 1 / np.sqrt(_C), (_C, _C, stride, stride)))
    return g.probe(g.feat(), w, g.const(np.zeros(_C)), kernel_shape=[stride] * 2, strides=[stride] * 2)


for _stride in (2, 3, 4):  # 3 is outside the documented 1/2/4/8
    _add("ConvTranspose", f"stride={_stride}", _conv_transpose, stride=_stride)


@_case("DeformConv")
def _deform_conv(g: _Graph) -> str:
    a = g.feat()
    w = g.const(g.rng.normal(0, 1 / np.sqrt(_C * 9), (_C, _C, 3, 3)))
    offset = g.conv(a, 2 * 9)  # (dy, dx) per kernel tap, computed
    return g.probe(a, w, offset, g.const(np.zeros(_C)), kernel_shape=[3, 3], pads=[1] * 4)


def _pool(g: _Graph, k: int, stride: int = 1, pad: int = 0) -> str:
    return g.probe(g.feat(), kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)


for _op in ("MaxPool", "AveragePool"):
    _add(_op, "kernel=2,stride=2", _pool, k=2, stride=2)
    _add(_op, "kernel=3,pads=1", _pool, k=3, pad=1)
    _add(_op, "kernel=16", _pool, k=16)


@_case("MaxUnpool")
def _max_unpool(g: _Graph) -> str:
    pooled, indices = g.ops("MaxPool", g.feat(), n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    return g.probe(pooled, indices, kernel_shape=[2, 2], strides=[2, 2])


@_case("MaxRoiPool")
def _max_roi_pool(g: _Graph) -> str:
    rois = g.const([[0, 0, 0, 7, 7], [0, 4, 4, 15, 15]])  # batch index, x1, y1, x2, y2
    return g.probe(g.feat(), rois, pooled_shape=[2, 2])


@_case("RoiAlign")
def _roi_align(g: _Graph) -> str:
    rois = g.const([[0, 0, 7, 7], [4, 4, 15, 15]])
    return g.probe(g.feat(), rois, g.const([0, 0], _I64), output_height=2, output_width=2, sampling_ratio=2)


@_case("ConvInteger")
def _conv_integer(g: _Graph) -> str:
    w = g.const(g.rng.integers(100, 156, (_C, _C, 3, 3)), np.uint8)
    return g.probe(
        g.ints(TensorProto.UINT8, 0, 256),
        w,
        g.const(128, np.uint8),
        g.const(128, np.uint8),
        kernel_shape=[3, 3],
        pads=[1] * 4,
    )


@_case("QLinearConv")
def _qlinear_conv(g: _Graph) -> str:
    w = g.const(g.rng.integers(100, 156, (_C, _C, 3, 3)), np.uint8)
    scale, zero = g.const(0.02), g.const(128, np.uint8)
    return g.probe(
        g.ints(TensorProto.UINT8, 0, 256),
        scale,
        zero,
        w,
        g.const(0.01),
        zero,
        g.const(0.05),
        zero,
        g.const(np.zeros(_C), np.int32),
        kernel_shape=[3, 3],
        pads=[1] * 4,
    )


@_case("MatMulInteger")
def _matmul_integer(g: _Graph) -> str:
    w = g.const(g.rng.integers(100, 156, (_W, _W)), np.uint8)
    zero = g.const(128, np.uint8)
    return g.probe(g.ints(TensorProto.UINT8, 0, 256), w, zero, zero)


@_case("QLinearMatMul")
def _qlinear_matmul(g: _Graph) -> str:
    w = g.const(g.rng.integers(100, 156, (_W, _W)), np.uint8)
    zero = g.const(128, np.uint8)
    return g.probe(
        g.ints(TensorProto.UINT8, 0, 256), g.const(0.02), zero, w, g.const(0.01), zero, g.const(0.05), zero
    )


@_case("QuantizeLinear")
def _quantize(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(0.02), g.const(128, np.uint8))


def _dequantize(g: _Graph, per_channel: bool) -> str:
    # fed by a QuantizeLinear, as in QDQ models: after a Cast, toolkit 2.5.0 fails with a KeyError
    if per_channel:
        scale, zero = g.const(np.linspace(0.01, 0.03, _C)), g.const(np.full(_C, 128), np.uint8)
    else:
        scale, zero = g.const(0.02), g.const(128, np.uint8)
    axis = {"axis": 1} if per_channel else {}
    return g.probe(g.op("QuantizeLinear", g.feat(), scale, zero, **axis), scale, zero, **axis)


_add("DequantizeLinear", "default", _dequantize, per_channel=False)
_add("DequantizeLinear", "axis=1", _dequantize, per_channel=True)


# -- normalization -------------------------------------------------------------------------------
@_case("BatchNormalization")
def _batch_norm(g: _Graph) -> str:
    ones, zeros = g.const(np.ones(_C)), g.const(np.zeros(_C))
    return g.probe(g.feat(), g.const(np.linspace(0.5, 1.5, _C)), zeros, zeros, ones)


@_case("InstanceNormalization")
def _instance_norm(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(np.ones(_C)), g.const(np.zeros(_C)))


def _layer_norm(g: _Graph, **attrs) -> str:
    return g.probe(g.feat(), g.const(np.ones(_W)), g.const(np.zeros(_W)), axis=-1, **attrs)


# epsilon spelled out, as exporters write it: toolkit 2.5.0 fails with a KeyError without it
_add("LayerNormalization", "default", _layer_norm, epsilon=1e-5)
_add("LayerNormalization", "no_epsilon", _layer_norm)


# -- reductions ------------------------------------------------------------------------------------
for _op in "ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMin ReduceProd ReduceSumSquare".split():
    _add(_op, "default", _unary, axes=[1], keepdims=1)
_add("ReduceMean", "axes=1", _unary, axes=[1], keepdims=1)
_add("ReduceMean", "axes=2,3", _unary, axes=[2, 3], keepdims=1)
_add("ReduceLogSum", "default", lambda g: g.probe(g.unit(), axes=[1], keepdims=1))  # log of a positive sum
_add("ReduceSum", "axes=1", lambda g: g.probe(g.feat(), g.const([1], _I64), keepdims=1))
_add("ReduceSum", "axes=2,3", lambda g: g.probe(g.feat(), g.const([2, 3], _I64), keepdims=1))


# -- shape and layout ----------------------------------------------------------------------------
# 5-D: rows in blocks, blocks swapped. Not the channels: a channel shuffle right after the conv
# is folded into its weights by the toolkit, and then nothing is left to probe.
_FIVE_D, _FIVE_D_PERM = [_N, _C, 4, _H // 4, _W], [0, 1, 3, 2, 4]


@_case("Reshape")
def _reshape(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([_N, _C, _H * _W], _I64))


@_case("Reshape", "5d")
def _reshape_5d(g: _Graph) -> str:
    return g.op("Transpose", g.probe(g.feat(), g.const(_FIVE_D, _I64)), perm=_FIVE_D_PERM)


@_case("Transpose")
def _transpose(g: _Graph) -> str:
    return g.probe(g.feat(), perm=[0, 2, 3, 1])


@_case("Transpose", "5d")
def _transpose_5d(g: _Graph) -> str:
    return g.probe(g.reshape(g.feat(), _FIVE_D), perm=_FIVE_D_PERM)


@_case("Squeeze")
def _squeeze(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([0], _I64))


@_case("Unsqueeze")
def _unsqueeze(g: _Graph) -> str:
    return g.probe(g.reshape(g.feat(), [_N, _C, _H * _W]), g.const([2], _I64))  # stays 4-D


@_case("Expand")
def _expand(g: _Graph) -> str:
    return g.probe(g.reduce_mean(g.feat(), [2], keepdims=1), g.const(PROBE_INPUT_SHAPE, _I64))


@_case("Tile")
def _tile(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([1, 1, 2, 2], _I64))


@_case("Slice")
def _slice(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([2, 2], _I64), g.const([14, 14], _I64), g.const([2, 3], _I64))


@_case("Slice", "steps=2")
def _slice_steps(g: _Graph) -> str:
    starts, ends, axes = g.const([0, 0], _I64), g.const([_H, _W], _I64), g.const([2, 3], _I64)
    return g.probe(g.feat(), starts, ends, axes, g.const([2, 2], _I64))


@_case("Split", "equal")
def _split(g: _Graph) -> list[str]:
    return g.probes(g.feat(), n_out=2, axis=1)


@_case("Split", "split=2,6")
def _split_sizes(g: _Graph) -> list[str]:
    return g.probes(g.feat(), g.const([2, 6], _I64), n_out=2, axis=1)


@_case("Split", "axis=2")
def _split_rows(g: _Graph) -> list[str]:
    return g.probes(g.feat(), n_out=2, axis=2)  # channel splits fold into the conv


def _pad(g: _Graph, mode: str) -> str:
    pads = g.const([0, 0, 1, 1, 0, 0, 1, 1], _I64)
    extra = [g.const(0.0)] if mode == "constant" else []
    return g.probe(g.feat(), pads, *extra, mode=mode)


for _mode in ("constant", "reflect", "edge"):
    _add("Pad", f"mode={_mode}", _pad, mode=_mode)


@_case("CenterCropPad")
def _center_crop_pad(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([12, 12], _I64), axes=[2, 3])


@_case("Col2Im")
def _col2im(g: _Graph) -> str:
    # 2x2 blocks of 2 channels, stride 2: 256 blocks make a 32x32 image
    cols = g.reshape(g.feat(), [_N, _C, _H * _W])
    return g.probe(cols, g.const([32, 32], _I64), g.const([2, 2], _I64), strides=[2, 2])


def _resize(g: _Graph, scale: float, **attrs) -> str:
    return g.probe(g.feat(), "", g.const([1, 1, scale, scale]), **attrs)


_add("Resize", "mode=nearest", _resize, scale=2.0, mode="nearest")
_add(
    "Resize",
    "mode=nearest,asymmetric",
    _resize,  # as PyTorch exports nearest upsampling
    scale=2.0,
    mode="nearest",
    coordinate_transformation_mode="asymmetric",
    nearest_mode="floor",
)
_add("Resize", "mode=linear,half_pixel", _resize, scale=2.0, mode="linear")
_add(
    "Resize",
    "mode=linear,align_corners",
    _resize,
    scale=2.0,
    mode="linear",
    coordinate_transformation_mode="align_corners",
)
_add("Resize", "mode=cubic", _resize, scale=2.0, mode="cubic")
_add("Resize", "mode=linear,scale=0.5", _resize, scale=0.5, mode="linear")


# -- indexing ----------------------------------------------------------------------------------------
@_case("Gather", "axis=1")
def _gather(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([0, 2, 4, 6], _I64), axis=1)


@_case("Gather", "axis=1,scalar")
def _gather_scalar(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(3, _I64), axis=1)


@_case("Gather", "axis=3")
def _gather_spatial(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([0, 2, 4, 6], _I64), axis=3)  # channel gathers fold into the conv


@_case("GatherElements")
def _gather_elements(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(g.rng.integers(0, _C, (_N, 2, _H, _W)), _I64), axis=1)


@_case("GatherND")
def _gather_nd(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([[0, 1], [0, 5]], _I64))


@_case("ScatterElements")
def _scatter_elements(g: _Graph) -> str:
    a = g.feat()
    indices = np.broadcast_to(np.array([0, 5]).reshape(1, 2, 1, 1), (_N, 2, _H, _W))  # no duplicates
    return g.probe(a, g.const(indices, _I64), g.conv(a, 2), axis=1)


@_case("ScatterND")
def _scatter_nd(g: _Graph) -> str:
    a = g.feat()
    updates = g.reshape(g.conv(a, 2), [2, _H, _W])
    return g.probe(a, g.const([[0, 1], [0, 5]], _I64), updates)


@_case("Compress")
def _compress(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([True, False] * (_C // 2), np.bool_), axis=1)


@_case("TopK")
def _topk(g: _Graph) -> list[str]:
    return g.probes(g.feat(), g.const([4], _I64), n_out=2, axis=1)


@_case("OneHot")
def _one_hot(g: _Graph) -> str:
    labels = g.op("ArgMax", g.feat(), axis=1, keepdims=0)  # int64 class ids from the float path
    return g.probe(labels, g.const(_C, _I64), g.const([0.0, 1.0]), axis=1)


@_case("ReverseSequence")
def _reverse_sequence(g: _Graph) -> str:
    return g.probe(g.feat(), g.const([5], _I64), batch_axis=0, time_axis=1)


@_case("NonMaxSuppression")
def _nms(g: _Graph) -> str:
    a = g.feat()
    boxes = g.op("Transpose", g.reshape(g.conv(a, 4), [_N, 4, _H * _W]), perm=[0, 2, 1])
    scores = g.reshape(g.unit(g.conv(a, 1)), [_N, 1, _H * _W])
    return g.probe(boxes, scores, g.const(10, _I64), g.const(0.5), g.const(0.1))


@_case("GridSample")
def _grid_sample(g: _Graph) -> str:
    a = g.feat()
    grid = g.op("Tanh", g.op("Transpose", g.conv(a, 2), perm=[0, 2, 3, 1]))  # (N, H, W, 2) in [-1, 1]
    return g.probe(a, grid)


# -- matrix products and recurrent layers -----------------------------------------------------------
@_case("MatMul", "const_b")
def _matmul_const(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(g.rng.normal(0, 1 / np.sqrt(_W), (_W, _W))))


_add("MatMul", "computed", _binary)


@_case("Gemm")
def _gemm(g: _Graph) -> str:
    flat = g.op("Flatten", g.feat())
    w = g.const(g.rng.normal(0, 1 / np.sqrt(_C * _H * _W), (16, _C * _H * _W)))
    return g.probe(flat, w, g.const(np.zeros(16)), transB=1)


def _recurrent(g: _Graph, gates: int, **attrs) -> str:
    seq = g.reshape(g.feat(), [_C, _N, _H * _W])  # (seq_len, batch, input_size)
    w = g.const(g.rng.normal(0, 1 / 16, (1, gates * _HIDDEN, _H * _W)))
    r = g.const(g.rng.normal(0, 0.5, (1, gates * _HIDDEN, _HIDDEN)))
    b = g.const(np.zeros((1, 2 * gates * _HIDDEN)))
    return g.probe(seq, w, r, b, hidden_size=_HIDDEN, **attrs)


_add("LSTM", "default", _recurrent, gates=4)
_add("GRU", "default", _recurrent, gates=3)
_add("GRU", "linear_before_reset=1", _recurrent, gates=3, linear_before_reset=1)  # as PyTorch exports
_add("RNN", "default", _recurrent, gates=1)


# -- constants and generators ----------------------------------------------------------------------
@_case("Constant")
def _constant(g: _Graph) -> str:
    value = numpy_helper.from_array(np.linspace(-1, 1, _C, dtype=_F32).reshape(1, _C, 1, 1))
    return g.op("Add", g.feat(), g.probe(value=value))


@_case("ConstantOfShape")
def _constant_of_shape(g: _Graph) -> str:
    filled = g.probe(g.const(PROBE_INPUT_SHAPE, _I64), value=numpy_helper.from_array(np.ones(1, _F32)))
    return g.op("Add", g.feat(), filled)


@_case("EyeLike")
def _eye_like(g: _Graph) -> str:
    a = g.feat()
    return g.op("Add", a, g.probe(g.reduce_mean(a, [0, 1], keepdims=0)))  # computed (H, W) input


@_case("EyeLike", "const_input")
def _eye_like_const(g: _Graph) -> str:
    return g.op("Add", g.feat(), g.probe(g.const(np.zeros((_H, _W)))))  # the documented case


@_case("Range")
def _range(g: _Graph) -> str:
    a = g.feat()
    limit = g.op("Gather", g.op("Shape", a), g.const(3, _I64))  # positions 0..W-1, as models build them
    positions = g.op("Cast", g.probe(g.const(0, _I64), limit, g.const(1, _I64)), to=TensorProto.FLOAT)
    return g.op("Add", a, positions)


def _window(g: _Graph) -> str:
    return g.op("Mul", g.feat(), g.probe(g.const(_W, _I64)))


for _op in ("BlackmanWindow", "HammingWindow", "HannWindow"):
    _add(_op, "default", _window)


@_case("MelWeightMatrix")
def _mel_weight_matrix(g: _Graph) -> str:
    # dft_length 30 gives 16 frequency bins, so the (16, 16) matrix multiplies the W axis
    mel = g.probe(g.const(_W, _I64), g.const(30, _I64), g.const(16000, _I64), g.const(0.0), g.const(8000.0))
    return g.op("MatMul", g.feat(), mel)


@_case("DFT")
def _dft(g: _Graph) -> str:
    return g.probe(g.reshape(g.feat(), [_C, _H * _W, 1]), axis=1)


@_case("STFT")
def _stft(g: _Graph) -> str:
    signal = g.reshape(g.feat(), [_C, _H * _W, 1])
    window = g.const(np.hanning(32))
    # onesided is spelled out: onnx 1.18 infers the two-sided shape when it is left to default
    return g.probe(signal, g.const(16, _I64), window, onesided=1)


@_case("Multinomial")
def _multinomial(g: _Graph) -> str:
    logits = g.op("Flatten", g.op("GlobalAveragePool", g.feat()))  # (batch, classes)
    return g.probe(logits, sample_size=4, seed=0.0)


# -- losses -------------------------------------------------------------------------------------------
def _loss(g: _Graph) -> str:
    return g.probe(g.feat(), g.const(g.rng.integers(0, _C, (_N, _H, _W)), _I64))


_add("NegativeLogLikelihoodLoss", "default", _loss)
_add("SoftmaxCrossEntropyLoss", "default", _loss)


# -- strings ------------------------------------------------------------------------------------------
@_case("StringNormalizer")
def _string_normalizer(g: _Graph) -> str:
    text = g.op("Cast", g.reshape(g.feat(), [1, _C * _H * _W]), to=TensorProto.STRING)  # numbers as text
    # the default locale (en_US) may not be installed where onnxruntime runs; "C" always is
    return g.probe(text, case_change_action="LOWER", locale="C")


@_case("TfIdfVectorizer")
def _tfidf(g: _Graph) -> str:
    tokens = g.ints(TensorProto.INT64, 0, 4, g.reshape(g.feat(), [_C, _H * _W]))
    return g.probe(
        tokens,
        mode="TF",
        min_gram_length=1,
        max_gram_length=1,
        max_skip_count=0,
        ngram_counts=[0],
        ngram_indexes=[0, 1, 2, 3],
        pool_int64s=[0, 1, 2, 3],
    )


# -- control flow ---------------------------------------------------------------------------------------
_FEATURE_TYPE = (TensorProto.FLOAT, PROBE_INPUT_SHAPE)


def _if(g: _Graph, const_cond: bool) -> str:
    a = g.feat()
    if const_cond:
        cond = g.const(True, np.bool_)
    else:
        cond = g.op("Greater", g.reduce_mean(a, None, keepdims=0), g.const(0.0))
    then_branch = helper.make_graph(
        [helper.make_node("Relu", [a], ["then_y"], name="then_relu")],
        "then",
        [],
        [_tensor_value_info("then_y", *_FEATURE_TYPE)],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", [a], ["else_y"], name="else_neg")],
        "else",
        [],
        [_tensor_value_info("else_y", *_FEATURE_TYPE)],
    )
    return g.probe(cond, then_branch=then_branch, else_branch=else_branch)


_add("If", "default", _if, const_cond=False)
_add("If", "const_cond", _if, const_cond=True)  # the documented case


@_case("Loop")
def _loop(g: _Graph) -> str:
    a = g.feat()
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Add", ["v_in", a], ["v_out"], name="body_add"),  # reads the outer feature
        ],
        "loop_body",
        [
            _tensor_value_info("i", TensorProto.INT64, []),
            _tensor_value_info("cond_in", TensorProto.BOOL, []),
            _tensor_value_info("v_in", *_FEATURE_TYPE),
        ],
        [_tensor_value_info("cond_out", TensorProto.BOOL, []), _tensor_value_info("v_out", *_FEATURE_TYPE)],
    )
    # onnx leaves the loop-carried output's shape open; it is the feature's
    return g.hint(g.probe(g.const(2, _I64), g.const(True, np.bool_), a, body=body))


@_case("Scan")
def _scan(g: _Graph) -> str:
    # a running sum over the channels
    plane = (TensorProto.FLOAT, (_N, _H, _W))
    body = helper.make_graph(
        [
            helper.make_node("Add", ["state_in", "elem"], ["state_out"], name="body_add"),
            helper.make_node("Identity", ["state_out"], ["scan_out"], name="body_out"),
        ],
        "scan_body",
        [_tensor_value_info("state_in", *plane), _tensor_value_info("elem", *plane)],
        [_tensor_value_info("state_out", *plane), _tensor_value_info("scan_out", *plane)],
    )
    _, stacked = g.probes(
        g.const(np.zeros((_N, _H, _W))),
        g.feat(),
        n_out=2,
        body=body,
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_output_axes=[1],
    )
    return stacked


# -- sequences and optionals ------------------------------------------------------------------------------
def _concat_seq(g: _Graph, seq: str) -> str:
    """Back from a sequence to one float tensor, along the channels."""
    return g.op("ConcatFromSequence", seq, axis=1)


def _seq(g: _Graph, length: int = 2) -> str:
    return g.op("SequenceConstruct", *(g.feat() for _ in range(length)))


_add("SequenceConstruct", "default", lambda g: _concat_seq(g, g.probe(g.feat(), g.feat())))
_add("ConcatFromSequence", "default", lambda g: g.probe(_seq(g), axis=1))
_add("SequenceAt", "default", lambda g: g.probe(_seq(g), g.const(1, _I64)))
_add("SequenceLength", "default", lambda g: g.probe(_seq(g)))
_add("SequenceErase", "default", lambda g: _concat_seq(g, g.probe(_seq(g, 3), g.const(0, _I64))))
_add("SequenceInsert", "default", lambda g: _concat_seq(g, g.probe(_seq(g, 1), g.feat())))
_add("SplitToSequence", "default", lambda g: _concat_seq(g, g.probe(g.feat(), axis=1)))
_add(  # the concatenation's shape is unknown to onnx: an empty sequence has no element shape
    "SequenceEmpty",
    "default",
    lambda g: g.hint(_concat_seq(g, g.op("SequenceInsert", g.probe(dtype=TensorProto.FLOAT), g.feat()))),
)


@_case("SequenceMap")
def _sequence_map(g: _Graph) -> str:
    body = helper.make_graph(
        [helper.make_node("Relu", ["elem"], ["elem_out"], name="body_relu")],
        "map_body",
        [_tensor_value_info("elem", *_FEATURE_TYPE)],
        [_tensor_value_info("elem_out", *_FEATURE_TYPE)],
    )
    return _concat_seq(g, g.probe(_seq(g), body=body))


_add("Optional", "default", lambda g: g.op("OptionalGetElement", g.probe(g.feat())))
_add("OptionalGetElement", "default", lambda g: g.probe(g.op("Optional", g.feat())))
_add("OptionalHasElement", "default", lambda g: g.probe(g.op("Optional", g.feat())))
