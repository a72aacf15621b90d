"""Classification: top-1 / top-k answers, their agreement float vs quantized, accuracy vs labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.task.adapters.base import (
    Metrics,
    drop_batch,
    looks_like_probabilities,
    metadata,
    parse_name_list,
    select_output,
    settings_repr,
    softmax,
)

_EPS = 1e-10  #: floor of probabilities in KL, so a class the quantized model zeroes costs finitely
_SHAPE_OPS = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast")


@dataclass(frozen=True)
class Classification:
    """One classification answer."""

    index: int  #: top-1 class index
    top_k: tuple[int, ...]  #: the k best class indices, best first
    probabilities: np.ndarray  #: per class (after softmax when the output was not probabilities)
    name: str | None = None  #: class name of ``index`` when the adapter knows the names

    @property
    def p(self) -> float:
        """Probability of the top-1 class."""
        return float(self.probabilities[self.index])


class ClassificationAdapter:
    """Classifier with one output of shape (1, classes) (or (1, classes, 1, 1)).

    Args:
        model: an OnnxModel; its metadata ``character`` (PaddleOCR classifiers, e.g. the
            orientation model's "0\\n90\\n180\\n270") gives the class names when ``classes`` is None.
        output: which output to read (name or position); default the first.
        classes: class names, index order.
        softmax: turn the output into probabilities: softmax of logits, or probabilities
            renormalised to sum 1 (a quantized softmax sums to 1 only roughly). Which of the
            two is read from the graph when ``model`` is given (the output comes from a Softmax
            or Sigmoid, through Identity / Reshape / Flatten / Squeeze); without it, an output
            in [0, 1] summing to 1 within 0.05 is taken as probabilities. False reads the
            output as it is.
        top_k: how many classes ``top_k`` / ``top5_overlap`` / ``top5_correct`` look at.
    """

    name = "classification"
    __repr__ = settings_repr

    def __init__(
        self,
        model: Any = None,
        *,
        output: str | int | None = None,
        classes: Sequence[str] | None = None,
        softmax: bool = True,
        top_k: int = 5,
    ):
        if classes is None and model is not None:
            stored = metadata(model, "character")
            classes = parse_name_list(stored) if stored else None
        self.classes = list(classes) if classes is not None else None
        self.output = output
        self.softmax = softmax
        #: "probabilities", "logits", or None (decided per sample)
        self.kind = _output_kind(model, output) if model is not None else None
        self.top_k = int(top_k)

    def decode(self, outputs: dict[str, np.ndarray]) -> Classification:
        """Top-1, top-k and probabilities; WorkbenchError when the output is not (1, classes)."""
        name, array = select_output(outputs, self.output, self.name)
        scores = drop_batch(array, name, self.name, "(1, classes)")
        scores = scores.reshape(-1) if scores.size == max(scores.shape, default=0) else scores
        if scores.ndim != 1:
            raise WorkbenchError(
                f"classification expects an output of shape (1, classes); output {name!r} is "
                f"{tuple(array.shape)}. Choose another output= or task (e.g. 'map', 'outputs')."
            )
        if self.classes is not None and len(self.classes) != scores.size:
            raise WorkbenchError(
                f"classification: {len(self.classes)} class names given but output {name!r} has "
                f"{scores.size} classes. Pass classes= with one name per class."
            )
        probs = np.asarray(scores, np.float64)
        if self.softmax:
            probs = _probabilities(probs, self.kind)
        order = np.argsort(-probs, kind="stable")
        index = int(order[0])
        return Classification(
            index=index,
            top_k=tuple(int(i) for i in order[: self.top_k]),
            probabilities=probs,
            name=self.classes[index] if self.classes else None,
        )

    def agreement(self, reference: Classification, test: Classification) -> Metrics:
        """top1_agree, top5_overlap (fraction of the reference's top-k also in the test's),
        kl = KL(p_reference || p_test), p_shift = change of the reference's top-1 probability;
        agree = top1_agree."""
        k = max(len(reference.top_k), 1)
        same = reference.index == test.index
        return {
            "agree": same,
            "top1_agree": same,
            "top5_overlap": len(set(reference.top_k) & set(test.top_k)) / k,
            "kl": kl_divergence(reference.probabilities, test.probabilities),
            "p_shift": float(test.probabilities[reference.index] - reference.p),
        }

    def score(self, prediction: Classification, label: Any) -> Metrics:
        """correct = top-1 is the label; top5_correct = the label is in the top-k.

        ``label``: a class index, a class name of ``classes``, or a numeric string ("2"). A name
        is looked up first, so with classes ["0", "90", "180", "270"] the label "90" is class 1.
        """
        index = self.label_index(label, prediction.probabilities.size)
        return {
            "correct": prediction.index == index,
            "top5_correct": index in prediction.top_k,
            "p_label": float(prediction.probabilities[index]),
        }

    def label_index(self, label: Any, n_classes: int | None = None) -> int:
        """The class index of ``label`` (see :meth:`score`); WorkbenchError when unknown."""
        index: int | None = None
        if isinstance(label, bool):
            index = None
        elif isinstance(label, int | np.integer):
            index = int(label)
        elif isinstance(label, str):
            text = label.strip()
            if self.classes and text in self.classes:
                index = self.classes.index(text)
            elif text.lstrip("-").isdigit():
                index = int(text)
        n = n_classes if n_classes is not None else (len(self.classes) if self.classes else None)
        if index is None or index < 0 or (n is not None and index >= n):
            names = f" or one of the names {self.classes}" if self.classes else ""
            raise WorkbenchError(
                f"classification: label {label!r} is not a class: give an index 0..{(n or 0) - 1}"
                f"{names}. Check the label file, or pass classes= to the adapter."
            )
        return index

    def describe(self, prediction: Classification) -> str:
        """E.g. ``"270 (p=0.93)"``: the class name (or index) and its probability."""
        what = prediction.name if prediction.name is not None else str(prediction.index)
        return f"{what} (p={prediction.p:.2f})"

    def to_json(self, prediction: Classification) -> dict:
        """index, name, p and the top-k with their probabilities (not the full vector)."""
        return {
            "index": prediction.index,
            "name": prediction.name,
            "p": prediction.p,
            "top_k": list(prediction.top_k),
            "top_k_p": [float(prediction.probabilities[i]) for i in prediction.top_k],
        }

    def dataset_metrics(
        self, predictions: Sequence[Classification], labels: Sequence[Any]
    ) -> dict[str, float]:
        """accuracy and top5_accuracy over the samples that have a label (None = unlabelled)."""
        pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if y is not None]
        if not pairs:
            return {"n": 0.0, "accuracy": float("nan"), "top5_accuracy": float("nan")}
        scores = [self.score(p, y) for p, y in pairs]
        return {
            "n": float(len(pairs)),
            "accuracy": float(np.mean([s["correct"] for s in scores])),
            "top5_accuracy": float(np.mean([s["top5_correct"] for s in scores])),
        }


def _probabilities(scores: np.ndarray, kind: str | None) -> np.ndarray:
    if kind is None:
        kind = "probabilities" if looks_like_probabilities(scores) else "logits"
    if kind == "logits":
        return softmax(scores)
    total = scores.clip(0, None).sum()
    return scores.clip(0, None) / total if total > 0 else scores.clip(0, None)


def _output_kind(model: Any, output: str | int | None) -> str | None:
    """ "probabilities" when the output is a Softmax's (through shape-only ops), "logits" when
    it is another op's, None when the graph does not say (no such output)."""
    names = list(getattr(model, "outputs", {}))
    if not names:
        return None
    name = names[output] if isinstance(output, int) and -len(names) <= output < len(names) else output
    name = names[0] if name is None else name
    producers = {o: n for n in model.proto.graph.node for o in n.output}
    node = producers.get(name)
    while node is not None and node.op_type in _SHAPE_OPS:
        node = producers.get(node.input[0])
    if node is None:
        return None
    return "probabilities" if node.op_type in ("Softmax", "Sigmoid") else "logits"


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = _EPS) -> float:
    """KL(p || q) in nats, both floored at ``eps`` and renormalised; 0 for identical inputs."""
    p = np.clip(np.asarray(p, np.float64).ravel(), eps, None)
    q = np.clip(np.asarray(q, np.float64).ravel(), eps, None)
    p, q = p / p.sum(), q / q.sum()
    return float(max(np.sum(p * np.log(p / q)), 0.0))
