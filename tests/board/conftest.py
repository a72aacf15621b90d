"""A real OpenSSH sshd on 127.0.0.1 with throwaway keys (workbench.board.virtual)."""

from __future__ import annotations

import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.board.config import Board
from workbench.board.virtual import VirtualBoard, sshd_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A running virtual board; ``board(**changes)`` gives its Board with fields changed."""

    def __init__(self, folder: Path):
        if sshd_path() is None:
            pytest.skip("OpenSSH server not installed (`make test` installs openssh-server as root)")
        self.virtual = VirtualBoard(folder=folder)
        self._board = self.virtual.__enter__()
        self.port = self._board.port

    def board(self, **changes) -> Board:
        return replace(self._board, **changes)

    def stop(self) -> None:
        self.virtual.__exit__(None, None, None)


def start_sshd(folder: Path) -> Sshd:
    return Sshd(folder)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def fake_adb_board(tmp_path) -> Board:
    """An adb-shell board behind a fake adb (tests/board/fake_adb_device.py): this PC with the
    toolkit's simulator stands in for the board, as the virtual board does over SSH."""
    adb = tmp_path / "adb"
    device = Path(__file__).with_name("fake_adb_device.py")
    adb.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{device}" "$@"\n')
    adb.chmod(0o755)
    (tmp_path / "device").mkdir()
    return Board(
        name="fake-adb", transport="adb-shell", platform="rk3588", serial="fake-1", adb=str(adb),
        python=sys.executable, virtual=True, workdir=str(tmp_path / "device"),
    )  # fmt: skip
