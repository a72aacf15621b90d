import pytest

from workbench.board.config import get_board, load_boards
from workbench.errors import WorkbenchError

GOOD = """
[boards.lab-rk3588]
transport = "adb"
platform = "rk3588"
serial = "192.168.1.20:5555"

[boards."desk board"]
transport = "ssh"
platform = "rv1106"
host = "rock.local"
port = 2222
"""


def test_boards_by_name(tmp_path, monkeypatch):
    (tmp_path / "boards.toml").write_text(GOOD)
    monkeypatch.setenv("RKNN_WORKBENCH_BOARDS", str(tmp_path / "boards.toml"))
    boards = load_boards()
    assert set(boards) == {"lab-rk3588", "desk board"}
    assert boards["lab-rk3588"].serial == "192.168.1.20:5555"
    assert get_board("desk board").port == 2222


@pytest.mark.parametrize(
    "text, match",
    [
        ('[boards.a]\ntransport = "usb"\nplatform = "rk3588"\n', "transport must be"),
        ('[boards.a]\ntransport = "adb"\nplatform = "rk9999"\n', "unknown platform"),
        ('[boards.a]\ntransport = "ssh"\nplatform = "rk3588"\n', "needs host"),
        (
            '[boards.a]\ntransport = "adb"\nplatform = "rk3588"\npasword = "x"\n',
            "unknown settings \\['pasword'\\]",
        ),
        ("[boards.a\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_board_and_setting(tmp_path, text, match):
    (tmp_path / "boards.toml").write_text(text)
    with pytest.raises(WorkbenchError, match=match):
        get_board("a", tmp_path / "boards.toml")


def test_unknown_board_lists_the_configured_ones(tmp_path):
    (tmp_path / "boards.toml").write_text(GOOD)
    with pytest.raises(WorkbenchError, match="lab-rk3588"):
        get_board("nope", tmp_path / "boards.toml")
    with pytest.raises(WorkbenchError, match="none \\(create"):
        get_board("nope", tmp_path / "missing.toml")
