"""Board doctor: is the board ready for the toolkit's remote connection (adb + rknn_server)?

Checks run in the order users hit the problems (upstream rknn-toolkit2 issues #112, #229,
#301, #480) and stop at the first failure, with its fix:

1. the adb binary (the toolkit bundles its own; another adb server version breaks it),
2. the device: present, authorized, online,
3. root (rknn_server must write the dump folder),
4. rknn_server running,
5. rknn_server and librknnrt versions vs the toolkit (the toolkit refuses rknn_server < 2.3.0),
6. the dump folder writable with enough free space.

Every adb call is an argument list (no local shell) and the serial is checked against a
strict pattern first; values sent to the board's shell are quoted with shlex.quote.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from workbench.board.config import check_serial
from workbench.errors import WorkbenchError

#: Oldest rknn_server the toolkit accepts.
MIN_SERVER = (2, 3, 0)
#: Free space the dump folder needs for one accuracy_analysis of a mid-size model.
MIN_FREE_MB = 500


def toolkit_adb() -> Path:
    """The adb that rknn-toolkit2 itself runs (bundled in its wheel)."""

    spec = importlib.util.find_spec("rknn")
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError(
            "rknn-toolkit2 is not installed: run `make setup` (or pip install rknn-toolkit2)."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "3rdparty" / "platform-tools" / "adb" / "linux-x86_64" / "adb"


def dump_dir(platform: str | None, override: str | None = None) -> str:
    """Where rknn_server writes per-layer dumps on the board (RKNN_DUMP_DIR wins)."""
    if override:
        return override
    return "/tmp/dumps" if platform and platform.startswith(("rv1103", "rv1106")) else "/userdata/dumps"


@dataclass
class Check:
    """One step of the doctor."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    device: str | None = None

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def __str__(self) -> str:
        lines = []
        for c in self.checks:
            lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
            if not c.ok and c.fix:
                lines.append(f"       fix: {c.fix}")
        lines.append("board ready" if self.ready else "board NOT ready")
        return "\n".join(lines)


class Adb:
    """Runs one adb binary with a timeout; every call is an argument list."""

    def __init__(self, path: str | Path | None = None, device: str | None = None, timeout: float = 15):
        self.path = str(path or toolkit_adb())
        self.device = device
        self.timeout = timeout
        self.env: dict[str, str] | None = None  #: environment of the adb calls (None: ours)
        self.started_server = False  #: our `start-server` started the adb server

    def run(self, *args: str) -> tuple[int, str]:
        """Exit code and combined output; a hang becomes exit code 124."""
        cmd = [self.path, *(["-s", self.device] if self.device and args[0] != "devices" else []), *args]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, env=self.env)
        except subprocess.TimeoutExpired:
            return 124, f"no answer within {self.timeout:.0f} s"
        except OSError as err:
            return 127, str(err)
        return done.returncode, (done.stdout + done.stderr).strip()

    def shell(self, command: str) -> tuple[int, str]:
        """A command for the board's shell (callers quote values with shlex.quote)."""
        return self.run("shell", command)


_DEVICE = re.compile(
    r"^(?P<serial>.+?)\s+(?P<state>device|offline|unauthorized|no permissions|authorizing|"
    r"connecting|recovery|sideload|bootloader|host|unknown)(\s|$)"
)


def parse_devices(text: str) -> dict[str, str]:
    """serial -> state (device, unauthorized, offline, no permissions, ...) from `adb devices -l`."""
    out = {}
    for line in text.splitlines():
        match = _DEVICE.match(line.strip())
        if match and not line.startswith(("List of devices", "*", "adb server")):
            out[match["serial"]] = match["state"]
    return out


def parse_version(text: str, what: str) -> tuple[int, ...] | None:
    """The x.y.z after "<what>" in a version banner, e.g. "rknn_server version: 2.3.0"."""
    match = re.search(rf"{re.escape(what)}[^0-9]*(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(v) for v in match.groups()) if match else None


def doctor(
    adb: str | Path | None = None,
    device: str | None = None,
    platform: str | None = None,
    dump_folder: str | None = None,
    timeout: float = 15,
) -> DoctorReport:
    """Check the board step by step; stops at the first failure. Never raises for board
    problems: they are the report's content.

    Raises:
        WorkbenchError: ``device`` is not a plain adb serial (checked before any adb call).
    """
    if device is not None:
        check_serial(device, "--device")
    report = DoctorReport()
    runner = Adb(adb, None, timeout)
    # An adb server the doctor starts writes its log into TMPDIR: a private folder, removed
    # with that server when the doctor is done; a server that was already running stays.
    with tempfile.TemporaryDirectory(prefix="rknn-wb-adb-") as logs:
        runner.env = {**os.environ, "TMPDIR": logs}
        try:
            for step in (_adb_binary, _device, _root, _server_running, _versions, _dump_folder):
                check = step(runner, report, device, platform, dump_folder)
                report.checks.append(check)
                if not check.ok:
                    break
        finally:
            if runner.started_server:
                runner.device = None
                runner.run("kill-server")
    return report


def _adb_binary(adb: Adb, report, device, platform, dump_folder) -> Check:
    if not Path(adb.path).is_file():
        return Check(
            "adb",
            False,
            f"{adb.path} does not exist",
            "pass --adb PATH, or reinstall rknn-toolkit2 (it bundles adb)",
        )
    code, out = adb.run("version")
    if code != 0:
        return Check(
            "adb", False, f"{adb.path} does not run: {out[:200]}", "check the file is an adb executable"
        )
    client = re.search(r"Android Debug Bridge version ([\d.]+)", out)
    code, started = adb.run("start-server")
    adb.started_server = code == 0 and "daemon started successfully" in started
    if "doesn't match this client" in started:
        return Check(
            "adb",
            False,
            f"another adb server was running: {started.splitlines()[0]}",
            "two adb versions fight over port 5037: run `adb kill-server` with your system adb and use "
            f"only the toolkit's ({toolkit_adb()}), or pass that same adb with --adb",
        )
    if code != 0:
        return Check(
            "adb", False, f"adb start-server failed: {started[:200]}", "run `adb kill-server`, then retry"
        )
    return Check("adb", True, f"{adb.path} ({client.group(1) if client else 'unknown version'})")


def _device(adb: Adb, report: DoctorReport, device, platform, dump_folder) -> Check:
    code, out = adb.run("devices", "-l")
    devices = parse_devices(out)
    if not devices:
        return Check(
            "device",
            False,
            "no board found",
            "check the USB cable and that adbd runs on the board; for a network board: `adb connect IP:5555`",
        )
    if device is None:
        ready = [s for s, state in devices.items() if state == "device"]
        device = ready[0] if len(ready) == 1 else None
        if device is None:
            listing = ", ".join(f"{s} ({state})" for s, state in devices.items())
            if len(ready) > 1:
                return Check("device", False, f"several boards: {listing}", "choose one with --device SERIAL")
            device = next(iter(devices))
    if device not in devices:
        listing = ", ".join(f"{s} ({state})" for s, state in devices.items())
        return Check(
            "device",
            False,
            f"{device} is not connected; found: {listing}",
            f"check the serial, or `adb connect {shlex.quote(device)}` for a network board",
        )
    state = devices[device]
    fixes = {
        "unauthorized": "accept the 'Allow USB debugging' prompt on the board, or copy ~/.android/adbkey.pub "
        "into the board's adb_keys",
        "offline": "re-plug the cable, or `adb reconnect offline`; for network boards `adb disconnect` then "
        "`adb connect IP:5555`",
        "no permissions": "add a udev rule for the board's USB id (or run adb as root)",
    }
    if state != "device":
        return Check(
            "device", False, f"{device} is {state}", fixes.get(state.split(" (")[0], "re-plug the board")
        )
    adb.device = device
    report.device = device
    return Check("device", True, f"{device} online")


def _root(adb: Adb, report, device, platform, dump_folder) -> Check:
    code, out = adb.shell("id -u")
    if code == 0 and out.strip().splitlines()[-1:] == ["0"]:
        return Check("root", True, "adb shell runs as root")
    return Check(
        "root",
        False,
        f"adb shell runs as uid {out.strip()[:40] or '?'}",
        "run `adb root` (a debug/userdebug image is needed), so rknn_server can write its dumps",
    )


def _server_running(adb: Adb, report, device, platform, dump_folder) -> Check:
    code, out = adb.shell("pidof rknn_server")
    if code == 0 and out.strip():
        return Check("rknn_server", True, f"running (pid {out.strip().split()[0]})")
    return Check(
        "rknn_server",
        False,
        "not running (the toolkit would fail with ERROR_PIPE)",
        "start it: restart_rknn_server() or `adb shell 'nohup rknn_server >/dev/null 2>&1 &'` "
        "(it ships in the RKNPU2 runtime: /usr/bin/rknn_server)",
    )


def _versions(adb: Adb, report, device, platform, dump_folder) -> Check:
    _, server_text = adb.shell(
        "strings \"$(command -v rknn_server || echo /usr/bin/rknn_server)\" | grep -i 'rknn_server version'"
    )
    _, rt_text = adb.shell("strings /usr/lib/librknnrt.so | grep -i 'librknnrt version'")
    server = parse_version(server_text, "version")
    runtime = parse_version(rt_text, "version")
    toolkit = tuple(int(v) for v in version("rknn-toolkit2").split("+")[0].split(".")[:3])
    detail = f"rknn_server {_v(server)}, librknnrt {_v(runtime)}, toolkit {_v(toolkit)}"
    if server is None or runtime is None:
        return Check(
            "versions",
            False,
            detail + " (could not read a version)",
            "install the RKNPU2 runtime that matches the toolkit (rknn_server and librknnrt.so)",
        )
    if server < MIN_SERVER:
        return Check(
            "versions",
            False,
            detail + f": the toolkit refuses rknn_server older than {_v(MIN_SERVER)}",
            f"update rknn_server and librknnrt on the board to {_v(toolkit)}",
        )
    if server[:2] != toolkit[:2] or runtime[:2] != toolkit[:2]:
        return Check(
            "versions",
            False,
            detail + ": they must match",
            f"install rknn_server and librknnrt {_v(toolkit)} on the board (or the toolkit matching them)",
        )
    return Check("versions", True, detail)


def _dump_folder(adb: Adb, report, device, platform, dump_folder) -> Check:
    folder = dump_dir(platform, dump_folder)
    q = shlex.quote(folder)
    code, out = adb.shell(f"mkdir -p {q} && touch {q}/.wb_probe && rm {q}/.wb_probe && df -k {q} | tail -1")
    if code != 0:
        return Check(
            "dump folder",
            False,
            f"{folder} is not writable: {out[:200]}",
            "run `adb root`, or set RKNN_DUMP_DIR on the board to a writable folder",
        )
    fields = out.split()
    free_mb = int(fields[3]) // 1024 if len(fields) >= 4 and fields[3].isdigit() else None
    if free_mb is not None and free_mb < MIN_FREE_MB:
        return Check(
            "dump folder",
            False,
            f"{folder}: only {free_mb} MB free",
            f"free at least {MIN_FREE_MB} MB there, or point RKNN_DUMP_DIR at a larger disk",
        )
    return Check("dump folder", True, f"{folder} writable, {free_mb if free_mb is not None else '?'} MB free")


def connect_board(address: str, adb: str | Path | None = None, timeout: float = 15) -> str:
    """`adb connect` a network board (``IP`` or ``IP:PORT``, port 5555 by default); returns
    the serial to use as device_id."""
    serial = check_serial(address if ":" in address else f"{address}:5555", "board address")
    code, out = Adb(adb, None, timeout).run("connect", serial)
    if (
        code != 0
        or not re.search(r"\b(connected|already connected)\b", out)
        or "cannot" in out
        or "failed" in out
    ):
        raise WorkbenchError(
            f"adb could not connect to {serial}: {out[:200]}. Check the address, that the board is on "
            "the network and that adbd listens on TCP (on the board: setprop service.adb.tcp.port 5555)."
        )
    return serial


def restart_rknn_server(adb: str | Path | None = None, device: str | None = None) -> str:
    """Kill and restart rknn_server on the board; returns its new pid."""
    if device is not None:
        check_serial(device, "device")
    runner = Adb(adb, device)
    runner.shell("killall rknn_server 2>/dev/null; (nohup rknn_server >/dev/null 2>&1 &)")
    code, out = runner.shell("sleep 1; pidof rknn_server")
    if code != 0 or not out.strip():
        raise WorkbenchError(f"rknn_server did not come back on {device or 'the board'}: {out[:200]}")
    return out.strip().split()[0]


def _v(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "unknown"
