"""Boards by name, from a small TOML file, selectable in notebooks and the CLI.

# ~/.config/rknn-workbench/boards.toml  (or $RKNN_WORKBENCH_BOARDS)
[boards.lab-rk3588]
transport = "adb"
platform = "rk3588"
serial = "192.168.1.20:5555"

[boards.desk]
transport = "ssh"
platform = "rk3588"
host = "rock5b.local"        # ~/.ssh/config and known_hosts apply
user = "root"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.rknn.config import PLATFORMS

TRANSPORTS = ("adb", "ssh")


@dataclass(frozen=True)
class Board:
    """One board: how to reach it and what it is."""

    name: str
    transport: str  #: "adb" (the toolkit's remote connection) or "ssh"
    platform: str  #: target_platform, e.g. rk3588
    serial: str | None = None  #: adb serial or IP:5555 (adb)
    host: str | None = None  #: host name or address (ssh)
    user: str | None = None  #: ssh user (default: ~/.ssh/config or the local user)
    port: int | None = None  #: ssh port (default 22 or ~/.ssh/config)
    identity: str | None = None  #: ssh private key (default: agent / ~/.ssh/config)
    known_hosts: str | None = None  #: ssh known_hosts file (default: ~/.ssh/known_hosts)
    python: str = "python3"  #: Python on the board (with numpy and rknn-toolkit-lite2)
    virtual: bool = False  #: a PC standing in for the board: runs the toolkit's simulator
    workdir: str = "/tmp"  #: where work folders are made on the board (ssh)


def boards_file() -> Path:
    default = (
        Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "rknn-workbench" / "boards.toml"
    )
    return Path(os.environ.get("RKNN_WORKBENCH_BOARDS", default))


def load_boards(path: str | Path | None = None) -> dict[str, Board]:
    """Every board of the file (an empty dict when there is no file)."""
    path = Path(path) if path else boards_file()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{path} is not valid TOML: {err}") from None
    known = {f.name for f in fields(Board)} - {"name"}
    boards = {}
    for name, entry in (data.get("boards") or {}).items():
        where = f"{path} [boards.{name}]"
        if not isinstance(entry, dict):
            raise WorkbenchError(f"{where} must be a table of settings.")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise WorkbenchError(f"{where}: unknown settings {unknown}; known: {sorted(known)}.")
        board = Board(name=name, **entry)
        _validate(board, where)
        boards[name] = board
    return boards


def get_board(name: str, path: str | Path | None = None) -> Board:
    """The board called ``name``; the error lists the configured ones."""
    boards = load_boards(path)
    if name not in boards:
        listed = ", ".join(boards) or f"none (create {Path(path) if path else boards_file()})"
        raise WorkbenchError(f"No board {name!r}. Configured boards: {listed}.")
    return boards[name]


def _validate(board: Board, where: str) -> None:
    if board.transport not in TRANSPORTS:
        raise WorkbenchError(f"{where}: transport must be one of {TRANSPORTS}, not {board.transport!r}.")
    if board.platform not in PLATFORMS:
        raise WorkbenchError(f"{where}: unknown platform {board.platform!r}; valid: {', '.join(PLATFORMS)}.")
    if board.transport == "ssh" and not board.host:
        raise WorkbenchError(f'{where}: an ssh board needs host = "...".')
    if board.port is not None and not (isinstance(board.port, int) and 0 < board.port < 65536):
        raise WorkbenchError(f"{where}: port must be a number 1-65535.")
