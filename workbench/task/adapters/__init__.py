"""Task adapters: a model's outputs -> its answer, and how answers are judged.

``get_adapter(name, model, **settings)`` builds a built-in adapter by name; ``CallableAdapter``
wraps your own functions. Every adapter follows :class:`TaskAdapter`.
"""

from __future__ import annotations

import inspect
from typing import Any

from workbench.errors import WorkbenchError
from workbench.task.adapters.base import TaskAdapter
from workbench.task.adapters.classification import Classification, ClassificationAdapter, kl_divergence
from workbench.task.adapters.ctc import CtcAdapter, Text, cer, read_dictionary
from workbench.task.adapters.custom import CallableAdapter
from workbench.task.adapters.detection import DetectionAdapter, Detections, score_levels
from workbench.task.adapters.maps import MapAdapter, mean_iou
from workbench.task.adapters.outputs import OutputsAdapter, both_empty

#: Built-in tasks by name. Add your own class here to make it available by name.
ADAPTERS: dict[str, type] = {
    "classification": ClassificationAdapter,
    "detection": DetectionAdapter,
    "ctc": CtcAdapter,
    "map": MapAdapter,
    "outputs": OutputsAdapter,
}


def get_adapter(name: str, model: Any = None, **settings: Any) -> TaskAdapter:
    """The adapter called ``name``, built with ``settings`` (its constructor's keyword arguments).

    Args:
        name: one of :data:`ADAPTERS` ("classification", "detection", "ctc", "map", "outputs").
        model: a ``workbench.model.OnnxModel``; adapters read metadata (class names, the CTC
            dictionary) and shapes (the detector's input size) from it.

    Raises:
        WorkbenchError: unknown name (lists the valid ones) or setting (lists the adapter's).
    """
    cls = ADAPTERS.get(name)
    if cls is None:
        raise WorkbenchError(
            f"Unknown task {name!r}; the tasks are {sorted(ADAPTERS)}. For your own decoding, "
            "pass a CallableAdapter(decode=...)."
        )
    params = inspect.signature(cls).parameters
    unknown = sorted(set(settings) - set(params))
    if unknown:
        valid = sorted(p for p in params if p != "model")
        raise WorkbenchError(f"Task {name!r} has no setting {unknown}; its settings are {valid}.")
    return cls(model=model, **settings)


__all__ = [
    "ADAPTERS",
    "CallableAdapter",
    "Classification",
    "ClassificationAdapter",
    "CtcAdapter",
    "DetectionAdapter",
    "Detections",
    "MapAdapter",
    "OutputsAdapter",
    "TaskAdapter",
    "Text",
    "both_empty",
    "cer",
    "get_adapter",
    "kl_divergence",
    "mean_iou",
    "read_dictionary",
    "score_levels",
]
