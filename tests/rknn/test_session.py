"""The toolkit runs in a child process: failures and crashes become ToolkitError, the
caller (a Jupyter kernel in real use) survives."""

import os
import signal

import pytest

from workbench.datasets import CalibrationSet
from workbench.errors import ToolkitError
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.runners.simulator import SimulatorRunner

pytestmark = pytest.mark.toolkit


def test_rejected_model_quotes_the_toolkit(tiny_models, small_set, tmp_path):
    with pytest.raises(ToolkitError) as err:
        SimulatorRunner(tiny_models["toolkit-rejects"], BuildConfig(), small_set, workdir=tmp_path)
    message = str(err.value)
    assert "rknn-toolkit2 build failed" in message and "The toolkit said" in message
    assert str(tmp_path) in message and "toolkit.log" in message


def test_crash_is_reported_and_caller_lives(tmp_path):
    session = ToolkitSession(tmp_path)
    os.kill(session._proc.pid, signal.SIGSEGV)  # what a toolkit segfault looks like
    session._proc.wait()
    with pytest.raises(ToolkitError, match="SIGSEGV"):
        session.call("build", model_path="m.onnx", config={}, dataset=None, do_quantization=False)
    session.close()


def test_timeout_stops_the_worker(tiny_models, small_set, tmp_path):
    session = ToolkitSession(tmp_path)
    model = tiny_models["conv-relu-sigmoid"].save(tmp_path / "m.onnx")
    with pytest.raises(ToolkitError, match="longer than"):
        session.call(
            "build",
            timeout=0.01,
            model_path=str(model),
            config={"target_platform": "rk3588"},
            dataset=None,
            do_quantization=False,
        )
    assert session._proc.poll() is not None
    session.close()


def test_unknown_platform_fails_before_the_toolkit():
    with pytest.raises(Exception, match="rk3588"):
        BuildConfig(target_platform="rk9999")


def test_calibration_list_is_written_with_absolute_paths(small_set: CalibrationSet, tmp_path):
    path = small_set.write_list(tmp_path / "d.txt")
    assert all(line.startswith("/") for line in path.read_text().splitlines())
