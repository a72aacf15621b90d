"""MarkAllRunner: the quantized model's layer-boundary tensors from one ``inference()``.

The compiled graph's layer boundaries (the Feature Tensor table of a first build) are
added as model outputs and the model is built again, so one simulator ``inference()``
returns every boundary tensor, in memory, with no dump files. Only boundaries are marked:
an output inside a fused layer would split the fusion and measure a different model.

Marking a boundary can still change the model: the toolkit clips a tensor's range to what
its consumer uses (yolov8n's class logits to ``[-7, 0]`` before their Sigmoid) and no longer
does once the tensor is an output. Every run is guarded (see :func:`build_checked`): the
step-1 quantization of both builds is compared, boundaries whose marking changes it are left
unmarked, and the marked build's graph outputs must equal the plain build's on one sample.
With ``single_layer`` the same sample is also run through ``accuracy_analysis()`` on the
plain build, for the toolkit's single-layer error (errors made inside fused layers).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.datasets import CalibrationSet
from workbench.errors import ToolkitError
from workbench.model import OnnxModel
from workbench.preprocess import load_row
from workbench.rknn.build import build, build_with_cfg
from workbench.rknn.buildlog import parse_feature_tensors
from workbench.rknn.config import BuildConfig
from workbench.rknn.names import base_name
from workbench.rknn.session import ToolkitSession, clean_log
from workbench.rknn.snapshot import Snapshot, analyse
from workbench.runners._toolkit import ToolkitRunner
from workbench.runners.base import Measurement
from workbench.runners.float import _with_outputs
from workbench.runners.simulator import open_snapshot, snapshot_measurement


class MarkAllRunner(ToolkitRunner):
    """Build ``model`` twice (plain, then with its layer boundaries marked) and run samples.

    The marked build is guarded on ``check_row`` (the first calibration sample by default):
    ``self.guard`` says what marking changed, and boundaries whose quantization it changed are
    not marked (see :func:`build_checked`). With ``single_layer=True``, ``self.snapshot`` is
    the plain build's ``accuracy_analysis()`` of ``check_row`` (the toolkit's single-layer
    error; ~1 s on tiny models, ~8 s on yolov8n); None otherwise.

    With ``outputs_only=True`` it builds once, unmarked, and returns the model's own outputs:
    the answers of the model as it will be deployed (what the task adapters judge).
    """

    def __init__(
        self,
        *args,
        outputs_only: bool = False,
        check_row: Sequence[Path] | None = None,
        single_layer: bool = False,
        **kwargs,
    ):
        self.outputs_only = outputs_only
        self.check_row = check_row
        self.single_layer = single_layer
        self.guard: MarkGuard | None = None
        self.snapshot: Snapshot | None = None
        super().__init__(*args, **kwargs)

    def _build(self, model: OnnxModel, config: BuildConfig, calibration: CalibrationSet) -> None:
        if self.outputs_only:
            self.output_names, self.boundaries, self.build_log = build_marked(
                self.session, model, config, calibration, outputs_only=True
            )
            return
        self.check_row = self.check_row if self.check_row is not None else calibration.rows[0]
        built = build_checked(
            self.session, model, config, calibration, self.check_row, single_layer=self.single_layer
        )
        self.output_names, self.boundaries, self.build_log = built.output_names, built.boundaries, built.log
        self.guard, self.snapshot = built.guard, built.snapshot

    def run(self, row: Sequence[Path]) -> dict[str, np.ndarray]:
        """Boundary tensors (ONNX names) of one sample, dequantized to float32 (the graph
        outputs first)."""
        arrays = infer_row(self.session, self.model, self.config, row)
        return match_outputs(self.output_names, arrays, self.build_log, self.model)

    def measure(self, row: Sequence[Path]) -> Measurement:
        """The boundary tensors; on the guard's sample also the plain build's snapshot."""
        single = self.snapshot if self.snapshot is not None and list(row) == list(self.check_row) else None
        return Measurement(self.run(row), single=single and snapshot_measurement(single))

    @property
    def meta(self) -> dict:
        if self.guard is None:
            return {}
        return {"guard": self.guard.to_dict(), "single_layer": self.single_layer}


def open_mark_all(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    *,
    check_row: Sequence[Path] | None = None,
    single_layer: bool = False,
    outputs_only: bool = False,
    workdir: str | Path | None = None,
    timeout: float | None = None,
    **_,
) -> ToolkitRunner:
    """The registry's "mark-all" backend. When the guard finds that marking changed the
    model's outputs, it warns and measures in snapshot mode instead (its ``meta`` says so)."""
    runner = MarkAllRunner(
        model, config, calibration, workdir=workdir, timeout=timeout, check_row=check_row,
        single_layer=single_layer, outputs_only=outputs_only,
    )  # fmt: skip
    guard = runner.guard
    if guard is None or guard.same_outputs:
        return runner
    runner.close()
    warnings.warn(
        "Marking the layer boundaries changed the model's outputs (cosine "
        f"{guard.outputs_cosine:.6f} to the plain build's on {(check_row or calibration.rows[0])[0]}): "
        "measuring in snapshot mode instead.",
        stacklevel=3,
    )
    meta = {"mode": "snapshot", "guard": {**guard.to_dict(), "fallback": "snapshot"}}
    return open_snapshot(model, config, calibration, workdir=workdir, timeout=timeout, meta=meta)


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
    log = build(session, model, config, calibration, rknn_path=rknn_path if outputs_only else None)
    if outputs_only:
        return list(model.outputs), [], log
    boundaries = boundary_tensors(model, parse_feature_tensors(log))
    output_names = [*model.outputs, *[b for b in boundaries if b not in model.outputs]]
    # Quiet build: the tables were read from the first one.
    marked_log = build(
        session, marked_model(model, output_names), config, calibration, rknn_path=rknn_path, verbose=False,
        name="marked",
    )  # fmt: skip
    return output_names, boundaries, marked_log


#: The marked build's graph outputs must reach this cosine against the plain build's on the
#: same sample (measured: 1.0 when marking changes nothing; 0.99934 on a Conv -> Concat ->
#: Split -> Sigmoid head whose logits lose their clipping when marked).
SAME_OUTPUTS_COSINE = 0.9999
#: Rebuilds at most, each leaving unmarked the boundaries whose quantization marking changed.
_GUARD_ROUNDS = 3


@dataclass
class MarkGuard:
    """What marking the layer boundaries did to the model, measured on one sample.

    ``outputs_cosine``: the worst graph output of the marked build against the plain build's
    (:data:`SAME_OUTPUTS_COSINE` or more: the same model). ``unmarked``: boundaries left
    unmarked because marking them changed their quantization (boundary -> what changed).
    ``changed``: boundaries still marked whose quantization differs after the last rebuild
    (their numbers describe another model). ``other``: tensors the toolkit invents (``-rs``
    copies) whose quantization differs, for the record. ``checked`` is False when there is
    no step-1 quantization to compare (float or auto-hybrid builds).
    """

    outputs_cosine: float = math.nan
    unmarked: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)
    other: dict[str, str] = field(default_factory=dict)
    checked: bool = True
    rounds: int = 0

    @property
    def same_outputs(self) -> bool:
        return bool(self.outputs_cosine >= SAME_OUTPUTS_COSINE)

    def to_dict(self) -> dict:
        return {
            "outputs_cosine": self.outputs_cosine,
            "same_outputs": self.same_outputs,
            "unmarked": self.unmarked,
            "changed": self.changed,
            "other": self.other,
            "quantization_checked": self.checked,
            "rounds": self.rounds,
        }


@dataclass
class CheckedBuild:
    """What :func:`build_checked` returns."""

    output_names: list[str]
    boundaries: list[str]
    log: str  #: the marked build's log
    guard: MarkGuard
    snapshot: Snapshot | None = None


def build_checked(
    session: ToolkitSession,
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    row: Sequence[Path],
    *,
    single_layer: bool = False,
) -> CheckedBuild:
    """Like :func:`build_marked`, guarded on the sample ``row``.

    Both builds go through the toolkit's hybrid step 1 (which writes the quantization cfg)
    and step 2 (which builds from it; same model and layer table as ``build()``). A marked
    boundary whose quantized range (``[min(min, 0), max(max, 0)]`` in the cfg) differs from
    the plain build's is left unmarked and the marked model rebuilt, up to
    :data:`_GUARD_ROUNDS` times; then the graph outputs of both builds on ``row`` are compared.
    With ``single_layer`` the plain build also runs ``accuracy_analysis()`` on ``row``.
    The session stays on the marked model.
    """
    plain_cfg, log = build_with_cfg(session, model, config, calibration, verbose=True)
    plain = infer_row(session, model, config, row)
    snapshot = analyse(session, row) if single_layer else None
    boundaries = boundary_tensors(model, parse_feature_tensors(log))
    guard = MarkGuard(checked=plain_cfg is not None)
    marked = [b for b in boundaries if b not in model.outputs]
    for rounds in range(1, _GUARD_ROUNDS + 1):
        guard.rounds = rounds
        output_names = [*model.outputs, *marked]
        cfg, marked_log = build_with_cfg(
            session, marked_model(model, output_names), config, calibration, name="marked"
        )
        diff = changed_ranges(plain_cfg, cfg) if plain_cfg is not None and cfg is not None else {}
        at = {name: base_name(name, set(marked)) for name in diff}
        guard.changed = {b: diff[name] for name, b in at.items() if b is not None}
        guard.other = {name: diff[name] for name, b in at.items() if b is None}
        if not guard.changed or rounds == _GUARD_ROUNDS:
            break
        guard.unmarked.update(guard.changed)
        marked = [b for b in marked if b not in guard.changed]
    outputs = match_outputs(output_names, infer_row(session, model, config, row), marked_log, model)
    guard.outputs_cosine = min(
        _cosine(expected, outputs[name]) for name, expected in zip(model.outputs, plain)
    )
    return CheckedBuild(output_names, boundaries, marked_log, guard, snapshot)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two outputs (1.0 for two all-zero ones): the guard's sameness test."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(a @ b) / norms


def changed_ranges(plain: dict, marked: dict, steps: float = 0.5) -> dict[str, str]:
    """Tensors of the step-1 cfg ``plain`` whose quantized range differs in ``marked``, with
    what changed (``"[-7, 0] -> [-26.3, 0]"``).

    A marked output appears in the marked cfg twice: as the float output (no scale) and as
    ``<name>_int8``, the int8 tensor its consumers read: that one is compared. The range
    int8 asymmetric quantization uses always holds 0 (the cfg's min/max of an output are
    the raw calibration range), so both are widened to 0 first. An end moving by less than
    ``steps`` quantization steps (of 255 over the plain range) is not a change: it moves no
    value by more than a step (measured on ppocr-cls: a HardSwish output marked keeps its
    floor at -0.375 instead of -0.3737, 0.07 steps, outputs identical).
    """
    out = {}
    for name, p in plain.items():
        m = marked.get(f"{name}_int8") or marked.get(name)
        if m is None or not p.get("min") or not m.get("min"):
            continue
        a, b = _int8_range(p), _int8_range(m)
        step = max(a[1] - a[0], 1e-12) / 255
        if max(abs(a[0] - b[0]), abs(a[1] - b[1])) > steps * step:
            out[name] = f"[{a[0]:.4g}, {a[1]:.4g}] -> [{b[0]:.4g}, {b[1]:.4g}]"
    return out


def _int8_range(entry: dict) -> tuple[float, float]:
    return min(min(entry["min"]), 0.0), max(max(entry["max"]), 0.0)


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
            "the build log does not say which were dropped; use backend='snapshot' for this model."
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
