"""Dense maps: segmentation logits (argmax per pixel) or probability maps (thresholded, DBNet)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.task.adapters.base import Metrics, drop_batch, select_output, settings_repr


class MapAdapter:
    """Model with one dense output: (1, C, H, W) class scores, or (1, 1, H, W) / (1, H, W)
    probabilities.

    A decoded map is an (H, W) array of class indices: the argmax over C, or for one channel
    ``probability > threshold`` (0 / 1). Class ``background`` (default 0) counts as empty:
    IoU is the mean over the other classes present in either map.

    Args:
        output: which output to read; default the first.
        threshold: probability above which a pixel of a one-channel map is foreground.
        agree_iou: float and quantized maps agree when their IoU reaches this.
        correct_iou: a map is ``correct`` vs a label mask when their IoU reaches this.
        background: the class index that is not an object (None: every class counts).
    """

    name = "map"
    __repr__ = settings_repr

    def __init__(
        self,
        model: Any = None,
        *,
        output: str | int | None = None,
        threshold: float = 0.3,
        agree_iou: float = 0.9,
        correct_iou: float = 0.5,
        background: int | None = 0,
    ):
        self.output = output
        self.threshold = threshold
        self.agree_iou = agree_iou
        self.correct_iou = correct_iou
        self.background = background

    def decode(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(H, W) class map (int64); WorkbenchError when the output is not (1, C, H, W)."""
        name, array = select_output(outputs, self.output, self.name)
        maps = drop_batch(array, name, self.name, "(1, C, H, W)")
        if maps.ndim == 2:
            maps = maps[None]
        if maps.ndim != 3:
            raise WorkbenchError(
                f"map expects an output of shape (1, C, H, W) or (1, H, W); output {name!r} is "
                f"{tuple(array.shape)}. Choose the map output with output=."
            )
        if maps.shape[0] == 1:
            return (maps[0] > self.threshold).astype(np.int64)
        return maps.argmax(axis=0).astype(np.int64)

    def agreement(self, reference: np.ndarray, test: np.ndarray) -> Metrics:
        """iou of the maps (both empty: iou 1.0, both_empty True); agree = iou >= agree_iou."""
        iou, empty = self._iou(reference, test, "the float and quantized maps")
        return {"agree": iou >= self.agree_iou, "iou": iou, "both_empty": empty}

    def score(self, prediction: np.ndarray, label: Any) -> Metrics:
        """iou with the label mask (same H, W; bool or class indices); correct = iou >= correct_iou."""
        iou, empty = self._iou(np.asarray(label).astype(np.int64), prediction, "the label mask and the map")
        return {"correct": iou >= self.correct_iou, "iou": iou, "both_empty": empty}

    def _iou(self, a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, bool]:
        if a.shape != b.shape:
            raise WorkbenchError(
                f"map: {what} differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}. Give label "
                "masks at the model's output resolution."
            )
        return mean_iou(a, b, self.background)

    def describe(self, prediction: np.ndarray) -> str:
        """E.g. ``"12.5 % foreground (160x160)"``, plus the classes present for multi-class maps."""
        fg = prediction != self.background if self.background is not None else np.ones_like(prediction, bool)
        h, w = prediction.shape
        present = [int(c) for c in np.unique(prediction) if c != self.background]
        classes = f", classes {present[:6]}" if present and present != [1] else ""
        return f"{100 * fg.mean():.1f} % foreground ({h}x{w}){classes}"

    def to_json(self, prediction: np.ndarray) -> dict:
        """Shape and pixel count per class (the full map is not stored)."""
        values, counts = np.unique(prediction, return_counts=True)
        return {
            "shape": list(prediction.shape),
            "pixels": {str(int(v)): int(c) for v, c in zip(values, counts)},
        }

    def dataset_metrics(self, predictions: Sequence[np.ndarray], labels: Sequence[Any]) -> dict[str, float]:
        """mean_iou and accuracy (fraction correct) over the samples that have a label."""
        pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if y is not None]
        if not pairs:
            return {"n": 0.0, "mean_iou": float("nan"), "accuracy": float("nan")}
        scores = [self.score(p, y) for p, y in pairs]
        return {
            "n": float(len(pairs)),
            "mean_iou": float(np.mean([s["iou"] for s in scores])),
            "accuracy": float(np.mean([s["correct"] for s in scores])),
        }


def mean_iou(a: np.ndarray, b: np.ndarray, background: int | None = 0) -> tuple[float, bool]:
    """Mean IoU over the classes (other than ``background``) present in ``a`` or ``b``.

    Returns (iou, both_empty): (1.0, True) when neither map has any such class.
    """
    classes = [c for c in np.union1d(np.unique(a), np.unique(b)) if c != background]
    if not classes:
        return 1.0, True
    ious = [np.logical_and(a == c, b == c).sum() / np.logical_or(a == c, b == c).sum() for c in classes]
    return float(np.mean(ious)), False
