"""rknn-workbench: see, check, quantize and debug ONNX models for Rockchip NPUs.

The public API is re-exported here lazily, so `import workbench` stays fast and the heavy
libraries (onnx, onnxruntime, plotly, rknn-toolkit2) load only when used.
"""

from importlib import import_module
from typing import Any

from workbench.errors import (
    DatasetError,
    InputShapeError,
    ModelError,
    ToolkitError,
    UnsupportedModelError,
    WorkbenchError,
    WorkbenchWarning,
    ZooError,
)

_LAZY = {
    "OnnxModel": "workbench.model",
    "TensorInfo": "workbench.model",
    "Preprocess": "workbench.preprocess",
    "load_sample": "workbench.preprocess",
    "CalibrationSet": "workbench.datasets",
    "default_calibration_set": "workbench.datasets",
    "ZOO": "workbench.datasets",
    "fetch_model": "workbench.datasets",
    "load_zoo_model": "workbench.datasets",
    "FloatRunner": "workbench.runners.float",
    "SimulatorRunner": "workbench.runners.simulator",
    "BuildConfig": "workbench.rknn.config",
    "ToolkitSession": "workbench.rknn.session",
    "Divergence": "workbench.compare.divergence",
    "per_layer_figure": "workbench.viz.plots",
    "compute_divergence": "workbench.compare.divergence",
    "write_report": "workbench.viz.report",
    "evaluate": "workbench.task.evaluate",
    "TaskResult": "workbench.task.evaluate",
    "get_adapter": "workbench.task.adapters",
    "load_labelled": "workbench.task.labels",
    "explain_flips": "workbench.task.explain",
    "fix_answers": "workbench.fix.answers",
}

__all__ = [
    "DatasetError",
    "InputShapeError",
    "ModelError",
    "ToolkitError",
    "UnsupportedModelError",
    "WorkbenchError",
    "WorkbenchWarning",
    "ZooError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")
