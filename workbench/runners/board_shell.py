"""ShellBoardRunner: the quantized model's layer boundaries from a board reached through a
shell transport: OpenSSH (``board.ssh.SshTransport``) or adb (``board.adb.AdbTransport``).

On the PC: the mark-all model is built and exported as .rknn. On the board: a small runner
(numpy + rknn-toolkit-lite2, ``workbench/board/board_runner.py``) runs it on each sample and
writes the outputs as .npz, which come back over the same connection. The board's work
folder is removed at the end. A virtual board gets what it needs to rebuild the model
(``board.virtual.rebuild_payload``); everything else on the path is the same.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from workbench.board.adb import AdbTransport
from workbench.board.config import Board
from workbench.board.ssh import SshTransport
from workbench.board.virtual import check_rebuildable, rebuild_payload
from workbench.datasets import CalibrationSet
from workbench.lifecycle import forget, remove_tree, temp_folder
from workbench.model import OnnxModel
from workbench.preprocess import load_row
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.runners.base import BaseRunner, Measurement
from workbench.runners.markall import build_marked, marked_model, match_outputs

RUNNER_SCRIPT = Path(__file__).resolve().parents[1] / "board" / "board_runner.py"
#: boards.toml transport -> the shell transport class
SHELL_TRANSPORTS = {"ssh": SshTransport, "adb-shell": AdbTransport}


class ShellBoardRunner(BaseRunner):
    """Mark-all runs of ``model`` on ``board``; use as a context manager.

    Args:
        batch: samples per remote run (outputs of one batch are kept on the board until pulled).
    """

    def __init__(
        self,
        model: OnnxModel,
        config: BuildConfig,
        calibration: CalibrationSet,
        board: Board,
        *,
        batch: int = 4,
        connect_timeout: float = 10,
        step_timeout: float = 900,
        outputs_only: bool = False,
    ):
        self.model, self.config, self.board, self.batch = model, config, board, max(1, batch)
        self.outputs_only = outputs_only
        self.backend = f"board:{board.name}"
        self.transport = SHELL_TRANSPORTS[board.transport](board, connect_timeout, step_timeout)
        self.local = temp_folder("rknn-wb-board-")
        self.remote: str | None = None
        try:
            self._prepare(calibration)
        except BaseException:
            self.close()
            raise

    def _prepare(self, calibration: CalibrationSet) -> None:
        if self.board.virtual:
            check_rebuildable(self.config)
        job = self.local / "job"
        job.mkdir()
        with ToolkitSession(timeout=1800) as session:
            self.output_names, _, self.build_log = build_marked(
                session,
                self.model,
                self.config,
                calibration,
                rknn_path=job / "model.rknn",
                outputs_only=self.outputs_only,
            )
        shutil.copy(RUNNER_SCRIPT, job / "board_runner.py")
        settings = {"inputs": list(self.model.inputs), "virtual": self.board.virtual}
        if self.board.virtual:
            settings |= rebuild_payload(
                job, marked_model(self.model, self.output_names), self.config, calibration
            )
        self.settings = settings
        self.remote = self.transport.make_temp_dir()
        self.transport.push(job, self.remote)

    def run_many(
        self, rows: Sequence[Sequence[Path]], on_sample: Callable[[int], None] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Boundary tensors of each sample, in order; a board failure raises BoardError
        after the samples already returned (the caller keeps them, marked partial)."""
        for start in range(0, len(rows), self.batch):
            chunk = rows[start : start + self.batch]
            names = self._push_samples(chunk, start)
            q = self.transport
            script = f"{self.remote}/board_runner.py"
            q.run(
                f"cd {shlex.quote(self.remote)} && {shlex.quote(self.board.python)} {shlex.quote(script)} .",
                what=f"running samples {start}-{start + len(chunk) - 1} on the board",
            )
            outputs = [f"out_{i}.npz" for i in range(len(chunk))]
            batch_dir = self.local / f"batch_{start}"
            batch_dir.mkdir()
            q.pull(self.remote, outputs, batch_dir)
            q.run(
                f"cd {shlex.quote(self.remote)} && rm -f {' '.join(outputs + names)}", what="cleaning outputs"
            )
            for i, out in enumerate(outputs):
                with np.load(batch_dir / out) as data:
                    arrays = [data[f"arr_{k}"] for k in range(len(data.files))]
                yield match_outputs(self.output_names, arrays, self.build_log, self.model)
                if on_sample:
                    on_sample(start + i + 1)
            shutil.rmtree(batch_dir, ignore_errors=True)

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """One sample's tensors (one remote run; ``run_many`` batches several)."""
        (tensors,) = self.run_many([row])  # drained, so the batch's files are cleaned up
        return tensors

    def measure_many(self, rows: Sequence[Sequence[Path]]) -> Iterator[Measurement]:
        for tensors in self.run_many(rows):
            yield Measurement(tensors)

    def _push_samples(self, chunk, start: int) -> list[str]:
        stage = self.local / "stage"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        names = []
        for k, row in enumerate(chunk):
            arrays = load_row(row, self.model.inputs, self.config.preprocess, normalise=False)
            names.append(f"sample_{k}.npz")
            np.savez(stage / names[-1], **arrays)
        job = self.settings | {"samples": names}
        (stage / "job.json").write_text(json.dumps(job))
        self.transport.push(stage, self.remote)
        return names

    def close(self) -> None:
        """Remove the board's work folder, then the local one (even if the first fails)."""
        try:
            if self.remote:
                remote, self.remote = self.remote, None
                self.transport.remove(remote)
        finally:
            remove_tree(self.local)
            forget(self.local)
