"""SimulatorRunner: the quantized model's per-layer tensors from the toolkit's simulator.

Snapshot mode: one ``accuracy_analysis()`` per sample in the toolkit worker. The dump
folder is read and deleted right after each sample, so disk use stays at one sample.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.datasets import CalibrationSet
from workbench.model import OnnxModel
from workbench.rknn.build import build
from workbench.rknn.config import BuildConfig
from workbench.rknn.snapshot import Snapshot, read_snapshot
from workbench.runners._toolkit import ToolkitRunner


class SimulatorRunner(ToolkitRunner):
    """Build ``model`` with ``config`` on ``calibration`` and run samples on the simulator.

    The toolkit runs in a child process (see ToolkitSession): a toolkit crash raises
    ToolkitError here and leaves the caller alive. Close it, or use it as a context manager.
    """

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        self.build_log = build(self.session, model, config, calibration)
        self.last_snapshot: Snapshot | None = None

    def analyse(self, row: Sequence[Path]) -> Snapshot:
        """The toolkit's float and quantized tensors and error table for one sample."""
        out = self.workdir / "snapshot"
        shutil.rmtree(out, ignore_errors=True)
        try:
            self.session.call("accuracy_analysis", inputs=[str(p) for p in row], output_dir=str(out))
            return read_snapshot(out)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        self.last_snapshot = self.analyse(row)
        return self.last_snapshot.simulator
