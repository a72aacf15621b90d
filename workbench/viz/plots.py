"""Plotly figures of a Divergence result. Each is a pure function: result in, Figure out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go

from workbench.compare.board import backend_gap
from workbench.compare.metrics import SQNR_OK_DB, tensor_metrics
from workbench.compare.result import Divergence
from workbench.viz.graph import graph_figure

METRIC_LABELS = {"sqnr_db": "SQNR (dB)", "cosine": "cosine similarity"}


def per_layer_figure(
    result: Divergence,
    metric: str = "sqnr_db",
    backend: str | None = None,
    threshold: float | None = None,
    label_worst: int = 3,
) -> go.Figure:
    """Per-layer ``metric`` (mean over samples, band to the worst sample) along the graph.

    The x axis is the layer's position in topological order; hovering shows the layer,
    its op and the RKNN layer it was matched to. The ``label_worst`` lowest layers are
    annotated (at staggered heights, long names shortened; the full name on hover).
    ``threshold`` draws a horizontal line (default: 20 dB or cosine 0.99).
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(METRIC_LABELS)}, not {metric!r}")
    backend = backend or result.quantized_backend
    summary = result.summary(backend)
    mean, worst = summary[f"{metric}_mean"], summary[f"{metric}_worst"]
    hover = [
        f"<b>{r.layer}</b><br>{r.op_type} → RKNN {r.rknn_layer}<br>"
        f"mean {m:.4g}, worst {w:.4g} over {r.samples} sample(s)"
        for r, m, w in zip(summary.itertuples(), mean, worst)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=summary["index"],
            y=worst,
            mode="lines",
            line={"width": 0},
            name="worst sample",
            hoverinfo="skip",
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=summary["index"],
            y=mean,
            mode="lines+markers",
            name=f"{backend} vs float (mean)",
            fill="tonexty",
            fillcolor="rgba(99,110,250,0.15)",
            customdata=summary["layer"],
            hovertext=hover,
            hoverinfo="text",
        )
    )
    if metric == "cosine" and summary["single_cos_mean"].notna().any():
        fig.add_trace(
            go.Scatter(
                x=summary["index"],
                y=summary["single_cos_mean"],
                mode="markers",
                name="toolkit single-layer cosine",
                marker={"symbol": "x", "size": 6},
                customdata=summary["layer"],
                hovertext=summary["layer"],
                hoverinfo="text+y",
            )
        )
    line = threshold if threshold is not None else (SQNR_OK_DB if metric == "sqnr_db" else 0.99)
    fig.add_hline(
        y=line,
        line_dash="dash",
        line_color="crimson",
        annotation_text=f"threshold {line:g}",
        annotation_position="bottom right",
    )
    # Staggered heights so neighbouring labels never print over each other; the rest hover.
    for k, r in enumerate(summary.nsmallest(label_worst, f"{metric}_mean").itertuples()):
        fig.add_annotation(
            x=r.index,
            y=getattr(r, f"{metric}_mean"),
            text=_short(r.layer),
            hovertext=r.layer,
            showarrow=True,
            arrowhead=2,
            ax=0,
            ay=-30 - 22 * k,
            font={"size": 10},
            bgcolor="rgba(255,255,255,0.8)",
        )
    fig.update_layout(
        title=f"Per-layer {METRIC_LABELS[metric]}: {backend} vs float "
        f"({result.meta.get('model', {}).get('name', 'model')})",
        xaxis_title="layer (topological order)",
        yaxis_title=METRIC_LABELS[metric],
        hovermode="closest",
        template="plotly_white",
        height=420,
    )
    return fig


def heatmap_figure(result: Divergence, metric: str = "sqnr_db", backend: str | None = None) -> go.Figure:
    """Layer x sample heatmap of ``metric``: a bad sample shows as a column, a bad layer as a row."""
    backend = backend or result.quantized_backend
    rows = result.table[(result.table.backend == backend) & (result.table.status == "compared")]
    grid = rows.pivot_table(index=["index", "layer"], columns="sample", values=metric).sort_index()
    outputs = set(result.meta.get("model", {}).get("outputs", {}))
    # Every row labelled; the model outputs marked, since they are what the answers come from.
    layers = [f"▶ {_short(layer)} (output)" if layer in outputs else _short(layer) for _, layer in grid.index]
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"sample {s}" for s in grid.columns],
            y=layers,
            colorscale="RdYlGn",
            colorbar={"title": METRIC_LABELS.get(metric, metric)},
            hovertemplate="%{y}<br>%{x}<br>" + metric + " %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{METRIC_LABELS.get(metric, metric)} per layer and sample ({backend} vs float)",
        yaxis={"autorange": "reversed", "dtick": 1, "tickfont": {"size": 9}, "automargin": True},
        height=max(400, 14 * len(layers) + 120),
        template="plotly_white",
    )
    return fig


def tensor_figure(
    reference, quantized, layer: str = "", max_points: int = 20000, channel_axis: int = 1
) -> go.Figure:
    """Float vs quantized values of one tensor: scatter (on the diagonal when equal), the
    two histograms and, for tensors with channels (``channel_axis``, NCHW: 1), the SQNR of
    each channel, from arrays of the same shape."""
    from plotly.subplots import make_subplots

    shaped = np.asarray(reference)
    ref = np.asarray(reference, np.float64).ravel()
    tst = np.asarray(quantized, np.float64).ravel()
    if ref.size != tst.size:
        raise ValueError(f"{layer}: float has {ref.size} values, quantized {tst.size}.")
    channels = shaped.ndim > channel_axis and shaped.shape[channel_axis] > 1
    titles = ("quantized vs float", "value histograms", "SQNR per channel (dB)")
    fig = make_subplots(rows=1, cols=3 if channels else 2, subplot_titles=titles[: 3 if channels else 2])
    pick = np.random.default_rng(0).choice(ref.size, min(max_points, ref.size), replace=False)
    fig.add_trace(
        go.Scattergl(
            x=ref[pick], y=tst[pick], mode="markers", marker={"size": 3, "opacity": 0.4}, name="values"
        ),
        1,
        1,
    )
    lo, hi = float(min(ref.min(), tst.min())), float(max(ref.max(), tst.max()))
    fig.add_trace(
        go.Scatter(
            x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "grey"}, name="equal"
        ),
        1,
        1,
    )
    fig.add_trace(go.Histogram(x=ref[pick], name="float", opacity=0.6, nbinsx=100), 1, 2)
    fig.add_trace(go.Histogram(x=tst[pick], name="quantized", opacity=0.6, nbinsx=100), 1, 2)
    if channels:
        a = np.moveaxis(shaped, channel_axis, 0).reshape(shaped.shape[channel_axis], -1)
        b = np.moveaxis(np.asarray(quantized).reshape(shaped.shape), channel_axis, 0).reshape(a.shape)
        per_channel = [tensor_metrics(x, y)["sqnr_db"] for x, y in zip(a, b)]
        fig.add_trace(
            go.Bar(y=per_channel, name="per channel", hovertemplate="channel %{x}: %{y:.2f} dB"), 1, 3
        )
    fig.update_layout(
        title=f"Tensor comparison: {layer}", barmode="overlay", template="plotly_white", height=420
    )
    fig.update_xaxes(title_text="float", row=1, col=1)
    fig.update_yaxes(title_text="quantized", row=1, col=1)
    return fig


def runs_figure(runs: Mapping[str, Divergence], metric: str = "sqnr_db", title: str = "") -> go.Figure:
    """Per-layer ``metric`` of several runs (label -> run) along the graph, one line each."""
    fig = go.Figure()
    for k, (label, run) in enumerate(runs.items()):
        summary = run.summary()
        fig.add_trace(
            go.Scatter(
                x=summary["index"],
                y=summary[f"{metric}_mean"],
                mode="lines+markers",
                name=label,
                # Runs that coincide (e.g. auto_hybrid choosing nothing) stay visible.
                line={"dash": _DASHES[k % len(_DASHES)], "width": 3 if k == 0 else 1.5},
                marker={"symbol": _SYMBOLS[k % len(_SYMBOLS)], "size": 8 if k == 0 else 6},
                customdata=summary.layer,
                hovertext=[f"{r.layer} ({r.op_type})" for r in summary.itertuples()],
                hoverinfo="text+y+name",
            )
        )
    fig.update_layout(
        title=title or f"Per-layer {METRIC_LABELS[metric]}: {' vs '.join(runs)}",
        xaxis_title="layer (topological order)",
        yaxis_title=METRIC_LABELS[metric],
        template="plotly_white",
        height=420,
        hovermode="closest",
    )
    return fig


def compare_figure(
    a: Divergence, b: Divergence, labels: tuple[str, str] = ("run A", "run B"), metric: str = "sqnr_db"
) -> go.Figure:
    """Two runs' per-layer ``metric`` along the graph (``Divergence.compare`` gives the table
    with the change per layer)."""
    return runs_figure(dict(zip(labels, (a, b))), metric)


def divergence_overlay(
    model, result: Divergence, metric: str = "sqnr_db", backend: str | None = None
) -> go.Figure:
    """The graph overlay (viz.graph) with each node coloured by its output's mean ``metric``."""

    backend = backend or result.quantized_backend
    summary = result.summary(backend)
    by_tensor = dict(zip(summary.layer, summary[f"{metric}_mean"]))
    values = {}
    for node in model.proto.graph.node:
        for out in node.output:
            if out in by_tensor:
                values[node.name] = float(by_tensor[out])
    return graph_figure(
        model,
        values,
        value_label=METRIC_LABELS[metric],
        title=f"{METRIC_LABELS[metric]} per node ({backend} vs float); grey: fused, no own tensor",
    )


def gap_figure(result: Divergence, a: str = "simulator", b: str | None = None) -> go.Figure:
    """Per-layer SQNR of the simulator and the board, and the gap: where the board departs
    from the simulator (runtime version, fp16 overflow, driver bugs)."""

    gap = backend_gap(result, a, b)
    b = b or next(x for x in result.table.backend.unique() if x.startswith("board:"))
    fig = go.Figure()
    for k, backend in enumerate((a, b)):
        fig.add_trace(
            go.Scatter(
                x=gap["index"],
                y=gap[f"sqnr_db_mean_{backend}"],
                mode="lines+markers",
                name=f"{backend} vs float",
                line={"dash": _DASHES[k], "width": 4 if k == 0 else 1.5},
                marker={"symbol": _SYMBOLS[k], "size": 9 if k == 0 else 6},
                hovertext=gap.layer,
                hoverinfo="text+y",
            )
        )
    fig.add_trace(
        go.Bar(
            x=gap["index"],
            y=gap.sqnr_db_gap,
            name=f"gap ({b} - {a})",
            yaxis="y2",
            opacity=0.4,
            hovertext=gap.layer,
            hoverinfo="text+y",
        )
    )
    largest = float(gap.sqnr_db_gap.abs().max()) if len(gap) else 0.0
    span = max(1.0, 1.2 * largest)  # symmetric, at least ±1 dB: a zero gap reads as zero
    fig.update_layout(
        title=f"Simulator vs board per layer ({b}): largest gap {largest:.3g} dB",
        xaxis_title="layer (topological order)",
        yaxis_title="SQNR (dB)",
        yaxis2={
            "title": "gap (dB)",
            "overlaying": "y",
            "side": "right",
            "range": [-span, span],
            "tickmode": "auto",
            "nticks": 5,
            "showgrid": False,
            "zeroline": True,
        },
        template="plotly_white",
        height=420,
        hovermode="closest",
    )
    return fig


_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
_SYMBOLS = ("circle", "x", "diamond", "square", "triangle-up")


def _short(name: str, limit: int = 40) -> str:
    """A long tensor name cut in the middle (the start says the block, the end the op)."""
    return name if len(name) <= limit else f"{name[: limit // 2 - 1]}…{name[-(limit // 2) :]}"
