"""Tiny models built in code, for fast tests and first experiments.

Each builder returns a checked ``onnx.ModelProto`` with a fixed 1x3x32x32 float input named
``x`` (``two_inputs`` adds a second, non-image input), one output ``y`` and deterministic
weights, so results are reproducible across runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 3, 32, 32)
OPSET = 13


def _model(nodes, output_shape, inits, name: str, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # readable by every onnx/onnxruntime the toolkit allows
    onnx.checker.check_model(model)
    return model


def _conv(name: str, inp: str, out: str, cin: int, cout: int, rng, k: int = 3):
    w = numpy_helper.from_array(
        rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32), f"{name}.w"
    )
    b = numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.b")
    pad = k // 2
    node = helper.make_node("Conv", [inp, w.name, b.name], [out], name=name, pads=[pad] * 4)
    return node, [w, b]


def conv_relu_sigmoid() -> onnx.ModelProto:
    """Conv 3->8, Relu, Conv 8->8, Sigmoid."""
    rng = np.random.default_rng(0)
    c1, i1 = _conv("conv1", "x", "conv1_out", 3, 8, rng)
    c2, i2 = _conv("conv2", "relu1_out", "conv2_out", 8, 8, rng)
    nodes = [
        c1,
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        c2,
        helper.make_node("Sigmoid", ["conv2_out"], ["y"], name="sigmoid"),
    ]
    return _model(nodes, [1, 8, 32, 32], i1 + i2, "conv_relu_sigmoid")


def residual_add() -> onnx.ModelProto:
    """Conv, Relu, Conv, Add with the first Relu's output (a skip connection), Relu."""
    rng = np.random.default_rng(1)
    c1, i1 = _conv("conv1", "x", "conv1_out", 3, 8, rng)
    c2, i2 = _conv("conv2", "relu1_out", "conv2_out", 8, 8, rng)
    nodes = [
        c1,
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        c2,
        helper.make_node("Add", ["conv2_out", "relu1_out"], ["add_out"], name="add"),
        helper.make_node("Relu", ["add_out"], ["y"], name="relu2"),
    ]
    return _model(nodes, [1, 8, 32, 32], i1 + i2, "residual_add")


def concat_resize() -> onnx.ModelProto:
    """Two conv branches concatenated, then a 2x nearest Resize and a 1x1 conv."""
    rng = np.random.default_rng(2)
    a, ia = _conv("branch_a", "x", "a_out", 3, 4, rng)
    b, ib = _conv("branch_b", "x", "b_out", 3, 4, rng, k=1)
    head, ih = _conv("head", "up_out", "y", 8, 4, rng, k=1)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        a,
        b,
        helper.make_node("Concat", ["a_out", "b_out"], ["cat_out"], name="concat", axis=1),
        helper.make_node("Resize", ["cat_out", "", "scales"], ["up_out"], name="resize", mode="nearest"),
        head,
    ]
    return _model(nodes, [1, 4, 64, 64], ia + ib + ih + [scales], "concat_resize")


def cpu_fallback() -> onnx.ModelProto:
    """Conv followed by Sin, which rknn-toolkit2 2.5.0 places on the CPU, then another Conv."""
    rng = np.random.default_rng(3)
    c1, i1 = _conv("conv1", "x", "conv1_out", 3, 8, rng)
    c2, i2 = _conv("conv2", "sin_out", "y", 8, 8, rng)
    nodes = [c1, helper.make_node("Sin", ["conv1_out"], ["sin_out"], name="sin"), c2]
    return _model(nodes, [1, 8, 32, 32], i1 + i2, "cpu_fallback")


def toolkit_rejects() -> onnx.ModelProto:
    """NonMaxSuppression on computed boxes: a dynamic output shape the toolkit refuses."""
    rng = np.random.default_rng(4)
    c1, i1 = _conv("box_conv", "x", "box_map", 3, 1, rng, k=1)  # 1x1x32x32 = 256 boxes x 4
    c2, i2 = _conv("score_conv", "x", "score_map", 3, 1, rng, k=1)
    c2.attribute.append(helper.make_attribute("strides", [2, 2]))  # 1x1x16x16 = 256 scores
    consts = [
        numpy_helper.from_array(np.array([1, 256, 4], np.int64), "box_shape"),
        numpy_helper.from_array(np.array([1, 1, 256], np.int64), "score_shape"),
        numpy_helper.from_array(np.array([10], np.int64), "max_out"),
        numpy_helper.from_array(np.array([0.5], np.float32), "iou"),
    ]
    nodes = [
        c1,
        c2,
        helper.make_node("Reshape", ["box_map", "box_shape"], ["boxes"], name="to_boxes"),
        helper.make_node("Reshape", ["score_map", "score_shape"], ["scores"], name="to_scores"),
        helper.make_node(
            "NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["selected"], name="nms"
        ),
        helper.make_node("Cast", ["selected"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    return _model(nodes, ["selected", 3], i1 + i2 + consts, "toolkit_rejects")


def two_inputs() -> onnx.ModelProto:
    """An image input ``x`` (1x3x32x32) and a non-image input ``aux`` (1x8x1x1, fed as .npy):
    conv features pooled to 8 values, added to ``aux``, then a 1x1 conv head."""
    rng = np.random.default_rng(5)
    c1, i1 = _conv("conv1", "x", "conv1_out", 3, 8, rng)
    head, ih = _conv("head", "mixed", "y", 8, 4, rng, k=1)
    nodes = [
        c1,
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        helper.make_node("GlobalAveragePool", ["relu1_out"], ["pooled"], name="pool"),
        helper.make_node("Add", ["pooled", "aux"], ["mixed"], name="add_aux"),
        head,
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE)),
            helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 8, 1, 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
        i1 + ih,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def transformer_neck() -> onnx.ModelProto:
    """A text-recognizer-style neck between two convs, 4-D to 3-D and back (opset 17): Conv
    3->24 that pools the height away (1,24,1,32), Reshape to (1,24,32), Transpose to tokens
    (1,32,24), MatMul 24->24 plus a residual Add, LayerNormalization, Transpose and Reshape
    back to (1,24,1,32), Conv 24->8 (1x1). The toolkit dumps the 3-D tensors of such necks in
    another rank and axis order than ONNX (measured: (1,24,32) comes out as (1,32,1,24))."""
    rng = np.random.default_rng(6)
    c1, i1 = _conv("stem", "x", "stem_out", 3, 24, rng)
    c1.attribute.append(helper.make_attribute("strides", [32, 1]))
    head, ih = _conv("head", "map_out", "y", 24, 8, rng, k=1)
    consts = [
        numpy_helper.from_array(np.array([1, 24, 32], np.int64), "to_seq"),
        numpy_helper.from_array(np.array([1, 24, 1, 32], np.int64), "to_map"),
        numpy_helper.from_array(rng.normal(0, 0.2, (24, 24)).astype(np.float32), "proj.w"),
        numpy_helper.from_array((1 + rng.normal(0, 0.1, 24)).astype(np.float32), "norm.scale"),
        numpy_helper.from_array(rng.normal(0, 0.1, 24).astype(np.float32), "norm.bias"),
    ]
    nodes = [
        c1,
        helper.make_node("Reshape", ["stem_out", "to_seq"], ["seq_out"], name="to_seq"),
        helper.make_node("Transpose", ["seq_out"], ["tokens"], name="to_tokens", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "proj.w"], ["proj_out"], name="proj"),
        helper.make_node("Add", ["tokens", "proj_out"], ["res_out"], name="residual"),
        helper.make_node(
            "LayerNormalization",
            ["res_out", "norm.scale", "norm.bias"],
            ["norm_out"],
            name="norm",
            axis=-1,
            epsilon=1e-5,  # the toolkit's LayerNorm fusion reads it and fails when it is left default
        ),
        helper.make_node("Transpose", ["norm_out"], ["chan_out"], name="to_channels", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["chan_out", "to_map"], ["map_out"], name="to_map"),
        head,
    ]
    return _model(nodes, [1, 8, 1, 32], i1 + ih + consts, "transformer_neck", opset=17)


def mixed_range_head(classes: int = 4, box_scale: float = 300.0) -> onnx.ModelProto:
    """A detector-style head whose one output mixes two ranges, like a YOLOv8 export.

    Conv features (3->8, stride 4, Relu: an 8x8 grid of 64 candidates), then branch A:
    Conv 8->4, Sigmoid, Mul by ``box_scale`` ("boxes" cx, cy, w, h in 0-300 pixels; the
    Sigmoid keeps every box's size positive, so a detection adapter can match them), and
    branch B: Conv 8->``classes``, Sigmoid ("scores", 0-1); Concat on the channel axis and
    Reshape to (1, 4 + classes, 64). One int8 scale for that output steps about 1.2 per
    level, so the scores collapse to 0 or one step (what :mod:`workbench.fix.split_outputs`
    detects and fixes).
    """
    rng = np.random.default_rng(6)
    feat, i_feat = _conv("features", "x", "feat_conv", 3, 8, rng)
    feat.attribute.append(helper.make_attribute("strides", [4, 4]))
    box, i_box = _conv("box_conv", "feat", "box_raw", 8, 4, rng, k=1)
    cls, i_cls = _conv("cls_conv", "feat", "cls_logits", 8, classes, rng, k=1)
    consts = [
        numpy_helper.from_array(np.array(box_scale, np.float32), "box_scale"),
        numpy_helper.from_array(np.array([1, 4 + classes, 64], np.int64), "head_shape"),
    ]
    nodes = [
        feat,
        helper.make_node("Relu", ["feat_conv"], ["feat"], name="features_relu"),
        box,
        helper.make_node("Sigmoid", ["box_raw"], ["box_unit"], name="box_sigmoid"),
        helper.make_node("Mul", ["box_unit", "box_scale"], ["boxes"], name="box_mul"),
        cls,
        helper.make_node("Sigmoid", ["cls_logits"], ["scores"], name="cls_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["head"], name="head_concat", axis=1),
        helper.make_node("Reshape", ["head", "head_shape"], ["y"], name="head_reshape"),
    ]
    return _model(nodes, [1, 4 + classes, 64], i_feat + i_box + i_cls + consts, "mixed_range_head")


def se_block() -> onnx.ModelProto:
    """A squeeze-excitation block whose error is made inside a fused layer: Conv 3->16 + Relu
    (the features), GlobalAveragePool, Conv 16->4, Relu, Conv 4->16 (``gate_logits``),
    HardSigmoid, Mul with the features, Conv 16->8 (1x1), GlobalAveragePool.

    Output channel 0 of the second SE conv has 100x larger weights: its logits reach -47 while
    the others stay within [-3, 3]. The toolkit fuses that conv with the HardSigmoid and clips
    the logits to [-3, 3] (where the gate saturates): measured on 2.5.0, the conv's
    single-layer cosine is 0.61 while the gate (the layer boundary) reads cosine 1.000."""
    rng = np.random.default_rng(7)
    c1, i1 = _conv("stem", "x", "stem_out", 3, 16, rng)
    head, ih = _conv("head", "scaled", "head_out", 16, 8, rng, k=1)
    expand = rng.normal(0, 0.5, (16, 4, 1, 1)).astype(np.float32)
    expand[0] *= 100
    inits = [
        numpy_helper.from_array(rng.uniform(-0.1, 0.3, (4, 16, 1, 1)).astype(np.float32), "se_reduce.w"),
        numpy_helper.from_array(np.full(4, 0.5, np.float32), "se_reduce.b"),
        numpy_helper.from_array(expand, "se_expand.w"),
        numpy_helper.from_array(np.zeros(16, np.float32), "se_expand.b"),
    ]
    nodes = [
        c1,
        helper.make_node("Relu", ["stem_out"], ["feat"], name="stem_relu"),
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="squeeze"),
        helper.make_node("Conv", ["pooled", "se_reduce.w", "se_reduce.b"], ["reduced"], name="se_reduce"),
        helper.make_node("Relu", ["reduced"], ["reduced_relu"], name="se_relu"),
        helper.make_node(
            "Conv", ["reduced_relu", "se_expand.w", "se_expand.b"], ["gate_logits"], name="se_expand"
        ),
        # alpha/beta written out: the toolkit's HardSigmoid fusion reads them and fails on defaults
        helper.make_node("HardSigmoid", ["gate_logits"], ["gate"], name="se_gate", alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["feat", "gate"], ["scaled"], name="se_scale"),
        head,
        helper.make_node("GlobalAveragePool", ["head_out"], ["y"], name="pool"),
    ]
    return _model(nodes, [1, 8, 1, 1], i1 + ih + inits, "se_block")


def logit_head() -> onnx.ModelProto:
    """A yolov8-style detection head: box and class convs concatenated, flattened to
    (1,8,1024), split again, Sigmoid on the class logits, concatenated to ``y``.

    The class logits (bias -12) range over about [-53, 19]; before the Sigmoid the toolkit
    clips them to [-7, 7], and to the shared range of the Concat upstream (measured on 2.5.0:
    ``cls_out`` quantized over [-7.3, 7.9]). Marking ``cls_out`` as an output removes that
    clipping (its range becomes [-53.5, 18.7]) and changes ``y`` (cosine 0.99934 to the plain
    build's)."""
    rng = np.random.default_rng(8)
    c1, i1 = _conv("conv1", "x", "conv1_out", 3, 8, rng)
    box, ib = _conv("box", "relu1_out", "box_out", 8, 4, rng)
    cls, ic = _conv("cls", "relu1_out", "cls_out", 8, 4, rng)
    ic = [
        numpy_helper.from_array(numpy_helper.to_array(ic[0]) * 6, "cls.w"),
        numpy_helper.from_array(np.full(4, -12, np.float32), "cls.b"),
    ]
    consts = [
        numpy_helper.from_array(np.array([1, 8, 1024], np.int64), "flat"),
        numpy_helper.from_array(np.array([4, 4], np.int64), "parts"),
    ]
    nodes = [
        c1,
        helper.make_node("Relu", ["conv1_out"], ["relu1_out"], name="relu1"),
        box,
        cls,
        helper.make_node("Concat", ["box_out", "cls_out"], ["both"], name="cat", axis=1),
        helper.make_node("Reshape", ["both", "flat"], ["both_flat"], name="flatten"),
        helper.make_node("Split", ["both_flat", "parts"], ["box_flat", "cls_flat"], name="split", axis=1),
        helper.make_node("Sigmoid", ["cls_flat"], ["scores"], name="score"),
        helper.make_node("Concat", ["box_flat", "scores"], ["y"], name="out", axis=1),
    ]
    return _model(nodes, [1, 8, 1024], i1 + ib + ic + consts, "logit_head")


#: Every synthetic model by name.
SYNTHETIC: dict[str, Callable[[], onnx.ModelProto]] = {
    "conv-relu-sigmoid": conv_relu_sigmoid,
    "residual-add": residual_add,
    "concat-resize": concat_resize,
    "cpu-fallback": cpu_fallback,
    "toolkit-rejects": toolkit_rejects,
    "two-inputs": two_inputs,
    "transformer-neck": transformer_neck,
    "mixed-range-head": mixed_range_head,
    "se-block": se_block,
    "logit-head": logit_head,
}
