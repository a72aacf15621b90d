"""The part every toolkit-backed runner shares: a worker session, a build in the
constructor that never leaves a worker behind when it fails, and close()."""

from __future__ import annotations

from pathlib import Path

from workbench.datasets import CalibrationSet
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.runners.base import BaseRunner


class ToolkitRunner(BaseRunner):
    """Base of the simulator and board runners: subclasses implement ``_build``."""

    backend = "simulator"

    def __init__(
        self,
        model: OnnxModel,
        config: BuildConfig,
        calibration: CalibrationSet,
        workdir: str | Path | None = None,
        timeout: float | None = None,
    ):
        self.model = model
        self.config = config
        self.session = ToolkitSession(workdir, timeout=timeout)
        self.workdir = self.session.workdir
        try:
            self._build(model, config, calibration)
        except BaseException:  # a failed build must not leave a worker process behind
            self.session.close()
            raise

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.session.close()
