"""The one build recipe: the model and the calibration list written into the worker's
folder, then the toolkit's build with the config's arguments. Every runner, the CLI and the
fix sweeps build through it, so how a model reaches the toolkit is decided in one place."""

from __future__ import annotations

from pathlib import Path

import yaml

from workbench.datasets import CalibrationSet
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession


def build(
    session: ToolkitSession,
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    *,
    rknn_path: str | Path | None = None,
    verbose: bool = True,
    name: str = "model",
) -> str:
    """Build ``model`` with ``config`` in ``session`` (it becomes the session's model; exported
    to ``rknn_path`` when given) and return the toolkit's log of the build (with its layer
    table when ``verbose``). The model file is removed once built: the toolkit holds its copy.

    Raises:
        ToolkitError: the toolkit refused the model (``kind`` "toolkit"), crashed or timed out.
    """
    dataset = calibration.write_list(session.workdir / "dataset.txt")
    path = model.save(session.workdir / f"{name}.onnx")
    extra = {"rknn_path": str(rknn_path)} if rknn_path else {}
    try:
        args = config.build_args(model.inputs, dataset)
        _, log = session.call("build", model_path=str(path), verbose=verbose, **extra, **args)
    finally:
        path.unlink(missing_ok=True)
    return log


def hybrid_step1(
    session: ToolkitSession,
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    *,
    name: str = "model",
) -> dict[str, str]:
    """The toolkit's ``hybrid_quantization_step1`` in ``session``: returns the paths of the
    ``<name>.model``, ``.data`` and ``.quantization.cfg`` it writes (keys model, data, cfg),
    the base of hybrid step 2 and of the emulator."""
    dataset = calibration.write_list(session.workdir / "dataset.txt")
    path = model.save(session.workdir / f"{name}.onnx")
    try:
        files, _ = session.call(
            "hybrid_step1",
            model_path=str(path),
            config=config.toolkit_kwargs(model.inputs),
            dataset=str(dataset),
        )
    finally:
        path.unlink(missing_ok=True)  # loaded: the toolkit holds its own copy
    return files


def build_with_cfg(
    session: ToolkitSession,
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    *,
    verbose: bool = False,
    name: str = "model",
) -> tuple[dict | None, str]:
    """Build ``model`` as the session's model through the toolkit's hybrid step 1 and step 2
    (same model and layer table as :func:`build`), returning step 1's quantization
    parameters (``quantize_parameters`` of its cfg) and the log. Float and auto-hybrid
    builds have no step 1: they go through :func:`build` and return None."""
    if not config.do_quantization or config.auto_hybrid:
        return None, build(session, model, config, calibration, verbose=verbose, name=name)
    files = hybrid_step1(session, model, config, calibration, name=name)
    _, log = session.call("hybrid_step2", **files, float_layers=list(config.float_layers), verbose=verbose)
    with open(files["cfg"]) as f:
        return yaml.safe_load(f).get("quantize_parameters") or {}, log
