"""Plotly figures of a Divergence result. Each is a pure function: result in, Figure out."""

from __future__ import annotations

import plotly.graph_objects as go

from workbench.compare.divergence import Divergence

_LABEL = {"sqnr_db": "SQNR (dB)", "cosine": "cosine similarity"}


def per_layer_figure(
    result: Divergence,
    metric: str = "sqnr_db",
    backend: str = "simulator",
    threshold: float | None = None,
    label_worst: int = 5,
) -> go.Figure:
    """Per-layer ``metric`` (mean over samples, band to the worst sample) along the graph.

    The x axis is the layer's position in topological order; hovering shows the layer,
    its op and the RKNN layer it was matched to. The ``label_worst`` lowest layers are
    annotated. ``threshold`` draws a horizontal line (default: 20 dB or cosine 0.99).
    """
    if metric not in _LABEL:
        raise ValueError(f"metric must be one of {list(_LABEL)}, not {metric!r}")
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
    line = threshold if threshold is not None else (20.0 if metric == "sqnr_db" else 0.99)
    fig.add_hline(
        y=line,
        line_dash="dash",
        line_color="crimson",
        annotation_text=f"threshold {line:g}",
        annotation_position="bottom right",
    )
    for r in summary.nsmallest(label_worst, f"{metric}_mean").itertuples():
        fig.add_annotation(
            x=r.index,
            y=getattr(r, f"{metric}_mean"),
            text=r.layer,
            showarrow=True,
            arrowhead=2,
            ax=0,
            ay=-30,
            font={"size": 10},
        )
    fig.update_layout(
        title=f"Per-layer {_LABEL[metric]}: {backend} vs float "
        f"({result.meta.get('model', {}).get('name', 'model')})",
        xaxis_title="layer (topological order)",
        yaxis_title=_LABEL[metric],
        hovermode="closest",
        template="plotly_white",
        height=420,
    )
    return fig
