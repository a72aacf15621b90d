"""Which adapter and which samples judge a model's answers: the zoo entry's, or the user's.

A zoo model carries its task (adapter and settings) and a small labelled set that fits its
domain; any other model is judged by its raw outputs (``outputs``) on the calibration list,
unless the user names a task, a labelled set, or a Python function of their own.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workbench.datasets import ZOO, default_calibration_set
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.task.adapters import CallableAdapter, TaskAdapter, get_adapter
from workbench.task.labels import LabelledSet, default_labelled_set, load_labelled


def task_adapter(
    model_spec: str, model: OnnxModel, task: str | None = None, dict_path: str | None = None
) -> TaskAdapter:
    """The adapter for ``model``: ``task`` if given (a name, or ``FILE.py:FUNCTION`` whose
    function decodes the outputs dict into a prediction), else the zoo entry's, else
    ``outputs``. ``dict_path`` is the character dictionary of a CTC model."""
    entry = ZOO.get(model_spec)
    if task and ":" in task and task.split(":", 1)[0].endswith(".py"):
        return CallableAdapter(decode=_user_function(task), name=Path(task.split(":", 1)[0]).stem)
    name = task or (entry.task if entry else "outputs")
    settings = dict(entry.task_settings) if entry and name == entry.task else {}
    if dict_path:
        settings["dict_path"] = dict_path
    return get_adapter(name, model=model, **settings)


def task_data(model_spec: str, data: str | Path | None = None) -> LabelledSet:
    """The samples to judge: ``data`` if given, else the zoo entry's labelled set, else the
    bundled calibration photographs (unlabelled: agreement with float only)."""
    if data:
        return load_labelled(data)
    entry = ZOO.get(model_spec)
    if entry is not None and entry.labelled:
        return default_labelled_set(entry.name)
    calibration = default_calibration_set()
    return LabelledSet(calibration, None, calibration.source, "list")


def _user_function(spec: str):
    """``FILE.py:FUNCTION`` imported from the user's file (their own code, run as asked)."""
    file, _, function = spec.partition(":")
    path = Path(file)
    if not path.is_file():
        raise WorkbenchError(f"--task {spec!r}: {file!r} does not exist; give FILE.py:FUNCTION.")
    module_spec = importlib.util.spec_from_file_location(f"user_task_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        raise WorkbenchError(
            f"--task {spec!r}: importing {file!r} failed: {type(err).__name__}: {err}"
        ) from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise WorkbenchError(f"--task {spec!r}: {file!r} has no function {function!r}.")
    return fn
