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
    """rknn-toolkit2 failed or crashed in its worker process; the message quotes its log.

    Attributes:
        kind: "toolkit" (the toolkit refused: a result, it will fail again), "crash" (the
            worker died; ``returncode`` says how) or "timeout" (stopped after the time limit).
        log_path: the toolkit's log for the failed call, when one was kept.
        returncode: the worker's exit status after a crash (negative: killed by that signal).
    """

    def __init__(self, message: str, *, kind: str = "toolkit", log_path=None, returncode: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.log_path = log_path
        self.returncode = returncode


class ConfigError(WorkbenchError):
    """A BuildConfig that the toolkit would refuse (or that does not fit the model)."""


class BoardError(WorkbenchError):
    """The board could not be reached or failed during a run.

    Attributes:
        partial: the result of the samples done before the failure (a Divergence or a
            TaskResult marked partial), when there is one.
    """

    def __init__(self, message: str, *, partial=None):
        super().__init__(message)
        self.partial = partial


class EmulatorError(WorkbenchError):
    """The toolkit's step-1 files cannot be turned into a runnable emulator graph."""


class WorkbenchWarning(UserWarning):
    """Something works but will cost accuracy, speed or compatibility later."""
