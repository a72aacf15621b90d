"""A virtual board: OpenSSH's sshd on 127.0.0.1 with throwaway keys, and this PC's Python
(with the toolkit's simulator) standing in for the board's NPU.

It exercises everything on the SSH path (host keys, key auth, transfers, the board-side
runner, cleanup) without a Rockchip board; only the NPU itself is replaced. Used by the
tests and by ``make demo`` when no board is configured.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench.board.config import Board
from workbench.errors import WorkbenchError


def sshd_path() -> str | None:
    """The OpenSSH server binary, if installed."""
    found = shutil.which("sshd") or "/usr/sbin/sshd"
    return found if Path(found).exists() else None


class VirtualBoard:
    """Context manager: ``with VirtualBoard() as board: ...`` gives a Board to use over SSH."""

    def __init__(self, platform: str = "rk3588", folder: str | Path | None = None):
        if sshd_path() is None:
            raise WorkbenchError(
                "The virtual board needs OpenSSH's server: apt-get install openssh-server "
                "(`make test` installs it when run as root)."
            )
        self.platform = platform
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="rknn-wb-vboard-"))
        self._owns = folder is None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Board:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
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
        with open(self.folder / "sshd.log", "w") as log:
            self.process = subprocess.Popen(
                [sshd_path(), "-D", "-e", "-f", str(self.folder / "sshd_config")], stderr=log
            )
        if not _wait_for(self.port, self.process):
            self.stop()
            raise WorkbenchError(f"sshd did not start: {(self.folder / 'sshd.log').read_text()[-500:]}")
        key_type, key = (self.folder / "host_key.pub").read_text().split()[:2]
        (self.folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {key_type} {key}\n")
        return Board(
            name="virtual",
            transport="ssh",
            platform=self.platform,
            host="127.0.0.1",
            port=self.port,
            user=getpass.getuser(),
            identity=str(self.folder / "client_key"),
            known_hosts=str(self.folder / "known_hosts"),
            python=sys.executable,
            virtual=True,
        )

    def stop(self) -> None:
        """Stop sshd (the board 'goes away'); safe to call twice."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._owns:
            shutil.rmtree(self.folder, ignore_errors=True)


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
