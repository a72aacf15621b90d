"""SSH transport to a board: OpenSSH's own client, so ~/.ssh/config, known_hosts, keys
and the agent all apply as the user set them up.

Strict host-key checking and batch mode (never a password prompt) are on by default;
every step has a timeout. Local arguments are lists (no local shell), the host comes after
``--`` and is checked against a strict pattern; paths sent to the board's shell are quoted
with shlex.quote. Files move as tar streams over the connection.
"""

from __future__ import annotations

import shlex
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO

from workbench.board.config import Board, check_host
from workbench.errors import BoardError

_DIAGNOSES = (
    (
        "Host key verification failed",
        "the board's host key is unknown or has changed",
        "verify the board's fingerprint, then add it: ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts",
    ),
    (
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "the board's host key has changed",
        "if the board was reinstalled, remove the old key: ssh-keygen -R HOST",
    ),
    (
        "Permission denied",
        "authentication failed",
        "check user, identity file or ssh-agent for this board (ssh -v HOST shows what is tried)",
    ),
    (
        "Connection refused",
        "nothing listens for SSH there",
        "is sshd running on the board, and is the port right?",
    ),
    (
        "timed out",
        "the board did not answer in time",
        "check the address and the network, or raise the timeout",
    ),
    ("Could not resolve hostname", "the host name is unknown", "check the host name or use an IP address"),
    ("No space left on device", "the board's disk is full", "free space on the board (df -h) and retry"),
    (
        "Connection closed",
        "the connection was lost",
        "the board rebooted or sshd stopped; check it and retry",
    ),
    ("Connection reset", "the connection was lost", "the board rebooted or sshd stopped; check it and retry"),
    ("Broken pipe", "the connection was lost", "the board rebooted or sshd stopped; check it and retry"),
)


class RemoteShell:
    """What every shell transport shares: work folders made and removed through ``run``.
    A transport adds ``run``, ``push`` and ``pull``; the board runner knows only these."""

    board: Board
    step_timeout: float

    def run(self, command: str, *, timeout: float | None = None, what: str = "command", **io) -> bytes:
        raise NotImplementedError

    def _execute(
        self, cmd: list[str], *, what: str, timeout: float | None = None, stdout=None, stdin=None
    ) -> subprocess.CompletedProcess:
        """``cmd`` run with a timeout (stdin: bytes or a file), stdout piped unless a file is
        given; a hang or a missing binary becomes a BoardError that says what to do."""
        feed = {"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin or subprocess.DEVNULL}
        try:
            return subprocess.run(
                cmd, **feed, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                timeout=timeout or self.step_timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BoardError(
                f"{self.board.name}: {what} took longer than {timeout or self.step_timeout:.0f} s and was "
                "stopped. Check the board (is it busy or hung?) or raise the step timeout."
            ) from None
        except OSError as err:
            raise BoardError(
                f"{self.board.name}: cannot run {cmd[0]}: {err}. Fix: install it (openssh-client for "
                'ssh; for adb, or set adb = "/path/to/adb" for this board in boards.toml).'
            ) from None

    def make_temp_dir(self) -> str:
        """A new private folder on the board."""
        template = shlex.quote(f"{self.board.workdir.rstrip('/')}/rknn-wb-board-XXXXXX")
        return self.run(f"mktemp -d {template}", what="creating a work folder").decode().strip()

    def remove(self, remote_dir: str) -> None:
        """Delete a work folder on the board (best effort: the board may be gone)."""
        if not Path(remote_dir).name.startswith("rknn-wb-board-"):
            raise BoardError(f"refusing to delete {remote_dir!r}: not a workbench folder")
        try:
            self.run(f"rm -rf {shlex.quote(remote_dir)}", timeout=30, what="cleaning up")
        except BoardError:
            pass


class SshTransport(RemoteShell):
    """Run commands on and move files to/from one board over SSH."""

    def __init__(self, board: Board, connect_timeout: float = 10, step_timeout: float = 600):
        if board.transport != "ssh" or not board.host:
            raise BoardError(f"Board {board.name!r} is not an ssh board (transport {board.transport!r}).")
        self.board = board
        self.connect_timeout = connect_timeout
        self.step_timeout = step_timeout

    def _base(self) -> list[str]:
        b = self.board
        cmd = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={int(self.connect_timeout)}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ]
        if b.port:
            cmd += ["-p", str(b.port)]
        if b.user:
            cmd += ["-l", b.user]
        if b.identity:
            cmd += ["-i", str(Path(b.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if b.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={Path(b.known_hosts).expanduser()}"]
        # "--" ends ssh's options: nothing after it (the host, then the remote command) can be
        # read as an option such as -oProxyCommand=..., whatever boards.toml holds.
        return [*cmd, "--", check_host(b.host, f"board {b.name!r}: host")]

    def run(
        self,
        command: str,
        *,
        stdin: bytes | BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        timeout: float | None = None,
        what: str = "command",
    ) -> bytes:
        """Run ``command`` in the board's shell; its stdout (written to the file ``stdout``
        instead when given: large transfers are streamed, never held in memory; ``stdin``
        likewise may be bytes or a file). BoardError with a diagnosis on failure
        (connection, authentication, host key, disk, non-zero exit)."""
        done = self._execute([*self._base(), command], what=what, timeout=timeout, stdout=stdout, stdin=stdin)
        if done.returncode != 0:
            raise BoardError(self._diagnose(done.returncode, done.stderr.decode(errors="replace"), what))
        return done.stdout or b""

    def _diagnose(self, code: int, stderr: str, what: str) -> str:
        b = self.board
        for needle, problem, fix in _DIAGNOSES:
            if needle in stderr:
                fix = fix.replace("HOST", b.host).replace("PORT", str(b.port or 22))
                said = stderr.strip()[-400:]
                return f"{b.name} ({b.host}): {what} failed: {problem}. Fix: {fix}.\nssh said: {said}"
        return f"{b.name} ({b.host}): {what} failed (exit {code}).\nThe board said: {stderr.strip()[-600:]}"

    def push(self, local_dir: Path, remote_dir: str) -> None:
        """Copy the files of ``local_dir`` into ``remote_dir`` (a tar streamed from a
        temporary file: a large model never sits in memory)."""
        q = shlex.quote(remote_dir)
        with tempfile.TemporaryFile() as buffer:
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for path in sorted(Path(local_dir).iterdir()):
                    tar.add(path, arcname=path.name)
            buffer.seek(0)
            self.run(f"mkdir -p {q} && tar -C {q} -xf -", stdin=buffer, what="copying files to the board")

    def pull(self, remote_dir: str, names: list[str], local_dir: Path) -> None:
        """Copy ``names`` from ``remote_dir`` into ``local_dir``."""
        q = shlex.quote(remote_dir)
        files = " ".join(shlex.quote(n) for n in names)
        with tempfile.TemporaryFile() as data:
            self.run(f"tar -C {q} -cf - {files}", stdout=data, what="copying results from the board")
            data.seek(0)
            with tarfile.open(fileobj=data, mode="r") as tar:
                tar.extractall(local_dir, filter="data")
