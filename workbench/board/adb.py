"""AdbTransport: the shell transport over adb (``transport = "adb-shell"`` in boards.toml).

For a board reached over USB or adb-over-TCP with no rknn_server: files go with ``adb
push`` / ``adb pull`` (as one tar each way), commands with ``adb shell``, which returns the
board's exit code. The board runs the same ``board_runner.py`` as over SSH (numpy and
rknn-toolkit-lite2 on the board). Every value is an argument list item; the board's shell
commands are built with shlex.quote.
"""

from __future__ import annotations

import shlex
import tarfile
import tempfile
from pathlib import Path

from workbench.board.config import Board, check_serial
from workbench.board.doctor import toolkit_adb
from workbench.board.ssh import RemoteShell
from workbench.errors import BoardError


class AdbTransport(RemoteShell):
    """Run commands on and move files to/from one board over adb (``board.adb``: the adb
    binary, the toolkit's own by default)."""

    def __init__(self, board: Board, connect_timeout: float = 10, step_timeout: float = 600):
        if not board.serial:
            raise BoardError(f'Board {board.name!r} ({board.transport}) needs serial = "..." in boards.toml.')
        self.board = board
        self.serial = check_serial(board.serial, f"board {board.name!r}: serial")
        self.adb = str(Path(board.adb).expanduser()) if board.adb else str(toolkit_adb())
        self.step_timeout = step_timeout

    def _adb(self, *args: str, stdout=None, timeout: float | None = None, what: str) -> bytes:
        done = self._execute([self.adb, "-s", self.serial, *args], what=what, timeout=timeout, stdout=stdout)
        if done.returncode != 0:
            said = done.stderr.decode(errors="replace").strip()[-600:]
            raise BoardError(
                f"{self.board.name} ({self.serial}): {what} failed (exit {done.returncode}). Fix: check "
                f"that `adb -s {self.serial} shell` works (rknn-workbench board doctor {self.board.name}).\n"
                f"The board said: {said}"
            )
        return done.stdout or b""

    def run(self, command: str, *, stdout=None, timeout: float | None = None, what: str = "command") -> bytes:
        """Run ``command`` in the board's shell; its stdout (to the file ``stdout`` when given)."""
        return self._adb("shell", command, stdout=stdout, timeout=timeout, what=what)

    def push(self, local_dir: Path, remote_dir: str) -> None:
        """Copy the files of ``local_dir`` into ``remote_dir`` (one tar, unpacked there)."""
        q, tar_name = shlex.quote(remote_dir), f"{remote_dir}/.push.tar"
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "push.tar"
            with tarfile.open(bundle, mode="w") as tar:
                for path in sorted(Path(local_dir).iterdir()):
                    tar.add(path, arcname=path.name)
            self.run(f"mkdir -p {q}", what="creating a work folder")
            self._adb("push", str(bundle), tar_name, what="copying files to the board")
        t = shlex.quote(tar_name)
        self.run(f"tar -C {q} -xf {t} && rm -f {t}", what="unpacking files on the board")

    def pull(self, remote_dir: str, names: list[str], local_dir: Path) -> None:
        """Copy ``names`` from ``remote_dir`` into ``local_dir``."""
        q, tar_name = shlex.quote(remote_dir), f"{remote_dir}/.pull.tar"
        files = " ".join(shlex.quote(n) for n in names)
        self.run(f"tar -C {q} -cf {shlex.quote(tar_name)} {files}", what="packing results on the board")
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "pull.tar"
            self._adb("pull", tar_name, str(bundle), what="copying results from the board")
            with tarfile.open(bundle, mode="r") as tar:
                tar.extractall(local_dir, filter="data")
        self.run(f"rm -f {shlex.quote(tar_name)}", what="cleaning up")
