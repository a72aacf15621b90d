"""SimulatorRunner: the quantized model's per-layer tensors from the toolkit's simulator.

Snapshot mode (backend "snapshot"): one ``accuracy_analysis()`` per sample in the toolkit
worker (``rknn.snapshot.analyse``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.datasets import CalibrationSet
from workbench.model import OnnxModel
from workbench.rknn.build import build
from workbench.rknn.config import BuildConfig
from workbench.rknn.snapshot import Snapshot, analyse
from workbench.runners._toolkit import ToolkitRunner
from workbench.runners.base import Measurement


class SimulatorRunner(ToolkitRunner):
    """Build ``model`` with ``config`` on ``calibration`` and run samples on the simulator.

    The toolkit runs in a child process (see ToolkitSession): a toolkit crash raises
    ToolkitError here and leaves the caller alive. Close it, or use it as a context manager.
    """

    def __init__(self, *args, meta: dict | None = None, **kwargs):
        self._meta = meta or {}
        super().__init__(*args, **kwargs)

    @property
    def meta(self) -> dict:
        """What opened it recorded (a mark-all run that fell back to snapshot mode)."""
        return self._meta

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        self.build_log = build(self.session, model, config, calibration)

    def analyse(self, row: Sequence[Path]) -> Snapshot:
        """The toolkit's float and quantized tensors and error table for one sample."""
        return analyse(self.session, row)

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        return self.analyse(row).simulator

    def measure(self, row: Sequence[Path]) -> Measurement:
        return snapshot_measurement(self.analyse(row))


def snapshot_measurement(snap: Snapshot) -> Measurement:
    """A toolkit snapshot as a measurement: the simulator's tensors, its error table and
    its float dumps."""
    return Measurement(snap.simulator, {e.name: e for e in snap.errors}, snap.golden)


def open_snapshot(
    model, config, calibration, *, workdir=None, timeout=None, meta: dict | None = None, **_
) -> SimulatorRunner:
    """The registry's "snapshot" backend."""
    return SimulatorRunner(model, config, calibration, workdir=workdir, timeout=timeout, meta=meta)
