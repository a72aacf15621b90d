"""ONNX rewrites before conversion that the toolkit does not do (AIMET has both):

- :func:`equalize` (cross-layer equalization, Nagel et al. 2019): for a Conv followed by a
  positive-homogeneous activation (ReLU, LeakyReLU, PReLU: ``f(x / s) = f(x) / s`` for
  ``s > 0``) or directly by another Conv, output channel ``i`` of the first conv is divided
  by ``s_i`` and the matching input channel of the second multiplied by it. The float model
  is unchanged (exactly, up to float rounding); with ``s_i = sqrt(r1_i / r2_i)`` (``r``: the
  channels' max |weight|) both convs' channel ranges become equal, which is what per-tensor
  weight quantization (``quantized_method="layer"``) and the per-tensor activation in between
  need. HardSwish, SiLU, Clip (ReLU6) are not homogeneous: such pairs are left alone.
- :func:`correct_bias` (empirical bias correction): each conv's per-channel mean error of
  the int8 model (the emulator) against float over the calibration set is subtracted from
  its bias, convs in graph order so that a correction sees the corrected convs before it.

Both return a new OnnxModel to convert like the original; neither is kept unless the
simulator confirms a gain (workbench.fix.remedies).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from workbench.datasets import CalibrationSet
from workbench.emulate.runner import EmulatorRunner, _session
from workbench.model import OnnxModel
from workbench.preprocess import load_row
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner

#: Activations with f(a * x) = a * f(x) for every a > 0 (their slopes are per channel or shared).
POSITIVE_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")


@dataclass(frozen=True)
class ConvPair:
    """Two convs that cross-layer equalization may rescale against each other."""

    first: str  #: node name of the conv whose output channels are scaled down
    second: str  #: node name of the conv whose input channels are scaled up
    activation: str = ""  #: the positive-homogeneous op between them ("" when none)


def fold_batchnorm(model: OnnxModel) -> OnnxModel:
    """Every BatchNormalization that is a Conv's only reader folded into that Conv (the
    toolkit does the same when it converts): ``w * g / sqrt(var + eps)`` and
    ``(b - mean) * g / sqrt(var + eps) + beta``; the conv then writes the BN's output tensor,
    the name the toolkit's graph gives it. Exact in float (up to rounding); the model itself
    when there is nothing to fold. Constant nodes become initializers first (Paddle exports
    hold their weights in Constant nodes)."""
    proto = _constants_as_initializers(model.proto)
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    readers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    shared, outputs = _shared_initializers(graph), {o.name for o in graph.output}
    folds = {}  # conv name -> its BN
    for conv in graph.node:
        users = readers.get(conv.output[0], []) if conv.op_type == "Conv" else []
        if len(users) != 1 or users[0].op_type != "BatchNormalization" or conv.output[0] in outputs:
            continue
        bn = users[0]
        params = [*conv.input[1:], *bn.input[1:5]]
        if _is_conv(conv, inits) and all(p in inits and p not in shared for p in params if p):
            folds[conv.name] = bn
    if not folds:
        return model
    values = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
    folded_bns = {bn.name for bn in folds.values()}
    for conv in proto.graph.node:
        bn = folds.get(conv.name)
        if bn is None:
            continue
        gamma, beta, mean, var = (values[n] for n in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + eps)
        w = values[conv.input[1]]
        b = values[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0])
        _set_init(proto.graph, conv.input[1], w * k.reshape((-1,) + (1,) * (w.ndim - 1)))
        bias = f"{conv.name}__folded_bias"
        proto.graph.initializer.append(
            numpy_helper.from_array(((b - mean) * k + beta).astype(np.float32), bias)
        )
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = bias
        conv.output[0] = bn.output[0]
    kept = [n for n in proto.graph.node if n.name not in folded_bns]
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    used = {i for n in proto.graph.node for i in n.input}
    unused = [i for i in proto.graph.initializer if i.name not in used]
    for init in unused:
        proto.graph.initializer.remove(init)
    return OnnxModel.from_proto(proto, model.inputs)


def _constants_as_initializers(source: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``source`` whose Constant nodes holding a tensor are initializers."""
    proto = onnx.ModelProto()
    proto.CopyFrom(source)
    kept = []
    for n in proto.graph.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None)
        if n.op_type == "Constant" and value is not None and not n.domain:
            proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), n.output[0]))
        else:
            kept.append(n)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    return proto


def _set_init(graph, name: str, value: np.ndarray) -> None:
    init = next(i for i in graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(init).dtype), name))


def equalizable_pairs(model: OnnxModel) -> list[ConvPair]:
    """Conv -> [ReLU | LeakyReLU | PReLU] -> Conv chains where every tensor in between is read
    by the next op only (and is no graph output), both weights constant initializers."""
    graph = model.proto.graph
    inits = {i.name for i in graph.initializer}
    readers: dict[str, list] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            readers[i].append(n)
    outputs = {o.name for o in graph.output}

    def only_reader(tensor: str):
        users = readers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in outputs else None

    pairs = []
    for first in graph.node:
        if not _is_conv(first, inits):
            continue
        nxt = only_reader(first.output[0])
        act = ""
        if nxt is not None and nxt.op_type in POSITIVE_HOMOGENEOUS and nxt.input[0] == first.output[0]:
            act, nxt = nxt.op_type, only_reader(nxt.output[0])
        if nxt is not None and _is_conv(nxt, inits) and nxt.input[0] != nxt.input[1]:
            pairs.append(ConvPair(first.name, nxt.name, act))
    return pairs


def equalize(model: OnnxModel, *, iterations: int = 20, tolerance: float = 1e-3) -> tuple[OnnxModel, list]:
    """Cross-layer equalization of every :func:`equalizable_pairs` pair, repeated until no
    scale moves by more than ``tolerance`` (chains share convs), at most ``iterations`` times.

    BatchNormalizations after convs are folded first (:func:`fold_batchnorm`).

    Returns:
        (the rewritten model, the pairs equalized); the model itself when there are none.
    """
    original, model = model, fold_batchnorm(model)
    pairs = equalizable_pairs(model)
    if not pairs:
        return original, []
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    nodes = {n.name: n for n in proto.graph.node}
    weights = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
    shared = _shared_initializers(proto.graph)
    pairs = [
        p for p in pairs if not ({*nodes[p.first].input[1:], nodes[p.second].input[1]} & shared)
    ]  # a weight another op also reads cannot be rescaled for one of them
    for _ in range(iterations):
        moved = 0.0
        for p in pairs:
            moved = max(moved, _equalize_pair(nodes[p.first], nodes[p.second], weights))
        if moved <= tolerance:
            break
    for init in proto.graph.initializer:
        if init.name in weights:
            dtype = numpy_helper.to_array(init).dtype
            init.CopyFrom(numpy_helper.from_array(weights[init.name].astype(dtype), init.name))
    return OnnxModel.from_proto(proto, model.inputs), pairs


def _equalize_pair(first, second, weights: dict[str, np.ndarray]) -> float:
    """Rescale one pair in ``weights``; returns the largest |log s| applied."""
    w1, w2 = weights[first.input[1]], weights[second.input[1]]
    r1 = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
    columns = _input_channels(w2, _group(second))
    r2 = np.array([np.abs(w2[rows, col]).max() for rows, col in columns])
    s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
    shape = (-1,) + (1,) * (w1.ndim - 1)
    weights[first.input[1]] = w1 / s.reshape(shape)
    if len(first.input) > 2 and first.input[2]:
        weights[first.input[2]] = weights[first.input[2]] / s
    for i, (rows, col) in enumerate(columns):
        w2[rows, col] *= s[i]
    return float(np.abs(np.log(s)).max())


def _input_channels(w: np.ndarray, group: int) -> list[tuple[slice, int]]:
    """For each input channel of a conv weight ``(out, in / group, kh, kw)``: the output
    rows that read it and its column."""
    per_group_in, per_group_out = w.shape[1], w.shape[0] // group
    out = []
    for i in range(per_group_in * group):
        g = i // per_group_in
        out.append((slice(g * per_group_out, (g + 1) * per_group_out), i % per_group_in))
    return out


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _is_conv(node, inits) -> bool:
    return node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits


def _shared_initializers(graph) -> set[str]:
    count: dict[str, int] = defaultdict(int)
    for n in graph.node:
        for i in set(n.input):
            count[i] += 1
    return {name for name, c in count.items() if c > 1}


def correct_bias(
    model: OnnxModel, config: BuildConfig, calibration: CalibrationSet, *, emulator=None, min_t: float = 3.0
) -> tuple[OnnxModel, dict[str, np.ndarray]]:
    """Empirical bias correction: for every conv of the toolkit's graph that is a conv of
    ``model`` once its BatchNormalizations are folded (same output tensor; the toolkit's split
    convs are not), the per-channel mean of its emulated int8 output minus its float output
    over ``calibration`` is subtracted from its bias. Convs are corrected by depth (a conv
    after every conv that feeds it), each depth measured on the emulator with the shallower
    corrections in place.

    Args:
        model, config, calibration: as for a build; ``emulator``: an EmulatorRunner already
            built for them (one toolkit step 1 otherwise).
        min_t: a channel is corrected only where its mean error over the calibration samples
            is at least ``min_t`` standard errors from zero (all of them with one sample).
    Returns:
        (the corrected model, ``{conv output tensor: the shift subtracted}``).
    Raises:
        ToolkitError: step 1 failed. EmulatorError: the model cannot be emulated.
    """

    emulator = emulator or EmulatorRunner(model, config, calibration)
    original, model = model, fold_batchnorm(model)  # the toolkit's conv outputs are the BNs'
    shared = _shared_initializers(model.proto.graph)  # a shared bias cannot shift for one conv
    onnx_convs = {
        n.output[0]: n
        for n in model.proto.graph.node
        if n.op_type == "Conv" and not (len(n.input) > 2 and n.input[2] in shared)
    }
    emu = onnx.ModelProto()
    emu.CopyFrom(emulator.emulation.proto)
    emu_nodes = {n.name: n for n in emu.graph.node}
    targets = {  # {ONNX conv output: the emulation graph's conv node}
        n.output[0]: emu_nodes[n.name]
        for n in emulator.step1.proto.graph.node
        if n.op_type == "Conv" and n.output[0] in onnx_convs and n.name in emu_nodes
    }
    if not targets:
        return original, {}
    float_runner = FloatRunner(model, config.preprocess, keep=list(targets))
    rows = calibration.rows
    float_mean = _channel_means([float_runner.run(r) for r in rows], list(targets))
    feeds = [load_row(r, emulator.model.inputs, emulator.config.preprocess) for r in rows]
    shifts: dict[str, np.ndarray] = {}
    for level in _levels(emu.graph, targets):
        fetch = [targets[t].output[0] for t in level]
        session = _session(emu, fetch)
        got = [dict(zip(level, session.run(fetch, f))) for f in feeds]
        emu_mean = _channel_means(got, level)
        for t in level:
            if emu_mean[t].shape != float_mean[t].shape:
                continue  # a re-laid tensor: its channels are not the ONNX conv's
            shifts[t] = _significant(emu_mean[t] - float_mean[t], min_t)
            _shift_bias(emu.graph, targets[t], shifts[t])
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    nodes = {n.output[0]: n for n in proto.graph.node if n.op_type == "Conv"}
    for t, shift in shifts.items():
        _shift_bias(proto.graph, nodes[t], shift)
    return OnnxModel.from_proto(proto, model.inputs), shifts


def _channel_means(outputs: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Per tensor: each sample's mean of each channel (axis 1), as (samples, channels)."""
    out = {}
    for name in names:
        values = [np.asarray(o[name], np.float64) for o in outputs]
        out[name] = np.stack([v.reshape(v.shape[0], v.shape[1], -1).mean((0, 2)) for v in values])
    return out


def _significant(errors: np.ndarray, min_t: float) -> np.ndarray:
    """The mean over samples of per-sample channel mean errors ``(samples, channels)``, zero
    where it is within ``min_t`` standard errors of zero: there the "bias" is the images'
    error, not the int8 model's. (On lcnet-orientation, 12 images, neither correcting every
    channel nor the significant ones helps: emulated output 23.3 -> 20.7 / 20.0 dB.)"""
    mean = errors.mean(0)
    if len(errors) < 2:
        return mean
    stderr = errors.std(0, ddof=1) / np.sqrt(len(errors))
    return np.where(np.abs(mean) > min_t * stderr, mean, 0.0)


def _levels(graph, targets: dict) -> list[list[str]]:
    """The target convs grouped by depth: a conv's depth is one more than the deepest
    target conv upstream of it (graph order is topological)."""
    by_node = {id(node): t for t, node in targets.items()}
    depth_of: dict[str, int] = {}  # tensor -> deepest target conv that feeds it
    levels: dict[int, list[str]] = defaultdict(list)
    for n in graph.node:
        d = max((depth_of.get(i, 0) for i in n.input), default=0)
        if id(n) in by_node:
            d += 1
            levels[d].append(by_node[id(n)])
        for o in n.output:
            depth_of[o] = d
    return [levels[d] for d in sorted(levels)]


def _shift_bias(graph, conv, shift: np.ndarray) -> None:
    """``conv``'s bias minus ``shift`` (a bias initializer added when it has none)."""
    inits = {i.name: i for i in graph.initializer}
    if len(conv.input) > 2 and conv.input[2] in inits:
        init = inits[conv.input[2]]
        b = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array((b - shift).astype(b.dtype), init.name))
        return
    name = f"{conv.name}__bias_correction"
    graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
    while len(conv.input) < 3:
        conv.input.append("")
    conv.input[2] = name
