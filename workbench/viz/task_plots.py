"""Plotly figures of the answers (TaskResult) and of the layers behind flipped answers.

Pure functions: result in, Figure out.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.task.evaluate import FLOAT, TaskResult


def answers_figure(result: TaskResult) -> go.Figure:
    """Per backend: accuracy vs the labels (when labelled) and agreement with float, in %."""
    summary = result.summary()
    fig = go.Figure()
    if result.labelled:
        fig.add_trace(
            go.Bar(
                x=summary.backend,
                y=100 * summary.accuracy,
                name="correct vs labels",
                text=[f"{v:.0f} %" for v in 100 * summary.accuracy],
            )
        )
    quant = summary[summary.backend != FLOAT]
    fig.add_trace(
        go.Bar(
            x=quant.backend,
            y=100 * quant.agreement,
            name="same answer as float",
            marker_color="#2ca02c",
            text=[f"{v:.0f} % ({int(f)} flips)" for v, f in zip(100 * quant.agreement, quant.flips)],
        )
    )
    fig.update_layout(
        title=f"Answers on {int(summary.samples.iloc[0])} samples ({result.task})",
        yaxis={"title": "%", "range": [0, 105]},
        barmode="group",
        height=320,
        margin={"t": 50, "b": 40},
    )
    return fig


def flip_layers_figure(table: pd.DataFrame, top: int = 12) -> go.Figure:
    """The ``top`` layers most worse where the answer flips (``task.explain.flip_layers``):
    their mean SQNR on flipped samples next to kept samples, largest gap at the top."""
    rows = table.head(top).iloc[::-1]
    labels = [f"{r.layer} ({r.op_type})" for r in rows.itertuples()]
    fig = go.Figure()
    for column, name, color in (
        ("sqnr_db_kept", "samples that keep their answer", "#636efa"),
        ("sqnr_db_flipped", "samples whose answer flips", "#ef553b"),
    ):
        fig.add_trace(
            go.Bar(
                y=labels,
                x=rows[column],
                orientation="h",
                name=name,
                marker_color=color,
                hovertemplate="%{y}<br>%{x:.2f} dB<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title="Layers that are worse where the answer changes (mean SQNR, dB)",
        barmode="group",
        height=max(300, 40 * len(rows) + 120),
        xaxis_title="SQNR vs float (dB)",
        yaxis={"automargin": True},
        legend={"orientation": "h", "y": -0.15},
        margin={"t": 50},
    )
    return fig


def flip_gallery(result: TaskResult, backend: str = "simulator", n: int = 8, size: int = 160) -> go.Figure:
    """Thumbnails of the first ``n`` samples whose ``backend`` answer differs from float,
    each titled with the label, float's answer and the backend's."""
    flips = result.flips(backend).head(n)
    if flips.empty:
        fig = go.Figure()
        fig.update_layout(title=f"No answer of {backend} differs from float", height=120)
        return fig
    cols = min(4, len(flips))
    rows = -(-len(flips) // cols)
    titles = [
        (f"label {r['label']}<br>" if r["label"] is not None else "")
        + f"float: {r[FLOAT]}<br>{backend}: {r[backend]}"
        for r in flips.to_dict("records")
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_short(t) for t in titles])
    for k, path in enumerate(flips.path):
        fig.add_trace(go.Image(z=_thumbnail(path, size), name=str(path)), row=k // cols + 1, col=k % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=rows * (size + 90) + 40, margin={"t": 80, "l": 10, "r": 10, "b": 10})
    return fig


def _thumbnail(path: str, size: int) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:  # not an image (e.g. .npy): a grey tile
        return np.full((size, size, 3), 200, np.uint8)
    scale = size / max(image.shape[:2])
    image = cv2.resize(image, (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale))))
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _short(text: str, limit: int = 60) -> str:
    return "<br>".join(line if len(line) <= limit else line[: limit - 1] + "…" for line in text.split("<br>"))


def score_histogram_figure(scores: dict[str, np.ndarray], bins: int = 60) -> go.Figure:
    """Histogram of a detector's class scores per backend ({backend: scores}), log counts:
    a float head spreads over [0, 1]; an int8 head sharing one scale with box coordinates
    collapses to a few levels (and may exceed 1)."""
    fig = go.Figure()
    for backend, values in scores.items():
        values = np.asarray(values, np.float64).ravel()
        fig.add_trace(
            go.Histogram(x=values, name=f"{backend} ({np.unique(values).size} levels)", nbinsx=bins)
        )
    fig.update_layout(
        title="Class scores before the threshold, float vs quantized",
        barmode="overlay",
        xaxis_title="class score",
        yaxis={"title": "count (log)", "type": "log"},
        height=340,
    )
    fig.update_traces(opacity=0.6)
    return fig
