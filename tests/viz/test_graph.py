import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from onnx import TensorProto, helper

from workbench.model import OnnxModel
from workbench.viz.graph import (
    SLIDER_NODES,
    VIEW_RANKS,
    _label,
    _spread,
    graph_figure,
    graph_layout,
    layered_layout,
    netron_view,
    stop_netron,
)


def _graph(nodes: list[tuple[str, str, list[str]]]) -> OnnxModel:
    """A float graph from (name, op, inputs): each node's output is named after it; the
    last node's output is the graph's output ``y``."""
    made = [helper.make_node(op, inputs, [name], name=name) for name, op, inputs in nodes]
    made.append(helper.make_node("Identity", [nodes[-1][0]], ["y"], name="out"))
    graph = helper.make_graph(
        made,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return OnnxModel.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def _chain(blocks: int) -> OnnxModel:
    """4 nodes per block, each block's Mul also taking the output of two blocks before."""
    nodes, prev, prev2 = [], "x", "x"
    for i in range(blocks):
        nodes += [
            (f"relu{i}", "Relu", [prev]),
            (f"neg{i}", "Neg", [f"relu{i}"]),
            (f"add{i}", "Add", [f"relu{i}", f"neg{i}"]),
            (f"mul{i}", "Mul", [f"add{i}", prev2]),
        ]
        prev2, prev = prev, f"mul{i}"
    return _graph(nodes)


def test_layout_puts_every_node_after_its_inputs(tiny_models):
    model = tiny_models["residual-add"]
    pos = graph_layout(model)
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    for node in model.proto.graph.node:
        for i in node.input:
            if i in producer:
                assert pos[producer[i]][0] < pos[node.name][0]


def test_diamond_is_drawn_symmetric_around_its_chain():
    #     b
    #  a <   > d      ranks 0, 1, 1, 2; b and c one apart around a's height
    #     c
    model = _graph([("a", "Relu", ["x"]), ("b", "Neg", ["a"]), ("c", "Abs", ["a"]), ("d", "Add", ["b", "c"])])
    pos = graph_layout(model)
    assert pos["a"] == pytest.approx((0, 0)) and pos["d"] == pytest.approx((2, 0))
    assert [*pos["b"], *pos["c"]] == pytest.approx([1, 0.5, 1, -0.5])  # b first: on top
    assert pos["out"] == pytest.approx((3, 0))


def test_barycenter_ordering_uncrosses_two_chains():
    # In node order rank 1 holds c (fed by b) above d (fed by a): drawn so, the edges cross.
    model = _graph(
        [("a", "Relu", ["x"]), ("b", "Neg", ["x"]), ("c", "Abs", ["b"]), ("d", "Sigmoid", ["a"]),
         ("e", "Add", ["c", "d"])]
    )  # fmt: skip
    pos = graph_layout(model)
    assert pos["a"][0] == pos["b"][0] == 0 and pos["c"][0] == pos["d"][0] == 1
    assert (pos["a"][1] > pos["b"][1]) == (pos["d"][1] > pos["c"][1])  # a-d and b-c do not cross


def test_a_skip_edge_bends_around_the_chain_it_jumps(tiny_models):
    layout = layered_layout(tiny_models["residual-add"])  # conv1 relu1 conv2 add(conv2, relu1) relu2
    pos = layout.positions
    chain = [v for n in ("conv1", "relu1", "conv2", "add", "relu2") for v in pos[n]]
    assert chain == pytest.approx([0, 0, 1, 0, 2, 0, 3, 0, 4, 0], abs=0.01)  # the chain is straight
    skip = next(line for line in layout.edges if len(line) == 3)  # relu1 -> (bend) -> add
    assert skip[0] == pos["relu1"] and skip[2] == pos["add"]
    assert skip[1][0] == 2 and abs(skip[1][1] - pos["conv2"][1]) == pytest.approx(1)  # beside conv2
    assert len(layout.edges) == 5 and layout.ranks == 5


def test_a_constant_sits_just_before_its_consumer():
    model = _graph(
        [("k", "Constant", []), ("r1", "Relu", ["x"]), ("r2", "Relu", ["r1"]), ("r3", "Relu", ["r2"]),
         ("add", "Add", ["r3", "k"])]
    )  # fmt: skip
    model.proto.graph.node[0].attribute.append(
        helper.make_attribute("value", helper.make_tensor("kv", TensorProto.FLOAT, [1], [1.0]))
    )
    pos = graph_layout(model)
    assert pos["add"][0] == 3 and pos["k"][0] == 2  # not at rank 0 with the inputs


def test_spread_keeps_the_order_one_apart_nearest_to_the_wishes():
    assert _spread([0, 0], [1, 1]) == pytest.approx([-0.5, 0.5])
    assert _spread([0, 0], [1000, 1]) == pytest.approx([0, 1], abs=0.01)  # the heavy one stays
    assert _spread([3, 0, 5], [1, 1, 1]) == pytest.approx([1, 2, 5])  # 3 and 0 pooled round 1.5


def test_nodes_carry_their_op_type_and_tensor_names(tiny_models):
    fig = graph_figure(tiny_models["conv-relu-sigmoid"])
    labels = fig.data[1]
    assert list(labels.text) == ["Conv", "Relu", "Conv", "Sigmoid"] and labels.mode == "text"
    nodes = fig.data[2]
    assert list(nodes.customdata) == ["conv1", "relu1", "conv2", "sigmoid"]
    assert "relu1_out" in nodes.hovertext[1] and "<b>Relu</b> relu1" in nodes.hovertext[1]
    assert not nodes.showlegend  # no "unknown (4)" legend when nothing is coloured
    assert [_label(op) for op in ("BatchNormalization", "DynamicQuantizeLinear", "HardSwish")] == [
        "BatchNorm",
        "DynamicQu…",
        "HardSwish",
    ]  # short enough to sit between neighbours; the hover has the full name


def test_a_deep_graph_opens_on_a_window_around_the_worst_node():
    model = _chain(250)  # 1001 nodes, 1001 ranks
    values = {n.name: 30.0 for n in model.proto.graph.node}
    values["add100"] = 5.0
    fig = graph_figure(model, values, value_label="SQNR (dB)")
    pos = graph_layout(model)
    x = pos["add100"][0]
    lo, hi = fig.layout.xaxis.range
    assert lo < x < hi and hi - lo == VIEW_RANKS
    assert not fig.layout.xaxis.rangeslider.visible  # over SLIDER_NODES: panning stays quick
    assert sum(len(t.x) for t in fig.data[2:]) == 1001
    assert len({pos[n.name] for n in model.proto.graph.node}) == 1001  # no two nodes on one spot
    ys = [y for _, y in pos.values()]
    assert max(ys) - min(ys) < 3  # chains stay straight: no drift over 1000 ranks


def test_a_deep_graph_of_few_nodes_has_a_range_slider_over_the_whole_graph():
    model = _chain(12)  # 49 nodes, 49 ranks
    assert len(model.proto.graph.node) <= SLIDER_NODES
    fig = graph_figure(model)
    assert fig.layout.xaxis.range == (-0.5, VIEW_RANKS - 0.5)  # no values: from the inputs
    assert fig.layout.xaxis.rangeslider.thickness == 0.1


def test_a_shallow_graph_is_shown_whole(tiny_models):
    fig = graph_figure(tiny_models["residual-add"], {"add": "cpu"})
    assert fig.layout.xaxis.range is None and not fig.layout.xaxis.rangeslider.visible


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
    layout = layered_layout(model)
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    pairs = {(producer[i], n.name) for n in model.proto.graph.node for i in n.input if i in producer}
    assert len(layout.edges) == len(pairs)
    for line in layout.edges:  # every edge runs left to right, one rank per step
        assert [p[0] for p in line] == list(range(int(line[0][0]), int(line[-1][0]) + 1))
    fig = graph_figure(model, {n.name: "npu" for n in model.proto.graph.node})
    assert sum(len(t.x) for t in fig.data[2:]) == len(model.proto.graph.node)


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
