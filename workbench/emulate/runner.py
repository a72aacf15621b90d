"""EmulatorRunner: the toolkit's int8 model emulated in onnxruntime (backend "emulator").

Built once per (model, config, calibration) from the toolkit's own step-1 files (one
toolkit call, ~10-30 s), then each sample costs one onnxruntime run, and a what-if (some
layers in float16) costs a graph edit and a new onnxruntime session, no toolkit build.
The tensors come back by ONNX name, like every other runner's.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx

from workbench.compare.divergence import run_key
from workbench.datasets import CalibrationSet, cache_dir
from workbench.emulate.model import Emulation, EmulatorError, Step1, emulation_graph
from workbench.emulate.quantize import Rules, rules_for
from workbench.model import OnnxModel
from workbench.preprocess import load_row
from workbench.rknn.build import hybrid_step1
from workbench.rknn.config import BuildConfig
from workbench.rknn.names import align
from workbench.rknn.session import ToolkitSession
from workbench.runners.base import BaseRunner


def run_step1(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    workdir: str | Path | None = None,
    timeout: float | None = 1800,
    *,
    cache: bool = True,
) -> Step1:
    """The toolkit's hybrid_quantization_step1 for ``model`` (in a worker), read into memory.

    With ``cache``, the three files are kept under the cache folder, keyed by the content of
    the model, the settings (float16 choices aside: step 1 does not depend on them), the
    calibration files and the toolkit version, and an identical later call reads them back.

    Raises:
        ToolkitError: the toolkit failed (its own lines quoted).
    """

    config.check_model(model)
    kept = _step1_folder(model, config, calibration)
    names = {"model": "model.model", "data": "model.data", "cfg": "model.quantization.cfg"}
    if cache and all((kept / n).is_file() for n in names.values()):
        return Step1.read({k: kept / n for k, n in names.items()})
    with ToolkitSession(workdir, timeout=timeout) as session:
        files = hybrid_step1(session, model, config, calibration)
        if cache:
            _keep(files, kept, names)
        return Step1.read(files)


def _step1_folder(model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> Path:

    plain = dataclasses.replace(config, float_layers=(), auto_hybrid=False)
    return cache_dir() / "step1" / run_key(model, plain, calibration, calibration, "step1")


def _keep(files: Mapping[str, str], folder: Path, names: Mapping[str, str]) -> None:
    """Copy step 1's files into ``folder`` atomically (a partial copy is never read back)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for key, name in names.items():
            shutil.copy(files[key], tmp / name)
        os.replace(tmp, folder)
    except OSError:  # another process kept the same files first
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def toolkit_version() -> str:
    """The installed rknn-toolkit2 version (from its metadata: the toolkit is not imported)."""

    try:
        return version("rknn-toolkit2")
    except PackageNotFoundError:
        return "unknown"


class EmulatorRunner(BaseRunner):
    """The toolkit's int8 model in onnxruntime, per-layer tensors by ONNX name.

    Args:
        model: the prepared model.
        config: the build settings (w8a8; ``config.float_layers`` are float16 layers).
        calibration: the calibration set step 1 computes the ranges on.
        float_layers: tensors (cfg / ONNX names) whose op runs in float16 (added to the
            config's), with the toolkit's semantics (see ``emulation_graph``).
        rules: the fake-quantization rules; the installed toolkit's by default.
        step1: step-1 files already read (skips the toolkit call).
        workdir, timeout: for the toolkit worker of step 1.
        quantize: False runs the toolkit's graph in float (to check the mapping to ONNX).
        cache: reuse step 1's files of an identical earlier call (see ``run_step1``).
    Raises:
        ToolkitError: step 1 failed. EmulatorError: the graph cannot be emulated.
    """

    backend = "emulator"

    def __init__(
        self,
        model: OnnxModel,
        config: BuildConfig,
        calibration: CalibrationSet | None = None,
        *,
        float_layers: Iterable[str] = (),
        rules: Rules | None = None,
        step1: Step1 | None = None,
        workdir: str | Path | None = None,
        timeout: float | None = 1800,
        quantize: bool = True,
        cache: bool = True,
    ):
        if step1 is None:
            if calibration is None:
                raise EmulatorError(
                    "EmulatorRunner needs a calibration set (for the toolkit's step 1), or step1= "
                    "files already read with Step1.read()."
                )
            step1 = run_step1(model, config, calibration, workdir, timeout, cache=cache)
        self.model = model
        self.config = config
        self.step1 = step1
        self.rules = rules or rules_for(toolkit_version())
        self.float_layers = tuple(dict.fromkeys([*config.float_layers, *float_layers]))
        per_channel = config.quantized_method != "layer"
        self.emulation: Emulation = emulation_graph(
            step1, self.rules, self.float_layers, quantize=quantize, per_channel=per_channel
        )
        known = {t.name: t for t in model.tensors if t.producer}
        tensors = [*self.emulation.boundaries, *self.emulation.float16]
        self.names = _onnx_names(tensors, known)  # {toolkit name: onnx name}
        self._shapes = {t.name: t.shape for t in model.tensors}
        #: the toolkit graph's outputs, in the ONNX model's output order
        self.output_names = [o.name for o in self.emulation.proto.graph.output]
        self._fetch = list(dict.fromkeys([*self.output_names, *tensors]))
        self._session = _session(self.emulation.proto, self._fetch)

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        """The shape of a tensor of the toolkit's graph (its own layout), if recorded."""
        if not hasattr(self, "_toolkit_shapes"):
            g = self.step1.proto.graph
            self._toolkit_shapes = {
                v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
                for v in [*g.input, *g.value_info, *g.output]
            }
        return self._toolkit_shapes.get(name)

    @property
    def meta(self) -> dict:
        return {"float16": list(self.float_layers)}

    def variant(self, float_layers: Iterable[str]) -> EmulatorRunner:
        """The same emulator with ``float_layers`` in float16 (the config's included):
        a graph edit and a new onnxruntime session, no toolkit call."""
        return EmulatorRunner(
            self.model, self.config, float_layers=float_layers, rules=self.rules, step1=self.step1
        )

    def run_arrays(self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict:
        """Toolkit-named tensors for preprocessed inputs (``names``: all boundaries and outputs)."""
        names = list(names) if names is not None else self._fetch
        values = self._session.run(names, {k: np.asarray(v, np.float32) for k, v in feeds.items()})
        return dict(zip(names, values))

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Per-layer tensors of one sample by ONNX name: every emulated layer boundary that
        stands for an ONNX tensor, and the model's outputs."""
        feeds = load_row(row, self.model.inputs, self.config.preprocess)
        got = self.run_arrays(feeds)
        out = {name: np.asarray(feeds[name]) for name in self.model.inputs}
        for toolkit, onnx_name in self.names.items():
            out[onnx_name] = self._like(got[toolkit], onnx_name)
        out.update(self._outputs(got))
        return out

    def outputs(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """The model's outputs (ONNX names and shapes) for one sample, for the task adapters."""
        feeds = load_row(row, self.model.inputs, self.config.preprocess)
        return self._outputs(self.run_arrays(feeds, self.output_names))

    def _outputs(self, got: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for onnx_name, toolkit in zip(self.model.outputs, self.output_names):
            out[onnx_name] = self._like(got[toolkit], onnx_name)
        return out

    def _like(self, value: np.ndarray, onnx_name: str) -> np.ndarray:
        """The toolkit's tensor in the ONNX layout: re-laid tensors of another rank keep the
        element order (a reshape); one of the same rank is the unique axis permutation that
        gives the ONNX shape (the toolkit's DFL head: (4,16,1,N) for ONNX (1,16,4,N))."""
        shape = self._shapes.get(onnx_name)
        if not shape or value.shape == tuple(shape) or value.size != int(np.prod(shape)):
            return value
        if value.ndim == len(shape):
            perms = [
                p for p in itertools.permutations(range(value.ndim)) if value.transpose(p).shape == shape
            ]
            if len(perms) == 1:
                return value.transpose(perms[0])
        return value.reshape(shape)

    def close(self) -> None:
        self._session = None


def open_emulator(model, config, calibration, *, workdir=None, timeout=1800, **_) -> EmulatorRunner:
    """The registry's "emulator" backend."""
    return EmulatorRunner(model, config, calibration, workdir=workdir, timeout=timeout)


def _onnx_names(boundaries: list[str], known: Mapping) -> dict[str, str]:
    """{toolkit tensor: ONNX tensor} for boundaries that hold an ONNX tensor's value: the
    same name, or a suffixed re-laid copy of the same size."""
    pairs = align(boundaries, known)
    out = {}
    for onnx_name, toolkit in pairs.items():
        out[toolkit] = onnx_name
    return out


def _session(proto, fetch: Sequence[str]):
    """An onnxruntime session of ``proto`` with the tensors ``fetch`` as graph outputs."""
    import onnxruntime as ort

    outputs = proto.graph.output
    count, have = len(outputs), {o.name for o in outputs}
    for name in fetch:  # added for serialising only: a model-sized copy would cost more
        if name not in have:
            outputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    serialised = proto.SerializeToString()
    del outputs[count:]

    options = ort.SessionOptions()
    # One thread: faster than two on the shared 2-core machines measured (0.19 s vs 0.27 s
    # for 4 yolov8n samples); parallel work goes to separate processes.
    options.intra_op_num_threads = 1
    # No graph optimisation: onnxruntime would fuse the quantize/dequantize pairs into its
    # own integer kernels, whose rounding is not the toolkit's.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])
