"""The adb path with the toolkit's real adb and no board attached (the board itself cannot
exist here): an unplugged board is a clear ToolkitError, the log is kept, nothing leaks."""

import pytest

from workbench.board.doctor import Adb
from workbench.errors import ToolkitError
from workbench.rknn.config import BuildConfig
from workbench.runners.board_adb import AdbBoardRunner

pytestmark = pytest.mark.toolkit


def test_unplugged_board(tiny_models, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    try:
        with pytest.raises(ToolkitError, match="not found") as err:
            AdbBoardRunner(
                tiny_models["conv-relu-sigmoid"], BuildConfig(), small_set, "192.0.2.1:5555", timeout=300
            )
        log = err.value.log_path
        assert log.is_file() and log.is_relative_to(tmp_path / "cache" / "logs")
    finally:
        Adb().run("kill-server")  # the toolkit started its adb server; leave nothing running


def test_board_costs_without_a_board_say_what_to_run(tiny_models, small_set, tmp_path, monkeypatch):
    """eval_perf per variant needs a real board: without one, the toolkit's error comes
    back with the pointer to the board doctor (the timing itself runs on a board only)."""
    from workbench.fix.before_after import board_costs, variant_configs

    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    configs = variant_configs(BuildConfig(), auto_hybrid_cos_thresh=None)
    try:
        with pytest.raises(ToolkitError, match="board doctor"):
            board_costs(tiny_models["conv-relu-sigmoid"], configs, small_set, "192.0.2.1:5555")
    finally:
        Adb().run("kill-server")


def test_a_toolkit_failure_mid_run_is_the_boards(monkeypatch):
    """Once built and connected, a failing inference() is a BoardError: callers keep the
    samples done (compute_divergence's partial run)."""
    import workbench.runners.board_adb as board_adb
    from workbench.errors import BoardError

    def unplugged(*args, **kwargs):
        raise ToolkitError("E inference: ERROR_PIPE")

    monkeypatch.setattr(board_adb, "infer_row", unplugged)
    runner = AdbBoardRunner.__new__(AdbBoardRunner)  # as after a build and init_runtime
    runner.mode, runner.backend, runner.session, runner.model, runner.config = (
        "mark-all",
        "board:lab",
        *[None] * 3,
    )
    with pytest.raises(BoardError, match="board:lab: E inference: ERROR_PIPE"):
        runner.run([])
