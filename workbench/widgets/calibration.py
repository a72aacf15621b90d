"""CalibrationPanel: pick calibration images and settings, run, watch per-layer SQNR.

Every run is kept: the figure shows all of them, so two calibrations compare side by
side. The work is ``compute_divergence`` (cached by content, so re-running an identical
configuration is instant); errors appear in the panel with their message, never as a
traceback that kills the flow.
"""

from __future__ import annotations

from pathlib import Path

import ipywidgets as w
import plotly.graph_objects as go

from workbench.compare.divergence import Divergence, compute_divergence
from workbench.datasets import CalibrationSet, datasets_dir
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
        self.mode = w.Dropdown(options=["mark-all", "snapshot"], value="mark-all", description="mode")
        self.samples = w.IntSlider(2, min=1, max=12, description="compare on")
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())
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
                w.HBox([self.mode, self.samples, self.run_button]),
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
        """Build, compare and add the run to the figure; errors go to the status line."""
        self.run_button.disabled = True
        try:
            calibration = self.selected()
            if not len(calibration):
                raise WorkbenchError("Tick at least one calibration image.")
            config = self.config()
            samples = calibration.head(self.samples.value)
            self.progress.max, self.progress.value = len(samples), 0
            self._say("building and comparing ...")
            result = compute_divergence(
                self.model,
                config,
                calibration,
                samples,
                mode=self.mode.value,
                progress=False,
                on_sample=lambda done, total: setattr(self.progress, "value", done),
            )
        except WorkbenchError as err:
            self._say(str(err), error=True)
            return None
        finally:
            self.run_button.disabled = False
        label = (
            f"#{len(self.results) + 1} {config.quantized_dtype} {config.quantized_algorithm}/"
            f"{config.quantized_method}, {len(calibration)} images"
        )
        self.results.append((label, result))
        self._add_trace(label, result)
        worst = result.worst(1)
        self._say(
            f"done: {label}; worst layer {worst.layer.iloc[0]} ({worst.sqnr_db_mean.iloc[0]:.1f} dB)"
            if len(worst)
            else f"done: {label}"
        )
        return result

    def _add_trace(self, label: str, result: Divergence) -> None:
        summary = result.summary()
        self.figure.add_scatter(
            x=list(summary["index"]),
            y=list(summary.sqnr_db_mean),
            mode="lines+markers",
            name=label,
            hovertext=list(summary.layer),
            hoverinfo="text+y",
        )

    def _say(self, text: str, error: bool = False) -> None:
        import html

        colour = "#c62828" if error else "#2e7d32"
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"


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
