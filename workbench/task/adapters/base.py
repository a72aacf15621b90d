"""The task-adapter contract and the helpers every adapter shares.

An adapter turns a model's raw outputs into an answer (``decode``), says whether two answers
agree (float vs quantized: ``agreement``) and whether an answer is right (``score``). The
evaluation loop knows only this contract, so a new task is one class.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from workbench.errors import WorkbenchError

Metrics = dict[str, float | bool | str]


@runtime_checkable
class TaskAdapter(Protocol):
    """Decode outputs into answers and judge them.

    - ``decode(outputs)``: ``outputs`` are the model's graph outputs by ONNX name, in
      graph-output order, float32, batch 1, as onnxruntime returns them.
    - ``agreement(reference, test)``: reference = the float model's answer, test = the
      quantized one; always has ``"agree": bool`` plus the adapter's metrics.
    - ``score(prediction, label)``: always has ``"correct": bool`` plus metrics.
    - ``describe(prediction)``: a short human text; ``to_json(prediction)``: JSON-able data.
    """

    name: str

    def decode(self, outputs: dict[str, np.ndarray]) -> Any: ...

    def agreement(self, reference: Any, test: Any) -> Metrics: ...

    def score(self, prediction: Any, label: Any) -> Metrics: ...

    def describe(self, prediction: Any) -> str: ...

    def to_json(self, prediction: Any) -> Any: ...


def settings_repr(adapter: Any) -> str:
    """``Name(setting=value, ...)`` from the adapter's public attributes, the same in every run
    (evaluation caches key on it). Long lists (a CTC dictionary) show their length and a digest."""

    def short(value: Any) -> str:
        if isinstance(value, list | tuple) and len(value) > 8:
            digest = hashlib.sha1(json.dumps(jsonable(value)).encode()).hexdigest()[:12]
            return f"<{len(value)} items sha1:{digest}>"
        return repr(value)

    settings = ", ".join(f"{k}={short(v)}" for k, v in vars(adapter).items() if not k.startswith("_"))
    return f"{type(adapter).__name__}({settings})"


def select_output(
    outputs: Mapping[str, np.ndarray], output: str | int | None, task: str
) -> tuple[str, np.ndarray]:
    """The output an adapter reads: by name, by position, or the first one when ``output`` is None.

    Raises:
        WorkbenchError: no outputs, no output of that name / position (lists the names), or
            the output holds NaN / Inf.
    """
    names = list(outputs)
    if not names:
        raise WorkbenchError(f"{task}: the model returned no outputs to decode.")
    if output is None:
        name = names[0]
    elif isinstance(output, int):
        if not -len(names) <= output < len(names):
            raise WorkbenchError(
                f"{task}: output={output} but the model has {len(names)} output(s) {names}; "
                "pass output= as one of those names or positions."
            )
        name = names[output]
    elif output in outputs:
        name = output
    else:
        raise WorkbenchError(
            f"{task}: the model has no output {output!r}; its outputs are {names}. "
            "Pass output= as one of those names."
        )
    array = np.asarray(outputs[name])
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise WorkbenchError(
            f"{task}: output {name!r} holds {bad} NaN/Inf value(s), so it has no answer to decode: "
            "the backend failed on this input. Compare the tensors with the 'outputs' task."
        )
    return name, array


def drop_batch(array: np.ndarray, name: str, task: str, expected: str) -> np.ndarray:
    """``array`` without its leading batch dimension of 1; WorkbenchError for another batch."""
    if array.ndim == 0 or array.shape[0] != 1:
        raise WorkbenchError(
            f"{task} expects an output of shape {expected} (batch 1); output {name!r} is "
            f"{tuple(array.shape)}. Feed one sample at a time, or choose another output= / task."
        )
    return array[0]


def metadata(model: Any, key: str) -> str | None:
    """The value of ``key`` in the ONNX model's metadata_props, or None (also without a model)."""
    proto = getattr(model, "proto", model)
    for prop in getattr(proto, "metadata_props", ()):
        if prop.key == key:
            return prop.value
    return None


def parse_name_list(text: str) -> list[str]:
    """Class names stored as text: a JSON / Python list, a ``{0: 'a', 1: 'b'}`` dict
    (ultralytics ``names``) or one name per line (PaddleOCR ``character``)."""
    stripped = text.strip()
    if stripped[:1] in "[{" and stripped[-1:] in "]}":
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(stripped)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, dict):
                return [str(value[k]) for k in sorted(value)]
            if isinstance(value, list | tuple):
                return [str(v) for v in value]
    return split_lines(text)


def split_lines(text: str) -> list[str]:
    """Lines as PaddleOCR reads a dictionary: split on "\\n" only (not on the other characters
    ``str.splitlines`` breaks at, which can be dictionary entries), "\\r" stripped, a trailing
    newline not counted as an empty line. A line holding a single space is kept."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def jsonable(value: Any) -> Any:
    """numpy scalars and arrays (also inside dicts, lists, tuples) as plain Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def looks_like_probabilities(x: np.ndarray, axis: int = -1, tol: float = 0.05) -> bool:
    """True when ``x`` is in [0, 1] and sums to 1 within ``tol`` along ``axis``: loose enough for
    a quantized softmax, whose sum is 1 only roughly."""
    x = np.asarray(x, np.float64)
    return bool((x <= 1).all() and is_probability(x, axis, tol))


def is_probability(x: np.ndarray, axis: int = -1, tol: float = 1e-3) -> bool:
    """True when ``x`` is non-negative and sums to 1 within ``tol`` along ``axis``."""
    x = np.asarray(x, np.float64)
    return bool((x >= 0).all() and np.allclose(x.sum(axis=axis), 1.0, atol=tol))
