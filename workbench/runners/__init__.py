"""Runners: one contract for every backend (float onnxruntime, toolkit simulator in snapshot
or mark-all mode, the emulator, boards over adb or ssh).

A runner is built for one model and settings (its constructor does the build or the
preparation), then takes one sample at a time: a row of files, one per model input, as in a
dataset.txt. Every caller (per-layer divergence, the answers, the explorer) knows only this
contract, so a new backend is one file. Board transports are found by name in
``runners.board.TRANSPORTS``; quantized backends for answers in ``task.evaluate.ANSWER_BACKENDS``.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    #: the backend column of its rows: "float", "simulator", "emulator", "board:<name>"
    backend: str

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Per-layer tensors of one sample, by name (ONNX names, or the toolkit's layer names,
        which ``rknn.names.align`` maps back)."""
        ...

    def outputs(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """The model's graph outputs of one sample, by ONNX output name, in graph order."""
        ...

    def close(self) -> None:
        """Release processes and files (idempotent)."""
        ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...
