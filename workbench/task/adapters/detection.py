"""Detection with a YOLOv8-style head: boxes found float vs quantized, F1 and mAP vs labels.

The head is one output (1, 4 + classes, N) or (1, N, 4 + classes): per candidate cx, cy, w, h
in input pixels and one score per class, already sigmoid'ed (ultralytics exports). The
workbench resizes images by stretching (no letterbox), so boxes scale to the original image
by the two ratios of image size to input size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.task.adapters.base import (
    Metrics,
    drop_batch,
    metadata,
    parse_name_list,
    select_output,
    settings_repr,
)
from workbench.task.adapters.boxes import coco_box, coco_eval, match, nms

#: f1 at or above which two detection sets count as the same answer: every box matched.
AGREE_F1 = 0.999
_EXPECTED = "(1, 4+classes, N)"


@dataclass(frozen=True)
class Detections:
    """Boxes found in one image, after score threshold and NMS, best first."""

    boxes: np.ndarray  #: (n, 4) x1, y1, x2, y2 in input pixels (float)
    scores: np.ndarray  #: (n,) the class score of each box
    classes: np.ndarray  #: (n,) class index of each box

    def __len__(self) -> int:
        return len(self.scores)


class DetectionAdapter:
    """YOLOv8-style detector.

    Args:
        model: an OnnxModel: its input shape gives ``input_size`` and its metadata ``names``
            (ultralytics) the class names, when those are not given.
        output: which output to read; default the first.
        score_threshold: keep candidates whose best class score is above this.
        iou_threshold: NMS, per class: a box overlapping a better one of its class by more is dropped.
        match_iou: two boxes of the same class match when their IoU is at least this.
        correct_f1: a prediction is ``correct`` vs labels when its F1 reaches this.
        max_detections: boxes kept per image after NMS.
        input_size: (width, height) of the model input, to scale boxes to label images.
        classes: class names, index order.
    """

    name = "detection"
    __repr__ = settings_repr

    def __init__(
        self,
        model: Any = None,
        *,
        output: str | int | None = None,
        score_threshold: float = 0.25,
        iou_threshold: float = 0.45,
        match_iou: float = 0.5,
        correct_f1: float = 0.5,
        max_detections: int = 300,
        input_size: tuple[int, int] | None = None,
        classes: Sequence[str] | None = None,
    ):
        if model is not None:
            if input_size is None:
                input_size = _input_size(model)
            if classes is None and metadata(model, "names"):
                classes = parse_name_list(metadata(model, "names"))
        self.output = output
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.match_iou = match_iou
        self.correct_f1 = correct_f1
        self.max_detections = max_detections
        self.input_size = tuple(input_size) if input_size is not None else None
        self.classes = list(classes) if classes is not None else None

    # ------------------------------------------------------------------ decoding
    def decode(self, outputs: dict[str, np.ndarray]) -> Detections:
        """Threshold, per-class NMS; WorkbenchError when the output is not a YOLOv8 head."""
        head = self._head(outputs)
        boxes = _xywh_to_xyxy(head[:, :4])
        class_scores = head[:, 4:]
        classes = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(head)), classes]
        keep = scores > self.score_threshold
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        kept = nms(boxes, scores, classes, self.iou_threshold, limit=self.max_detections)
        return Detections(boxes[kept], scores[kept], classes[kept].astype(np.int64))

    def _head(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The head as (N, 4 + classes) float64."""
        name, array = select_output(outputs, self.output, self.name)
        head = drop_batch(array, name, self.name, _EXPECTED)
        n_classes = len(self.classes) if self.classes else None
        if head.ndim != 2 or min(head.shape) < 5:
            raise WorkbenchError(
                f"detection expects an output of shape {_EXPECTED}; output {name!r} is "
                f"{tuple(array.shape)}. Choose the head with output=, or use task 'outputs'."
            )
        rows, cols = head.shape
        if n_classes is None:
            transpose = rows <= cols  # the candidate axis N is the longer one
        elif 4 + n_classes in (rows, cols):
            transpose = rows == 4 + n_classes
        else:
            raise WorkbenchError(
                f"detection: {n_classes} class names given but output {name!r} is "
                f"{tuple(array.shape)}, which has no axis of 4 + {n_classes}. Pass matching classes=."
            )
        return np.asarray(head.T if transpose else head, np.float64)

    def class_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """The head's class-score block, (candidates, classes), before any threshold."""
        return self._head(outputs)[:, 4:]

    def score_levels(self, outputs: dict[str, np.ndarray]) -> dict:
        """Statistics of the class-score block: see :func:`score_levels`."""
        return _levels(self.class_scores(outputs))

    def diagnose(self, outputs: dict[str, np.ndarray]) -> Metrics:
        """Per-sample facts of the raw head kept beside the answer: how many distinct values
        the class scores take and their maximum (a sigmoid score above 1 is impossible)."""
        levels = self.score_levels(outputs)
        return {"score_levels": levels["levels"], "score_max": levels["max"]}

    @staticmethod
    def explain(reference: Mapping[str, float], test: Mapping[str, float]) -> str | None:
        """A note when the quantized scores collapsed to a few levels (:meth:`diagnose`'s
        numbers, the most over the samples, float vs quantized), else None."""
        if not (test["score_levels"] <= 16 < reference["score_levels"]):
            return None
        out_of_range = f" and reach {test['score_max']:.3f} > 1" if test["score_max"] > 1.0 + 1e-6 else ""
        return (
            f"its class scores take at most {test['score_levels']:.0f} distinct value(s){out_of_range} "
            f"(float: {reference['score_levels']:.0f}): the output shares one int8 scale between box "
            "coordinates (pixels) and scores (0-1), so scores below half a step become 0. Split the "
            "output before its Concat and join the parts on the host: `rknn-workbench split MODEL` "
            "writes both."
        )

    # ------------------------------------------------------------------ judging
    def agreement(self, reference: Detections, test: Detections) -> Metrics:
        """Greedy same-class matching at IoU >= ``match_iou``.

        f1 = 2 * matched / (n_reference + n_test) (1.0 when both are empty), mean_iou of the
        matches (NaN without matches), lost = reference boxes not matched, added = test boxes
        not matched. agree = f1 >= 0.999: the quantized model found the same boxes.
        """
        m = match(reference.boxes, reference.classes, test.boxes, test.classes, self.match_iou)
        return {
            "agree": m["f1"] >= AGREE_F1,
            "f1": m["f1"],
            "mean_iou": m["mean_iou"],
            "matched": m["matched"],
            "lost": m["unmatched_a"],
            "added": m["unmatched_b"],
            "both_empty": len(reference) == 0 and len(test) == 0,
        }

    def score(self, prediction: Detections, label: Mapping[str, Any]) -> Metrics:
        """Match against labelled boxes; correct = f1 >= ``correct_f1``.

        ``label``: {"boxes": (n, 4) x1 y1 x2 y2 in original image pixels, "classes": (n,)
        class indices (or names of ``classes``), "image_size": (width, height)}; without
        "image_size" the label boxes are taken to be in input pixels.
        """
        boxes, classes = self._label_boxes(label)
        m = match(boxes, classes, self.scaled_boxes(prediction, label), prediction.classes, self.match_iou)
        return {
            "correct": m["f1"] >= self.correct_f1,
            "f1": m["f1"],
            "mean_iou": m["mean_iou"],
            "matched": m["matched"],
            "missed": m["unmatched_a"],
            "false_positives": m["unmatched_b"],
        }

    def scaled_boxes(self, prediction: Detections, label: Mapping[str, Any]) -> np.ndarray:
        """The prediction's boxes in the pixels of the label's image (stretch resize)."""
        image_size = label.get("image_size")
        if image_size is None:
            return prediction.boxes
        if self.input_size is None:
            raise WorkbenchError(
                "detection: labels are in image pixels but the model input size is unknown. "
                "Pass model= or input_size=(width, height) to the adapter."
            )
        sx = image_size[0] / self.input_size[0]
        sy = image_size[1] / self.input_size[1]
        return prediction.boxes * np.array([sx, sy, sx, sy])

    def _label_boxes(self, label: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        try:
            boxes = np.asarray(label["boxes"], np.float64).reshape(-1, 4)
            raw = list(np.asarray(label["classes"]).ravel())
        except (KeyError, TypeError, ValueError) as err:
            raise WorkbenchError(
                f"detection: a label must be {{'boxes': (n, 4) x1 y1 x2 y2, 'classes': (n,), "
                f"'image_size': (w, h)}}; got {type(label).__name__} ({err}). Check the label file."
            ) from err
        classes = np.array([self._class_index(c) for c in raw], np.int64)
        if len(classes) != len(boxes):
            raise WorkbenchError(
                f"detection: a label has {len(boxes)} boxes but {len(classes)} classes; "
                "give one class per box."
            )
        return boxes, classes

    def _class_index(self, value: Any) -> int:
        if isinstance(value, str | np.str_) and not str(value).isdigit():
            if self.classes and value in self.classes:
                return self.classes.index(value)
            raise WorkbenchError(
                f"detection: label class {value!r} is not one of the model's classes "
                f"{self.classes}. Use class indices, or pass classes=."
            )
        return int(value)

    def describe(self, prediction: Detections) -> str:
        """E.g. ``"3 boxes: person 0.91, 2 0.55, ..."`` (class, score, best first)."""
        if len(prediction) == 0:
            return "no boxes"
        parts = [f"{self._class_name(c)} {s:.2f}" for c, s in zip(prediction.classes, prediction.scores)]
        shown = ", ".join(parts[:4]) + (", ..." if len(parts) > 4 else "")
        return f"{len(prediction)} box{'es' if len(prediction) != 1 else ''}: {shown}"

    def _class_name(self, index: int) -> str:
        if self.classes and 0 <= index < len(self.classes):
            return self.classes[index]
        return str(int(index))

    def to_json(self, prediction: Detections) -> dict:
        """boxes (x1 y1 x2 y2, input pixels), scores, classes as lists."""
        return {
            "boxes": np.round(prediction.boxes, 2).tolist(),
            "scores": [float(s) for s in prediction.scores],
            "classes": [int(c) for c in prediction.classes],
        }

    def dataset_metrics(self, predictions: Sequence[Detections], labels: Sequence[Any]) -> dict[str, float]:
        """COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools COCOeval, bbox) over the labelled samples.

        Returns {"n", "map50", "map50_95"}: 0.0 when nothing is detected, NaN when the labels
        hold no box at all (nothing to measure).
        """
        pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if y is not None]
        gt_images, gt_boxes, dt = [], [], []
        for image_id, (prediction, label) in enumerate(pairs, start=1):
            boxes, classes = self._label_boxes(label)
            width, height = label.get("image_size") or self.input_size or (0, 0)
            gt_images.append({"id": image_id, "width": int(width), "height": int(height)})
            gt_boxes += [
                coco_box(image_id, b, c, id=len(gt_boxes) + i + 1)
                for i, (b, c) in enumerate(zip(boxes, classes))
            ]
            scaled = self.scaled_boxes(prediction, label)
            dt += [
                coco_box(image_id, b, c, score=s)
                for b, c, s in zip(scaled, prediction.classes, prediction.scores)
            ]
        result = {"n": float(len(pairs)), "map50": float("nan"), "map50_95": float("nan")}
        if not gt_boxes:
            return result
        if not dt:
            return {**result, "map50": 0.0, "map50_95": 0.0}
        stats = coco_eval(gt_images, gt_boxes, dt)
        return {**result, "map50": float(stats[1]), "map50_95": float(stats[0])}


def score_levels(
    outputs: dict[str, np.ndarray], output: str | int | None = None, classes: Sequence[str] | None = None
) -> dict:
    """How many distinct values the class scores of a YOLOv8 head take, and their range.

    A float head has thousands of levels in [0, 1]; an int8 head whose boxes (0-320 px) and
    scores share one scale has a handful (yolov8n: exactly 0 and 1.262, scores above 1 being
    impossible for a sigmoid). Returns {"levels", "min", "max", "above_one" (count of scores
    > 1), "values" (the distinct values when 16 or fewer, else [])}.
    """
    return DetectionAdapter(output=output, classes=classes).score_levels(outputs)


def _levels(scores: np.ndarray) -> dict:
    values = np.unique(scores)
    return {
        "levels": int(values.size),
        "min": float(values[0]) if values.size else float("nan"),
        "max": float(values[-1]) if values.size else float("nan"),
        "above_one": int((scores > 1.0).sum()),
        "values": [float(v) for v in values] if values.size <= 16 else [],
    }


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = xywh.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _input_size(model: Any) -> tuple[int, int] | None:
    shape = next(iter(getattr(model, "inputs", {}).values()), None)
    if shape is None or len(shape) != 4:
        return None
    return int(shape[3]), int(shape[2])  # NCHW -> (width, height)
