"""DivergenceExplorer: per-layer error you can click.

Clicking a layer in the per-layer plot shows that layer's float and quantized tensors
(scatter, histograms, per-channel SQNR) and highlights the layer in the graph view.
Dropdowns pick the backend, the metric and the sample (or the mean over samples).
A clicked layer can be kept in float16 as a what-if: the emulator (built once, on the first
what-if, and checked against the simulator) answers with the model's output SQNR and, with a
task adapter, the answers' agreement in onnxruntime time (measured on a busy 2-core machine:
1.1 s for 32 lcnet-orientation samples, 1.8 s for 12 yolov8n ones, against 13-36 s for the
toolkit build); one toolkit build confirms it, both numbers side by side. An emulator the
check finds unfaithful is not offered.

The per-layer numbers come from the saved Divergence; the tensors of a clicked layer are
computed on demand (onnxruntime, and one simulator build kept for the explorer's life),
for the sample chosen, so a run reopened from disk can be explored too.
"""

from __future__ import annotations

import dataclasses
import html
import weakref
from collections.abc import Callable
from pathlib import Path

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from workbench.compare.metrics import METRICS
from workbench.compare.result import Divergence
from workbench.datasets import CalibrationSet
from workbench.emulate.fidelity import fidelity
from workbench.emulate.runner import EmulatorRunner
from workbench.emulate.whatif import WhatIf, layer_unit, score_variant
from workbench.errors import DatasetError, ToolkitError, WorkbenchError
from workbench.fix.evaluate import prepare_job, score_config
from workbench.fix.ranges import Clip, RangeCandidates, score_clips, with_clips
from workbench.fix.remedies import MIN_GAIN_DB
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner
from workbench.runners.markall import MarkAllRunner
from workbench.task.adapters import get_adapter
from workbench.viz.graph import graph_figure, graph_layout
from workbench.viz.plots import tensor_figure

MEAN = "mean over samples"
#: What-ifs score at most this many of the answers' samples (evenly spread): each costs one
#: emulator run (20-35 ms for lcnet-orientation, 50-150 ms for yolov8n, measured).
WHATIF_SAMPLES = 32


class LayerTensors:
    """Float and simulator tensors of one sample, computed once per sample and kept."""

    def __init__(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet, rows):
        self.model, self.config, self.calibration, self.rows = model, config, calibration, rows
        self._runner = None
        self._sample: int | None = None
        self._tensors: tuple[dict, dict] = ({}, {})

    def get(self, layer: str, sample: int) -> tuple[np.ndarray, np.ndarray]:

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


class WhatIfs:
    """Float16 what-ifs of one run: the emulator, built and checked once, and toolkit builds.

    Args:
        model, config, calibration: the run's.
        samples: the samples every what-if is scored on (the answers' samples with a task
            adapter, else the run's).
        check_row: the sample the emulator is checked against the simulator on.
        adapter: a task adapter: scores then carry the answers' agreement with float.
    """

    def __init__(self, model, config, calibration, samples, check_row, adapter=None):
        self.model, self.config, self.calibration = model, config, calibration
        self.samples, self.check_row, self.adapter = samples, check_row, adapter
        self.rules = None  #: the emulator's rules (None: the installed toolkit's)
        self.emulator = None  #: EmulatorRunner, built on the first what-if
        self.fidelity = None  #: its FidelityReport against the simulator
        self.job = None  #: the SweepJob: samples, float outputs and answers
        self._scores: dict[tuple[str, ...], WhatIf] = {}
        self._ranges: RangeCandidates | None = None  #: every boundary's candidate ranges, once
        self._fitted: dict[str, tuple[Clip, WhatIf]] = {}

    def prepare(self, say: Callable[[str, int], None] = lambda text, step: None) -> None:
        """Build the emulator (the toolkit's step 1), the float references and the
        fidelity check, once; ``say(text, step)`` reports each of the 3 steps as it starts.

        Raises:
            ToolkitError: the toolkit failed. EmulatorError: the graph cannot be emulated.
        """

        if self.job is None:
            say("running the float model on the what-if samples ...", 0)
            self.job = prepare_job(self.model, self.config, self.calibration, self.samples, self.adapter)
        if self.emulator is None:
            say("building the emulator (the toolkit's step 1, once) ...", 1)
            self.emulator = EmulatorRunner(self.model, self.config, self.calibration, rules=self.rules)
        if self.fidelity is None:
            say("checking the emulator against the simulator on one sample (once) ...", 2)
            self.fidelity = fidelity(
                self.model, self.config, self.calibration, self.check_row, emulator=self.emulator
            )

    @property
    def faithful(self) -> bool:
        return self.fidelity is not None and self.fidelity.ok

    def unit(self, layer: str) -> list[str]:
        """The toolkit tensors of the compiled layer ending at ``layer`` (see layer_unit)."""
        return layer_unit(self.emulator, layer)

    def emulate(self, layers: tuple[str, ...] = ()) -> WhatIf:
        """The emulator's score of ``layers`` in float16 (() is the int8 model), kept."""
        if layers not in self._scores:
            self._scores[layers] = score_variant(self.emulator, self.job, layers)
        return self._scores[layers]

    def confirm(self, layers: tuple[str, ...]):
        """One toolkit build with ``layers`` in float16, scored on the same samples
        (``workbench.fix.evaluate.Score``: sqnr_db, agreement, cycles, error)."""

        return score_config(self.job, dataclasses.replace(self.config, float_layers=tuple(layers)))

    def fit_range(self, layer: str) -> tuple[Clip, WhatIf]:
        """The emulator's best int8 range for ``layer``'s output: each candidate (clipped to
        a calibration percentile, or widened to the samples' range) scored, the best kept.
        The first call computes every boundary's candidates (a float pass over the
        calibration set and the samples).

        Raises:
            WorkbenchError: the layer's range already fits (no candidate), or it is no
                compiled layer's output.
        """
        if self._ranges is None:
            self._ranges = RangeCandidates(self.emulator, self.calibration, self.job.samples)
        tensor = self._ranges.tensor_of(self.unit(layer)[-1])
        if tensor not in self._fitted:
            options = self._ranges.of(tensor) if tensor else []
            if not options:
                raise WorkbenchError(
                    f"{layer}'s int8 range already fits the data: no outlier to clip and no sample "
                    "overflows it. Try keeping it in float16 instead."
                )
            scored = [(score_variant(with_clips(self.emulator, [c]), self.job), c) for c in options]
            what, clip = max(scored, key=lambda r: (r[0].agreement or 0.0, r[0].sqnr_db))
            self._fitted[tensor] = (clip, what)
        return self._fitted[tensor]

    def confirm_range(self, clip: Clip):
        """One toolkit build (step 1, the edited cfg, step 2) with ``clip``, scored as
        :meth:`confirm` scores."""
        return score_clips(self.job, [clip])


def _saved_calibration(meta: dict) -> CalibrationSet:
    """The calibration set a saved run names; a run opened on another machine or checkout
    names a list that is not here, so say how to point at the local copy."""
    source = meta.get("calibration", {}).get("source", "")
    try:
        return CalibrationSet.from_list(source)
    except DatasetError as err:
        raise DatasetError(
            f"{err} The run was made with it; pass the local copy: "
            "DivergenceExplorer(result, model, calibration=CalibrationSet.from_list('dataset.txt'))."
        ) from None


class DivergenceExplorer:
    """Interactive view of a Divergence. Display it as the last line of a cell.

    Args:
        result: a run from ``compute_divergence`` or ``Divergence.load``.
        model: the OnnxModel the run was made from.
        calibration: the calibration set (default: the one recorded in the run).
        answers: the run's ``task.evaluate.TaskResult``, whose verdict heads the view (without
            it, the model outputs' SQNR does); what-ifs are then scored on its samples.
        adapter: the task adapter what-ifs judge the answers with (default: the answers'
            task by name; without answers, what-ifs give the output SQNR only).
    """

    def __init__(
        self,
        result: Divergence,
        model: OnnxModel,
        calibration: CalibrationSet | None = None,
        answers=None,
        adapter=None,
    ):
        self.result, self.model = result, model
        meta = result.meta
        rows = [tuple(Path(p) for p in row) for row in meta.get("samples", [])]
        calibration = calibration or _saved_calibration(meta)
        config = BuildConfig.from_dict(meta["config"])
        self.tensors = LayerTensors(model, config, calibration, rows)
        samples, adapter = _whatif_samples(model, rows, answers, adapter)
        self.whatifs = WhatIfs(model, config, calibration, samples, rows[0] if rows else None, adapter)
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
        self.what_if_button = w.Button(
            description="keep this layer in float16 (what-if)", icon="flask", layout=w.Layout(width="auto")
        )
        self.what_if_button.on_click(lambda _: self.what_if())
        self.range_button = w.Button(
            description="fit its int8 range to the data (what-if)",
            icon="arrows-h",
            layout=w.Layout(width="auto"),
        )
        self.range_button.on_click(lambda _: self.fit_range())
        self.confirm_button = w.Button(
            description="confirm with the toolkit", icon="check", disabled=True, layout=w.Layout(width="auto")
        )
        self.confirm_button.on_click(lambda _: self.confirm())
        self.whatif_progress = w.IntProgress(0, min=0, max=3, layout=w.Layout(display="none"))
        self.whatif_status = w.HTML()
        self._whatif: dict = {}  # the shown what-if: layer, unit, emulator and toolkit scores
        # The what-if panel, like the tensor panel, appears with the first click.
        self._whatif_box = w.VBox(
            [
                w.HBox([self.what_if_button, self.range_button, self.confirm_button, self.whatif_progress]),
                self.whatif_status,
            ],
            layout=w.Layout(display="none"),
        )
        self.widget = w.VBox(
            [
                self.headline,
                w.HBox([self.backend, self.metric, self.sample]),
                self.layers,
                self.status,
                self._whatif_box,
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
        if layer != self.selected:
            self._show_whatif({"layer": layer})
        self.selected = layer
        self._whatif_box.layout.display = None
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

    def what_if(self) -> WhatIf | None:
        """Keep the selected layer (the whole compiled layer) in float16 on the emulator and
        show its output SQNR / agreement next to the int8 model's. The first call builds
        and checks the emulator; if the check finds it unfaithful, only the toolkit is
        offered. Returns the variant's score (None when it could not be given)."""
        layer = self.selected
        if layer is None:
            return None
        if not self._prepare():
            return None
        if not self.whatifs.faithful:
            return None
        try:
            unit = tuple(self.whatifs.unit(layer))
            base, variant = self.whatifs.emulate(), self.whatifs.emulate(unit)
        except WorkbenchError as err:
            self._say(f"<b>{html.escape(layer)}</b>: {html.escape(str(err))}")
            return None
        self._show_whatif({"layer": layer, "unit": unit, "base": base, "emulator": variant})
        return variant

    def fit_range(self) -> WhatIf | None:
        """Give the selected layer's output the emulator's best int8 range (clipped to a
        calibration percentile, or widened to what the samples reach) and show its score
        next to the int8 model's. Returns the variant's score (None when it could not be
        given)."""
        layer = self.selected
        if layer is None or not self._prepare() or not self.whatifs.faithful:
            return None
        try:
            self._say(f"fitting {html.escape(layer)}'s range on the emulator ...")
            base, (clip, variant) = self.whatifs.emulate(), self.whatifs.fit_range(layer)
        except WorkbenchError as err:
            self._say(f"<b>{html.escape(layer)}</b>: {html.escape(str(err))}")
            return None
        self._show_whatif({"layer": layer, "range": clip, "base": base, "emulator": variant})
        return variant

    def confirm(self):
        """Build the selected layer's what-if (float16, or its fitted range) once with the
        toolkit and show its numbers beside the emulator's. Returns the toolkit's Score
        (None on failure)."""
        layer = self.selected
        if layer is None or not self._prepare():
            return None
        clip = self._whatif.get("range")
        try:
            unit = () if clip else self._whatif.get("unit") or tuple(self.whatifs.unit(layer))
            what = "with its fitted range" if clip else "in float16"
            self._say(f"building {html.escape(layer)} {what} with the toolkit (one build) ...")
            self.confirm_button.disabled = True
            score = self.whatifs.confirm_range(clip) if clip else self.whatifs.confirm(unit)
        except WorkbenchError as err:
            self._say(f"<b>{html.escape(layer)}</b>: {html.escape(str(err))}")
            self.confirm_button.disabled = False
            return None
        state = {**self._whatif, "layer": layer, "toolkit": score}
        if not clip:
            state["unit"] = unit
        self._show_whatif(state)
        return score

    def _prepare(self) -> bool:
        """Build and check the emulator once, with progress; False (and said) on failure."""
        if self.whatifs.fidelity is not None:
            return True
        if self.whatifs.check_row is None:
            self._say("this run records no samples: there is nothing to score a what-if on.")
            return False
        bar = self.whatif_progress
        bar.layout.display, self.what_if_button.disabled, self.range_button.disabled = None, True, True

        def say(text: str, step: int) -> None:
            bar.value = step
            self._say(html.escape(text))

        try:
            self.whatifs.prepare(say)
        except WorkbenchError as err:
            self._say(f"the emulator could not be built: {html.escape(str(err))}")
            return False
        finally:
            bar.value, bar.layout.display = bar.max, "none"
            self.what_if_button.disabled = self.range_button.disabled = False
        if not self.whatifs.faithful:
            self.what_if_button.disabled = self.range_button.disabled = True
            self.confirm_button.disabled = False
            self._show_whatif({"layer": self.selected})
            return False
        return True

    def _show_whatif(self, state: dict) -> None:
        """Redraw the what-if panel: int8 vs the emulated variant vs the toolkit build."""
        self._whatif = state
        unfaithful = self.whatifs.fidelity is not None and not self.whatifs.faithful
        self.what_if_button.disabled = self.range_button.disabled = unfaithful
        self.confirm_button.disabled = not (unfaithful or "emulator" in state) or "toolkit" in state
        self._say(whatif_html(state, self.whatifs.fidelity, self.whatifs.adapter is not None))

    def _say(self, text: str) -> None:
        self.whatif_status.value = text

    def close(self) -> None:
        self.tensors.close()


def _whatif_samples(model, rows, answers, adapter):
    """The samples what-ifs are scored on and the adapter judging them: the answers'
    samples (at most WHATIF_SAMPLES, evenly spread) and task when there are answers (a
    one-input model), else the run's samples."""

    if answers is None or len(model.inputs) != 1:
        return CalibrationSet(rows), adapter
    floats = answers.table[answers.table.backend == "float"].sort_values("sample")
    spread = np.linspace(0, len(floats) - 1, min(len(floats), WHATIF_SAMPLES))
    floats = floats.iloc[np.unique(spread.round().astype(int))]
    if adapter is None:
        try:
            adapter = get_adapter(answers.task, model=model)
        except WorkbenchError:  # the user's own decoding: give it as adapter=
            return CalibrationSet(rows), None
    return CalibrationSet([(Path(p),) for p in floats.path]), adapter


def whatif_html(state: dict, fidelity=None, answers: bool = False) -> str:
    """The what-if panel as HTML: a table with the int8 model, the layer in float16 on the
    emulator and, once confirmed, on the toolkit (output SQNR, agreement, time or cycles)."""
    layer = html.escape(state.get("layer") or "")
    lines = []
    if fidelity is not None and not fidelity.ok:
        lines.append(
            f"<b>The emulator is not faithful on this model</b> ({html.escape(fidelity.summary())}): "
            f"what-ifs go to the toolkit only: <i>confirm with the toolkit</i> builds {layer} in float16."
        )
    elif "emulator" not in state:
        lines.append(
            f"<i>keep this layer in float16</i>: {layer} as a whole compiled layer; <i>fit its int8 "
            "range</i>: clipped to a calibration percentile or widened to what the samples reach. The "
            "emulator answers (the first what-if builds and checks it: seconds); then confirm with one "
            "toolkit build."
        )
    change = f"{layer} in float16"
    if clip := state.get("range"):
        how = "widened" if clip.kind == "widen" else "clipped"
        change = (
            f"{layer} range {how} to [{clip.lo:.4g}, {clip.hi:.4g}] "
            f"(int8 had [{clip.was[0]:.4g}, {clip.was[1]:.4g}])"
        )
    rows = [
        ("int8 now", "emulator", state.get("base")),
        (change, "emulator", state.get("emulator")),
        (change, "toolkit", state.get("toolkit")),
    ]
    cells = []
    for what, backend, score in rows:
        if score is None:
            continue
        if getattr(score, "error", ""):
            cells.append(
                f"<tr><td>{what}</td><td>{backend}</td><td colspan=3>{html.escape(score.error)}</td></tr>"
            )
            continue
        agree = "" if score.agreement is None else f"{100 * score.agreement:.0f} %"
        seconds = (
            f"{score.seconds:.2f} s" if hasattr(score, "seconds") else f"one build, {score.cycles} cycles"
        )
        cells.append(
            f"<tr><td>{what}</td><td>{backend}</td><td>{score.sqnr_db:.1f} dB</td>"
            + (f"<td>{agree}</td>" if answers else "")
            + f"<td>{seconds}</td></tr>"
        )
    if cells:
        head = "<th>model</th><th>by</th><th>output SQNR</th>" + ("<th>answers agree</th>" if answers else "")
        lines.append(f"<table><tr>{head}<th>cost</th></tr>{''.join(cells)}</table>")
    if state.get("base") and state.get("emulator") and "toolkit" not in state:
        lines.append(_whatif_verdict(state["base"], state["emulator"]))
    if state.get("unit"):
        lines.append("float16 tensors (the toolkit's names): " + html.escape(", ".join(state["unit"])))
    return "<br>".join(lines)


def _whatif_verdict(base: WhatIf, variant: WhatIf) -> str:
    """What the emulated what-if says to do: answers first, then the output SQNR."""
    if base.agreement is not None and variant.agreement is not None and variant.agreement != base.agreement:
        more = variant.agreement > base.agreement
        return (
            f"<b>{'more' if more else 'fewer'} answers agree with float</b> "
            f"({100 * base.agreement:.0f} % -> {100 * variant.agreement:.0f} %): "
            + ("confirm it with one toolkit build." if more else "keep int8 here.")
        )
    gain = variant.sqnr_db - base.sqnr_db
    if gain >= MIN_GAIN_DB:
        return f"<b>{gain:+.1f} dB</b> at the outputs on the emulator: confirm it with one toolkit build."
    return f"<b>{gain:+.1f} dB</b> at the outputs: too little to act on; try another layer or remedy."


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
        else "click an origin below, then 'keep this layer in float16' or 'fit its int8 range' (what-ifs): "
        "the emulator answers at once and one toolkit build confirms it; 06_fix_accuracy searches a whole fix"
    )
    return (
        f"<p><b>Verdict:</b> {html.escape(verdict)}<br><b>Where:</b> "
        f"{html.escape(place) or 'no layer makes error of its own'}<br><b>Next:</b> {html.escape(step)}</p>"
    )
