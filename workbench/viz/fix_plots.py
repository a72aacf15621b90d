"""Figures of the accuracy fix: sensitivity ranking, accuracy-vs-cost Pareto, and the
before/after per-layer comparison of quantization variants."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go

from workbench.compare.result import Divergence
from workbench.fix.search import pareto_front
from workbench.viz.plots import METRIC_LABELS, runs_figure


def sensitivity_figure(table: pd.DataFrame, top: int = 30) -> go.Figure:
    """Bars of the output SQNR gain of keeping each layer alone in float16 (and, if the
    table has the "quantized" view, the loss of quantizing it alone), best first."""
    ranked = table[table.layer.notna()].head(top)
    fig = go.Figure()
    if ranked.gain_db.notna().any() and table.attrs.get("view") != "quantized":
        fig.add_trace(
            go.Bar(
                x=ranked.layer,
                y=ranked.gain_db,
                name="gain: only this layer float16",
                hovertext=[
                    f"{r.layer} ({r.op_type})<br>output {r.output_sqnr_db:.2f} dB"
                    for r in ranked.itertuples()
                ],
                hoverinfo="text+y",
            )
        )
    if "loss_db" in ranked:
        fig.add_trace(go.Bar(x=ranked.layer, y=ranked.loss_db, name="loss: only this layer quantized"))
    failed = ranked[ranked.error.astype(bool)]
    for r in failed.itertuples():
        fig.add_annotation(
            x=r.layer, y=0, text="failed", hovertext=r.error, showarrow=False, font={"color": "crimson"}
        )
    base = table.iloc[0].output_sqnr_db
    fig.update_layout(
        title=f"Layer sensitivity (output SQNR of the all-int8 model: {base:.2f} dB)",
        xaxis_title="layer",
        yaxis_title="output SQNR change (dB)",
        barmode="group",
        template="plotly_white",
        height=440,
    )
    return fig


def pareto_figure(
    trail: pd.DataFrame, cost: str = "cycles", target: float | None = None, marks=None
) -> go.Figure:
    """Output SQNR against ``cost`` ("cycles", "rw_kb" or a board column) for every scored
    config; the Pareto front is drawn as a line. ``marks`` adds named points, e.g.
    {"auto_hybrid": (cost, sqnr)}. Configs with no ``cost`` (scored on the emulator: no
    compile table) cannot be placed and are left out, legend entry included."""
    ok = trail[(trail.error == "") & trail[cost].notna()].copy()
    fig = go.Figure()
    for stage, group in ok.groupby("stage", sort=False):
        fig.add_trace(
            go.Scatter(
                x=group[cost],
                y=group.sqnr_db,
                mode="markers",
                name=stage,
                marker={"size": 9},
                customdata=group.n_float16,
                hovertext=[_layers_text(layers) for layers in group.layers],
                hovertemplate="%{customdata} float16 layer(s)<br>%{hovertext}<br>"
                f"{cost} %{{x}}<br>SQNR %{{y:.2f}} dB<extra></extra>",
            )
        )
    front = pareto_front(ok, cost)
    fig.add_trace(
        go.Scatter(x=front[cost], y=front.sqnr_db, mode="lines", name="Pareto front", line={"dash": "dot"})
    )
    for name, (x, y) in (marks or {}).items():
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers+text",
                text=[name],
                textposition="top center",
                name=name,
                marker={"size": 14, "symbol": "star"},
            )
        )
    if target is not None:
        fig.add_hline(
            y=target, line_dash="dash", line_color="crimson", annotation_text=f"target {target:g} dB"
        )
    fig.update_layout(
        title=f"Accuracy vs cost of hybrid configs ({cost}: the compile table's estimate)",
        xaxis_title=cost,
        yaxis_title="output SQNR (dB)",
        template="plotly_white",
        height=440,
    )
    return fig


def variants_figure(runs: Mapping[str, Divergence], metric: str = "sqnr_db") -> go.Figure:
    """Per-layer ``metric`` of each variant's run (int8, hybrid, auto_hybrid, ...) along the
    graph, in one plot."""
    return runs_figure(
        runs, metric, f"Before/after: per-layer {METRIC_LABELS[metric]} of each variant vs float"
    )


def _layers_text(layers, most: int = 6) -> str:
    shown = ", ".join(layers[:most])
    return (
        shown + (f" (+{len(layers) - most} more)" if len(layers) > most else "") if layers else "(all int8)"
    )
