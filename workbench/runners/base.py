"""The base every backend derives from: what one sample's measurement holds, and the
defaults (outputs from run, several samples one by one, context manager) a backend need not
write again."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Row = Sequence[Path]


@dataclass
class Measurement:
    """What a backend measured on one sample.

    ``tensors`` by the backend's own names (ONNX names, or the toolkit's layer names, which
    ``rknn.names.align`` maps back). A toolkit snapshot adds its error table (``errors``, by
    layer name) and its own float dumps (``golden``, which fix each layer's layout).
    ``single`` is a snapshot of the same sample on the plain build, measured beside a marked
    one: its single-layer numbers and the layers marking cannot see complete the rows.
    """

    tensors: dict[str, np.ndarray]
    errors: dict | None = None
    golden: dict[str, np.ndarray] | None = None
    single: Measurement | None = None


class BaseRunner:
    """Defaults of the runner contract; subclasses set ``backend`` and ``model`` and write
    ``run`` (and ``close`` when they hold a process or files)."""

    backend = "unknown"
    #: what marking layer boundaries changed (mark-all builds only; see runners.markall)
    guard = None

    def run(self, row: Row) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def measure(self, row: Row) -> Measurement:
        """One sample's measurement (the tensors of ``run``, plus what the backend adds)."""
        return Measurement(self.run(row))

    def measure_many(self, rows: Sequence[Row]) -> Iterator[Measurement]:
        """Each sample's measurement, in order (a board batches them)."""
        for row in rows:
            yield self.measure(row)

    def outputs(self, row: Row) -> dict[str, np.ndarray]:
        """The model's graph outputs of one sample, by ONNX output name, in graph order."""
        tensors = self.run(row)
        return {name: tensors[name] for name in self.model.outputs}

    @property
    def meta(self) -> dict:
        """What a run records about this backend beside its table (e.g. the mark-all guard)."""
        return {}

    def close(self) -> None:
        """Release processes and files (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
