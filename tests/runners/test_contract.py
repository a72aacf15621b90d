"""The one runner contract, the same checks on every backend: each one in the registry
(float, the simulator in snapshot and mark-all mode, the emulator), a board over SSH (a real
sshd on 127.0.0.1 in front of the simulator: the virtual board), a board over adb-shell
(the fake adb in front of the same: the board itself cannot exist here) and the toolkit's
own adb connection (its real adb with no board attached: the check is the clear failure and
that nothing is left behind)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import BoardError, ConfigError, ToolkitError
from workbench.rknn.config import BuildConfig
from workbench.runners import BACKENDS, Runner, open_backend
from workbench.runners.board import open_board

pytestmark = pytest.mark.toolkit
MODEL = "residual-add"


BOARDS = {"ssh-board": "sshd", "adb-shell-board": "fake_adb_board"}
LABELS = {
    "float": "float", "snapshot": "simulator", "mark-all": "simulator", "emulator": "emulator",
    "ssh-board": "board:virtual", "adb-shell-board": "board:fake-adb",
}  # fmt: skip


def _open(name, model, calibration, request):
    if name in BOARDS:
        board = request.getfixturevalue(BOARDS[name])
        board = board.board() if name == "ssh-board" else board
        return open_board(model, BuildConfig(), calibration, board=board)
    return open_backend(name, model, BuildConfig(), calibration)


def test_every_backend_is_tested():
    assert set(BACKENDS) <= set(LABELS)


@pytest.mark.parametrize("name", [*BACKENDS, *BOARDS])
def test_every_backend_keeps_the_contract(name, tiny_models, small_set, request):
    model, calibration = tiny_models[MODEL], small_set.head(2)
    row = calibration.rows[0]
    with _open(name, model, calibration, request) as runner:
        assert isinstance(runner, Runner)
        assert runner.backend == LABELS[name]
        tensors = runner.run(row)
        assert tensors and all(isinstance(v, np.ndarray) for v in tensors.values())
        (measured,) = runner.measure_many([row])
        assert set(measured.tensors) == set(tensors)
        outputs = runner.outputs(row)
        assert list(outputs) == list(model.outputs)
        shapes = {t.name: tuple(t.shape) for t in model.tensors}
        for name_, value in outputs.items():
            assert value.size == int(np.prod(shapes[name_]))
            assert np.isfinite(value).all()
    runner.close()  # idempotent


def test_an_unknown_backend_names_the_known_ones(tiny_models, small_set):
    with pytest.raises(ConfigError, match="snapshot.*board:<name>"):
        open_backend("npu", tiny_models[MODEL], BuildConfig(), small_set)


def test_an_adb_shell_board_with_a_wrong_serial_fails_clearly_and_leaves_nothing(
    fake_adb_board, tiny_models, small_set
):
    board = replace(fake_adb_board, serial="other-2")
    with pytest.raises(BoardError, match="other-2.*board doctor fake-adb"):
        open_board(tiny_models[MODEL], BuildConfig(), small_set.head(1), board=board)
    assert not any(Path(board.workdir).iterdir())


def test_an_adb_board_that_is_not_there_fails_clearly_and_leaves_nothing(
    tiny_models, small_set, tmp_path, monkeypatch
):
    from workbench.board.doctor import Adb
    from workbench.runners.board_adb import AdbBoardRunner

    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    try:
        with pytest.raises(ToolkitError, match="not found"):
            AdbBoardRunner(
                tiny_models[MODEL], BuildConfig(), small_set.head(1), "192.0.2.1:5555", timeout=300
            )
    finally:
        Adb().run("kill-server")
