"""MarkAllRunner: the quantized model's layer-boundary tensors from one ``inference()``.

The compiled graph's layer boundaries (the Feature Tensor table of a first build) are
added as model outputs and the model is built again, so one simulator ``inference()``
returns every boundary tensor, in memory, with no dump files. Only boundaries are marked:
an output inside a fused layer would split the fusion and measure a different model.
Accumulated error only (the toolkit's single-layer error needs the snapshot mode).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench.datasets import CalibrationSet
from workbench.errors import ToolkitError
from workbench.model import OnnxModel
from workbench.preprocess import load_row
from workbench.rknn.buildlog import parse_feature_tensors
from workbench.rknn.config import BuildConfig
from workbench.rknn.names import base_name
from workbench.rknn.session import ToolkitSession, clean_log
from workbench.runners._toolkit import ToolkitRunner
from workbench.runners.float import _with_outputs


class MarkAllRunner(ToolkitRunner):
    """Build ``model`` twice (plain, then with its layer boundaries marked) and run samples.

    With ``outputs_only=True`` it builds once, unmarked, and returns the model's own outputs:
    the answers of the model as it will be deployed (what the task adapters judge).
    """

    def __init__(self, *args, outputs_only: bool = False, **kwargs):
        self.outputs_only = outputs_only
        super().__init__(*args, **kwargs)

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        self.output_names, self.boundaries, self.build_log = build_marked(
            self.session, model, config, calibration, outputs_only=self.outputs_only
        )

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Boundary tensors (ONNX names) of one sample, dequantized to float32 (the graph
        outputs first)."""
        arrays = infer_row(self.session, self.model, self.config, row)
        return match_outputs(self.output_names, arrays, self.build_log, self.model)


def infer_row(session: ToolkitSession, model: OnnxModel, config: BuildConfig, row: Sequence[Path]) -> list:
    """The session's model run on one sample with ``inference()``: every output, in order.

    The raw pixels go in (an RKNN model applies mean/std itself), as .npy files in the
    ONNX layout.
    """
    raw = load_row(row, model.inputs, config.preprocess, normalise=False)
    files = []
    for i, array in enumerate(raw.values()):
        files.append(session.workdir / f"input_{i}.npy")
        np.save(files[-1], array)
    out = session.workdir / "outputs.npz"
    result, _ = session.call("inference", inputs=[str(f) for f in files], output_path=str(out))
    with np.load(out) as data:
        arrays = [data[f"arr_{i}"] for i in range(result["count"])]
    out.unlink()
    return arrays


def build_marked(
    session: ToolkitSession,
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    rknn_path: Path | None = None,
    *,
    outputs_only: bool = False,
) -> tuple[list[str], list[str], str]:
    """Build ``model``, find its layer boundaries, build it again with them marked as outputs
    (exported to ``rknn_path`` if given). Returns the marked output names (graph outputs
    first), the boundaries and the marked build's log. The session stays on the marked model.

    ``outputs_only``: build once, unmarked (the deployed model): only the graph outputs."""
    dataset = calibration.write_list(session.workdir / "dataset.txt")
    build = config.build_args(model.inputs, dataset)
    path = model.save(session.workdir / "model.onnx")
    rknn = {"rknn_path": str(rknn_path)} if outputs_only and rknn_path else {}
    _, log = session.call("build", model_path=str(path), **build, **rknn)
    path.unlink()  # built: the toolkit holds its own copy
    if outputs_only:
        return list(model.outputs), [], log
    boundaries = boundary_tensors(model, parse_feature_tensors(log))
    output_names = [*model.outputs, *[b for b in boundaries if b not in model.outputs]]
    marked = marked_model(model, output_names).save(session.workdir / "marked.onnx")
    # Quiet build: the tables were read from the first one.
    _, marked_log = session.call(
        "build",
        model_path=str(marked),
        verbose=False,
        rknn_path=str(rknn_path) if rknn_path else None,
        **build,
    )
    marked.unlink()
    return output_names, boundaries, marked_log


def marked_model(model: OnnxModel, output_names: list[str]) -> OnnxModel:
    """``model`` with exactly ``output_names`` as graph outputs."""
    return OnnxModel(_with_outputs(model, output_names, {t.name: t for t in model.tensors}))


def boundary_tensors(model: OnnxModel, feature_tensors: list[str]) -> list[str]:
    """ONNX tensors standing for the compiled graph's layer boundaries, in topological order
    (graph inputs excluded: they are fed, not computed)."""
    produced = {t.name for t in model.tensors if t.producer}
    found = {base_name(name, produced) for name in feature_tensors} - {None}
    return [t.name for t in model.tensors if t.name in found]


def match_outputs(names: list[str], arrays: list[np.ndarray], build_log: str, model: OnnxModel) -> dict:
    """Pair outputs with names. The toolkit silently drops outputs it constant-folded and
    names them in a warning of the build; those names are removed, then the counts must
    agree (guessing by position or size could pair a tensor with another's name)."""
    if len(arrays) != len(names):
        warned = " ".join(line for line in clean_log(build_log).splitlines() if line.startswith("W "))
        tokens = set(re.findall(r"[^\s'\",\[\]]+", warned))
        names = [n for n in names if n not in tokens]
    if len(arrays) != len(names):
        raise ToolkitError(
            f"rknn.inference() returned {len(arrays)} outputs for {len(names)} marked tensors and "
            "the build log does not say which were dropped; use mode='snapshot' for this model."
        )
    shapes = {t.name: t.shape for t in model.tensors}
    # Marked outputs come back in the ONNX layout (measured on 2.5.0: a (1,32,24) tensor that
    # accuracy_analysis dumps as (1,24,1,32) is returned as (1,32,24)). Only size-1 axes are
    # restored here; any other shape is kept for layer_rows to map or leave unaligned, since
    # a reshape would silently reorder its elements.
    return {
        name: array.reshape(shapes[name])
        if shapes.get(name) and _non1(array.shape) == _non1(shapes[name])
        else array
        for name, array in zip(names, arrays)
    }


def _non1(shape) -> list[int]:
    return [d for d in shape if d != 1]
