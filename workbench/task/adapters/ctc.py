"""Text recognition with CTC (PaddleOCR-style): greedy decoding, exact match and CER.

Class 0 is the CTC blank, classes 1.. are the dictionary's characters, and PaddleOCR appends
a space class at the end when it was trained with ``use_space_char`` (the class count says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

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
    split_lines,
)

BLANK = 0


@dataclass(frozen=True)
class Text:
    """One recognised text line."""

    text: str  #: decoded text; "<12><5>" (class indices) when the adapter has no dictionary
    indices: tuple[int, ...]  #: the class index of each character, blanks and repeats removed
    confidence: float  #: mean probability of the kept characters (0.0 for an empty text)


class CtcAdapter:
    """Recogniser with one output (1, T, classes): per time step, probabilities (or logits).

    Args:
        model: an OnnxModel: its metadata ``character`` (PaddleOCR exports) is the dictionary
            when ``dict_path`` is not given; its output shape checks the dictionary early.
        dict_path: a dictionary file, one character per line (PaddleOCR's ppocr_keys_v1.txt).
        characters: the dictionary as a list (instead of a file).
        output: which output to read; default the first.

    Without any dictionary, texts are class-index strings: agreement float vs quantized still
    works, scoring against label texts does not.

    Raises:
        WorkbenchError: unreadable dictionary, or one that does not fit the output's classes.
    """

    name = "ctc"
    __repr__ = settings_repr

    def __init__(
        self,
        model: Any = None,
        *,
        dict_path: str | Path | None = None,
        characters: Sequence[str] | None = None,
        output: str | int | None = None,
    ):
        self.source = "characters="
        if characters is None and dict_path is not None:
            characters, self.source = read_dictionary(dict_path), f"dictionary {str(dict_path)!r}"
        elif characters is None and model is not None and metadata(model, "character"):
            characters = parse_name_list(metadata(model, "character"))
            self.source = "the model's metadata 'character'"
        self.characters = list(characters) if characters is not None else None
        self.output = output
        self._classes: list[str] | None = None
        name, shape = _output_shape(model, output)
        if shape is not None and len(shape) == 3 and self.characters is not None:
            self._classes = self._class_list(shape[2], f"the model's output {name!r}")

    def _class_list(self, n_classes: int, where: str) -> list[str]:
        """[blank] + characters (+ " " when there is one class more), checked against the count."""
        chars = self.characters or []
        if n_classes == len(chars) + 1:
            return ["", *chars]
        if n_classes == len(chars) + 2:
            return ["", *chars, " "]  # PaddleOCR's use_space_char
        raise WorkbenchError(
            f"ctc: {where} has {n_classes} classes, so the dictionary needs {n_classes - 2} "
            f"characters (+ blank + space) or {n_classes - 1} (+ blank), but {self.source} has "
            f"{len(chars)}. Pass the dictionary the model was trained with (dict_path=)."
        )

    def decode(self, outputs: dict[str, np.ndarray]) -> Text:
        """Greedy CTC: argmax per step, repeats collapsed, blanks dropped."""
        name, array = select_output(outputs, self.output, self.name)
        steps = drop_batch(array, name, self.name, "(1, T, classes)")
        if steps.ndim != 2:
            raise WorkbenchError(
                f"ctc expects an output of shape (1, T, classes); output {name!r} is "
                f"{tuple(array.shape)}. Choose the recogniser's output with output=."
            )
        if self.characters is not None and (self._classes is None or len(self._classes) != steps.shape[1]):
            self._classes = self._class_list(steps.shape[1], f"output {name!r}")
        probs = steps if looks_like_probabilities(steps, axis=1) else softmax(steps, axis=1)
        best = steps.argmax(axis=1)
        keep = np.ones(len(best), bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != BLANK
        indices = tuple(int(i) for i in best[keep])
        confidence = float(probs[np.nonzero(keep)[0], best[keep]].mean()) if indices else 0.0
        if self._classes is not None:
            text = "".join(self._classes[i] for i in indices)
        else:
            text = "".join(f"<{i}>" for i in indices)
        return Text(text, indices, confidence)

    def agreement(self, reference: Text, test: Text) -> Metrics:
        """exact and cer of the test text against the reference's; agree = exact."""
        same = self._tokens(reference) == self._tokens(test)
        return {"agree": same, "exact": same, "cer": cer(self._tokens(reference), self._tokens(test))}

    def _tokens(self, text: Text) -> str | tuple[int, ...]:
        return text.text if self._classes is not None else text.indices

    def score(self, prediction: Text, label: Any) -> Metrics:
        """correct = exact match with the label text; cer against it."""
        if self._classes is None:
            raise WorkbenchError(
                "ctc: comparing with label texts needs the character dictionary. Pass "
                "dict_path= (e.g. ppocr_keys_v1.txt) or a model with metadata 'character'."
            )
        truth = str(label)
        return {
            "correct": prediction.text == truth,
            "exact": prediction.text == truth,
            "cer": cer(truth, prediction.text),
        }

    def describe(self, prediction: Text) -> str:
        """E.g. ``"'hello' (conf 0.97)"``."""
        return f"{prediction.text!r} (conf {prediction.confidence:.2f})"

    def to_json(self, prediction: Text) -> dict:
        return {"text": prediction.text, "confidence": prediction.confidence}

    def dataset_metrics(self, predictions: Sequence[Text], labels: Sequence[Any]) -> dict[str, float]:
        """accuracy (exact matches) and mean_cer over the samples that have a label."""
        pairs = [(p, y) for p, y in zip(predictions, labels, strict=True) if y is not None]
        if not pairs:
            return {"n": 0.0, "accuracy": float("nan"), "mean_cer": float("nan")}
        scores = [self.score(p, y) for p, y in pairs]
        return {
            "n": float(len(pairs)),
            "accuracy": float(np.mean([s["exact"] for s in scores])),
            "mean_cer": float(np.mean([s["cer"] for s in scores])),
        }


def cer(reference: Sequence, test: Sequence) -> float:
    """Character error rate: edit distance / max(len(reference), 1); 0.0 iff equal."""
    return Levenshtein.distance(reference, test) / max(len(reference), 1)


def read_dictionary(path: str | Path) -> list[str]:
    """One character per line, as PaddleOCR reads it (split on "\\n" only, "\\r" stripped).

    Raises:
        WorkbenchError: missing, unreadable or empty file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise WorkbenchError(
            f"ctc: cannot read the dictionary {str(path)!r}: {err}. Give a UTF-8 text file, "
            "one character per line (PaddleOCR's ppocr_keys_v1.txt)."
        ) from err
    chars = split_lines(text)
    if not chars:
        raise WorkbenchError(f"ctc: the dictionary {str(path)!r} is empty; it needs one character per line.")
    return chars


def _output_shape(model: Any, output: str | int | None) -> tuple[str | None, tuple | None]:
    """(name, static shape) of the output the adapter reads, (None, None) when unknown."""
    shapes = getattr(model, "outputs", None) or {}
    names = list(shapes)
    if isinstance(output, int):
        name = names[output] if -len(names) <= output < len(names) else None
    else:
        name = output if output is not None else next(iter(names), None)
    return name, shapes.get(name)
