"""FloatRunner: the float reference, every intermediate tensor from onnxruntime.

Graph optimisation is off so that every ONNX tensor keeps its name and value (fused
nodes would lose them). One sample runs at a time, so memory stays at one sample's
tensors however large the set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess, load_row
from workbench.runners.base import BaseRunner


class FloatRunner(BaseRunner):
    """Run an OnnxModel on onnxruntime and capture the tensors named in ``keep``.

    Args:
        model: the prepared model.
        preprocess: per input name (or one for all), as the toolkit is configured.
        keep: tensor names to return; every node output and graph input by default.
    """

    backend = "float"

    def __init__(
        self,
        model: OnnxModel,
        preprocess: Mapping[str, Preprocess] | Preprocess | None = None,
        keep: Iterable[str] | None = None,
    ):
        import onnxruntime as ort

        self.model = model
        self.preprocess = preprocess or Preprocess()
        self._outputs_session: FloatRunner | None = None
        known = {t.name: t for t in model.tensors}
        wanted = list(keep) if keep is not None else [t.name for t in model.tensors if t.dtype]
        missing = [n for n in wanted if n not in known]
        if missing:
            raise WorkbenchError(
                f"keep names tensors {missing[:5]} that are not in {model.name}; see model.tensors "
                "for the names."
            )
        self.input_names = [n for n in wanted if n in model.inputs]
        self.output_names = [n for n in wanted if n not in model.inputs]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            _with_outputs(model, self.output_names, known).SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )

    def run_arrays(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tensors for already preprocessed inputs ``{input name: array}``."""
        values = self.session.run(self.output_names, dict(feeds))
        out = {name: np.asarray(feeds[name]) for name in self.input_names}
        out.update(zip(self.output_names, values))
        return out

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Tensors for one sample given as files (one per input), preprocessed like the toolkit."""
        return self.run_arrays(load_row(row, self.model.inputs, self.preprocess))

    def outputs(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """The model's graph outputs of one sample (all of them, whatever ``keep`` says)."""
        source: FloatRunner = self
        if not set(self.model.outputs) <= set(self.output_names):  # ``keep`` left some out
            if self._outputs_session is None:
                self._outputs_session = FloatRunner(
                    self.model, self.preprocess, keep=list(self.model.outputs)
                )
            source = self._outputs_session
        tensors = source.run(row)
        return {name: tensors[name] for name in self.model.outputs}

    def close(self) -> None:
        self.session = None
        self._outputs_session = None


def open_float(model, config, calibration=None, **_) -> FloatRunner:
    """The registry's "float" backend: onnxruntime with the config's preprocessing."""
    return FloatRunner(model, config.preprocess)


def _with_outputs(model: OnnxModel, names: list[str], known) -> onnx.ModelProto:
    """A copy of the model whose graph outputs are exactly ``names``."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    infos = {v.name: v for v in [*proto.graph.value_info, *proto.graph.output]}
    del proto.graph.output[:]
    for name in names:
        info = infos.get(name)
        if info is None:
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(known[name].dtype))
            info = onnx.helper.make_tensor_value_info(name, elem, known[name].shape)
        proto.graph.output.append(info)
    return proto
