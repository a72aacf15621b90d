"""Graph views: an overlay of the ONNX graph coloured by any per-node value, and Netron.

The overlay is a plotly figure (WebGL markers, one line trace for all edges), laid out
by depth in the graph, so a 1000-node model stays responsive. It takes a categorical
value per node (support status) or a number (a layer's SQNR), so later results reuse it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import plotly.graph_objects as go

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


def netron_view(
    model: OnnxModel | str | Path, *, port: int = 0, proxy: bool | None = None, height: int = 600
):
    """Serve the model with Netron on 127.0.0.1 and return an IFrame for the notebook.

    When JupyterLab runs on another machine than the browser, the IFrame goes through
    jupyter-server-proxy (``<base_url>proxy/<port>/``) so only Jupyter's own port is
    needed; ``proxy=None`` picks that whenever jupyter-server-proxy is installed.
    Returns the IFrame; its ``.src`` is the URL.
    """
    import netron
    from IPython.display import IFrame

    if isinstance(model, OnnxModel):  # a private copy: another frame may serve another model
        path = model.save(Path(tempfile.mkdtemp(prefix="rknn-wb-netron-")) / "model.onnx")
    else:
        path = Path(model)
    address = netron.serve(str(path), None, ("127.0.0.1", port), False)
    host, bound = address
    if proxy is None:
        proxy = _has_server_proxy()
    base = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    url = f"{base.rstrip('/')}/proxy/{bound}/" if proxy else f"http://{host}:{bound}/"
    return IFrame(url, width="100%", height=height)


def stop_netron() -> None:
    """Stop every Netron server this process started."""
    import netron

    netron.stop()


def _has_server_proxy() -> bool:
    from importlib.util import find_spec

    return find_spec("jupyter_server_proxy") is not None
