"""Runners: one contract for every backend (float onnxruntime, toolkit simulator, boards).

A runner takes one sample (a row of files, one per model input, as in a dataset.txt) and
returns ``{tensor name: array}``. Names are the backend's own; compare.align maps them.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class Runner(Protocol):
    #: column value in the Divergence table: "float", "simulator", "board:<serial>", ...
    backend: str

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Per-layer tensors of one sample."""
        ...

    def close(self) -> None:
        """Release processes and files (idempotent)."""
        ...
