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

import ipaddress
import os
import re
import tomllib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

from workbench.errors import WorkbenchError, WorkbenchWarning
from workbench.rknn.config import PLATFORMS

#: "adb": the toolkit's own remote connection (adb + rknn_server on the board); "adb-shell":
#: files and commands over adb (board_runner.py with rknn-toolkit-lite2 on the board, as over
#: ssh); "ssh": the same over OpenSSH.
TRANSPORTS = ("adb", "adb-shell", "ssh")

# Values that reach a command line (adb -s, ssh, the toolkit's init_runtime, which runs the
# serial in a shell): strict patterns, so no value can be read as an option or shell code.
_SERIAL = re.compile(r"[A-Za-z0-9._:][A-Za-z0-9._:-]*")
_HOST_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"{_HOST_LABEL}(\.{_HOST_LABEL})*\.?")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # upper case too: some CI and domain users


@dataclass(frozen=True)
class Board:
    """One board: how to reach it and what it is."""

    name: str
    transport: str  #: "adb" (the toolkit's remote connection), "adb-shell" or "ssh"
    platform: str  #: target_platform, e.g. rk3588
    serial: str | None = None  #: adb serial or IP:5555 (adb, adb-shell)
    host: str | None = None  #: host name or address (ssh)
    user: str | None = None  #: ssh user (default: ~/.ssh/config or the local user)
    port: int | None = None  #: ssh port (default 22 or ~/.ssh/config)
    identity: str | None = None  #: ssh private key (default: agent / ~/.ssh/config)
    known_hosts: str | None = None  #: ssh known_hosts file (default: ~/.ssh/known_hosts)
    python: str = "python3"  #: Python on the board (with numpy and rknn-toolkit-lite2)
    virtual: bool = False  #: a PC standing in for the board: runs the toolkit's simulator
    workdir: str = "/tmp"  #: where work folders are made on the board (ssh, adb-shell)
    adb: str | None = None  #: the adb binary (adb-shell; default: the one bundled with the toolkit)

    def __post_init__(self) -> None:
        _validate(self, f"board {self.name!r}")


def boards_file() -> Path:
    default = (
        Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "rknn-workbench" / "boards.toml"
    )
    return Path(os.environ.get("RKNN_WORKBENCH_BOARDS", default))


def load_boards(path: str | Path | None = None) -> dict[str, Board]:
    """Every valid board of the file (an empty dict when there is no file).

    A board with a bad setting is left out with a WorkbenchWarning naming it, so one typo
    does not block the other boards; :func:`get_board` on its name raises that error.

    Raises:
        WorkbenchError: the file is not TOML, or its ``boards`` is not a table.
    """
    boards, problems = _read(Path(path) if path else boards_file())
    for problem in problems.values():
        warnings.warn(f"{problem} (this board is skipped)", WorkbenchWarning, stacklevel=2)
    return boards


def get_board(name: str, path: str | Path | None = None) -> Board:
    """The board called ``name``; the error lists the configured ones, or says what is
    wrong with this board's settings."""
    where = Path(path) if path else boards_file()
    boards, problems = _read(where)
    if name in problems:
        raise WorkbenchError(problems[name])
    if name not in boards:
        listed = ", ".join(boards) or f"none (create {where})"
        broken = f" Left out for bad settings: {', '.join(problems)}." if problems else ""
        raise WorkbenchError(f"No board {name!r}. Configured boards: {listed}.{broken}")
    return boards[name]


def _read(path: Path) -> tuple[dict[str, Board], dict[str, str]]:
    """The valid boards of ``path`` and, per bad board, what is wrong with it."""
    if not path.is_file():
        return {}, {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{path} is not valid TOML: {err}") from None
    tables = data.get("boards") or {}
    if not isinstance(tables, dict):
        raise WorkbenchError(
            f"{path}: boards must be a table of boards ([boards.NAME] sections), not {tables!r}."
        )
    known = {f.name for f in fields(Board)} - {"name"}
    boards, problems = {}, {}
    for name, entry in tables.items():
        where = f"{path} [boards.{name}]"
        try:
            if not isinstance(entry, dict):
                raise WorkbenchError(f"{where} must be a table of settings.")
            unknown = sorted(set(entry) - known)
            if unknown:
                raise WorkbenchError(f"{where}: unknown settings {unknown}; known: {sorted(known)}.")
            _check_types(entry, where)
            boards[name] = _board(name, entry, where)
        except WorkbenchError as err:
            problems[name] = str(err)
    return boards, problems


def _board(name: str, entry: dict, where: str) -> Board:
    try:
        return Board(name=name, **entry)
    except WorkbenchError as err:  # say which file, not only which board
        raise WorkbenchError(str(err).replace(f"board {name!r}", where, 1)) from None


def _check_types(entry: dict, where: str) -> None:
    for f in fields(Board):
        if f.name not in entry:
            continue
        value, want = entry[f.name], {"port": int, "virtual": bool}.get(f.name, str)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            kind, example = {int: ("an integer", "2222"), bool: ("true or false", "true")}.get(
                want, ("a string", '"..."')
            )
            raise WorkbenchError(
                f"{where}: {f.name} must be {kind} (e.g. {f.name} = {example}), not {value!r}."
            )


def _validate(board: Board, where: str) -> None:
    if board.transport not in TRANSPORTS:
        raise WorkbenchError(f"{where}: transport must be one of {TRANSPORTS}, not {board.transport!r}.")
    if board.platform not in PLATFORMS:
        raise WorkbenchError(f"{where}: unknown platform {board.platform!r}; valid: {', '.join(PLATFORMS)}.")
    if board.transport == "adb-shell" and not board.serial:
        raise WorkbenchError(f'{where}: an adb-shell board needs serial = "...".')
    if board.transport == "ssh" and not board.host:
        raise WorkbenchError(f'{where}: an ssh board needs host = "...".')
    if board.port is not None and not (
        isinstance(board.port, int) and not isinstance(board.port, bool) and 0 < board.port < 65536
    ):
        raise WorkbenchError(f"{where}: port must be a number 1-65535, not {board.port!r}.")
    if board.serial is not None:
        check_serial(board.serial, f"{where}: serial")
    if board.host is not None:
        check_host(board.host, f"{where}: host")
    if board.user is not None:
        check_user(board.user, f"{where}: user")


def check_serial(serial: str, where: str = "adb serial") -> str:
    """``serial`` if it is a plain adb serial or IP:PORT (letters, digits, ``._:-``, not
    starting with ``-``); WorkbenchError naming ``where`` otherwise. The toolkit passes the
    serial to a shell, so nothing else may reach it."""
    if not isinstance(serial, str) or not _SERIAL.fullmatch(serial):
        raise WorkbenchError(
            f"{where} {serial!r} is not an adb serial: use letters, digits and . _ : - only, not "
            "starting with - (e.g. 192.168.1.20:5555 or the serial `adb devices` prints)."
        )
    return serial


def check_host(host: str, where: str = "ssh host") -> str:
    """``host`` if it is a host name, an IPv4 or an IPv6 address; WorkbenchError otherwise."""
    if isinstance(host, str):
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            if len(host) <= 253 and _HOST.fullmatch(host):
                return host
    raise WorkbenchError(
        f"{where} {host!r} is not a host name or an IP address (letters, digits, . _ -, not "
        "starting with -; e.g. rock5b.local or 192.168.1.20)."
    )


def check_user(user: str, where: str = "ssh user") -> str:
    """``user`` if it is a plain login name; WorkbenchError otherwise."""
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise WorkbenchError(
            f"{where} {user!r} is not a login name: letters, digits and _ . -, "
            "starting with a letter or _ (e.g. root)."
        )
    return user
