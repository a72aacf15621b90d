"""Graph views: a layered plotly overlay of the ONNX graph coloured by any per-node value, and Netron.

Model Explorer (``viz.model_explorer``) is the graph view to browse a model: it collapses
namespaces, searches and shows the workbench's overlays. The plotly overlay here is kept for
what Model Explorer does not give: a figure that lives in the notebook's output and in the
static HTML report (no server), that a widget can ring a node in, and that takes any
per-node value straight from Python (support status, a layer's SQNR, a tensor's size).

Layout (Sugiyama-style, in :func:`graph_layout`): rank = longest path from the inputs
(data flows left to right: the notebook's wide cell holds the deep axis, and the divergence
explorer zooms on it to ring a node); an edge that
spans several ranks gets a bend point in each rank it crosses, so skip connections are
drawn around the nodes; barycenter sweeps order each rank to cut crossings; a node sits
at the mean height of its neighbours where the ranks leave room (chains are straight).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from importlib.util import find_spec
from itertools import pairwise
from pathlib import Path

import plotly.graph_objects as go
from netron import server as netron_server

from workbench.errors import WorkbenchError
from workbench.model import OnnxModel

STATUS_COLOURS = {
    "npu": "#2ca02c",
    "NPU": "#2ca02c",
    "cpu": "#ff7f0e",
    "CPU": "#ff7f0e",
    "attention": "#bcbd22",
    "rejected": "#d62728",
    "fused": "#9e9e9e",
    "removed": "#9e9e9e",
}
#: Short labels for long op types (the hover gives the full name); others over 9 letters are cut.
OP_LABELS = {
    "BatchNormalization": "BatchNorm",
    "GlobalAveragePool": "GAvgPool",
    "GlobalMaxPool": "GMaxPool",
    "ConstantOfShape": "ConstShape",
    "InstanceNormalization": "InstNorm",
    "LayerNormalization": "LayerNorm",
}
#: Ranks shown in the first view: op labels stay readable. A deeper graph opens on a window
#: around the focus node (with a range slider below that shows the whole graph, up to
#: SLIDER_NODES nodes); drag to pan.
VIEW_RANKS = 30
#: Up to this many nodes the range slider is drawn. It redraws every trace on each pan:
#: measured in chromium on 2 busy cores, a pan of a 1000-node graph took 1.4-1.8 s with it
#: and 0.3 s without (yolov8n's 323 nodes: 0.6 s with it). Double-click shows the whole graph.
SLIDER_NODES = 500


@dataclass(frozen=True)
class GraphLayout:
    """A layered drawing of an ONNX graph, in plot coordinates.

    ``positions``: node name -> (x, y), x = the node's rank (longest path from the graph's
    inputs; a node without node inputs, such as a Constant, sits just before its first
    consumer), y = its place within the rank (first on top). ``edges``: one polyline per
    producer -> consumer pair, from the producer through a bend point in every rank the edge
    crosses to the consumer. ``ranks``: the number of ranks.
    """

    positions: dict[str, tuple[float, float]]
    edges: list[list[tuple[float, float]]]
    ranks: int


def graph_layout(model: OnnxModel) -> dict[str, tuple[float, float]]:
    """(x, y) per node: x = rank (longest path from the inputs), y = place within the rank,
    ordered to cut edge crossings. See :func:`layered_layout` for the edges too."""
    return layered_layout(model).positions


def layered_layout(model: OnnxModel, sweeps: int = 4) -> GraphLayout:
    """The layered layout of ``model``'s nodes (the graph must be in topological order, as an
    :class:`OnnxModel` keeps it); ``sweeps`` barycenter passes order the ranks."""
    nodes = [n.name for n in model.proto.graph.node]
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    edges = list(
        dict.fromkeys((producer[i], n.name) for n in model.proto.graph.node for i in n.input if i in producer)
    )
    rank = _ranks(nodes, edges)
    layers: list[list[Hashable]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for name in nodes:
        layers[rank[name]].append(name)
    up: dict[Hashable, list] = defaultdict(list)  # item -> its neighbours one rank before
    down: dict[Hashable, list] = defaultdict(list)  # ... and one rank after
    chains = []
    for u, v in edges:
        bends = [("bend", u, v, r) for r in range(rank[u] + 1, rank[v])]
        for point in bends:
            layers[point[3]].append(point)
        chain = [u, *bends, v]
        for a, b in pairwise(chain):
            down[a].append(b)
            up[b].append(a)
        chains.append(chain)
    _order(layers, up, down, sweeps)
    y = _coordinates(layers, up, down)
    x = {item: float(r) for r, layer in enumerate(layers) for item in layer}
    point = {item: (x[item], -y[item]) for item in x}  # first in a rank on top
    return GraphLayout(
        positions={name: point[name] for name in nodes},
        edges=[[point[item] for item in chain] for chain in chains],
        ranks=len(layers),
    )


def _ranks(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    preds, succs = defaultdict(list), defaultdict(list)
    for u, v in edges:
        preds[v].append(u)
        succs[u].append(v)
    rank: dict[str, int] = {}
    for name in nodes:  # topological order
        rank[name] = 1 + max((rank[p] for p in preds[name]), default=-1)
    for name in nodes:  # a Constant feeding layer 90 is drawn at 89, not with the inputs
        if not preds[name] and succs[name]:
            rank[name] = min(rank[s] for s in succs[name]) - 1
    return rank


def _order(layers: list[list], up: Mapping, down: Mapping, sweeps: int) -> None:
    """Barycenter heuristic: alternately down and up, sort each rank by the mean index of
    its neighbours in the rank just visited (an item without any keeps its index)."""
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        ranks = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        neighbours = up if downward else down
        for r in ranks:
            ref = {item: i for i, item in enumerate(layers[r - 1 if downward else r + 1])}
            here = {item: i for i, item in enumerate(layers[r])}

            def key(item, ref=ref, here=here, neighbours=neighbours):
                near = neighbours[item]
                return sum(ref[n] for n in near) / len(near) if near else here[item]

            layers[r].sort(key=key)


#: How much more a node's wish counts than a bend point's when a rank is spread: chains of
#: nodes stay straight and the skip edges make way (near weights drift the whole drawing).
NODE_WEIGHT = 1000.0


def _coordinates(layers: list[list], up: Mapping, down: Mapping, passes: int = 3) -> dict:
    """y per item: each rank in its order, one apart at least, as near as it can be to the
    mean y of its neighbours in the rank before (down passes) or after (up passes)."""
    y = {item: i - (len(layer) - 1) / 2 for layer in layers for i, item in enumerate(layer)}
    for p in range(passes):
        downward = p % 2 == 0  # the last pass is downward: a node lines up with its inputs
        neighbours = up if downward else down
        for layer in layers if downward else layers[::-1]:
            want = [_wish(item, neighbours[item], y) for item in layer]
            weight = [1.0 if isinstance(item, tuple) else NODE_WEIGHT for item in layer]  # bends are tuples
            y.update(zip(layer, _spread(want, weight)))
    return y


def _wish(item, near: Sequence, y: Mapping) -> float:
    """Where ``item`` would like to be: the mean y of its node neighbours (of its bend
    points only when it has no node neighbour; its own y when it has none at all). Bends
    do not pull, or each Conv -> Sigmoid -> Mul(Conv, Sigmoid) would step the chain aside."""
    nodes = [n for n in near if not isinstance(n, tuple)] or near
    return sum(y[n] for n in nodes) / len(nodes) if nodes else y[item]


def _spread(want: Sequence[float], weight: Sequence[float], gap: float = 1.0) -> list[float]:
    """The positions closest to ``want`` (weighted least squares) that keep their order at
    least ``gap`` apart: isotonic regression of want[i] - i*gap (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count] of pooled targets
    for i, (w, c) in enumerate(zip(want, weight)):
        blocks.append([(w - i * gap) * c, c, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, mass, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += mass
            blocks[-1][2] += count
    pooled = [total / mass for total, mass, count in blocks for _ in range(int(count))]
    return [z + i * gap for i, z in enumerate(pooled)]


def graph_figure(
    model: OnnxModel,
    values: Mapping[str, float | str] | None = None,
    *,
    hover: Mapping[str, str] | None = None,
    title: str = "",
    colorscale: str = "RdYlGn",
    value_label: str = "value",
    focus: str | None = None,
) -> go.Figure:
    """The graph, laid out in layers (:func:`layered_layout`), each node labelled with its op
    type and coloured by ``values``.

    Args:
        model: the model to draw.
        values: node name -> a category (support status: one trace per category, colours
            from ``STATUS_COLOURS``) or a number (a layer's SQNR: one colour scale
            ``colorscale``, titled ``value_label``; nodes without a value grey).
        hover: extra text per node name (reason, fix, shapes). The hover shows the node's
            name, op type and output tensor names too.
        focus: the node the first view is centred on when the graph is deeper than
            ``VIEW_RANKS`` ranks; default: the lowest numeric value, or the first node of the
            rarest category, or the inputs.
    Returns:
        A plotly Figure (SVG node and edge traces, so the range slider can draw them; WebGL
        op labels). The first trace holds the edges, the second the op labels;
        node names are in each later (node) trace's ``customdata``, so a click handler can
        find the node.
    """
    values = values or {}
    hover = hover or {}
    layout = layered_layout(model)
    pos = layout.positions
    ex, ey = [], []
    for line in layout.edges:
        ex += [p[0] for p in line] + [None]
        ey += [p[1] for p in line] + [None]
    fig = go.Figure(
        go.Scatter(
            x=ex,
            y=ey,
            mode="lines",
            line={"width": 0.8, "color": "#b8b8b8"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    nodes = list(model.proto.graph.node)
    # Op labels in a WebGL trace: the range slider draws only SVG traces, so its overview
    # shows the coloured nodes and edges without a smear of text.
    fig.add_trace(
        go.Scattergl(
            x=[pos[n.name][0] for n in nodes],
            y=[pos[n.name][1] for n in nodes],
            mode="text",
            text=[_label(n.op_type) for n in nodes],
            # above and below on alternate ranks: neighbouring labels do not run together
            textposition=["top center" if pos[n.name][0] % 2 == 0 else "bottom center" for n in nodes],
            textfont={"size": 9, "color": "#444"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    numeric = bool(values) and all(isinstance(v, int | float) for v in values.values())
    if numeric:
        _numeric_nodes(fig, nodes, pos, values, hover, colorscale, value_label)
    elif values:
        _category_nodes(fig, nodes, pos, values, hover)
    else:
        fig.add_trace(_node_trace(nodes, pos, hover, name="node", marker={"color": "#7f9fbf"}))
        fig.data[-1].showlegend = False
    ys = [y for y in ey if y is not None] + [p[1] for p in pos.values()] or [0.0]  # bends too
    height = int(min(900, max(360, 120 + 40 * (max(ys) - min(ys)))))
    fig.update_layout(
        title=title,
        template="plotly_white",
        hovermode="closest",
        height=height,
        xaxis={"title": "rank (longest path from the inputs)", "showgrid": False, "zeroline": False},
        yaxis={"visible": False, "range": [min(ys) - 1, max(ys) + 1.2]},
        dragmode="pan",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        margin={"l": 20, "r": 20},
    )
    if layout.ranks > VIEW_RANKS:
        x = pos[focus or _focus(nodes, values, numeric)][0] if nodes else 0.0
        start = min(max(0.0, x - VIEW_RANKS / 2), layout.ranks - VIEW_RANKS)
        fig.update_xaxes(range=[start - 0.5, start + VIEW_RANKS - 0.5])
        if len(nodes) <= SLIDER_NODES:
            fig.update_xaxes(rangeslider={"thickness": 0.1})
    return fig


def _focus(nodes, values: Mapping, numeric: bool) -> str:
    have = [n.name for n in nodes if n.name in values]
    if numeric and have:
        return min(have, key=lambda name: values[name])
    counts = Counter(str(values[n]) for n in have)
    if len(counts) > 1:
        rarest = min(counts, key=counts.get)
        return next(n for n in have if str(values[n]) == rarest)
    return nodes[0].name


def _label(op_type: str) -> str:
    label = OP_LABELS.get(op_type, op_type)
    return label if len(label) <= 10 else label[:9] + "…"


def _node_trace(members, pos, hover, *, name: str, marker: dict, value=lambda n: "") -> go.Scatter:
    return go.Scatter(
        x=[pos[n.name][0] for n in members],
        y=[pos[n.name][1] for n in members],
        mode="markers",
        name=name,
        marker={"size": 10, "line": {"width": 0.5, "color": "#333"}, **marker},
        customdata=[n.name for n in members],
        hovertext=[_text(n, value(n), hover) for n in members],
        hoverinfo="text",
    )


def _text(node, value, hover) -> str:
    outputs = ", ".join(node.output[:3]) + (" ..." if len(node.output) > 3 else "")
    lines = [f"<b>{node.op_type}</b> {node.name}", f"output: {outputs}"]
    lines += [str(v) for v in (value, hover.get(node.name, "")) if v not in (None, "")]
    return "<br>".join(lines)


def _category_nodes(fig, nodes, pos, values, hover) -> None:
    groups: dict[str, list] = {}
    for node in nodes:
        groups.setdefault(str(values.get(node.name, "unknown")), []).append(node)
    for category, members in groups.items():
        marker = {"color": STATUS_COLOURS.get(category, "#1f77b4")}
        fig.add_trace(
            _node_trace(
                members,
                pos,
                hover,
                name=f"{category} ({len(members)})",
                marker=marker,
                value=lambda n, c=category: c,
            )
        )


def _numeric_nodes(fig, nodes, pos, values, hover, colorscale, label) -> None:
    have = [n for n in nodes if n.name in values]
    rest = [n for n in nodes if n.name not in values]
    if rest:
        fig.add_trace(
            _node_trace(
                rest, pos, hover, name=f"no value ({len(rest)})", marker={"size": 7, "color": "#d0d0d0"}
            )
        )
    marker = {
        "color": [values[n.name] for n in have],
        "colorscale": colorscale,
        "showscale": True,
        "colorbar": {"title": label},
    }
    fig.add_trace(
        _node_trace(
            have, pos, hover, name=label, marker=marker, value=lambda n: f"{label} {values[n.name]:.4g}"
        )
    )
    fig.data[-1].showlegend = bool(rest)  # the colour bar says it otherwise


#: Host header names the Netron server answers (any port); anything else gets 403, so a
#: web page that rebinds its own DNS name to 127.0.0.1 cannot read the model.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_SERVERS: list[tuple[object, Path]] = []  # (server, private folder) started by netron_view


def netron_view(
    model: OnnxModel | str | Path,
    *,
    port: int = 0,
    proxy: bool | None = None,
    height: int = 600,
    allow_hosts: tuple[str, ...] = (),
):
    """Serve the model with Netron on 127.0.0.1 and return an IFrame for the notebook.

    Only a private copy of the model is served: a new folder (mode 0700) holding just the
    .onnx, deleted by :func:`stop_netron` and at exit (external weights are not copied:
    Netron shows the graph without them). Requests must carry a Host header naming
    127.0.0.1, localhost or [::1] (any port), or one of ``allow_hosts``: a page that rebinds
    its DNS name to 127.0.0.1 gets 403.

    When JupyterLab runs on another machine than the browser, the IFrame goes through
    jupyter-server-proxy (``<base_url>proxy/<port>/``) so only Jupyter's own port is
    needed; ``proxy=None`` picks that whenever jupyter-server-proxy is installed. The proxy
    forwards the browser's Host header: this machine's host name is accepted then too; give
    the name the browser uses for Jupyter in ``allow_hosts`` if it is another one.
    Returns the IFrame; its ``.src`` is the URL.
    """

    from IPython.display import IFrame

    folder = Path(tempfile.mkdtemp(prefix="rknn-wb-netron-"))  # mkdtemp: mode 0700
    try:
        # Netron writes the file name into its page: keep it to safe characters.
        name = re.sub(
            r"[^A-Za-z0-9._-]", "_", model.name if isinstance(model, OnnxModel) else Path(model).stem
        )
        path = folder / f"{name or 'model'}.onnx"
        if isinstance(model, OnnxModel):
            model.save(path)
        else:
            shutil.copyfile(model, path)
        path.chmod(0o600)
        if proxy is None:
            proxy = _has_server_proxy()
        hosts = {*LOCAL_HOSTS, *allow_hosts}
        if proxy:
            hosts |= {socket.gethostname(), socket.getfqdn()}
        server = ThreadingHTTPServer(("127.0.0.1", port), _netron_handler(path, hosts))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="netron").start()
    if not _SERVERS:
        atexit.register(stop_netron)
    _SERVERS.append((server, folder))
    bound = server.server_address[1]
    base = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    url = f"{base.rstrip('/')}/proxy/{bound}/" if proxy else f"http://127.0.0.1:{bound}/"
    return IFrame(url, width="100%", height=height)


def _netron_handler(path: Path, hosts: set[str]):
    """A request handler class for one model: Netron's own handler (its pages, and the
    model under /data/) behind a Host-header check.

    Netron's ``serve()`` has no Host check and keeps the served model in a class attribute
    shared by every server, so its handler and content provider (``netron.server``, private
    names, netron 8-9) are used here with one subclass per model; the tests fail if an
    update changes them.
    """

    class Handler(netron_server._HTTPRequestHandler):
        content = netron_server._ContentProvider(None, str(path), str(path), path.name)

        def do_GET(self):  # noqa: N802 (http.server's name)
            host = (self.headers.get("Host") or "").strip().lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in hosts and host not in hosts:
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.split("?")[0].endswith("/browser.js"):
                return self._send_offline_app()
            super().do_GET()

        def end_headers(self):
            # Netron asks for cookie consent (and geolocates the user over the internet to
            # decide) unless this cookie is set: no splash, no request leaves the machine.
            self.send_header("Set-Cookie", f"consent={int(time.time() * 1000)}; Path=/; SameSite=Strict")
            super().end_headers()

        def _send_offline_app(self):
            body = _offline_browser_js().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # quiet, as netron's
            pass

    return Handler


#: Edits to Netron's browser app served by netron_view: no usage telemetry (Google
#: Analytics, on when the app is "packaged") and no endless "Please update" prompt once the
#: installed release is 180 days old. Each must match, or the view refuses to serve it.
_OFFLINE_EDITS = (
    ("packaged: this._meta.version && this._meta.version[0] !== '0.0.0',", "packaged: false,"),
    ("if (days > 180) {", "if (false) {"),
)


def _offline_browser_js() -> str:

    text = (Path(netron_server.__file__).parent / "browser.js").read_text(encoding="utf-8")
    for old, new in _OFFLINE_EDITS:
        if old not in text:
            raise WorkbenchError(
                f"This Netron release changed its browser app ({old!r} not found): the workbench cannot "
                "turn its telemetry off. Use explorer_view (Model Explorer) or pin netron<10."
            )
        text = text.replace(old, new)
    return text


def stop_netron() -> None:
    """Stop every Netron server netron_view started and delete their private model copies."""

    while _SERVERS:
        server, folder = _SERVERS.pop()
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def _has_server_proxy() -> bool:

    return find_spec("jupyter_server_proxy") is not None
