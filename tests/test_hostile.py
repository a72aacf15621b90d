"""Issue 13, items 1-9: what a hostile or unlucky user gets. Each test failed on the code
before the fix; none starts the toolkit (expensive steps are replaced by sentinels that
fail the test if reached)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import stat
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from workbench.cli import main
from workbench.datasets import datasets_dir
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.synthetic import SYNTHETIC

PHOTO = datasets_dir() / "calibration" / "00_astronaut.jpg"


@pytest.fixture
def tiny_path(tmp_path) -> Path:
    return OnnxModel.from_proto(SYNTHETIC["conv-relu-sigmoid"]()).save(tmp_path / "tiny.onnx")


@pytest.fixture
def no_toolkit(monkeypatch):
    """Fail the test if a toolkit worker or a divergence computation is started."""
    started = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise AssertionError("the expensive work started before the input was checked")

    # Modules that bind these names at import are imported first, so none keeps the stand-in.
    for module in ("workbench.compare.board", "workbench.fix.answers", "workbench.fix.before_after"):
        importlib.import_module(module)
    monkeypatch.setattr("workbench.rknn.session.ToolkitSession.__init__", refuse)
    monkeypatch.setattr("workbench.compare.divergence.compute_divergence", refuse)
    monkeypatch.setattr("workbench.fix.search.search_mixed_precision", refuse)
    return started


def _err_line(capsys) -> str:
    """stderr of the last CLI call: one error line, no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.startswith("error: "), err
    return err


# ---------------------------------------------------------------- 1, 2: board values
def _boards(tmp_path, text: str) -> Path:
    path = tmp_path / "boards.toml"
    path.write_text(text)
    return path


def test_shell_in_an_adb_serial_is_refused_and_runs_nothing(tmp_path, no_toolkit):
    from workbench.board.config import get_board, load_boards
    from workbench.runners.board_adb import AdbBoardRunner

    marker = tmp_path / "x"
    path = _boards(
        tmp_path, f'[boards.lab]\ntransport = "adb"\nplatform = "rk3588"\nserial = "$(touch {marker})"\n'
    )
    with pytest.raises(WorkbenchError, match=r"boards\.toml \[boards\.lab\]: serial .* is not an adb serial"):
        get_board("lab", path)
    with pytest.warns(UserWarning, match="boards.lab"):
        assert load_boards(path) == {}
    model = OnnxModel.load(OnnxModel.from_proto(SYNTHETIC["conv-relu-sigmoid"]()).save(tmp_path / "m.onnx"))
    with pytest.raises(WorkbenchError, match="device_id"):
        AdbBoardRunner(model, None, None, f"$(touch {marker})")
    assert not no_toolkit and not marker.exists()


@pytest.mark.parametrize(
    "setting, match",
    [
        ('host = "-oProxyCommand=touch /tmp/pwned"', "host .* is not a host name"),
        ('host = "a b"', "host .* is not a host name"),
        ('host = "rock;id"', "host .* is not a host name"),
        ('host = "rock.local"\nuser = "-lroot"', "user .* is not a login name"),
        ('host = "rock.local"\nuser = "root;id"', "user .* is not a login name"),
        ('host = "rock.local"\nport = 0', "port must be a number 1-65535"),
        ('host = "rock.local"\nport = 70000', "port must be a number 1-65535"),
        ('host = "rock.local"\nport = "22"', "port must be an integer"),
        ('host = "rock.local"\nport = true', "port must be an integer"),
        ("host = 5", "host must be a string"),
        ('host = "rock.local"\nserial = "-s"', "serial .* is not an adb serial"),
    ],
)
def test_bad_ssh_values_name_the_board_the_key_and_the_file(tmp_path, setting, match):
    from workbench.board.config import get_board

    path = _boards(tmp_path, f'[boards.desk]\ntransport = "ssh"\nplatform = "rk3588"\n{setting}\n')
    with pytest.raises(WorkbenchError, match=rf"{tmp_path}/boards\.toml \[boards\.desk\]: {match}"):
        get_board("desk", path)


def test_good_values_pass():
    from workbench.board.config import Board

    for host in ("rock5b.local", "192.168.1.20", "fe80::1", "my_board", "a-b.c"):
        assert Board("b", "ssh", "rk3588", host=host, user="root", port=22).host == host
    for serial in ("58299137ef51f80d", "192.168.1.20:5555", "emulator-5554", "adb-X._adb-tls._tcp"):
        assert Board("b", "adb", "rk3588", serial=serial).serial == serial


def test_one_bad_board_does_not_block_the_others(tmp_path, capsys):
    from workbench.board.config import get_board

    path = _boards(
        tmp_path,
        '[boards.bad]\ntransport = "ssh"\nplatform = "rk3588"\nhost = 5\n\n'
        '[boards.good]\ntransport = "adb"\nplatform = "rk3588"\nserial = "abc123"\n',
    )
    assert get_board("good", path).serial == "abc123"
    os.environ["RKNN_WORKBENCH_BOARDS"] = str(path)
    try:
        assert main(["board", "doctor", "--board", "bad"]) == 2
        assert "[boards.bad]: host must be a string" in _err_line(capsys)
        # the good board is usable: the doctor runs (and fails on the missing adb: exit 1)
        assert main(["board", "doctor", "--board", "good", "--adb", str(tmp_path / "no-adb")]) == 1
        assert "does not exist" in capsys.readouterr().out
        with pytest.raises(WorkbenchError, match="Left out for bad settings: bad"):
            get_board("other", path)
    finally:
        del os.environ["RKNN_WORKBENCH_BOARDS"]


def test_boards_not_a_table_is_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_BOARDS", str(_boards(tmp_path, "boards = 5\n")))
    assert main(["board", "doctor", "--board", "x"]) == 2
    assert "boards must be a table" in _err_line(capsys)


def test_board_doctor_refuses_a_shell_device(tmp_path, capsys):
    marker = tmp_path / "pwned"
    assert main(["board", "doctor", "--device", f"$(touch {marker})", "--adb", str(tmp_path / "no")]) == 2
    assert "--device" in _err_line(capsys) and not marker.exists()


def test_ssh_ends_its_options_before_the_host():
    from workbench.board.config import Board
    from workbench.board.ssh import SshTransport

    board = Board("desk", "ssh", "rk3588", host="rock.local", user="root", port=2222, identity="/k")
    argv = SshTransport(board)._base()
    assert argv[-2:] == ["--", "rock.local"]
    assert argv.count("--") == 1 and argv.index("-p") < argv.index("--")


# ---------------------------------------------------------------- 3: external data
def _external_model(folder: Path) -> Path:
    weights = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(model, path, save_as_external_data=True, location="w.bin", size_threshold=0)
    return path


def _relocate(path: Path, location: str) -> None:
    proto = onnx.load(path, load_external_data=False)
    proto.graph.initializer[0].external_data[0].value = location
    onnx.save(proto, path)


def test_external_data_inside_the_folder_loads(tmp_path):
    model = OnnxModel.load(_external_model(tmp_path / "m"))
    assert onnx.numpy_helper.to_array(model.proto.graph.initializer[0])[3, 3] == 15


@pytest.mark.parametrize("how", ["symlink", "dotdot", "absolute"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, capsys, how):
    path = _external_model(tmp_path / "m")
    secret = tmp_path / "secret.bin"
    secret.write_bytes((path.parent / "w.bin").read_bytes())
    if how == "symlink":
        (path.parent / "w.bin").unlink()
        (path.parent / "w.bin").symlink_to(secret)
    else:
        _relocate(path, "../secret.bin" if how == "dotdot" else str(secret))
    with pytest.raises(WorkbenchError, match=r"weights of 'w' point outside the model's folder"):
        OnnxModel.load(path)
    assert main(["check", str(path)]) == 2
    assert "outside the model's folder" in _err_line(capsys)


# ---------------------------------------------------------------- 4: netron
def test_netron_serves_only_a_private_copy_and_checks_the_host(tmp_path, tiny_path):
    from workbench.viz.graph import netron_view, stop_netron

    (tmp_path / "notes.txt").write_text("private")
    frame = netron_view(tiny_path, proxy=False)
    try:
        base = frame.src.rstrip("/")
        assert b"netron" in urllib.request.urlopen(base + "/", timeout=10).read().lower()
        assert urllib.request.urlopen(base + "/data/tiny.onnx", timeout=10).read() == tiny_path.read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/data/notes.txt", timeout=10)
        assert missing.value.code == 404  # the model's folder is not served
        rebound = urllib.request.Request(base + "/data/tiny.onnx", headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as forbidden:
            urllib.request.urlopen(rebound, timeout=10)
        assert forbidden.value.code == 403
        from workbench.viz import graph

        folder = graph._SERVERS[-1][1]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and os.listdir(folder) == ["tiny.onnx"]
    finally:
        stop_netron()
    assert not folder.exists()


# ---------------------------------------------------------------- 5: private cache
def test_cache_dir_is_private(tmp_path, monkeypatch):
    from workbench.datasets import cache_dir

    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "new" / "cache"))
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(loose))
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700


# ---------------------------------------------------------------- 6: exit codes, one line
def test_an_unexpected_crash_exits_2_with_one_line(monkeypatch, capsys):
    def crash(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("workbench.cli._zoo", crash)
    assert main(["zoo", "list"]) == 2
    err = _err_line(capsys)
    assert err == "error: RuntimeError: boom; run with --debug for the traceback\n"
    assert main(["--debug", "zoo", "list"]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["zoo", "list", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bad_option_exits_2_without_raising(capsys):
    assert main(["check"]) == 2  # argparse: missing model
    assert main(["--help"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    "damage",
    ["empty parquet", "half parquet", "meta not json", "meta a list", "foreign parquet"],
)
def test_report_on_a_damaged_run(tmp_path, capsys, damage):
    run = _run(tmp_path / "run")
    table, meta = run / "divergence.parquet", run / "meta.json"
    if damage == "empty parquet":
        table.write_bytes(b"")
    elif damage == "half parquet":
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    elif damage == "meta not json":
        meta.write_text('{"model": ')
    elif damage == "meta a list":
        meta.write_text("[]")
    else:
        pd.DataFrame({"a": [1]}).to_parquet(table)
    assert main(["report", str(run)]) == 2
    assert "error: " in _err_line(capsys) and str(run) in capsys.readouterr().err + str(run)


def test_nul_byte_in_dataset_txt(tmp_path, tiny_path, capsys, no_toolkit):
    from workbench.datasets import CalibrationSet

    listing = tmp_path / "dataset.txt"
    listing.write_text(f"{PHOTO}\nx\0y.jpg\n")
    with pytest.raises(WorkbenchError, match="line 2 holds a NUL byte"):
        CalibrationSet.from_list(listing)
    assert main(["diverge", str(tiny_path), "--dataset", str(listing)]) == 2
    assert "NUL byte" in _err_line(capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1,nan,1"])
def test_nan_mean_and_std_never_reach_the_toolkit(tiny_path, capsys, no_toolkit, value):
    for flag in ("--mean", "--std"):
        assert (
            main(["build", str(tiny_path), f"{flag}={value}", "-o", str(tiny_path.with_suffix(".rknn"))]) == 2
        )
        assert "NaN or infinity" in _err_line(capsys)
    assert not no_toolkit


def _dynamic_model(tmp_path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    return path


def test_a_huge_input_is_refused_by_check_too(tmp_path, capsys):
    from workbench.model import MAX_INPUT_ELEMENTS

    path = _dynamic_model(tmp_path)
    assert main(["check", str(path), "--input-shape", "x:1,3,1000000000,1"]) == 2
    err = _err_line(capsys)
    assert "3,000,000,000 elements" in err and f"{MAX_INPUT_ELEMENTS:,}" in err
    assert main(["check", str(path), "--input-shape", "x:1,3,64,64"]) == 0  # a sane size still passes
    assert "everything on the NPU" in capsys.readouterr().out


# ---------------------------------------------------------------- 6, 7: partial board runs
def _divergence(backends: dict[str, float], meta_extra: dict | None = None):
    """A run of the tiny model: every tensor compared on each backend at the given SQNR."""
    from workbench.compare.result import COLUMNS, Divergence

    model = OnnxModel.from_proto(SYNTHETIC["conv-relu-sigmoid"]())
    rows = []
    for backend, sqnr in backends.items():
        for t in model.tensors:
            row = dict.fromkeys(COLUMNS, np.nan)
            row.update(
                index=t.index,
                layer=t.name,
                op_type=t.op_type or "Input",
                rknn_layer=t.name,
                rknn_op=None,
                sample=0,
                backend=backend,
                status="compared",
                flag="",
                sqnr_db=sqnr,
                cosine=0.999,
            )
            rows.append(row)
    meta = {"model": model.summary(), "backends": list(backends), **(meta_extra or {})}
    return Divergence(pd.DataFrame(rows, columns=list(COLUMNS)), meta)


def _run(folder: Path, backends=None, meta_extra=None) -> Path:
    return _divergence(backends or {"simulator": 30.0}, meta_extra).save(folder)


def test_gates_cover_every_backend(tmp_path, capsys):
    from workbench.gates import gate

    result = _divergence({"simulator": 30.0, "board:rock": 12.0})
    verdict = gate(result, min_sqnr=20)
    assert not verdict.passed
    assert verdict.backends["simulator"].passed and not verdict.backends["board:rock"].passed
    assert [r["backend"] for r in verdict.failing] == ["board:rock"]
    assert gate(result, min_sqnr=10).passed
    run = result.save(tmp_path / "run")
    assert main(["report", str(run), "--min-sqnr", "20"]) == 1
    assert "y (Sigmoid) [board:rock]: SQNR 12.00 dB" in capsys.readouterr().err
    assert main(["report", str(run), "--min-sqnr", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gate"]["backends"]["board:rock"]["checked"] == 1


def test_report_on_a_partial_board_run_exits_1(tmp_path, capsys):
    partial = {"partial": {"backend": "board:rock", "samples_done": 1, "samples": 4, "error": "board gone"}}
    run = _run(tmp_path / "run", {"simulator": 30.0, "board:rock": 30.0}, partial)
    assert main(["report", str(run)]) == 1
    assert "FAIL: partial run: board:rock ran 1 of 4 samples (board gone)" in capsys.readouterr().err
    assert main(["report", str(run), "--min-sqnr", "10"]) == 1


def test_a_board_failing_before_its_first_sample(tmp_path, monkeypatch, capsys):
    """compare/board.py: no board rows used to make every column object (TypeError later)."""
    from workbench.board.config import Board
    from workbench.compare import board as compare_board
    from workbench.datasets import default_calibration_set
    from workbench.errors import BoardError
    from workbench.rknn.config import BuildConfig

    def fails(*args, **kwargs):
        raise BoardError("board gone")

    monkeypatch.setattr(compare_board, "compute_divergence", lambda *a, **k: _divergence({"simulator": 30.0}))
    monkeypatch.setattr(compare_board, "open_board", fails)
    model = OnnxModel.from_proto(SYNTHETIC["conv-relu-sigmoid"]())
    board = Board("rock", "ssh", "rk3588", host="127.0.0.1")
    calibration = default_calibration_set()
    with pytest.raises(BoardError) as failure:
        compare_board.board_divergence(
            model, BuildConfig(), calibration, board, calibration.head(1), progress=False
        )
    result = failure.value.partial
    assert result.meta["partial"]["samples_done"] == 0
    assert result.first_divergence().nsmallest(3, "sqnr_db_mean").sqnr_db_mean.tolist() == [30.0] * 3
    run = result.save(tmp_path / "run")
    assert main(["report", str(run), "--min-sqnr", "10"]) == 1
    err = capsys.readouterr().err
    assert "ran 0 of 1 samples" in err and "board:rock: no compared model outputs" in err


# ---------------------------------------------------------------- 8: output paths first
def test_output_paths_are_checked_before_any_work(tmp_path, tiny_path, capsys, no_toolkit):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        (["build", str(tiny_path), "-o", str(tmp_path)], "is a folder"),
        (["build", str(tiny_path), "-o", str(a_file / "x.rknn")], "is a file, not a folder"),
        (["diverge", str(tiny_path), "--out", str(a_file)], "is a file"),
        (["diverge", str(tiny_path), "--out", str(foreign)], "not an earlier run"),
        (["diverge", str(tiny_path), "--out", str(a_file / "run")], "is a file, not a folder"),
        (["fix", str(tiny_path), "--target-sqnr", "30", "--out", str(foreign)], "not an earlier run"),
        (["fix", str(tiny_path), "--target-sqnr", "30", "--out", str(a_file)], "is a file"),
        (["report", str(_run(tmp_path / "run")), "-o", str(tmp_path)], "is a folder"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert match in _err_line(capsys), argv
    assert not no_toolkit and a_file.read_text() == "mine" and os.listdir(foreign) == ["notes.txt"]


def test_an_unwritable_parent_is_refused_first(tmp_path, tiny_path, capsys, monkeypatch, no_toolkit):
    # root may write anywhere, so the permission answer is replaced: what matters is that
    # the CLI asks before working
    monkeypatch.setattr("workbench.cli.os.access", lambda path, mode: Path(path) != tmp_path)
    assert main(["diverge", str(tiny_path), "--out", str(tmp_path / "new" / "run")]) == 2
    assert "permission denied" in _err_line(capsys) and not no_toolkit


def test_more_samples_than_the_set_holds_is_said(tmp_path, tiny_path, monkeypatch, capsys):
    seen = []

    def fake(model, config, calibration, samples, **kwargs):
        seen.append(len(samples))
        return _divergence({"simulator": 30.0})

    monkeypatch.setattr("workbench.compare.divergence.compute_divergence", fake)
    argv = ["diverge", str(tiny_path), "--samples", "100000", "--out", str(tmp_path / "run"), "--json"]
    assert main(argv) == 0
    assert seen == [12]
    assert "using 12 of 100000 requested samples: the set has 12" in capsys.readouterr().err


# ---------------------------------------------------------------- 9: truncated JPEG
def test_a_truncated_jpeg_is_refused_by_name(tmp_path):
    from workbench.datasets import CalibrationSet
    from workbench.preprocess import Preprocess, load_sample

    cut = tmp_path / "cut.jpg"
    data = PHOTO.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    whole = load_sample(PHOTO, (1, 3, 64, 64), Preprocess())
    assert whole.shape == (1, 3, 64, 64)
    with pytest.raises(WorkbenchError, match=r"cut\.jpg' is a truncated JPEG"):
        load_sample(cut, (1, 3, 64, 64), Preprocess())
    listing = tmp_path / "dataset.txt"
    listing.write_text(f"{PHOTO}\ncut.jpg\n")
    with pytest.raises(WorkbenchError, match=r"dataset\.txt line 2: .*truncated JPEG"):
        CalibrationSet.from_list(listing).validate({"x": (1, 3, 64, 64)}, Preprocess())
    trailing = tmp_path / "trailing.jpg"  # data after the end marker is fine
    trailing.write_bytes(data + b"camera maker notes")
    assert np.array_equal(load_sample(trailing, (1, 3, 64, 64), Preprocess()), whole)


def test_an_image_bomb_is_refused_from_its_header(tmp_path):
    from workbench.preprocess import MAX_IMAGE_PIXELS, Preprocess, load_sample

    data = bytearray(PHOTO.read_bytes())
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2  # declares 60000 x 60000
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bytes(data))
    assert 60000 * 60000 > MAX_IMAGE_PIXELS
    with pytest.raises(WorkbenchError, match="60000 x 60000 image, above the limit"):
        load_sample(bomb, (1, 3, 64, 64), Preprocess())


# ---------------------------------------------------------------- CLI fuzz
NASTY = [
    "",
    " ",
    "nan",
    "inf",
    "-1",
    "0",
    "1e9",
    "99999999999999999999",
    "-",
    "--",
    "-x",
    "--help-me",
    "a b",
    "$(touch {marker})",
    "`touch {marker}`",
    "x;touch {marker}",
    "line\nbreak",
    "../../etc/passwd",
    "/etc/passwd",
    "x:1,3,1000000000,1",
    "x=1,3,-5,1",
    "x:1,3,a,1",
    "x:",
    "é漢字",
]
values = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["check", "report", "doctor"]), option=st.integers(0, 3), value=values)
def test_cli_fuzz_no_traceback(tmp_path, tiny_path, capsys, monkeypatch, command, option, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    value = value.replace("{marker}", str(marker))
    if command == "check":
        flag = ["--platform", "--input-shape", "--input-shape", None][option]
        argv = ["check", str(tiny_path), *([flag, value] if flag else [value])]
    elif command == "report":
        flag = ["--min-sqnr", "--min-cosine", "-o", None][option]
        argv = ["report", str(tmp_path / "no-run"), *([flag, value] if flag else [])]
        if flag is None:
            argv = ["report", value]
    else:
        flag = ["--device", "--platform", "--board", "--device"][option]
        argv = ["board", "doctor", "--adb", str(tmp_path / "no-adb"), flag, value]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err, (argv, out.err)
    assert code in (0, 1, 2), argv
    if code == 2 and out.err:
        assert out.err.startswith(("error: ", "usage: ")), out.err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == [
        n for n in before if n != "cache"
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flag=st.sampled_from(
        ["--mean", "--std", "--samples", "--input-shape", "--dtype", "--cos-thresh", "--min-sqnr"]
    ),
    value=values,
)
def test_cli_fuzz_diverge_options(tmp_path, tiny_path, capsys, monkeypatch, flag, value):
    """diverge with the comparison replaced by a canned result: every bad option value is
    exit 2 with one line, before any work; good ones run (0) or fail the gate (1)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        "workbench.compare.divergence.compute_divergence", lambda *a, **k: _divergence({"simulator": 30.0})
    )
    marker = tmp_path / "pwned"
    value = value.replace("{marker}", str(marker))
    out = tmp_path / "runs" / "run"
    code = main(["diverge", str(tiny_path), f"{flag}={value}", "--out", str(out), "--json"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, (flag, value, err)
    assert code in (0, 1, 2), (flag, value)
    if code == 2:
        assert err.startswith(("error: ", "usage: ")), err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["tiny.onnx"], ["runs", "tiny.onnx"])
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
