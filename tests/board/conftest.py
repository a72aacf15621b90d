"""A real OpenSSH sshd on 127.0.0.1 with throwaway keys: the transport to a virtual board."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from workbench.board.config import Board


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    folder: Path
    process: subprocess.Popen
    known_hosts: Path
    client_key: Path

    def board(self, **changes) -> Board:
        settings = {
            "name": "virtual",
            "transport": "ssh",
            "platform": "rk3588",
            "host": "127.0.0.1",
            "port": self.port,
            "user": getpass.getuser(),
            "identity": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "python": sys.executable,
            "virtual": True,
        }
        return Board(**(settings | changes))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> Sshd:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        pytest.skip("OpenSSH server not installed (`make test` installs openssh-server as root)")
    folder.mkdir(parents=True, exist_ok=True)
    _keygen(folder / "host_key")
    _keygen(folder / "client_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder}/host_key\n"
        f"AuthorizedKeysFile {folder}/authorized_keys\nPidFile {folder}/sshd.pid\nUsePAM no\n"
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=open(folder / "sshd.log", "w")
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"sshd did not start: {(folder / 'sshd.log').read_text()}")
    key_type, key = (folder / "host_key.pub").read_text().split()[:2]
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return Sshd(port, folder, process, known, folder / "client_key")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
