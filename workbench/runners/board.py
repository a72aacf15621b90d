"""A board by name: run samples on it through its transport (ssh or adb), one registry.

Adding a transport is one runner file plus its line in ``TRANSPORTS``; callers (per-layer
divergence, task evaluation) only ever call :func:`run_on_board`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from workbench.board.config import Board
from workbench.board.ssh import BoardError
from workbench.datasets import CalibrationSet
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig

Rows = Sequence[Sequence[Path]]


def _ssh(model, config, calibration, board: Board, rows: Rows, outputs_only: bool, batch: int):
    from workbench.runners.board_ssh import SshBoardRunner

    with SshBoardRunner(model, config, calibration, board, batch=batch, outputs_only=outputs_only) as runner:
        yield from runner.run_many(rows)


def _adb(model, config, calibration, board: Board, rows: Rows, outputs_only: bool, batch: int):
    from workbench.runners.board_adb import AdbBoardRunner

    if not board.serial:
        raise BoardError(f'Board {board.name!r} (adb) needs serial = "..." in boards.toml.')
    with AdbBoardRunner(model, config, calibration, board.serial, outputs_only=outputs_only) as runner:
        for row in rows:
            yield runner.run(row)


#: transport name (boards.toml ``transport``) -> generator of per-sample tensors
TRANSPORTS: dict[str, Callable[..., Iterator[dict[str, np.ndarray]]]] = {"ssh": _ssh, "adb": _adb}


def backend_label(board: Board) -> str:
    """The backend column value of a board's rows: ``board:<name from boards.toml>``."""
    return f"board:{board.name}"


def run_on_board(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    board: Board,
    rows: Rows,
    *,
    outputs_only: bool = False,
    batch: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """Each sample's tensors from ``board``, in order: the layer boundaries (mark-all build),
    or only the graph outputs with ``outputs_only`` (the model as deployed).

    Raises:
        BoardError: the board failed; samples already yielded stay valid.
    """
    transport = TRANSPORTS.get(board.transport)
    if transport is None:
        raise BoardError(
            f"Board {board.name!r} has transport {board.transport!r}; use one of {', '.join(TRANSPORTS)}."
        )
    yield from transport(model, config, calibration, board, rows, outputs_only, batch)
