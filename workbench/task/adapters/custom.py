"""User-defined task: any Python callables (as Polygraphy takes a --check script and AIMET an
eval callback)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.task.adapters.base import Metrics, jsonable


class CallableAdapter:
    """A task made of functions.

    Args:
        decode: ``fn(outputs: dict[str, np.ndarray]) -> prediction``.
        agreement: ``fn(reference, test) -> bool | dict`` (a dict must hold "agree"); default:
            the two predictions are equal (arrays compared with ``np.array_equal``).
        score: ``fn(prediction, label) -> bool | dict`` (a dict must hold "correct"); default:
            prediction equals label.
        describe: ``fn(prediction) -> str``; default: a shortened ``repr``.
        to_json: ``fn(prediction) -> JSON-able``; default: numpy values turned into lists.
        name: the task's name in tables and reports.
    """

    def __init__(
        self,
        decode: Callable[[dict[str, np.ndarray]], Any],
        agreement: Callable[[Any, Any], bool | Mapping] | None = None,
        score: Callable[[Any, Any], bool | Mapping] | None = None,
        describe: Callable[[Any], str] | None = None,
        to_json: Callable[[Any], Any] | None = None,
        name: str = "custom",
        model: Any = None,
    ):
        if not callable(decode):
            raise WorkbenchError(
                f"CallableAdapter: decode must be a function of the outputs dict, got "
                f"{type(decode).__name__}."
            )
        self.name = name
        self._decode = decode
        self._agreement = agreement or equal
        self._score = score or equal
        self._describe = describe
        self._to_json = to_json or jsonable

    def decode(self, outputs: dict[str, np.ndarray]) -> Any:
        return self._decode(outputs)

    def agreement(self, reference: Any, test: Any) -> Metrics:
        return _as_metrics(self._agreement(reference, test), "agree", self.name, "agreement")

    def score(self, prediction: Any, label: Any) -> Metrics:
        return _as_metrics(self._score(prediction, label), "correct", self.name, "score")

    def describe(self, prediction: Any) -> str:
        if self._describe is not None:
            return str(self._describe(prediction))
        text = repr(prediction)
        return text if len(text) <= 60 else text[:57] + "..."

    def to_json(self, prediction: Any) -> Any:
        return self._to_json(prediction)


def equal(a: Any, b: Any) -> bool:
    """Equality that works for numpy arrays, and dicts / lists / tuples of them."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def _as_metrics(value: Any, key: str, name: str, what: str) -> Metrics:
    if isinstance(value, bool | np.bool_):
        return {key: bool(value)}
    if isinstance(value, Mapping) and key in value:
        return {**value, key: bool(value[key])}
    raise WorkbenchError(
        f"task {name!r}: the {what} function must return a bool or a dict with key {key!r}; "
        f"it returned {type(value).__name__} {str(value)[:80]}. Fix the function you passed."
    )
