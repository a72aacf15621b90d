"""A virtual board: OpenSSH's sshd on 127.0.0.1 with throwaway keys, and this PC's Python
(with the toolkit's simulator) standing in for the board's NPU.

It exercises everything on the SSH path (host keys, key auth, transfers, the board-side
runner, cleanup) without a Rockchip board; only the NPU itself is replaced. Used by the
tests and by ``make demo`` when no board is configured.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from workbench.board.config import Board, get_board, load_boards
from workbench.errors import ConfigError, WorkbenchError
from workbench.lifecycle import die_with_parent, forget, remove_tree, temp_folder, watchdog_pipe


def sshd_path() -> str | None:
    """The OpenSSH server binary, if installed."""
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if Path(found).exists() else None


VIRTUAL = "virtual"  #: the board name that starts a virtual board when boards.toml has none by that name


class VirtualBoard:
    """Context manager: ``with VirtualBoard() as board: ...`` gives a Board to use over SSH.

    sshd runs under a guard process (board/_sshd_guard.py) that dies with the workbench: if
    this process is killed (even by SIGKILL), the guard stops sshd and everything it runs and
    deletes the keys. The board's work folders are made inside the virtual board's folder,
    so they go with it.
    """

    def __init__(self, platform: str = "rk3588", folder: str | Path | None = None):
        if sshd_path() is None:
            raise WorkbenchError(
                "The virtual board needs OpenSSH's server: apt-get install openssh-server "
                "(`make test` installs it when run as root)."
            )
        self.platform = platform
        self._owns = folder is None
        self.folder = Path(folder) if folder else temp_folder("rknn-wb-vboard-")
        self.process: subprocess.Popen | None = None
        self._watch: int | None = None

    def __enter__(self) -> Board:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> Board:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        (self.folder / "board").mkdir(exist_ok=True)
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.folder / key)], check=True
            )
        (self.folder / "authorized_keys").write_text((self.folder / "client_key.pub").read_text())
        self.port = _free_port()
        (self.folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.folder}/host_key\n"
            f"AuthorizedKeysFile {self.folder}/authorized_keys\nPidFile {self.folder}/sshd.pid\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        watch_read, self._watch = watchdog_pipe()
        sshd = [sshd_path(), "-D", "-e", "-f", str(self.folder / "sshd_config")]
        guard = [sys.executable, "-m", "workbench.board._sshd_guard", str(self.folder), str(int(self._owns))]
        try:
            with open(self.folder / "sshd.log", "w") as log:
                self.process = subprocess.Popen(
                    [*guard, "--", *sshd],
                    stdin=watch_read,
                    stderr=log,
                    start_new_session=True,  # its own process group: Ctrl-C reaches only us
                    preexec_fn=die_with_parent(signal.SIGTERM),  # the guard cleans up on SIGTERM
                )
        finally:
            os.close(watch_read)
        if not _wait_for(self.port, self.process):
            raise WorkbenchError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-500:]}")
        key_type, key = (self.folder / "host_key.pub").read_text().split()[:2]
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key_type} {key}\n")
        return Board(
            name=VIRTUAL,
            transport="ssh",
            platform=self.platform,
            host="127.0.0.1",
            port=self.port,
            user=getpass.getuser(),
            identity=str(self.folder / "client_key"),
            known_hosts=str(self.folder / "known_hosts"),
            python=sys.executable,
            virtual=True,
            workdir=str(self.folder / "board"),
        )

    def stop(self) -> None:
        """Stop sshd and everything it runs, and delete the keys (the board 'goes away');
        safe to call twice."""
        if self._watch is not None:
            os.close(self._watch)  # the guard sees end-of-file: it cleans up and exits
            self._watch = None
        if self.process and self.process.poll() is None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.process:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of its group
            self.process.wait()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._owns:
                remove_tree(self.folder)
                forget(self.folder)


def check_rebuildable(config) -> None:
    """Refuse a hybrid or auto-hybrid model, which the virtual board's plain rebuild cannot
    stand for (ConfigError), before anything is built."""
    if config.float_layers or config.auto_hybrid:
        raise ConfigError(
            "The virtual board rebuilds the model with a plain build, so it cannot stand in for a "
            f"{config.variant} model: compare that one on the simulator or a real board."
        )


def rebuild_payload(job: Path, marked, config, calibration) -> dict:
    """What a virtual board needs besides the .rknn, written into ``job``: the marked ONNX
    model, the calibration files and the build settings. The simulator cannot run a .rknn
    loaded from a file, so the board side rebuilds the model (board_runner.py, ``virtual``).
    Returns the settings to add to the board's job.json.

    Raises:
        ConfigError: a hybrid or auto-hybrid model, which a plain rebuild cannot stand for.
    """
    check_rebuildable(config)
    marked.save(job / "marked.onnx")
    lines = []
    for i, row in enumerate(calibration.rows):
        names = [f"calib_{i}_{j}{p.suffix}" for j, p in enumerate(row)]
        for name, path in zip(names, row):
            shutil.copy(path, job / name)
        lines.append(" ".join(names))
    (job / "dataset.txt").write_text("\n".join(lines) + "\n")
    return {"config": config.toolkit_kwargs(marked.inputs), "do_quantization": config.do_quantization}


@contextlib.contextmanager
def board_named(name: str, platform: str = "rk3588") -> Iterator[Board]:
    """The board ``name`` from boards.toml; for "virtual", when no board has that name, a
    virtual board started for the block and stopped after it."""
    if name == VIRTUAL and name not in load_boards():
        with VirtualBoard(platform) as board:
            yield board
        return
    yield get_board(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen) -> bool:
    for _ in range(100):
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False
