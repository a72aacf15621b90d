"""AdbBoardRunner: per-layer tensors from a real board through the toolkit's own remote
connection (adb + rknn_server on the board). Needs a real Rockchip board: nothing here can
run on a PC alone (see README, "What runs where"); the board doctor finds what is missing.

- mode "snapshot": ``accuracy_analysis(target=..., device_id=...)``; the toolkit pulls the
  board's dumps into ``runtime/`` and adds runtime ``entire`` / ``single_sim`` columns;
- mode "mark-all": the mark-all model run with ``inference()`` after
  ``init_runtime(target=..., device_id=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.board.config import check_serial
from workbench.board.outputs import parse_eval_memory, parse_eval_perf, parse_sdk_version
from workbench.datasets import CalibrationSet
from workbench.errors import BoardError, ToolkitError
from workbench.model import OnnxModel
from workbench.rknn.build import build
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession, clean_log
from workbench.rknn.snapshot import Snapshot, analyse
from workbench.runners._toolkit import ToolkitRunner
from workbench.runners.markall import build_marked, infer_row, match_outputs


class AdbBoardRunner(ToolkitRunner):
    """Run ``model`` on the board ``device_id`` (an adb serial or IP:5555)."""

    def __init__(
        self,
        model: OnnxModel,
        config: BuildConfig,
        calibration: CalibrationSet,
        device_id: str,
        *,
        mode: str = "mark-all",
        timeout: float | None = 1800,
        outputs_only: bool = False,
        name: str | None = None,
    ):
        # init_runtime hands device_id to a shell: only a plain serial may reach it.
        self.device_id = check_serial(device_id, "device_id")
        self.mode, self.outputs_only = mode, outputs_only
        self.backend = f"board:{name or device_id}"  #: the boards.toml name when opened by name
        super().__init__(model, config, calibration, timeout=timeout)

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        if self.mode == "mark-all":
            self.output_names, _, self.build_log = build_marked(
                self.session, model, config, calibration, outputs_only=self.outputs_only
            )
        else:
            build(self.session, model, config, calibration)
        self.session.call("init_runtime", target=config.target_platform, device_id=self.device_id)

    def analyse(self, row: Sequence[Path]) -> Snapshot:
        """Simulator and board tensors plus the toolkit's error table (with runtime columns)."""
        return analyse(self.session, row, target=self.config.target_platform, device_id=self.device_id)

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """One sample's tensors from the board. A toolkit failure here is the board's (the
        model built and the runtime started): BoardError, so callers keep the samples done."""
        try:
            if self.mode == "snapshot":
                return self.analyse(row).runtime
            arrays = infer_row(self.session, self.model, self.config, row)
        except ToolkitError as err:
            raise BoardError(f"{self.backend}: {err}") from err
        return match_outputs(self.output_names, arrays, self.build_log, self.model)

    def sdk_version(self) -> dict[str, str]:
        """Versions of librknn_api, rknn_server and librknnrt on the board."""
        _, log = self.session.call("board_report", what="get_sdk_version")
        return parse_sdk_version(clean_log(log))

    def perf(self) -> tuple[pd.DataFrame, int | None]:
        """eval_perf(): per-layer time on the board (µs) and the total."""
        _, log = self.session.call("board_report", what="eval_perf")
        return parse_eval_perf(clean_log(log))

    def memory(self) -> dict[str, float]:
        """eval_memory(): total and model memory in MiB."""
        _, log = self.session.call("board_report", what="eval_memory")
        return parse_eval_memory(clean_log(log))


def list_boards() -> list[str]:
    """Serials of the boards the toolkit sees over adb (USB and IP:5555)."""
    with ToolkitSession(timeout=60) as session:
        result, _ = session.call("list_devices")
    return result["adb"]
