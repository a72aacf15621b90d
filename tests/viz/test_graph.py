import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from workbench.model import OnnxModel
from workbench.viz.graph import graph_figure, graph_layout, netron_view, stop_netron


def test_layout_puts_every_node_after_its_inputs(tiny_models):
    model = tiny_models["residual-add"]
    pos = graph_layout(model)
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    for node in model.proto.graph.node:
        for i in node.input:
            if i in producer:
                assert pos[producer[i]][0] < pos[node.name][0]


def test_categorical_overlay_has_a_trace_per_status(tiny_models):
    model = tiny_models["cpu-fallback"]
    values = {"conv1": "npu", "sin": "cpu", "conv2": "npu"}
    fig = graph_figure(model, values, hover={"sin": "runs on the CPU"})
    traces = {t.name: t for t in fig.data if t.name}
    assert set(traces) == {"npu (2)", "cpu (1)"}
    assert list(traces["cpu (1)"].customdata) == ["sin"]
    assert "runs on the CPU" in traces["cpu (1)"].hovertext[0]
    edges = fig.data[0]
    assert sum(v is None for v in edges.x) == 2  # conv1->sin, sin->conv2


def test_numeric_overlay_has_a_colour_scale(tiny_models):
    model = tiny_models["conv-relu-sigmoid"]
    fig = graph_figure(model, {"conv1": 30.0, "relu1": 25.5}, value_label="SQNR dB")
    coloured = next(t for t in fig.data if t.name == "SQNR dB")
    assert list(coloured.marker.color) == [30.0, 25.5] and coloured.marker.showscale
    assert next(t for t in fig.data if t.name == "no value (2)")


@pytest.mark.zoo
def test_overlay_scales_to_a_real_model(zoo):
    model = zoo("yolov8n")
    fig = graph_figure(model, {n.name: "npu" for n in model.proto.graph.node})
    assert sum(len(t.x) for t in fig.data[1:]) == len(model.proto.graph.node)
    assert all(t.type == "scattergl" for t in fig.data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_netron_serves_on_loopback(tiny_models):
    frame = netron_view(tiny_models["conv-relu-sigmoid"], proxy=False)
    try:
        assert frame.src.startswith("http://127.0.0.1:")
        assert b"netron" in urllib.request.urlopen(frame.src, timeout=10).read().lower()
    finally:
        stop_netron()


def test_netron_through_jupyter_server_proxy(tiny_models, tmp_path):
    """The remote-JupyterLab path: the browser only reaches Jupyter's port."""
    port, token = _free_port(), "wbtest"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.root_dir={tmp_path}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    frame = netron_view(tiny_models["conv-relu-sigmoid"], proxy=True)
    try:
        assert frame.src.startswith("/proxy/")
        url = f"http://127.0.0.1:{port}{frame.src}?token={token}"
        for _ in range(60):
            try:
                body = urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter server did not answer")
        assert b"netron" in body.lower()
    finally:
        stop_netron()
        server.terminate()
        server.wait(timeout=30)


def test_netron_takes_a_path(tmp_path, tiny_models):
    path = tiny_models["concat-resize"].save(tmp_path / "m.onnx")
    frame = netron_view(path, proxy=False)
    stop_netron()
    assert isinstance(OnnxModel.load(path), OnnxModel) and frame.src


def test_netron_opens_without_the_consent_splash_or_telemetry(tiny_models):
    """The consent cookie is set by the server (no splash, no geolocation request) and the
    browser app is served with its telemetry and update nag turned off."""
    import urllib.request

    from workbench.viz.graph import netron_view, stop_netron

    frame = netron_view(tiny_models["conv-relu-sigmoid"], proxy=False)
    try:
        with urllib.request.urlopen(frame.src + "browser.js", timeout=10) as reply:
            cookie, app = reply.headers.get("Set-Cookie", ""), reply.read().decode()
        assert cookie.startswith("consent=")
        assert "packaged: false," in app and "if (false) {" in app
        assert "this._meta.version[0] !== '0.0.0'" not in app
    finally:
        stop_netron()
