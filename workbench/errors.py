"""One exception family for the workbench.

Every message names the thing that is wrong (a file, an input, a layer), says what was
expected and gives the next step, so a notebook user can act on it without a traceback.
"""


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ModelError(WorkbenchError):
    """The ONNX model file cannot be used: missing, not ONNX, truncated, invalid."""


class InputShapeError(ModelError):
    """An input shape is dynamic and no fixed shape was given, or the given shape is wrong."""


class UnsupportedModelError(ModelError):
    """The model uses something the toolkit cannot take (custom-domain operators, ...)."""


class DatasetError(WorkbenchError):
    """A calibration set, a dataset.txt or one of its images cannot be read."""


class ZooError(WorkbenchError):
    """A model of the zoo is unknown, cannot be downloaded or fails its checksum."""


class ToolkitError(WorkbenchError):
    """rknn-toolkit2 failed or crashed in its worker process; the message quotes its log."""


class WorkbenchWarning(UserWarning):
    """Something works but will cost accuracy, speed or compatibility later."""
