"""The one runner contract, the same checks on every backend: float (onnxruntime), the
simulator in snapshot and mark-all mode, the emulator, a board over SSH (a real sshd on
127.0.0.1 in front of the simulator: the virtual board) and a board over adb (the toolkit's
real adb with no board attached: the board itself cannot exist here, so the check is the
clear failure and that nothing is left behind)."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ToolkitError
from workbench.rknn.config import BuildConfig
from workbench.runners import Runner

pytestmark = pytest.mark.toolkit
MODEL = "residual-add"


def _float(model, calibration, tmp_path, sshd):
    from workbench.runners.float import FloatRunner

    return FloatRunner(model)


def _snapshot(model, calibration, tmp_path, sshd):
    from workbench.runners.simulator import SimulatorRunner

    return SimulatorRunner(model, BuildConfig(), calibration)


def _mark_all(model, calibration, tmp_path, sshd):
    from workbench.runners.markall import MarkAllRunner

    return MarkAllRunner(model, BuildConfig(), calibration)


def _emulator(model, calibration, tmp_path, sshd):
    from workbench.emulate.runner import EmulatorRunner

    return EmulatorRunner(model, BuildConfig(), calibration)


def _ssh_board(model, calibration, tmp_path, sshd):
    from workbench.runners.board_ssh import SshBoardRunner

    return SshBoardRunner(model, BuildConfig(), calibration, sshd.board())


BACKENDS = {
    "float": _float,
    "snapshot": _snapshot,
    "mark-all": _mark_all,
    "emulator": _emulator,
    "ssh-board": _ssh_board,
}
LABELS = {"float": "float", "snapshot": "simulator", "mark-all": "simulator", "emulator": "emulator"}


@pytest.mark.parametrize("name", BACKENDS)
def test_every_backend_keeps_the_contract(name, tiny_models, small_set, tmp_path, request):
    sshd = request.getfixturevalue("sshd") if name == "ssh-board" else None
    model, calibration = tiny_models[MODEL], small_set.head(2)
    row = calibration.rows[0]
    with BACKENDS[name](model, calibration, tmp_path, sshd) as runner:
        assert isinstance(runner, Runner)
        assert runner.backend == LABELS.get(name, "board:virtual")
        tensors = runner.run(row)
        assert tensors and all(isinstance(v, np.ndarray) for v in tensors.values())
        outputs = runner.outputs(row)
        assert list(outputs) == list(model.outputs)
        shapes = {t.name: tuple(t.shape) for t in model.tensors}
        for name_, value in outputs.items():
            assert value.size == int(np.prod(shapes[name_]))
            assert np.isfinite(value).all()
    runner.close()  # idempotent


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
