"""Float vs simulator vs a virtual board reached through real sshd on 127.0.0.1.

The virtual board is this PC running the board-side runner with the toolkit's simulator
(the stand-in for a Rockchip NPU); the SSH path (keys, host keys, transfers, remote runs,
cleanup, failures) is the real one."""

import socket
import subprocess

import numpy as np
import pytest

from tests.board.conftest import free_port, start_sshd
from workbench.board.ssh import BoardError, SshTransport
from workbench.compare.board import backend_gap, board_divergence
from workbench.compare.result import Divergence
from workbench.datasets import ZOO
from workbench.rknn.config import BuildConfig
from workbench.runners.board_shell import ShellBoardRunner

pytestmark = pytest.mark.toolkit


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.zoo
def test_virtual_board_matches_the_simulator_on_ppocr_cls(sshd, zoo, small_set, isolated_cache):
    entry = ZOO["ppocr-cls"]
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    listing = "ls -d /tmp/rknn-wb-board-* 2>/dev/null || true"
    before = set(SshTransport(sshd.board()).run(listing).decode().split())
    result = board_divergence(
        zoo("ppocr-cls"), config, small_set, sshd.board(), small_set.head(2), progress=False, batch=1
    )
    assert set(result.table.backend) == {"simulator", "board:virtual"}
    assert "partial" not in result.meta and "identity" not in str(result.meta)
    gap = backend_gap(result)
    assert len(gap) > 50
    np.testing.assert_allclose(gap.cosine_gap, 0, atol=1e-5)
    np.testing.assert_allclose(gap.sqnr_db_gap, 0, atol=1e-3)
    after = set(SshTransport(sshd.board()).run(listing).decode().split())
    assert after <= before  # the board's work folder is gone


def _small(tiny_models, small_set, board):
    config = BuildConfig(preprocess={})
    return board_divergence(
        tiny_models["conv-relu-sigmoid"], config, small_set, board, small_set.head(2), progress=False, batch=1
    )


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda s, tmp: {"known_hosts": str(tmp / "empty_known_hosts")}, "host key is unknown"),
        (lambda s, tmp: {"identity": str(tmp / "other_key")}, "authentication failed"),
        (lambda s, tmp: {"port": free_port()}, "nothing listens"),
    ],
)
def test_connection_faults_are_explained(
    sshd, tiny_models, small_set, tmp_path, isolated_cache, change, words
):
    (tmp_path / "empty_known_hosts").write_text("")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other_key")], check=True
    )
    with pytest.raises(BoardError, match=words) as err:
        _small(tiny_models, small_set, sshd.board(**change(sshd, tmp_path)))
    partial = err.value.partial
    assert partial.meta["partial"]["samples_done"] == 0
    assert set(partial.table.backend) == {"simulator"}  # nothing passed off as board results


def test_connect_timeout(sshd, tiny_models, small_set, isolated_cache):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts TCP, never speaks SSH
    try:
        board = sshd.board(port=silent.getsockname()[1])
        transport = SshTransport(board, connect_timeout=1)
        with pytest.raises(BoardError, match="did not answer in time"):
            transport.make_temp_dir()
    finally:
        silent.close()


def test_sshd_stopped_mid_run_gives_a_partial_run(
    tmp_path, tiny_models, small_set, isolated_cache, monkeypatch
):
    server = start_sshd(tmp_path / "sshd")
    earlier = tmp_path / "earlier-run"
    Divergence(__import__("pandas").DataFrame(), {"note": "earlier"}).save(earlier)

    original = ShellBoardRunner.run_many

    def stop_after_first(self, rows, on_sample=None):
        for i, tensors in enumerate(original(self, rows, on_sample)):
            yield tensors
            if i == 0:
                server.stop()  # the board goes away

    monkeypatch.setattr(ShellBoardRunner, "run_many", stop_after_first)
    with pytest.raises(BoardError, match="1 of 2 samples") as err:
        _small(tiny_models, small_set, server.board())
    partial = err.value.partial
    assert partial.meta["partial"] == {**partial.meta["partial"], "samples_done": 1, "samples": 2}
    board_rows = partial.table[partial.table.backend == "board:virtual"]
    assert set(board_rows["sample"]) == {0}
    assert Divergence.load(earlier).meta == {"note": "earlier"}


def test_hostile_python_path_is_one_shell_word(sshd, tiny_models, small_set, tmp_path, isolated_cache):
    import sys

    odd = tmp_path / "py thon';touch PWNED;'"
    odd.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    odd.chmod(0o755)
    result = _small(tiny_models, small_set, sshd.board(python=str(odd), name="lab; rm -rf /"))
    assert set(result.table.backend) == {"simulator", "board:lab; rm -rf /"}
    assert not any(p.name == "PWNED" for p in tmp_path.rglob("*"))
    assert not (tmp_path.parent / "PWNED").exists()


def test_not_an_ssh_board(sshd):
    with pytest.raises(BoardError, match="not an ssh board"):
        SshTransport(sshd.board(transport="adb"))


def test_remote_disk_full(sshd, tiny_models, small_set, tmp_path, isolated_cache):
    tiny = tmp_path / "tiny disk"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)]).returncode != 0:
        pytest.skip("cannot mount a tiny tmpfs here (needs root)")
    try:
        with pytest.raises(BoardError, match="disk is full") as err:
            _small(tiny_models, small_set, sshd.board(workdir=str(tiny)))
        assert err.value.partial.meta["partial"]["samples_done"] == 0
    finally:
        subprocess.run(["umount", str(tiny)])


def test_cli_diverge_on_a_named_board(
    sshd, tiny_models, small_set, tmp_path, isolated_cache, monkeypatch, capsys
):
    import json

    from workbench.cli import main

    board = sshd.board()
    (tmp_path / "boards.toml").write_text(
        "[boards.virtual]\n"
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in vars(board).items() if k != "name" and v is not None)
    )
    monkeypatch.setenv("RKNN_WORKBENCH_BOARDS", str(tmp_path / "boards.toml"))
    model = tiny_models["conv-relu-sigmoid"].save(tmp_path / "m.onnx")
    args = [
        "diverge",
        str(model),
        "--dataset",
        str(small_set.source),
        "--samples",
        "1",
        "--board",
        "virtual",
        "--out",
        str(tmp_path / "run"),
        "--json",
    ]
    assert main(args) == 0
    assert set(Divergence.load(tmp_path / "run").table.backend) == {"simulator", "board:virtual"}
    board_file = tmp_path / "boards.toml"
    board_file.write_text(board_file.read_text().replace(f"port = {sshd.port}", f"port = {free_port()}"))
    assert main([*args[:-3], "--out", str(tmp_path / "run2"), "--json"]) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["meta"]["partial"]["samples_done"] == 0
