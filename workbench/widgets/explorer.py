"""DivergenceExplorer: per-layer error you can click.

Clicking a layer in the per-layer plot shows that layer's float and quantized tensors
(scatter, histograms, per-channel SQNR) and highlights the layer in the graph view.
Dropdowns pick the backend, the metric and the sample (or the mean over samples).

The per-layer numbers come from the saved Divergence; the tensors of a clicked layer are
computed on demand (onnxruntime, and one simulator build kept for the explorer's life),
for the sample chosen, so a run reopened from disk can be explored too.
"""

from __future__ import annotations

import html
import weakref
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from workbench.compare.divergence import Divergence
from workbench.compare.metrics import METRICS
from workbench.datasets import CalibrationSet
from workbench.errors import ToolkitError, WorkbenchError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.viz.graph import graph_figure, graph_layout
from workbench.viz.plots import tensor_figure

MEAN = "mean over samples"


class LayerTensors:
    """Float and simulator tensors of one sample, computed once per sample and kept."""

    def __init__(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet, rows):
        self.model, self.config, self.calibration, self.rows = model, config, calibration, rows
        self._runner = None
        self._sample: int | None = None
        self._tensors: tuple[dict, dict] = ({}, {})

    def get(self, layer: str, sample: int) -> tuple[np.ndarray, np.ndarray]:
        from workbench.runners.float import FloatRunner
        from workbench.runners.markall import MarkAllRunner

        if self._runner is None:
            self._runner = MarkAllRunner(self.model, self.config, self.calibration)
        if sample != self._sample:
            row = self.rows[sample]
            try:
                quantized = self._runner.run(row)
            except ToolkitError:
                self.close()  # a crashed worker is not reused: the next click builds afresh
                raise
            floats = FloatRunner(self.model, self.config.preprocess, keep=list(quantized)).run(row)
            self._tensors, self._sample = (floats, quantized), sample
        floats, quantized = self._tensors
        if layer not in quantized:
            raise WorkbenchError(
                f"{layer} is fused inside a compiled layer and has no tensor of its own: click the "
                "next layer downstream."
            )
        return floats[layer], quantized[layer]

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


class DivergenceExplorer:
    """Interactive view of a Divergence. Display it as the last line of a cell.

    Args:
        result: a run from ``compute_divergence`` or ``Divergence.load``.
        model: the OnnxModel the run was made from.
        calibration: the calibration set (default: the one recorded in the run).
        answers: the run's ``task.evaluate.TaskResult``, whose verdict heads the view (without
            it, the model outputs' SQNR does).
    """

    def __init__(
        self,
        result: Divergence,
        model: OnnxModel,
        calibration: CalibrationSet | None = None,
        answers=None,
    ):
        self.result, self.model = result, model
        meta = result.meta
        rows = [tuple(Path(p) for p in row) for row in meta.get("samples", [])]
        calibration = calibration or CalibrationSet.from_list(meta["calibration"]["source"])
        self.tensors = LayerTensors(model, BuildConfig.from_dict(meta["config"]), calibration, rows)
        weakref.finalize(self, self.tensors.close)  # the toolkit worker goes with the explorer
        self.selected: str | None = None
        backends = [b for b in result.table.backend.unique() if b != "float"]
        self.backend = w.Dropdown(options=backends, value=backends[0], description="backend")
        self.metric = w.Dropdown(options=list(METRICS), value="sqnr_db", description="metric")
        self.sample = w.Dropdown(
            options=[MEAN, *[f"sample {i}" for i in range(len(rows))]], value=MEAN, description="sample"
        )
        for control in (self.backend, self.metric, self.sample):
            control.observe(lambda _: self.refresh(), names="value")
        self.layers = go.FigureWidget(
            layout={"template": "plotly_white", "height": 380, "hovermode": "closest"}
        )
        self.layers.add_scatter(mode="lines+markers", name="per layer")
        self.layers.add_scatter(
            mode="markers",
            name="selected",
            hoverinfo="skip",
            showlegend=False,
            marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "crimson"}},
        )
        self.layers.data[0].on_click(self._on_click)
        self.detail = go.FigureWidget(layout={"template": "plotly_white", "height": 360})
        self.graph = go.FigureWidget(graph_figure(model, title="graph (the clicked layer is ringed)"))
        self.graph.add_scatter(
            x=[],
            y=[],
            mode="markers",
            name="selected",
            marker={"size": 22, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "crimson"}},
        )
        self.status = w.HTML("Click a layer in the plot to see its tensors and find it in the graph.")
        self._positions = graph_layout(model)
        self._producer = {o: n.name for n in model.proto.graph.node for o in n.output}
        # The tensor panel appears with the first click: no empty axes before it.
        self._detail_box = w.Box([self.detail], layout=w.Layout(display="none"))
        self.headline = w.HTML(headline(result, answers))
        self.widget = w.VBox(
            [
                self.headline,
                w.HBox([self.backend, self.metric, self.sample]),
                self.layers,
                self.status,
                self._detail_box,
                self.graph,
            ]
        )
        self.refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def rows(self):
        """The per-layer values now plotted: layer, op_type and the metric."""
        table = self.result.table
        rows = table[(table.backend == self.backend.value) & (table.status == "compared")]
        if self.sample.value != MEAN:
            rows = rows[rows["sample"] == int(self.sample.value.split()[1])]
        return rows.groupby(["index", "layer", "op_type"], sort=True)[self.metric.value].mean().reset_index()

    def refresh(self) -> None:
        """Redraw the per-layer plot for the chosen backend, metric and sample."""
        rows, metric = self.rows(), self.metric.value
        with self.layers.batch_update():
            trace = self.layers.data[0]
            trace.x, trace.y = rows["index"], rows[metric]
            trace.customdata = rows.layer
            trace.hovertext = [f"{r.layer} ({r.op_type})" for r in rows.itertuples()]
            trace.hoverinfo = "text+y"
            self.layers.layout.title = (
                f"{metric} per layer: {self.backend.value} vs float, {self.sample.value}"
            )
            self.layers.layout.xaxis.title = "layer (topological order) - click one"
            self.layers.layout.yaxis.title = metric
        if self.selected:
            self.select(self.selected)

    def _on_click(self, trace, points, _state) -> None:
        if points.point_inds:
            self.select(trace.customdata[points.point_inds[0]])

    def select(self, layer: str) -> None:
        """Show ``layer``'s tensor comparison and ring it in the graph."""
        self.selected = layer
        rows = self.rows().set_index("layer")
        mark = self.layers.data[1]
        mark.x, mark.y = (
            ([rows.at[layer, "index"]], [rows.at[layer, self.metric.value]])
            if layer in rows.index
            else ([], [])
        )
        node = self._producer.get(layer)
        if node in self._positions:
            x, y = self._positions[node]
            with self.graph.batch_update():
                self.graph.data[-1].x, self.graph.data[-1].y = [x], [y]
                self.graph.layout.xaxis.range = [x - 8, x + 8]
        sample = 0 if self.sample.value == MEAN else int(self.sample.value.split()[1])
        self.status.value = f"<b>{layer}</b>: computing its tensors on sample {sample} ..."
        try:
            reference, quantized = self.tensors.get(layer, sample)
        except Exception as err:  # noqa: BLE001 - a click callback must show, not swallow, its error
            self.status.value = f"<b>{html.escape(layer)}</b>: {html.escape(str(err))}"
            return
        figure = tensor_figure(reference, quantized, layer)
        self._detail_box.layout.display = None
        with self.detail.batch_update():
            self.detail.data = []
            self.detail.layout = figure.layout
            for trace in figure.data:
                self.detail.add_trace(trace)
        value = rows[self.metric.value].get(layer, float("nan"))
        self.status.value = (
            f"<b>{html.escape(layer)}</b> ({html.escape(str(node))}): {self.metric.value} {value:.4g} "
            f"({self.sample.value}); tensors of sample {sample}, simulator vs float"
        )

    def close(self) -> None:
        self.tensors.close()


def headline(result: Divergence, answers=None) -> str:
    """Verdict, place, next step as HTML: the answers' verdict (else the model outputs'
    SQNR), the top origins of the per-layer error with their share, what to do."""
    if answers is not None:
        verdict = answers.verdict()
    else:
        summary = result.summary()
        outputs = summary[summary.layer.isin(result.meta.get("model", {}).get("outputs", {}))]
        verdict = (
            "; ".join(
                f"model output {r.layer}: SQNR {r.sqnr_db_mean:.1f} dB mean, {r.sqnr_db_worst:.1f} dB worst "
                f"over {r.samples} sample(s)"
                for r in outputs.itertuples()
            )
            or "no model output was compared"
        )
    origins = result.origins(3)
    place = ", ".join(f"{r.layer} ({r.op_type}, {r.share:.0%})" for r in origins.itertuples())
    step = (
        "judge the answers first: rknn-workbench evaluate MODEL (or task.evaluate)"
        if answers is None
        else "click an origin below to see its tensors; 06_fix_accuracy searches a fix"
    )
    return (
        f"<p><b>Verdict:</b> {html.escape(verdict)}<br><b>Where:</b> "
        f"{html.escape(place) or 'no layer makes error of its own'}<br><b>Next:</b> {html.escape(step)}</p>"
    )
