"""Graph views: an overlay of the ONNX graph coloured by any per-node value, and Netron.

The overlay is a plotly figure (WebGL markers, one line trace for all edges), laid out
by depth in the graph, so a 1000-node model stays responsive. It takes a categorical
value per node (support status) or a number (a layer's SQNR), so later results reuse it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go

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


def graph_layout(model: OnnxModel) -> dict[str, tuple[float, float]]:
    """(x, y) per node: x = longest path from the inputs, y = order within that depth."""
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    depth: dict[str, int] = {}
    for node in model.proto.graph.node:  # topological order
        parents = [depth[producer[i]] for i in node.input if i in producer]
        depth[node.name] = 1 + max(parents, default=-1)
    seen: dict[int, int] = {}
    positions = {}
    for node in model.proto.graph.node:
        d = depth[node.name]
        positions[node.name] = (float(d), -float(seen.get(d, 0)))
        seen[d] = seen.get(d, 0) + 1
    return positions


def graph_figure(
    model: OnnxModel,
    values: Mapping[str, float | str] | None = None,
    *,
    hover: Mapping[str, str] | None = None,
    title: str = "",
    colorscale: str = "RdYlGn",
    value_label: str = "value",
) -> go.Figure:
    """The graph with nodes coloured by ``values`` (node name -> number or category).

    ``hover`` adds text per node (reason, fix, shapes). Node names are in ``customdata``
    so a click handler can find the node.
    """
    values = values or {}
    hover = hover or {}
    pos = graph_layout(model)
    producer = {o: n.name for n in model.proto.graph.node for o in n.output}
    ex, ey = [], []
    for node in model.proto.graph.node:
        for i in node.input:
            if i in producer:
                (x0, y0), (x1, y1) = pos[producer[i]], pos[node.name]
                ex += [x0, x1, None]
                ey += [y0, y1, None]
    fig = go.Figure(
        go.Scattergl(
            x=ex,
            y=ey,
            mode="lines",
            line={"width": 0.6, "color": "#b0b0b0"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    nodes = list(model.proto.graph.node)
    numeric = [v for v in values.values() if isinstance(v, int | float)]
    if values and len(numeric) == len(values):
        _numeric_nodes(fig, nodes, pos, values, hover, colorscale, value_label)
    else:
        _category_nodes(fig, nodes, pos, values, hover)
    fig.update_layout(
        title=title,
        template="plotly_white",
        hovermode="closest",
        height=520,
        xaxis={"title": "depth", "showgrid": False, "zeroline": False},
        yaxis={"visible": False},
        dragmode="pan",
        legend={"orientation": "h"},
    )
    return fig


def _text(node, value, hover) -> str:
    extra = hover.get(node.name, "")
    value_line = f"<br>{value}" if value not in (None, "") else ""
    return f"<b>{node.name}</b><br>{node.op_type}{value_line}{'<br>' + extra if extra else ''}"


def _category_nodes(fig, nodes, pos, values, hover) -> None:
    groups: dict[str, list] = {}
    for node in nodes:
        groups.setdefault(str(values.get(node.name, "unknown")), []).append(node)
    for category, members in groups.items():
        fig.add_trace(
            go.Scattergl(
                x=[pos[n.name][0] for n in members],
                y=[pos[n.name][1] for n in members],
                mode="markers",
                name=f"{category} ({len(members)})",
                marker={
                    "size": 9,
                    "color": STATUS_COLOURS.get(category, "#1f77b4"),
                    "line": {"width": 0.5, "color": "#333"},
                },
                customdata=[n.name for n in members],
                hovertext=[_text(n, category, hover) for n in members],
                hoverinfo="text",
            )
        )


def _numeric_nodes(fig, nodes, pos, values, hover, colorscale, label) -> None:
    have = [n for n in nodes if n.name in values]
    rest = [n for n in nodes if n.name not in values]
    if rest:
        fig.add_trace(
            go.Scattergl(
                x=[pos[n.name][0] for n in rest],
                y=[pos[n.name][1] for n in rest],
                mode="markers",
                name=f"no value ({len(rest)})",
                marker={"size": 7, "color": "#d0d0d0"},
                customdata=[n.name for n in rest],
                hovertext=[_text(n, "", hover) for n in rest],
                hoverinfo="text",
            )
        )
    fig.add_trace(
        go.Scattergl(
            x=[pos[n.name][0] for n in have],
            y=[pos[n.name][1] for n in have],
            mode="markers",
            name=label,
            marker={
                "size": 10,
                "color": [values[n.name] for n in have],
                "colorscale": colorscale,
                "showscale": True,
                "colorbar": {"title": label},
                "line": {"width": 0.5, "color": "#333"},
            },
            customdata=[n.name for n in have],
            hovertext=[_text(n, f"{label} {values[n.name]:.4g}", hover) for n in have],
            hoverinfo="text",
        )
    )


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
    import atexit
    import shutil
    import socket
    import threading
    from http.server import ThreadingHTTPServer

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
    from netron import server as netron_server

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
    from netron import server as netron_server

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
    import shutil

    while _SERVERS:
        server, folder = _SERVERS.pop()
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


def _has_server_proxy() -> bool:
    from importlib.util import find_spec

    return find_spec("jupyter_server_proxy") is not None
