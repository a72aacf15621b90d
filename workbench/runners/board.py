"""A board by name: its transport's runner, one registry.

Adding a transport is one runner (or shell transport) file plus its line in ``TRANSPORTS``;
callers open boards with ``open_backend("board:<name>", ...)`` or :func:`open_board`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from workbench.board.config import Board, get_board
from workbench.datasets import CalibrationSet
from workbench.errors import BoardError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.runners.base import BaseRunner
from workbench.runners.board_adb import AdbBoardRunner
from workbench.runners.board_shell import ShellBoardRunner

Rows = Sequence[Sequence[Path]]


def _shell(model, config, calibration, board: Board, *, outputs_only=False, batch=4, **_) -> BaseRunner:
    return ShellBoardRunner(model, config, calibration, board, batch=batch, outputs_only=outputs_only)


def _toolkit_adb(model, config, calibration, board: Board, *, outputs_only=False, **_) -> BaseRunner:
    if not board.serial:
        raise BoardError(f'Board {board.name!r} (adb) needs serial = "..." in boards.toml.')
    return AdbBoardRunner(
        model, config, calibration, board.serial, outputs_only=outputs_only, name=board.name
    )


#: transport name (boards.toml ``transport``) -> runner factory (model, config, calibration, board)
TRANSPORTS: dict[str, Callable[..., BaseRunner]] = {"ssh": _shell, "adb-shell": _shell, "adb": _toolkit_adb}


def backend_label(board: Board) -> str:
    """The backend column value of a board's rows: ``board:<name from boards.toml>``."""
    return f"board:{board.name}"


def open_board(
    model: OnnxModel, config: BuildConfig, calibration: CalibrationSet, *, board: Board | str, **options
) -> BaseRunner:
    """The runner of ``board`` (a Board, or a name in boards.toml) for ``model``; options as
    ``runners.open_backend`` (``outputs_only``, ``batch``).

    Raises:
        BoardError: unknown transport; what the transport raises while preparing.
    """
    board = get_board(board) if isinstance(board, str) else board
    transport = TRANSPORTS.get(board.transport)
    if transport is None:
        raise BoardError(
            f"Board {board.name!r} has transport {board.transport!r}; use one of {', '.join(TRANSPORTS)}."
        )
    return transport(model, config, calibration, board, **options)


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
    with open_board(
        model, config, calibration, board=board, outputs_only=outputs_only, batch=batch
    ) as runner:
        for measured in runner.measure_many(rows):
            yield measured.tensors
