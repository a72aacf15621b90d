"""Model Explorer overlays and server: node data keyed as the ONNX adapter names nodes,
colours as computed by hand, and a server on 127.0.0.1 that converts the model and stops."""

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import onnx
import pandas as pd
import pytest

from workbench.compare.result import COLUMNS, Divergence
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.synthetic import cpu_fallback, residual_add
from workbench.viz import model_explorer as me

# residual_add: conv1 -> relu1 -> conv2 -> add(conv2, relu1) -> relu2 (y). The convs are
# fused into the next op in the compiled model, so their outputs have no tensor of their own.
SQNR = {"relu1_out": 30.0, "add_out": 12.0, "y": 15.0}
FUSED = ("conv1_out", "conv2_out")


def _rows(sqnr: dict[str, float], fused=()) -> list[dict]:
    rows = []
    for sample, offset in enumerate((-1.0, 0.0, 1.0)):  # the mean over samples is the value above
        for index, layer in enumerate([*fused, *sqnr]):
            compared = layer in sqnr
            rows.append(
                {
                    **dict.fromkeys(COLUMNS, np.nan),
                    "index": index,
                    "layer": layer,
                    "op_type": "Op",
                    "rknn_layer": layer if compared else None,
                    "sample": sample,
                    "backend": "simulator",
                    "status": "compared" if compared else "fused",
                    "cosine": 0.99,
                    "sqnr_db": sqnr[layer] + offset if compared else np.nan,
                    "flag": "",
                }
            )
    return rows


@pytest.fixture
def model() -> OnnxModel:
    return OnnxModel.from_proto(residual_add())


@pytest.fixture
def result() -> Divergence:
    meta = {
        "model": {"name": "residual_add", "path": None},
        "config": {"target_platform": "rk3588"},
        "parents": {"add_out": ["relu1_out"], "y": ["add_out"]},
    }
    return Divergence(pd.DataFrame(_rows(SQNR, FUSED), columns=list(COLUMNS)), meta)


def test_sqnr_colours_on_the_fixed_scale():
    # stops: 0 dB (214,39,40) red, 20 dB (255,215,0) yellow, 40 dB (44,160,44) green
    assert me.sqnr_colour(-5) == me.sqnr_colour(0) == "#d62728"
    assert me.sqnr_colour(5) == "#e0531e"  # 1/4 of red->yellow: 224.25, 83, 30
    assert me.sqnr_colour(12) == "#ef9110"  # 0.6: 238.6, 144.6, 16
    assert me.sqnr_colour(15) == "#f5ab0a"  # 0.75: 244.75, 171, 10
    assert me.sqnr_colour(25) == "#cac90b"  # 1/4 of yellow->green: 202.25, 201.25, 11
    assert me.sqnr_colour(40) == me.sqnr_colour(90) == "#2ca02c"


def test_node_data_keys_are_producing_nodes_with_values_and_colours(result, model):
    data = me.node_data(result, model)
    assert list(data) == ["sqnr", "verdict", "support"]
    assert data["sqnr"]["results"] == {
        "relu1": {"value": 30.0, "bgColor": "#96bc16"},  # midway yellow->green: 149.5, 187.5, 22
        "add": {"value": 12.0, "bgColor": "#ef9110"},
        "relu2": {"value": 15.0, "bgColor": "#f5ab0a"},
    }
    verdict = {n: r["value"] for n, r in data["verdict"]["results"].items()}
    # add crosses 20 dB while its input had 30: origin; relu2 is below only because add was
    assert verdict == {
        "conv1": "fused",
        "relu1": "ok",
        "conv2": "fused",
        "add": "origin",
        "relu2": "inherited",
    }
    assert data["verdict"]["results"]["add"]["bgColor"] == "#d62728"
    assert data["verdict"]["results"]["relu2"]["bgColor"] == "#ff7f0e"
    assert {r["value"] for r in data["support"]["results"].values()} == {"npu"}
    assert set(data["support"]["results"]) == {"conv1", "relu1", "conv2", "add", "relu2"}
    assert data["support"]["name"] == "support (rk3588)"


def test_a_node_with_several_outputs_shows_its_worst():
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1, num_outputs=2),
            onnx.helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        "split",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
    )
    model = OnnxModel.from_proto(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    )
    run = Divergence(
        pd.DataFrame(_rows({"a": 35.0, "b": 8.0, "y": 9.0}), columns=list(COLUMNS)),
        {"parents": {"y": ["a", "b"]}, "config": {"target_platform": "rk3588"}},
    )
    data = me.node_data(run, model)
    assert data["sqnr"]["results"]["split"]["value"] == 8.0
    assert data["verdict"]["results"]["split"]["value"] == "origin"  # b is below 20 dB with nothing upstream


def test_support_overlay_marks_the_cpu_fallback():
    model = OnnxModel.from_proto(cpu_fallback())
    run = Divergence(
        pd.DataFrame(_rows({"conv1_out": 40.0, "sin_out": 30.0, "y": 28.0}), columns=list(COLUMNS)),
        {"config": {"target_platform": "rk3588"}},
    )
    support = me.node_data(run, model)["support"]["results"]
    assert support == {
        "conv1": {"value": "npu", "bgColor": "#2ca02c"},
        "sin": {"value": "cpu", "bgColor": "#ff7f0e"},
        "conv2": {"value": "npu", "bgColor": "#2ca02c"},
    }


def test_without_a_model_the_run_must_name_its_file(result):
    with pytest.raises(WorkbenchError, match="pass the OnnxModel"):
        me.node_data(result)


def test_write_node_data_writes_three_overlays_and_the_model_when_ids_would_differ(result, tmp_path):
    named = OnnxModel.load(onnx_file(tmp_path / "named.onnx", residual_add()))
    paths = me.write_node_data(result, tmp_path / "run", named)
    assert [p.name for p in paths] == [
        "node_data_sqnr.json",
        "node_data_verdict.json",
        "node_data_support.json",
    ]
    assert json.loads(paths[0].read_text())["results"]["add"]["value"] == 12.0
    assert me.model_file(named) == tmp_path / "named.onnx"
    assert not (tmp_path / "run" / "model.onnx").exists()  # the original file gives the same ids

    bare = residual_add()
    for node in bare.graph.node:
        node.name = ""  # Model Explorer would call these <node_0>..., the workbench Conv_0...
    unnamed = OnnxModel.load(onnx_file(tmp_path / "unnamed.onnx", bare))
    run = Divergence(result.table, {**result.meta, "model": {"path": str(unnamed.path)}})
    paths = me.write_node_data(run, tmp_path / "run2", unnamed)
    assert len(paths) == 3 and (tmp_path / "run2" / "model.onnx").is_file()
    assert shlex.split(me.standalone_command(unnamed, paths))[1] == str(tmp_path / "run2" / "model.onnx")
    assert shlex.split(me.standalone_command(named, paths))[1] == str(tmp_path / "named.onnx")
    assert me.model_file(unnamed) is None
    assert set(json.loads(paths[0].read_text())["results"]) == {"Relu_1", "Add_3", "Relu_4"}


def onnx_file(path: Path, proto) -> Path:
    onnx.save(proto, str(path))
    return path


def test_url_is_the_model_explorer_config_encoding_and_goes_through_the_proxy(tmp_path, monkeypatch):
    model, overlay = tmp_path / "m.onnx", tmp_path / "node_data_sqnr.json"
    url = me.explorer_url(model, [overlay], port=8123, base_url="/user/me/")
    assert url.startswith("/user/me/proxy/8123/?data=")
    assert me.explorer_url(model, port=8123).startswith("http://127.0.0.1:8123/?data=")
    monkeypatch.setitem(sys.modules, "torch", None)  # Model Explorer's config imports torch if it can
    from model_explorer.config import ModelExplorerConfig

    config = ModelExplorerConfig().add_model_from_path(str(model), adapterId=me.ADAPTER_ID)
    config.add_node_data_from_path(str(overlay))
    assert url.split("?data=", 1)[1] == config.to_url_param_value()
    assert json.loads(unquote(url.split("?data=", 1)[1]))["nodeData"] == [str(overlay)]
    data = json.loads(
        unquote(me.explorer_url(model, [overlay, model], port=1, select="add").split("=", 1)[1])
    )
    assert data["nodeData"] == [str(model), str(overlay)]  # the first overlay loads last: it is shown
    assert data["uiState"]["paneStates"][0]["selectedNodeId"] == "add"
    assert data["uiState"]["paneStates"][0]["deepestExpandedGroupNodeIds"] == []
    data = json.loads(unquote(me.explorer_url(model, port=1, expand_all=True).split("=", 1)[1]))
    assert data["uiState"]["paneStates"][0]["deepestExpandedGroupNodeIds"] == ["___all___"]


def test_standalone_command_parses_with_model_explorers_own_command_line(tmp_path, monkeypatch):
    overlays = [tmp_path / "node_data_sqnr.json", tmp_path / "node data verdict.json"]
    command = me.standalone_command(tmp_path / "m.onnx", overlays)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(sys, "argv", shlex.split(command))
    monkeypatch.delitem(sys.modules, "model_explorer.cmdline", raising=False)
    from model_explorer import cmdline  # parses sys.argv when imported

    assert cmdline.args.model_paths == [str(tmp_path / "m.onnx")]
    # Model Explorer shows the overlay it loads last: the first one given is loaded last
    assert cmdline.args.node_data_paths.split(",") == [str(p) for p in overlays[::-1]]
    assert cmdline.args.extensions == "model_explorer_onnx" and cmdline.args.no_open_in_browser


@pytest.fixture(scope="module")
def server():
    port = me.start_server()
    yield port
    me.stop_server()


def _post(port: int, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.status, json.loads(r.read())


def _adapter_node_ids(port: int, model_path: Path) -> set[str]:
    command = {
        "cmdId": "convert",
        "extensionId": me.ADAPTER_ID,
        "modelPath": str(model_path),
        "settings": {},
        "deleteAfterConversion": False,
    }
    status, graphs = _post(port, "apipost/v1/send_command", command)
    assert status == 200 and "error" not in graphs
    return {n["id"] for n in graphs["graphs"][0]["nodes"]}


def test_keys_are_the_adapters_node_ids(server, result, tmp_path):
    named = OnnxModel.load(onnx_file(tmp_path / "named.onnx", residual_add()))
    ids = _adapter_node_ids(server, named.path)
    for overlay in me.node_data(result, named).values():
        assert set(overlay["results"]) <= ids
    assert set(me.node_data(result, named)["support"]["results"]) == ids - {
        i for i in ids if i.startswith("[value] ")
    }  # every ONNX node; graph inputs, outputs and initializers are the adapter's own nodes

    bare = residual_add()
    for node in bare.graph.node:
        node.name = ""
    unnamed = OnnxModel.load(onnx_file(tmp_path / "unnamed.onnx", bare))
    me.write_node_data(result, tmp_path / "run", unnamed)
    served = tmp_path / "run" / "model.onnx"  # the prepared copy
    keys = set(json.loads((tmp_path / "run" / "node_data_support.json").read_text())["results"])
    assert keys <= _adapter_node_ids(server, served)
    assert not keys & _adapter_node_ids(server, unnamed.path)  # the original file: <node_i>


def test_server_listens_on_loopback_only_serves_the_app_offline_and_the_view(server, tmp_path):
    with urllib.request.urlopen(f"http://127.0.0.1:{server}/", timeout=10) as r:
        page = r.read().decode()
    assert r.status == 200 and '<base href="./">' in page and "fonts.gstatic.com" not in page
    with urllib.request.urlopen(f"http://127.0.0.1:{server}/api/v1/check_new_version", timeout=10) as r:
        assert json.loads(r.read())["version"] == ""  # answered without asking PyPI
    if Path("/proc/net/tcp").is_file():
        listening = [
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[3] == "0A"
        ]
        assert f"0100007F:{server:04X}" in listening
        assert not any(a.endswith(f":{server:04X}") and a != f"0100007F:{server:04X}" for a in listening)
    frame = me.explorer_view(tmp_path / "m.onnx", [tmp_path / "n.json"])
    assert frame.src.startswith(f"http://127.0.0.1:{server}/?data=")  # reused, not a second server
    frame = me.explorer_view(tmp_path / "m.onnx", base_url="/")
    assert frame.src.startswith(f"/proxy/{server}/?data=")


def test_stop_leaves_no_process():
    threads = set(threading.enumerate())
    port = me.start_server()
    process = me._Server.process
    me.stop_server()
    assert process.poll() is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/check_health", timeout=2)
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert set(threading.enumerate()) <= threads  # the server ran in the child, not in a thread here


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="reads process states from /proc")
def test_the_server_exits_when_its_parent_is_killed():
    code = (
        "from workbench.viz import model_explorer as me; me.start_server(); "
        "print(me._Server.process.pid, flush=True); import time; time.sleep(120)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.2)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()  # a zombie has exited
    except FileNotFoundError:
        return False
