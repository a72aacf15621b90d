"""Runners: one contract for every backend (float onnxruntime, toolkit simulator in snapshot
or mark-all mode, the emulator, boards over ssh, adb-shell or the toolkit's adb connection).

A runner is built for one model and settings (its constructor does the build or the
preparation), then takes one sample at a time: a row of files, one per model input, as in a
dataset.txt. Every caller (per-layer divergence, the answers, the explorer) opens backends by
name with :func:`open_backend` and knows only the contract, so a new backend is one file plus
its line in :data:`BACKENDS`; a board transport is one file plus its line in
``runners.board.TRANSPORTS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from workbench.errors import ConfigError
from workbench.runners.base import BaseRunner, Measurement

__all__ = ["BACKENDS", "BaseRunner", "Measurement", "Runner", "open_backend"]


@runtime_checkable
class Runner(Protocol):
    #: the backend column of its rows: "float", "simulator", "emulator", "board:<name>"
    backend: str

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Per-layer tensors of one sample, by name (ONNX names, or the toolkit's layer names,
        which ``rknn.names.align`` maps back)."""
        ...

    def measure_many(self, rows: Sequence[Sequence[Path]]) -> Iterator[Measurement]:
        """Each sample's :class:`Measurement`, in order."""
        ...

    def outputs(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """The model's graph outputs of one sample, by ONNX output name, in graph order."""
        ...

    def close(self) -> None:
        """Release processes and files (idempotent)."""
        ...

    def __enter__(self): ...

    def __exit__(self, *exc) -> None: ...


#: backend name -> "module:factory"; a factory takes (model, config, calibration, **options)
#: and ignores options it has no use for. Imported when opened: the emulator sits above this
#: layer, and a backend's heavy imports are paid only by who uses it. "board:<name>" opens the
#: board of that name in boards.toml (``runners.board``).
BACKENDS: dict[str, str] = {
    "float": "workbench.runners.float:open_float",
    "snapshot": "workbench.runners.simulator:open_snapshot",
    "mark-all": "workbench.runners.markall:open_mark_all",
    "emulator": "workbench.emulate.runner:open_emulator",
}
BOARD = "workbench.runners.board:open_board"


def open_backend(name: str, model, config, calibration, **options) -> Runner:
    """The backend ``name`` built for ``model`` (a board: ``board:<name in boards.toml>``).

    Options (each backend takes those it uses): ``workdir``, ``timeout``, ``outputs_only``
    (only the model's outputs, from the model as deployed), ``check_row`` and
    ``single_layer`` (mark-all's guard sample and its snapshot), ``batch`` (boards).

    Raises:
        ConfigError: unknown backend name; what the backend raises while building.
    """
    where = BACKENDS.get(name)
    if name.startswith("board:"):
        where, options = BOARD, {**options, "board": name.removeprefix("board:")}
    if where is None:
        raise ConfigError(
            f"Unknown backend {name!r}: use one of {', '.join(BACKENDS)}, or board:<name> for a "
            "board in boards.toml."
        )
    module, factory = where.split(":")
    return getattr(importlib.import_module(module), factory)(model, config, calibration, **options)
