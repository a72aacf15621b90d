"""Task adapters on hand-computed answers: decoding, agreement float vs quantized, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.task import (
    ADAPTERS,
    CallableAdapter,
    ClassificationAdapter,
    CtcAdapter,
    DetectionAdapter,
    Detections,
    MapAdapter,
    OutputsAdapter,
    TaskAdapter,
    get_adapter,
    score_levels,
)
from workbench.task.adapters import cer, kl_divergence, mean_iou
from workbench.task.adapters.boxes import iou_matrix


def _model(input_shape, output_shape, metadata: dict[str, str] | None = None) -> OnnxModel:
    """A model whose output is a Constant of ``output_shape`` (never run), with metadata_props."""
    value = helper.make_tensor("v", TensorProto.FLOAT, list(output_shape), [0.0] * math.prod(output_shape))
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=value)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    helper.set_model_props(proto, metadata or {})
    return OnnxModel.from_proto(proto)


# ---------------------------------------------------------------------- registry
def test_every_builtin_follows_the_protocol():
    for name in ADAPTERS:
        adapter = get_adapter(name)
        assert isinstance(adapter, TaskAdapter) and adapter.name == name


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(WorkbenchError, match="'segment'.*'classification'.*'outputs'"):
        get_adapter("segment")


def test_unknown_setting_lists_the_adapters_settings():
    with pytest.raises(WorkbenchError, match=r"\['treshold'\].*'threshold'"):
        get_adapter("map", treshold=0.5)


def test_repr_names_the_settings_and_is_the_same_every_time():
    # Evaluation caches are keyed on repr(adapter): no memory addresses, every setting in it.
    assert (
        repr(get_adapter("map"))
        == repr(get_adapter("map"))
        == ("MapAdapter(output=None, threshold=0.3, agree_iou=0.9, correct_iou=0.5, background=0)")
    )
    assert repr(get_adapter("detection", score_threshold=0.5)) != repr(get_adapter("detection"))
    long = repr(CtcAdapter(characters=list("abcdefghij")))
    assert "<10 items sha1:" in long and long != repr(CtcAdapter(characters=list("abcdefghik")))


# ---------------------------------------------------------------------- classification
ORIENTATION = ["0", "90", "180", "270"]


def test_classification_softmax_of_logits_and_top_k():
    adapter = ClassificationAdapter(classes=ORIENTATION, top_k=2)
    pred = adapter.decode({"y": np.array([[1.0, 2.0, 3.0, 0.0]], np.float32)})
    e = np.exp([1.0, 2.0, 3.0, 0.0])
    assert pred.index == 2 and pred.top_k == (2, 1) and pred.name == "180"
    assert pred.p == pytest.approx(e[2] / e.sum())
    assert adapter.describe(pred) == f"180 (p={e[2] / e.sum():.2f})"
    assert adapter.to_json(pred)["top_k"] == [2, 1]


def test_classification_keeps_probabilities_as_they_are():
    pred = ClassificationAdapter().decode({"prob": np.array([[0.1, 0.2, 0.7]], np.float32)})
    assert pred.index == 2 and pred.p == pytest.approx(0.7, abs=1e-6)
    assert ClassificationAdapter().describe(pred) == "2 (p=0.70)"


def test_classification_renormalises_rough_probabilities():
    # A quantized softmax sums to 1 only roughly: renormalised, not put through softmax again.
    pred = ClassificationAdapter().decode({"prob": np.array([[0.1, 0.2, 0.66]])})
    assert pred.p == pytest.approx(0.66 / 0.96)


def _softmax_model() -> OnnxModel:
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["x"], ["p"], axis=-1),
            helper.make_node("Identity", ["p"], ["y"]),
        ],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return OnnxModel.from_proto(proto)


def test_classification_reads_from_the_graph_whether_outputs_are_probabilities():
    probs = {"y": np.array([[0.1, 0.2, 0.5]])}  # a badly quantized softmax: sums to 0.8
    from_softmax = get_adapter("classification", model=_softmax_model())
    assert from_softmax.kind == "probabilities"
    assert from_softmax.decode(probs).p == pytest.approx(0.5 / 0.8)
    from_constant = get_adapter("classification", model=_model((1, 3), (1, 3)))
    assert from_constant.kind == "logits"
    e = np.exp([0.1, 0.2, 0.5])
    assert from_constant.decode(probs).p == pytest.approx(e[2] / e.sum())


def test_classification_agreement_top1_overlap_and_kl():
    adapter = ClassificationAdapter(top_k=2)
    ref = adapter.decode({"y": np.array([[0.1, 0.3, 0.6, 0.0]])})
    test = adapter.decode({"y": np.array([[0.1, 0.0, 0.5, 0.4]])})
    a = adapter.agreement(ref, test)
    assert a["agree"] and a["top1_agree"] and a["top5_overlap"] == 0.5
    assert a["p_shift"] == pytest.approx(-0.1)
    flipped = adapter.agreement(ref, adapter.decode({"y": np.array([[0.1, 0.6, 0.3, 0.0]])}))
    assert not flipped["agree"] and flipped["top5_overlap"] == 1.0


def test_kl_is_zero_for_identical_and_known_otherwise():
    p = np.array([0.2, 0.3, 0.5])
    assert kl_divergence(p, p.copy()) == 0.0
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected)


@pytest.mark.parametrize("label", [2, np.int64(2), "2", "180", " 180 "])
def test_classification_label_as_index_numeric_string_or_name(label):
    adapter = ClassificationAdapter(classes=ORIENTATION)
    pred = adapter.decode({"y": np.array([[0.0, 1.0, 3.0, 0.0]])})
    s = adapter.score(pred, label)
    assert s["correct"] and s["top5_correct"]


def test_classification_name_wins_over_index():
    # "90" is the name of class 1, not index 90.
    adapter = ClassificationAdapter(classes=ORIENTATION)
    pred = adapter.decode({"y": np.array([[0.0, 5.0, 1.0, 0.0]])})
    assert adapter.score(pred, "90")["correct"]
    assert not adapter.score(pred, "180")["correct"]


@pytest.mark.parametrize("label", ["cat", 4, -1, "7", None])
def test_classification_unknown_label_is_a_clear_error(label):
    adapter = ClassificationAdapter(classes=ORIENTATION)
    pred = adapter.decode({"y": np.array([[0.0, 5.0, 1.0, 0.0]])})
    with pytest.raises(WorkbenchError, match="is not a class.*0..3"):
        adapter.score(pred, label)


def test_classification_classes_from_model_metadata():
    model = _model((1, 3, 8, 8), (1, 4), {"character": "0\n90\n180\n270"})
    adapter = get_adapter("classification", model=model)
    assert adapter.classes == ORIENTATION


def test_classification_wrong_shape_names_the_output():
    with pytest.raises(WorkbenchError, match=r"output 'y' is \(1, 2, 3\)"):
        ClassificationAdapter().decode({"y": np.zeros((1, 2, 3))})
    with pytest.raises(WorkbenchError, match="no output 'prob'.*\\['y'\\]"):
        ClassificationAdapter(output="prob").decode({"y": np.zeros((1, 2))})


@pytest.mark.parametrize("task", ["classification", "detection", "ctc", "map"])
def test_nan_outputs_have_no_answer(task):
    y = np.full((1, 6, 8), np.nan, np.float32)
    with pytest.raises(WorkbenchError, match="output 'y' holds 48 NaN/Inf"):
        get_adapter(task).decode({"y": y})


def test_classification_dataset_metrics_skip_unlabelled():
    adapter = ClassificationAdapter(top_k=2)
    preds = [adapter.decode({"y": np.array([[0.1, 0.3, 0.6]])}) for _ in range(3)]
    m = adapter.dataset_metrics(preds, [2, 1, None])
    assert m == {"n": 2.0, "accuracy": 0.5, "top5_accuracy": 1.0}


# ---------------------------------------------------------------------- detection
def _head(rows, n_candidates=8) -> np.ndarray:
    """A (1, 4 + 2, N) YOLOv8 head from (cx, cy, w, h, score0, score1) rows, padded with nothing."""
    head = np.zeros((n_candidates, 6), np.float32)
    head[: len(rows)] = rows
    return head.T[None]


DUPLICATES = [
    (50, 50, 20, 20, 0.9, 0.1),  # box (40, 40, 60, 60), class 0
    (52, 50, 20, 20, 0.8, 0.0),  # IoU 360 / 440 with the first: suppressed by NMS
    (50, 50, 20, 20, 0.0, 0.7),  # same place, class 1: kept (NMS is per class)
    (10, 10, 4, 4, 0.2, 0.0),  # below the score threshold
]


def test_iou_by_hand():
    iou = iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert iou.shape == (1, 3) and iou[0].tolist() == pytest.approx([1 / 3, 0.0, 1.0])


def test_detection_threshold_and_per_class_nms():
    adapter = DetectionAdapter()
    det = adapter.decode({"output0": _head(DUPLICATES)})
    assert det.classes.tolist() == [0, 1]
    assert det.scores.tolist() == pytest.approx([0.9, 0.7])
    assert det.boxes.tolist() == [[40, 40, 60, 60], [40, 40, 60, 60]]
    assert adapter.describe(det) == "2 boxes: 0 0.90, 1 0.70"


def test_detection_keeps_at_most_max_detections_best_first():
    rows = [(20 * i + 10, 10, 8, 8, 0.3 + 0.05 * i, 0.0) for i in range(6)]  # disjoint boxes
    det = DetectionAdapter(max_detections=3).decode({"y": _head(rows)})
    assert det.scores.tolist() == pytest.approx([0.55, 0.5, 0.45])


def test_detection_reads_either_layout():
    adapter = DetectionAdapter()
    head = _head(DUPLICATES)
    a = adapter.decode({"output0": head})
    b = adapter.decode({"output0": head.transpose(0, 2, 1)})
    assert a.boxes.tolist() == b.boxes.tolist() and a.classes.tolist() == b.classes.tolist()


def test_detection_wrong_shape_names_the_output():
    with pytest.raises(WorkbenchError, match=r"\(1, 4\+classes, N\); output 'y' is \(1, 10\)"):
        DetectionAdapter().decode({"y": np.zeros((1, 10), np.float32)})


def _dets(boxes, classes, scores=None) -> Detections:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores if scores is not None else [0.9] * len(boxes), np.float64)
    return Detections(boxes, scores, np.asarray(classes, np.int64))


def test_detection_agreement_matches_same_class_only():
    adapter = DetectionAdapter()
    ref = _dets([[40, 40, 60, 60], [100, 100, 120, 120]], [0, 1])
    test = _dets([[42, 40, 62, 60], [200, 200, 210, 210]], [0, 1])
    a = adapter.agreement(ref, test)
    assert (a["matched"], a["lost"], a["added"]) == (1, 1, 1)
    assert a["f1"] == 0.5 and a["mean_iou"] == pytest.approx(360 / 440) and not a["agree"]
    other_class = adapter.agreement(ref, _dets([[40, 40, 60, 60]], [1]))
    assert other_class["matched"] == 0 and other_class["f1"] == 0.0
    same = adapter.agreement(ref, _dets(ref.boxes + 0.5, [0, 1]))
    assert same["agree"] and same["f1"] == 1.0


def test_detection_both_empty_agree():
    adapter = DetectionAdapter()
    a = adapter.agreement(_dets([], []), _dets([], []))
    assert a["agree"] and a["f1"] == 1.0 and a["both_empty"] and math.isnan(a["mean_iou"])
    assert adapter.describe(_dets([], [])) == "no boxes"


def test_detection_score_scales_by_stretch_to_the_image():
    model = _model((1, 3, 320, 320), (1, 6, 8))
    adapter = get_adapter("detection", model=model)
    assert adapter.input_size == (320, 320)
    pred = _dets([[40, 40, 60, 60]], [0])
    label = {"boxes": [[80, 60, 120, 90]], "classes": [0], "image_size": (640, 480)}
    assert adapter.scaled_boxes(pred, label).tolist() == [[80, 60, 120, 90]]
    s = adapter.score(pred, label)
    assert s["correct"] and s["f1"] == 1.0 and s["mean_iou"] == pytest.approx(1.0)
    unscaled = {"boxes": [[40, 40, 60, 60]], "classes": [0], "image_size": (640, 480)}
    assert not adapter.score(pred, unscaled)["correct"]


def test_detection_input_size_and_names_from_model():
    model = _model((1, 3, 32, 64), (1, 6, 8), {"names": "{0: 'cat', 1: 'dog'}"})
    adapter = get_adapter("detection", model=model)
    assert adapter.input_size == (64, 32) and adapter.classes == ["cat", "dog"]
    det = adapter.decode({"y": _head(DUPLICATES)})
    assert adapter.describe(det) == "2 boxes: cat 0.90, dog 0.70"
    label = {"boxes": [[40, 40, 60, 60]], "classes": ["dog"]}
    assert adapter.score(det, label)["matched"] == 1


def test_score_levels_show_two_valued_int8_scores():
    rng = np.random.default_rng(0)
    float_head = np.concatenate([rng.uniform(0, 320, (1, 4, 50)), rng.uniform(0, 1, (1, 2, 50))], 1)
    int8_head = float_head.copy()
    int8_head[:, 4:] = np.where(float_head[:, 4:] > 0.63, 1.262, 0.0)
    assert score_levels({"y": float_head})["levels"] == 100
    levels = score_levels({"y": int8_head})
    assert levels["levels"] == 2 and levels["values"] == [0.0, 1.262]
    assert levels["min"] == 0.0 and levels["max"] == 1.262
    assert levels["above_one"] == int((float_head[:, 4:] > 0.63).sum())


def test_coco_map_perfect_and_one_missing():
    adapter = DetectionAdapter(input_size=(100, 100))
    label = {"boxes": [[10, 10, 30, 30], [50, 50, 90, 90]], "classes": [0, 0], "image_size": (100, 100)}
    perfect = adapter.dataset_metrics([_dets(label["boxes"], [0, 0])], [label])
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map50_95"] == pytest.approx(1.0)
    # One of two found: precision 1 up to recall 0.5, then nothing; COCO's 101-point
    # interpolation gives 51 / 101 at every IoU threshold.
    half = adapter.dataset_metrics([_dets([[10, 10, 30, 30]], [0])], [label])
    assert half["map50"] == pytest.approx(51 / 101) and half["map50_95"] == pytest.approx(51 / 101)


def test_coco_map_without_detections_or_labels():
    adapter = DetectionAdapter(input_size=(100, 100))
    label = {"boxes": [[10, 10, 30, 30]], "classes": [0], "image_size": (100, 100)}
    assert adapter.dataset_metrics([_dets([], [])], [label])["map50"] == 0.0
    empty = adapter.dataset_metrics([_dets([[1, 1, 5, 5]], [0])], [{"boxes": [], "classes": []}])
    assert math.isnan(empty["map50"])


# ---------------------------------------------------------------------- ctc
def _steps(indices, n_classes, p=0.9) -> np.ndarray:
    """(1, T, C) probabilities whose argmax per step is ``indices``."""
    out = np.full((len(indices), n_classes), (1 - p) / (n_classes - 1), np.float32)
    out[np.arange(len(indices)), indices] = p
    return out[None]


@pytest.mark.parametrize(
    "indices, text",
    [([0, 1, 1, 0, 2, 2, 3], "abc"), ([1, 0, 1], "aa"), ([1, 1, 1], "a"), ([0, 0], ""), ([3, 2, 1], "cba")],
)
def test_ctc_greedy_decoding(indices, text):
    adapter = CtcAdapter(characters=["a", "b", "c"])
    pred = adapter.decode({"y": _steps(indices, 4)})
    assert pred.text == text
    assert pred.confidence == pytest.approx(0.9 if text else 0.0)


def test_ctc_logits_decode_like_probabilities():
    adapter = CtcAdapter(characters=["a", "b", "c"])
    logits = np.log(_steps([0, 1, 1, 0, 2, 2, 3], 4)) * 3 + 7
    assert adapter.decode({"y": logits}).text == "abc"


def test_ctc_space_class_when_the_count_says_so():
    adapter = CtcAdapter(characters=["a", "b", "c"])
    assert adapter.decode({"y": _steps([1, 4, 2], 5)}).text == "a b"


def test_ctc_dictionary_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_bytes("a\r\n \n中\n".encode())  # a space line is a character
    adapter = CtcAdapter(dict_path=path)
    assert adapter.characters == ["a", " ", "中"]
    assert adapter.decode({"y": _steps([3, 2, 1], 4)}).text == "中 a"


@pytest.mark.parametrize("stored", ["a\nb\nc", "a\nb\nc\n", '["a", "b", "c"]', "['a', 'b', 'c']"])
def test_ctc_dictionary_from_model_metadata(stored):
    model = _model((1, 3, 48, 320), (1, 7, 5), {"character": stored})
    adapter = get_adapter("ctc", model=model)
    assert adapter.characters == ["a", "b", "c"]
    assert adapter.decode({"y": _steps([3, 3, 4, 1, 0, 1, 2], 5)}).text == "c aab"


def test_ctc_short_dictionary_is_a_clear_error():
    model = _model((1, 3, 48, 320), (1, 7, 6), {"character": "a\nb"})
    with pytest.raises(WorkbenchError, match=r"output 'y' has 6 classes.*4 characters.*has 2.*dict_path="):
        get_adapter("ctc", model=model)
    with pytest.raises(WorkbenchError, match=r"output 'y' has 6 classes.*characters= has 2"):
        CtcAdapter(characters=["a", "b"]).decode({"y": _steps([1], 6)})


def test_ctc_agreement_and_score():
    adapter = CtcAdapter(characters=list("aeiknstg"))
    idx = {c: i + 1 for i, c in enumerate("aeiknstg")}
    kiten = adapter.decode({"y": _steps([idx[c] for c in "kitten"], 9)})
    assert kiten.text == "kiten"  # "tt" collapses without a blank between
    word = [idx["k"], idx["i"], idx["t"], 0, idx["t"], idx["e"], idx["n"]]
    ref = adapter.decode({"y": _steps(word, 9)})
    assert ref.text == "kitten"
    a = adapter.agreement(ref, kiten)
    assert not a["agree"] and not a["exact"] and a["cer"] == pytest.approx(1 / 6)
    s = adapter.score(ref, "sitting")
    assert not s["correct"] and s["cer"] == pytest.approx(3 / 7)
    assert adapter.score(ref, "kitten") == {"correct": True, "exact": True, "cer": 0.0}
    assert adapter.describe(ref) == "'kitten' (conf 0.90)"
    m = adapter.dataset_metrics([ref, kiten], ["kitten", "kitten"])
    assert m["accuracy"] == 0.5 and m["mean_cer"] == pytest.approx(1 / 12)


def test_cer_known_pairs():
    assert cer("kitten", "sitting") == 3 / 6
    assert cer("", "") == 0.0 and cer("", "ab") == 2.0 and cer("abc", "") == 1.0


def test_ctc_without_dictionary_agrees_but_cannot_score():
    adapter = CtcAdapter()
    ref = adapter.decode({"y": _steps([1, 0, 2], 4)})
    assert ref.text == "<1><2>"
    assert adapter.agreement(ref, adapter.decode({"y": _steps([1, 2, 2], 4)}))["agree"]
    with pytest.raises(WorkbenchError, match="dictionary"):
        adapter.score(ref, "ab")


@given(st.text(max_size=12), st.text(max_size=12))
def test_cer_is_non_negative_and_zero_only_for_equal(a, b):
    value = cer(a, b)
    assert value >= 0 and (value == 0) == (a == b)


@given(st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_greedy_ctc_never_emits_blank_or_undelimited_repeats(indices):
    pred = CtcAdapter().decode({"y": _steps(indices, 5)})
    assert 0 not in pred.indices and len(pred.indices) <= len(indices)
    collapsed = [i for k, i in enumerate(indices) if i != 0 and (k == 0 or indices[k - 1] != i)]
    assert list(pred.indices) == collapsed


# ---------------------------------------------------------------------- maps
def test_probability_map_thresholded():
    adapter = MapAdapter(threshold=0.3)
    mask = adapter.decode({"maps": np.array([[[[0.1, 0.5], [0.9, 0.2]]]], np.float32)})
    assert mask.tolist() == [[0, 1], [1, 0]]
    assert adapter.describe(mask) == "50.0 % foreground (2x2)"


def test_segmentation_logits_argmax_and_mean_iou():
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 1, 0, 0] = logits[0, 2, 0, 1] = 1.0
    labels = MapAdapter().decode({"y": logits})
    assert labels.tolist() == [[1, 2], [0, 0]]
    iou, empty = mean_iou(labels, np.array([[1, 1], [0, 0]]))
    assert iou == pytest.approx((1 / 2 + 0 / 1) / 2) and not empty


def test_map_agreement_iou_and_both_empty():
    adapter = MapAdapter()
    a = adapter.agreement(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]]))
    assert a["iou"] == 0.5 and not a["agree"] and not a["both_empty"]
    empty = adapter.agreement(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))
    assert empty == {"agree": True, "iou": 1.0, "both_empty": True}


def test_map_score_against_a_label_mask():
    adapter = MapAdapter()
    pred = np.array([[1, 1], [1, 0]])
    s = adapter.score(pred, np.array([[True, True], [False, False]]))
    assert s["iou"] == pytest.approx(2 / 3) and s["correct"]
    with pytest.raises(WorkbenchError, match=r"\(3, 3\) vs \(2, 2\)"):
        adapter.score(pred, np.zeros((3, 3)))


# ---------------------------------------------------------------------- outputs
def test_outputs_both_empty_is_agreement_not_zero_db():
    adapter = OutputsAdapter()
    zeros = {"mask": np.zeros((1, 4)), "const": np.full((1, 3), 2.5)}
    a = adapter.agreement(zeros, {"mask": np.zeros((1, 4)), "const": np.full((1, 3), 2.5)})
    assert a["agree"] and a["both_empty"] and math.isnan(a["sqnr_db"])
    assert math.isnan(a["sqnr_db[mask]"])


def test_outputs_one_empty_one_not_disagrees():
    a = OutputsAdapter().agreement({"y": np.zeros(4)}, {"y": np.ones(4)})
    assert not a["agree"] and not a["both_empty"] and a["sqnr_db"] < 0


def test_outputs_sqnr_against_the_threshold():
    ref = {"y": np.array([1.0, 2.0, 3.0, 4.0]), "z": np.zeros(3)}
    close = OutputsAdapter().agreement(ref, {"y": ref["y"] + 0.01, "z": np.zeros(3)})
    assert close["sqnr_db"] == pytest.approx(10 * math.log10(7.5 / 1e-4)) and close["agree"]
    assert not close["both_empty"] and math.isnan(close["sqnr_db[z]"])
    far = OutputsAdapter().agreement(ref, {"y": ref["y"] + 1.0, "z": np.zeros(3)})
    assert far["sqnr_db"] == pytest.approx(10 * math.log10(7.5)) and not far["agree"]
    nan = OutputsAdapter().agreement(ref, {"y": np.array([1.0, np.nan, 3.0, 4.0]), "z": np.zeros(3)})
    assert not nan["agree"] and nan["flag"] == "y: nonfinite"


def test_outputs_cannot_score_labels_and_name_missing_outputs():
    adapter = OutputsAdapter()
    with pytest.raises(WorkbenchError, match="cannot judge labels"):
        adapter.score({"y": np.zeros(2)}, 1)
    with pytest.raises(WorkbenchError, match=r"no output \['z'\]"):
        adapter.agreement({"y": np.zeros(2), "z": np.zeros(2)}, {"y": np.zeros(2)})
    assert adapter.to_json({"y": np.array([[1.0, 3.0]])}) == {
        "y": {"shape": [1, 2], "min": 1.0, "max": 3.0, "mean": 2.0}
    }


# ---------------------------------------------------------------------- user-defined
def test_callable_adapter_defaults():
    adapter = CallableAdapter(decode=lambda outputs: int(outputs["y"].argmax()), name="argmax")
    assert isinstance(adapter, TaskAdapter) and adapter.name == "argmax"
    pred = adapter.decode({"y": np.array([0.1, 0.7, 0.2])})
    assert pred == 1 and adapter.describe(pred) == "1"
    assert adapter.agreement(1, 1) == {"agree": True} and adapter.agreement(1, 2) == {"agree": False}
    assert adapter.score(1, 1) == {"correct": True}
    arrays = CallableAdapter(decode=lambda outputs: {"m": outputs["y"] > 0})
    a = arrays.decode({"y": np.array([1.0, -1.0])})
    assert arrays.agreement(a, {"m": np.array([True, False])})["agree"]
    assert arrays.to_json(a) == {"m": [True, False]}


def test_callable_adapter_user_functions_and_bad_returns():
    adapter = CallableAdapter(
        decode=lambda outputs: float(outputs["y"][0]),
        agreement=lambda a, b: {"agree": abs(a - b) < 0.1, "delta": b - a},
        score=lambda p, y: p > y,
    )
    assert adapter.agreement(1.0, 1.05) == {"agree": True, "delta": pytest.approx(0.05)}
    assert adapter.score(2.0, 1.0) == {"correct": True}
    broken = CallableAdapter(decode=lambda o: 0, agreement=lambda a, b: {"delta": 1.0})
    with pytest.raises(WorkbenchError, match="must return a bool or a dict with key 'agree'"):
        broken.agreement(0, 0)
