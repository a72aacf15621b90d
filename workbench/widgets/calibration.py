"""CalibrationPanel: pick calibration images and settings, run, watch per-layer SQNR.

Every run is kept: the figure shows all of them, so two calibrations compare side by
side. Errors appear in the panel with their message, never as a traceback that kills the flow.

Modes: "emulate" (the default) answers what-ifs at emulator speed: a new setting
(algorithm, calibration images, preprocessing) costs one toolkit step 1 and one check of
the emulator against the simulator on one sample (seconds; both kept per setting), then a
setting seen before or a float16 choice of layers costs only onnxruntime (the float tensors
are kept too). A setting the check finds the emulator unfaithful on runs on the toolkit
(measured on 2.5.0: mmse, whose step-1 cfg on lcnet-orientation equals kl_divergence's byte
for byte: 27 % of lcnet's layers within 1 dB and the output 17.4 dB off, 55 % and 8.5 dB on
ppocr-cls; normal and kl_divergence pass). "confirm with the toolkit" runs the last emulated setting on the
simulator (mark-all) and shows both output SQNRs. Per-channel and per-layer weights are
both emulated; dtypes other than w8a8 are not: they run on the toolkit. "mark-all" and
"snapshot" are ``compute_divergence`` (cached by content).
"""

from __future__ import annotations

import dataclasses
import html
import time
from pathlib import Path

import ipywidgets as w
import plotly.graph_objects as go

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.datasets import CalibrationSet, datasets_dir
from workbench.emulate.fidelity import fidelity
from workbench.emulate.runner import EmulatorRunner
from workbench.emulate.whatif import layer_unit
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.preprocess import IMAGE_SUFFIXES, Preprocess
from workbench.rknn.config import ALGORITHMS, DTYPE_PLATFORMS, METHODS, PLATFORMS, BuildConfig


class CalibrationPanel:
    """Interactive calibration for ``model``. Display it as the last line of a cell.

    Args:
        model: the OnnxModel; its first input is the image input the panel calibrates.
        preprocess: starting mean/std/colour order of the image input.
        folder: where the images are picked from (default: the bundled photographs).
    """

    def __init__(
        self, model: OnnxModel, preprocess: Preprocess | None = None, folder: str | Path | None = None
    ):
        self.model = model
        self.input_name = next(iter(model.inputs))
        pre = preprocess or Preprocess()
        self.results: list[tuple[str, Divergence]] = []
        self.folder = w.Text(
            str(folder or datasets_dir() / "calibration"), description="folder", layout=w.Layout(width="60%")
        )
        load = w.Button(description="load images")
        load.on_click(lambda _: self.load_images())
        self.images = w.GridBox(layout=w.Layout(grid_template_columns="repeat(6, 110px)"))
        self.platform = w.Dropdown(options=PLATFORMS, value="rk3588", description="platform")
        self.dtype = w.Dropdown(options=list(DTYPE_PLATFORMS), value="w8a8", description="dtype")
        self.algorithm = w.Dropdown(options=ALGORITHMS, value="normal", description="algorithm")
        self.method = w.Dropdown(options=METHODS, value="channel", description="method")
        self.mean = w.Text(_fmt(pre.mean), description="mean")
        self.std = w.Text(_fmt(pre.std), description="std")
        self.bgr = w.Checkbox(pre.rgb2bgr, description="model takes BGR")
        self.mode = w.Dropdown(
            options=["emulate", "mark-all", "snapshot"], value="emulate", description="mode"
        )
        self.samples = w.IntSlider(2, min=1, max=12, description="compare on")
        #: layers kept in float16 (emulate mode), filled with the last run's layers, worst first
        self.float16 = w.SelectMultiple(options=[], description="float16", rows=4)
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.confirm_button = w.Button(description="confirm with the toolkit", icon="check", disabled=True)
        self.confirm_button.on_click(lambda _: self.confirm())
        #: (label, seconds) of every run, the toolkit confirmations included
        self.timings: list[tuple[str, float]] = []
        self._emulators: dict = {}  # per setting (float16 aside): its EmulatorRunner
        self._floats: dict = {}  # per preprocessing: {row: float tensors}
        self._runs: dict = {}  # emulated runs by setting, float16 layers and samples
        self._checks: dict = {}  # per emulator: its FidelityReport against the simulator
        self.rules = None  #: the emulator's rules (None: the installed toolkit's)
        self._last: tuple | None = None  # the last emulated run: config, calibration, samples, result
        self.progress = w.IntProgress(0, min=0, max=1, description="progress")
        self.status = w.HTML()
        self.figure = go.FigureWidget(
            layout={
                "title": "per-layer SQNR (dB), float vs quantized; one line per run",
                "xaxis_title": "layer (topological order)",
                "yaxis_title": "SQNR (dB)",
                "template": "plotly_white",
                "height": 400,
            }
        )
        self.widget = w.VBox(
            [
                w.HBox([self.folder, load]),
                self.images,
                w.HBox([self.platform, self.dtype, self.algorithm, self.method]),
                w.HBox([self.mean, self.std, self.bgr]),
                w.HBox([self.mode, self.samples, self.float16]),
                w.HBox([self.run_button, self.confirm_button]),
                w.HBox([self.progress, self.status]),
                self.figure,
            ]
        )
        self.load_images()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def load_images(self) -> None:
        """(Re)list the folder's images as thumbnails with a checkbox each (all selected)."""
        folder = Path(self.folder.value).expanduser()
        files = (
            sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        if not files:
            self._say(f"No images in {folder}.", error=True)
        cells = []
        for path in files:
            thumb = w.Image(value=_thumbnail(path), format="jpeg", layout=w.Layout(width="100px"))
            box = w.Checkbox(True, description=path.name[:14], indent=False)
            box.path = path
            cells.append(w.VBox([thumb, box]))
        self.images.children = cells

    def selected(self) -> CalibrationSet:
        """The ticked images as a CalibrationSet."""
        rows = [(cell.children[1].path,) for cell in self.images.children if cell.children[1].value]
        return CalibrationSet(rows, Path(self.folder.value))

    def config(self) -> BuildConfig:
        """The BuildConfig the widgets describe (ConfigError if invalid)."""
        pre = Preprocess(_parse(self.mean.value, "mean"), _parse(self.std.value, "std"), self.bgr.value)
        return BuildConfig(
            target_platform=self.platform.value,
            quantized_dtype=self.dtype.value,
            quantized_algorithm=self.algorithm.value,
            quantized_method=self.method.value,
            preprocess={self.input_name: pre},
        )

    def run(self) -> Divergence | None:
        """Build (or emulate), compare and add the run to the figure; errors go to the
        status line. The status says how long the run took (``timings`` keeps it)."""
        self.run_button.disabled = True
        started = time.perf_counter()
        try:
            calibration = self.selected()
            if not len(calibration):
                raise WorkbenchError("Tick at least one calibration image.")
            config = self.config()
            samples = calibration.head(self.samples.value)
            self.progress.max, self.progress.value = len(samples), 0
            mode, why = self._mode(config)
            runner = self._emulator(config, calibration, samples) if mode == "emulate" else None
            if runner is not None and not self._checks[runner].ok:
                mode, why = "mark-all", f" on the toolkit: {self._checks[runner].summary()}"
                config = self._with_float16(runner, config)
            if mode == "emulate":
                config, result = self._emulate(runner, config, calibration, samples)
            else:
                if runner is None and self.float16.value:
                    why += " (the float16 choices apply in emulate mode)"
                self._say(f"building and comparing{why} ...")
                result = self._toolkit(config, calibration, samples, mode)
        except WorkbenchError as err:
            self._say(str(err), error=True)
            return None
        finally:
            self.run_button.disabled = False
        seconds = time.perf_counter() - started
        label = self._label(config, calibration, "emulator" if mode == "emulate" else mode)
        summary = result.summary()  # once: on yolov8n each costs ~0.1 s
        self._add(label, result, seconds, summary)
        self._last = (config, calibration, samples, result) if mode == "emulate" else None
        self.confirm_button.disabled = self._last is None
        self._offer_layers(summary)
        worst = summary.nsmallest(1, "sqnr_db_mean")
        self._say(
            f"done in {seconds:.2f} s: {label}{why}; "
            + (
                f"worst layer {worst.layer.iloc[0]} ({worst.sqnr_db_mean.iloc[0]:.1f} dB); "
                if len(worst)
                else ""
            )
            + _outputs_text(result, summary)
            + ("; emulated: confirm with the toolkit before acting on it" if mode == "emulate" else "")
        )
        return result

    def confirm(self) -> Divergence | None:
        """Run the last emulated setting (float16 layers included) on the toolkit
        (mark-all), add it to the figure and show both output SQNRs side by side."""
        if self._last is None:
            self._say("Run in emulate mode first: confirm checks the last emulated run.", error=True)
            return None
        config, calibration, samples, emulated = self._last
        self.confirm_button.disabled = True
        started = time.perf_counter()
        self._say("confirming with the toolkit (one build) ...")
        try:
            result = self._toolkit(config, calibration, samples, "mark-all")
        except WorkbenchError as err:
            self._say(str(err), error=True)
            self.confirm_button.disabled = False
            return None
        seconds = time.perf_counter() - started
        label = self._label(config, calibration, "toolkit")
        self._add(label, result, seconds, result.summary())
        self._say(f"confirmed in {seconds:.1f} s: {label}; output SQNR {_side_by_side(emulated, result)}")
        return result

    def _mode(self, config: BuildConfig) -> tuple[str, str]:
        """The mode a run takes, and why, when emulate must give way to the toolkit."""
        if self.mode.value != "emulate":
            return self.mode.value, ""
        if config.quantized_dtype != "w8a8":
            return "mark-all", f" on the toolkit ({config.quantized_dtype}: the emulator does w8a8)"
        return "emulate", ""

    def _emulator(self, config: BuildConfig, calibration: CalibrationSet, samples: CalibrationSet):
        """The emulator of a setting and its check against the simulator on the first
        sample (``self._checks[runner]``), both made once per setting."""

        key = (config.digest(), tuple(calibration.rows))
        runner = self._emulators.get(key)
        if runner is None:
            self._say("the toolkit's step 1 for this setting (once) ...")
            runner = EmulatorRunner(self.model, config, calibration, rules=self.rules)
            self._say("checking the emulator against the simulator on one sample (once per setting) ...")
            self._checks[runner] = fidelity(self.model, config, calibration, samples.rows[0], emulator=runner)
            self._emulators[key] = runner
        return runner

    def _with_float16(self, runner, config: BuildConfig) -> BuildConfig:
        """``config`` with the chosen layers in float16, each as its whole compiled layer."""
        units = (layer_unit(runner, layer) for layer in self.float16.value)
        return dataclasses.replace(config, float_layers=tuple(dict.fromkeys(t for u in units for t in u)))

    def _emulate(self, runner, config: BuildConfig, calibration: CalibrationSet, samples: CalibrationSet):
        """The per-layer run of the emulator for ``config`` with the chosen float16 layers
        (onnxruntime only). Returns (the config with its float16 tensors, the Divergence).
        An identical earlier run is given back as it was."""
        config = self._with_float16(runner, config)
        layers = config.float_layers
        done = (config.digest(), tuple(calibration.rows), tuple(samples.rows))
        if done not in self._runs:
            variant = runner.variant(layers) if layers else runner
            floats = self._floats.setdefault(repr(config.preprocess), {})
            self._say("emulating ...")
            self._runs[done] = compute_divergence(
                self.model, config, calibration, samples, backend=variant, floats=floats, cache=False,
                progress=False, on_sample=lambda n, total: setattr(self.progress, "value", n),
            )  # fmt: skip
        self.progress.value = self.progress.max
        return config, self._runs[done]

    def _toolkit(self, config, calibration, samples, mode: str) -> Divergence:
        return compute_divergence(
            self.model,
            config,
            calibration,
            samples,
            backend=mode,
            progress=False,
            on_sample=lambda done, total: setattr(self.progress, "value", done),
        )

    def _label(self, config: BuildConfig, calibration: CalibrationSet, by: str) -> str:
        hybrid = f" + {len(config.float_layers)} float16" if config.float_layers else ""
        return (
            f"#{len(self.results) + 1} {config.quantized_dtype} {config.quantized_algorithm}/"
            f"{config.quantized_method}{hybrid}, {len(calibration)} images ({by})"
        )

    def _add(self, label: str, result: Divergence, seconds: float, summary) -> None:
        self.results.append((label, result))
        self.timings.append((label, seconds))
        self._add_trace(label, summary)

    def _offer_layers(self, summary) -> None:
        """The float16 choices: the run's compared layers, worst first (choices kept)."""
        summary = summary.sort_values("sqnr_db_mean")
        chosen = self.float16.value
        self.float16.options = [
            (f"{r.layer} ({r.sqnr_db_mean:.1f} dB)", r.layer) for r in summary.itertuples()
        ]
        self.float16.value = tuple(v for v in chosen if v in set(summary.layer))

    def _add_trace(self, label: str, summary) -> None:
        self.figure.add_scatter(
            x=list(summary["index"]),
            y=list(summary.sqnr_db_mean),
            mode="lines+markers",
            name=label,
            hovertext=list(summary.layer),
            hoverinfo="text+y",
        )

    def _say(self, text: str, error: bool = False) -> None:

        colour = "#c62828" if error else "#2e7d32"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"


def _output_sqnr(result: Divergence, summary=None) -> dict[str, float]:
    """{model output: mean SQNR over the run's samples} (``summary``: the run's, if known)."""
    summary = result.summary() if summary is None else summary
    outputs = summary[summary.layer.isin(result.meta.get("model", {}).get("outputs", {}))]
    return dict(zip(outputs.layer, outputs.sqnr_db_mean))


def _outputs_text(result: Divergence, summary=None) -> str:
    found = _output_sqnr(result, summary)
    return "output SQNR " + ", ".join(f"{k} {v:.1f} dB" for k, v in found.items()) if found else ""


def _side_by_side(emulated: Divergence, confirmed: Divergence) -> str:
    """Per model output: the emulator's and the toolkit's SQNR."""
    emu, tk = _output_sqnr(emulated), _output_sqnr(confirmed)
    return "; ".join(
        f"{name}: emulator {emu.get(name, float('nan')):.1f} dB, toolkit {db:.1f} dB"
        for name, db in tk.items()
    )


def _fmt(values) -> str:
    return "" if values is None else ",".join(f"{v:g}" for v in values)


def _parse(text: str, what: str):
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise WorkbenchError(f"{what} {text!r}: give numbers separated by commas, e.g. 0,0,0") from None


def _thumbnail(path: Path) -> bytes:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return b""
    scale = 100 / max(img.shape[:2])
    small = cv2.resize(img, (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))))
    return cv2.imencode(".jpg", small)[1].tobytes()
