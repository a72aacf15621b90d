"""Split mixed-range outputs: the detector finds a Concat mixing 0-300 boxes and 0-1 scores,
the rewrite's parts joined on the host equal the original output exactly, the join code runs
standalone, and on the simulator the split gives the scores back (tiny head and yolov8n)."""

import ast
import dataclasses
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from workbench.datasets import ZOO, CalibrationSet, datasets_dir, default_calibration_set
from workbench.errors import WorkbenchError
from workbench.fix.split_outputs import (
    MIXED_RANGE_RATIO,
    int8_step,
    mixed_range_outputs,
    split_outputs,
    verify_split,
)
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner
from workbench.synthetic import INPUT_SHAPE, conv_relu_sigmoid, mixed_range_head
from workbench.task.adapters.detection import DetectionAdapter, score_levels

PRE = Preprocess((127.5,) * 3, (64.0,) * 3)
CONFIG = BuildConfig(preprocess={"x": PRE})


@pytest.fixture(scope="module")
def head():
    return OnnxModel.from_proto(mixed_range_head())


@pytest.fixture(scope="module")
def finding(head, small_set):
    (found,) = mixed_range_outputs(head, small_set, PRE)
    return found


def _ranges(model, calibration, names):
    runner = FloatRunner(model, PRE, keep=names)
    runs = [runner.run(row) for row in calibration.rows]
    return {n: (min(float(r[n].min()) for r in runs), max(float(r[n].max()) for r in runs)) for n in names}


def test_int8_step_includes_zero():
    assert int8_step(0.0, 255.0) == 1.0
    assert int8_step(-1.0, 1.0) == pytest.approx(2 / 255)
    assert int8_step(2.0, 3.0) == pytest.approx(3 / 255)  # [0, 3]: zero is always representable


def test_finds_the_mixed_range_head(head, finding, small_set):
    ranges = _ranges(head, small_set, ["boxes", "scores"])
    assert (finding.output, finding.concat, finding.axis) == ("y", "head_concat", 1)
    assert finding.layout == (("reshape", (1, 8, 64)),)
    boxes, scores = finding.parts
    assert (boxes.name, scores.name) == ("boxes", "scores") and finding.narrowest is scores
    assert (scores.min, scores.max) == pytest.approx(ranges["scores"])
    assert (boxes.min, boxes.max) == pytest.approx(ranges["boxes"])
    assert 200 < boxes.max <= 300 and 0.5 < scores.max < 1
    assert finding.joint_step == pytest.approx(boxes.max / 255)  # the boxes set the joint range
    assert scores.step == pytest.approx(scores.max / 255)
    assert finding.ratio == pytest.approx(boxes.max / scores.max) and finding.ratio > MIXED_RANGE_RATIO
    # 0..0.99 under a step of ~1.1: values round to 0 or one step, two levels.
    assert scores.levels == 2 and boxes.levels == 256
    assert "scores" in finding.explanation and "boxes" in finding.explanation


def test_no_finding_without_mixed_ranges(small_set):
    assert mixed_range_outputs(OnnxModel.from_proto(conv_relu_sigmoid()), small_set, PRE) == []
    # The same head with boxes in 0-1: a Concat feeds the output, but the ranges match.
    same_range = OnnxModel.from_proto(mixed_range_head(box_scale=1.0))
    assert mixed_range_outputs(same_range, small_set, PRE) == []
    # The ratio is the threshold: ~270 is mixed at 16, not at 1000.
    assert mixed_range_outputs(OnnxModel.from_proto(mixed_range_head()), small_set, PRE, ratio=1000) == []


def test_split_model_joined_equals_the_original_output(head, finding, small_set):
    split = split_outputs(head, finding)
    onnx.checker.check_model(split.model.proto)
    assert split.model.outputs == {"boxes": (1, 4, 8, 8), "scores": (1, 4, 8, 8)}
    nodes = {n.name for n in head.proto.graph.node}
    assert {n.name for n in split.model.proto.graph.node} == nodes - {"head_concat", "head_reshape"}
    inits = {t.name for t in head.proto.graph.initializer}
    assert {t.name for t in split.model.proto.graph.initializer} == inits - {"head_shape"}
    original = FloatRunner(head, PRE, keep=["y"])
    parts = FloatRunner(split.model, PRE, keep=list(split.model.outputs))
    for row in small_set.rows[:2]:
        joined = split.join(parts.run(row))
        assert list(joined) == ["y"]
        np.testing.assert_array_equal(joined["y"], original.run(row)["y"])


def test_score_part_is_the_detection_adapters_class_block(head, finding, small_set):
    split = split_outputs(head, finding)
    outputs = FloatRunner(head, PRE, keep=["y"]).run(small_set.rows[0])
    mask = split.owner() == 1
    assert mask.shape == (1, 8, 64) and mask[0, 4:].all() and not mask[0, :4].any()
    block = DetectionAdapter(head).class_scores(outputs)
    np.testing.assert_array_equal(np.sort(outputs["y"][mask]), np.sort(block.ravel()))
    assert score_levels(outputs)["levels"] == np.unique(outputs["y"][mask]).size


def test_saved_join_code_runs_standalone(head, finding, small_set, tmp_path):
    split = split_outputs(head, finding)
    folder = split.save(tmp_path / "split")
    assert OnnxModel.load(folder / "model.onnx").outputs == split.model.outputs
    source = (folder / "join_outputs.py").read_text()
    imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert [alias.name for n in imports for alias in n.names] == ["numpy"]
    spec = importlib.util.spec_from_file_location("join_outputs_saved", folder / "join_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.__doc__.startswith("Host-side join") and "head_concat" in module.__doc__
    parts = FloatRunner(split.model, PRE, keep=list(split.model.outputs)).run(small_set.rows[1])
    expected = split.join(parts)["y"]
    np.testing.assert_array_equal(module.join_outputs(parts)["y"], expected)
    # As rknn.inference() returns them: a list in the split model's output order.
    as_list = [parts[name] for name in split.model.outputs]
    np.testing.assert_array_equal(module.join_outputs(as_list)["y"], expected)


def _transposed_model() -> OnnxModel:
    """Outputs [scores, y]: y = Transpose(Concat(boxes, scores)), scores also an output itself."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["boxes"], name="scale"),
        helper.make_node("Sigmoid", ["x"], ["scores"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="cat", axis=-3),
        helper.make_node("Transpose", ["cat"], ["y"], name="to_nhwc", perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "transposed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, list(INPUT_SHAPE)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 6]),
        ],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [100.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return OnnxModel.from_proto(model)


def test_transpose_after_concat_and_other_outputs_kept_in_order(small_set):
    model = _transposed_model()
    (found,) = mixed_range_outputs(model, small_set, PRE)
    assert found.axis == 1 and found.layout == (("transpose", (0, 2, 3, 1)),)
    split = split_outputs(model, found)
    assert list(split.model.outputs) == ["scores", "boxes"]  # y's place taken by the new part
    original = FloatRunner(model, PRE, keep=list(model.outputs)).run(small_set.rows[0])
    joined = split.join(FloatRunner(split.model, PRE, keep=list(split.model.outputs)).run(small_set.rows[0]))
    assert list(joined) == ["scores", "y"]
    for name in joined:
        np.testing.assert_array_equal(joined[name], original[name])


def test_split_rejects_a_finding_of_another_model(head, finding):
    with pytest.raises(WorkbenchError, match="has no output 'missing'"):
        split_outputs(head, dataclasses.replace(finding, output="missing"))
    with pytest.raises(WorkbenchError, match="has no node 'head_concat'"):
        split_outputs(_transposed_model(), finding)  # it has an output 'y', made otherwise


@pytest.mark.toolkit
def test_split_gives_the_scores_back_on_the_simulator(head, finding, small_set):
    split = split_outputs(head, finding)
    table = verify_split(head, split, CONFIG, small_set, small_set.head(2), DetectionAdapter(head))
    print(table.to_string())
    float_, int8, fixed = (table.set_index("variant").loc[v] for v in ("float", "int8", "int8 split"))
    assert float_.score_levels > 200 and float_.f1 == 1.0
    # One int8 step of ~1.16 for both parts: the scores are 0 or that step, above 1.
    assert int8.score_levels <= 3 and int8.score_max > 1.0
    assert fixed.score_levels >= 50 and fixed.score_max <= 1.0
    assert fixed.score_sqnr_db >= int8.score_sqnr_db + 20
    assert fixed.f1 > int8.f1
    assert fixed.output_sqnr_db >= int8.output_sqnr_db - 0.5  # the boxes lose nothing


@pytest.mark.zoo
@pytest.mark.toolkit
def test_yolov8n_scores_are_no_longer_two_valued(zoo):
    entry = ZOO["yolov8n"]
    model = zoo("yolov8n")
    pre = {entry.input_name: entry.preprocess}
    calibration = default_calibration_set()
    (found,) = mixed_range_outputs(model, calibration, pre)
    assert (found.output, found.axis, found.layout) == ("output0", 1, ())
    assert found.narrowest.name == "/model.22/Sigmoid_output_0" and found.narrowest.levels <= 2
    assert found.joint_step == pytest.approx(1.26, abs=0.02)
    split = split_outputs(model, found)
    samples = CalibrationSet.from_list(datasets_dir() / "dataset_small.txt").head(2)
    table = verify_split(
        model, split, BuildConfig(preprocess=pre), calibration, samples, DetectionAdapter(model)
    )
    print(table.to_string())
    int8, fixed = (table.set_index("variant").loc[v] for v in ("int8", "int8 split"))
    assert int8.score_levels == 2 and int8.score_max == pytest.approx(1.262, abs=0.01)
    assert fixed.score_levels > 10 and fixed.score_max <= 1.0
    assert fixed.score_sqnr_db >= int8.score_sqnr_db + 10
    assert fixed.f1 >= int8.f1
