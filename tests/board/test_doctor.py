"""The board doctor against a fake adb replaying recorded answers (the board itself cannot
exist here). Each scenario is one failure users report upstream."""

import json
from pathlib import Path

import pytest

from workbench.board.doctor import doctor, parse_devices, parse_version, restart_rknn_server
from workbench.cli import main
from workbench.errors import WorkbenchError

FAKE = Path(__file__).with_name("fake_adb.py")

HEALTHY = [
    [r"^version$", 0, "Android Debug Bridge version 1.0.40\nVersion 4986621"],
    [r"^start-server$", 0, ""],
    [
        r"^devices -l$",
        0,
        "List of devices attached\n58299137ef51f80d       device usb:1-1 product:rk3588 transport_id:1",
    ],
    [r"shell id -u$", 0, "0"],
    [r"shell pidof rknn_server$", 0, "1234"],
    [r"rknn_server version", 0, "rknn_server version: 2.5.0 (ab12cd3 build@2025-04-01T10:00:00)"],
    [r"librknnrt version", 0, "librknnrt version: 2.5.0 (ab12cd3@2025-04-01T10:00:00)"],
    [r"mkdir -p", 0, "/dev/mmcblk0p8   28000000  1000000  27000000   4% /userdata"],
]


def _scenario(tmp_path, monkeypatch, replace: dict | None = None, first: list | None = None):
    rules = [r for r in HEALTHY if r[0] not in (replace or {})]
    rules = (first or []) + [[p, *answer] for p, answer in (replace or {}).items()] + rules
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(rules))
    monkeypatch.setenv("FAKE_ADB_SCENARIO", str(path))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "calls.jsonl"))
    return str(FAKE)


def _calls(tmp_path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_healthy_board_is_ready(tmp_path, monkeypatch):
    report = doctor(_scenario(tmp_path, monkeypatch), platform="rk3588")
    assert report.ready and report.device == "58299137ef51f80d"
    assert [c.name for c in report.checks] == [
        "adb",
        "device",
        "root",
        "rknn_server",
        "versions",
        "dump folder",
    ]
    assert "/userdata/dumps" in report.checks[-1].detail
    assert all(call[:2] == ["-s", "58299137ef51f80d"] for call in _calls(tmp_path)[3:])


@pytest.mark.parametrize(
    "replace, first, failing, words",
    [
        (
            {
                r"^start-server$": [
                    0,
                    "adb server version (41) doesn't match this client (40); killing...\n"
                    "* daemon started successfully",
                ]
            },
            None,
            "adb",
            "kill-server",
        ),
        ({r"^devices -l$": [0, "List of devices attached\n"]}, None, "device", "adb connect IP:5555"),
        (
            {r"^devices -l$": [0, "List of devices attached\n192.168.222.130:5555 unauthorized"]},
            None,
            "device",
            "Allow USB debugging",
        ),
        (
            {r"^devices -l$": [0, "List of devices attached\n192.168.222.130:5555 offline"]},
            None,
            "device",
            "reconnect",
        ),
        ({r"shell id -u$": [0, "2000"]}, None, "root", "adb root"),
        ({r"shell pidof rknn_server$": [1, ""]}, None, "rknn_server", "ERROR_PIPE"),
        (
            {r"rknn_server version": [0, "rknn_server version: 1.5.2 (8babfea build@2023-08-25T10:30:12)"]},
            None,
            "versions",
            "older than 2.3.0",
        ),
        (
            {r"librknnrt version": [0, "librknnrt version: 2.3.0 (c949ad889d@2024-11-07T11:35:33)"]},
            None,
            "versions",
            "must match",
        ),
        (
            {r"mkdir -p": [1, "touch: /userdata/dumps/.wb_probe: Read-only file system"]},
            None,
            "dump folder",
            "RKNN_DUMP_DIR",
        ),
        (
            {r"mkdir -p": [0, "/dev/mmcblk0p8   28000000  27900000  100000  99% /userdata"]},
            None,
            "dump folder",
            "MB free",
        ),
    ],
)
def test_each_failure_stops_the_doctor_with_its_fix(tmp_path, monkeypatch, replace, first, failing, words):
    report = doctor(_scenario(tmp_path, monkeypatch, replace, first), platform="rk3588")
    assert not report.ready
    assert report.checks[-1].name == failing and not report.checks[-1].ok
    assert words in report.checks[-1].detail + report.checks[-1].fix
    assert all(c.ok for c in report.checks[:-1])


def test_rv1106_dumps_to_tmp_and_override(tmp_path, monkeypatch):
    adb = _scenario(tmp_path, monkeypatch)
    assert "/tmp/dumps" in doctor(adb, platform="rv1106").checks[-1].detail
    assert "/data/my dumps" in doctor(adb, platform="rk3588", dump_folder="/data/my dumps").checks[-1].detail


def test_missing_adb_and_hanging_adb(tmp_path, monkeypatch):
    report = doctor(tmp_path / "no-adb")
    assert not report.ready and "--adb" in report.checks[0].fix
    slow = tmp_path / "slow_adb"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    report = doctor(slow, timeout=0.5)
    assert not report.ready and "no answer" in report.checks[0].detail


def test_hostile_serial_is_refused_before_adb_runs(tmp_path, monkeypatch):
    """The toolkit hands the serial to a shell (init_runtime): only a plain serial passes."""
    adb = _scenario(tmp_path, monkeypatch)
    for evil in ("dev'; rm -rf / #", "$(touch /tmp/pwned)", "-s", "a b", "x\ny"):
        with pytest.raises(WorkbenchError, match="is not an adb serial"):
            doctor(adb, device=evil)
    assert not (tmp_path / "calls.jsonl").exists()  # adb never ran
    assert not Path("/tmp/pwned").exists()


def test_hostile_dump_folder_reaches_the_board_as_one_shell_word(tmp_path, monkeypatch):
    evil_dir = "/tmp/x; touch /tmp/pwned 'quoted' $(id)"
    adb = _scenario(tmp_path, monkeypatch)
    report = doctor(adb, device="58299137ef51f80d", dump_folder=evil_dir)
    assert report.ready, str(report)
    calls = _calls(tmp_path)
    mkdir = next(call[-1] for call in calls if "mkdir" in call[-1])
    assert "'/tmp/x; touch /tmp/pwned '\"'\"'quoted'\"'\"' $(id)'" in mkdir  # one shell word on the board
    assert not Path("/tmp/pwned").exists()


def test_restart_rknn_server(tmp_path, monkeypatch):
    adb = _scenario(tmp_path, monkeypatch, {r"sleep 1; pidof": [0, "4321"]}, [[r"killall", 0, ""]])
    assert restart_rknn_server(adb, "58299137ef51f80d") == "4321"


def test_parsers():
    assert parse_devices("List of devices attached\nabc\tdevice\n1.2.3.4:5555\toffline\n") == {
        "abc": "device",
        "1.2.3.4:5555": "offline",
    }
    assert parse_version("DRV: rknn_server: 1.5.2 (8babfea build@2023-08-25T10:30:12)", "rknn_server") == (
        1,
        5,
        2,
    )


def test_cli_exit_code(tmp_path, monkeypatch, capsys):
    adb = _scenario(tmp_path, monkeypatch)
    assert main(["board", "doctor", "--adb", adb]) == 0
    assert "board ready" in capsys.readouterr().out
    adb = _scenario(tmp_path, monkeypatch, {r"shell pidof rknn_server$": [1, ""]})
    assert main(["board", "doctor", "--adb", adb]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] rknn_server" in out and "board NOT ready" in out


def test_connect_board(tmp_path, monkeypatch):
    from workbench.board.doctor import connect_board
    from workbench.errors import WorkbenchError

    adb = _scenario(
        tmp_path,
        monkeypatch,
        first=[
            [r"^connect 192.168.1.20:5555$", 0, "connected to 192.168.1.20:5555"],
            [r"^connect 10.0.0.9:5555$", 1, "failed to connect to 10.0.0.9:5555"],
        ],
    )
    assert connect_board("192.168.1.20", adb) == "192.168.1.20:5555"
    with pytest.raises(WorkbenchError, match="could not connect to 10.0.0.9:5555"):
        connect_board("10.0.0.9:5555", adb)


def test_rknn_server_crash_reported_by_the_toolkit_points_to_the_doctor():
    from workbench.rknn.session import board_hint

    crashed = (
        "E RKNNAPI: rknn_init,  server connect fail!  ret = -9(ERROR_PIPE)!\n"
        "E init_runtime: The rknn_server on the concected device is abnormal, please start the rknn_server"
    )
    assert "board doctor" in board_hint(crashed)
    assert board_hint("E build: Meet unsupported conv") == ""
