"""The emulator's self-check: is it the toolkit's int8 model, layer by layer?

One sample goes through the toolkit's simulator (``accuracy_analysis``: its float "golden"
and quantized tensors of the unmodified model, by the toolkit's tensor names, which are the
emulator's own) and through the emulator. Per layer boundary:

- accumulated error: the SQNR of the emulator against the golden tensor next to the
  simulator's; the emulator is faithful when they agree within ``WITHIN_DB`` on at least
  ``MIN_SHARE`` of the layers and on the model outputs;
- single-layer agreement ("teacher forcing"): each emulated layer fed the simulator's own
  input tensors, its output compared with the simulator's. A layer whose rule is wrong
  shows here alone, whatever came before it.

Mark-all (``compute_divergence(backend="mark-all")``) is no reference for this: marking a
tensor as an output removes the clipping of its range (yolov8n's class logits: ~40 dB
there against 7.7-12.4 dB in the deployed model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from workbench.compare.metrics import tensor_metrics
from workbench.datasets import CalibrationSet
from workbench.emulate.quantize import check_rules
from workbench.emulate.runner import EmulatorRunner, _session
from workbench.preprocess import load_row
from workbench.runners.simulator import SimulatorRunner

#: A layer agrees when its SQNR (vs float) is within this many dB of the simulator's.
WITHIN_DB = 1.0
#: Share of layers that must agree for the emulator to be trusted.
MIN_SHARE = 0.9
#: The model outputs' SQNR must agree within this many dB.
OUTPUT_WITHIN_DB = 1.0


@dataclass
class FidelityReport:
    """How closely the emulator follows the simulator on one sample."""

    layers: pd.DataFrame = field(repr=False)  #: per boundary: emulator_sqnr_db, simulator_sqnr_db, ...
    share_within: float  #: share of layers whose SQNR is within WITHIN_DB of the simulator's
    spearman: float  #: rank correlation of the per-layer SQNR (emulator vs simulator)
    output_delta_db: float  #: worst |emulator - simulator| output SQNR difference
    output_sqnr_db: dict[str, tuple[float, float]]  #: per output: (emulator, simulator) SQNR
    rule_mismatches: dict[str, list[str]]  #: check_rules against the toolkit's own table
    ok: bool  #: the emulator can stand in for the simulator on this model (all of the above hold)

    def summary(self) -> str:
        """One line: counts, correlation, output difference and the verdict."""
        n = len(self.layers)
        within = int(round(self.share_within * n))
        verdict = "faithful" if self.ok else "NOT faithful: use the simulator"
        return (
            f"emulator vs simulator: {within}/{n} layers within {WITHIN_DB:g} dB "
            f"({self.share_within:.0%}), Spearman {self.spearman:.3f}, outputs within "
            f"{self.output_delta_db:.2f} dB: {verdict}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = self.layers.to_dict("records")
        return d


def fidelity(model, config, calibration, sample, *, emulator=None, rules=None) -> FidelityReport:
    """Compare the emulator with the simulator on a sample (one toolkit build, then one
    ``accuracy_analysis`` per sample: ~10-40 s for one sample of the zoo models).

    Args:
        model, config, calibration: as for EmulatorRunner.
        sample: one row of files (one per model input), or a CalibrationSet: then each
            layer's SQNR is the mean over its samples (one sample's output SQNR can drift
            by 1-2.5 dB with every layer exact: lcnet's softmax output, measured).
        emulator: an EmulatorRunner already built for them (built here otherwise).
        rules: rules for the emulator built here (the installed toolkit's by default).
    Returns:
        FidelityReport; ``ok`` False means: use the simulator for this model.
    Raises:
        ToolkitError: the toolkit failed.
    """

    rows = sample.rows if isinstance(sample, CalibrationSet) else [sample]
    emulator = emulator or EmulatorRunner(model, config, calibration, rules=rules)
    tables = []
    with SimulatorRunner(model, config, calibration) as simulator:
        for row in rows:
            snapshot = simulator.analyse(row)
            tables.append(layer_table(emulator, row, snapshot.golden, snapshot.simulator))
    return _report(_mean(tables), emulator)


def _mean(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """Per layer over samples: the mean SQNRs (in dB) and the worst single-layer agreement."""
    if len(tables) == 1:
        return tables[0]
    both = pd.concat(tables)
    out = both.groupby(["layer"], sort=False).agg(
        onnx=("onnx", "first"),
        emulator_sqnr_db=("emulator_sqnr_db", "mean"),
        simulator_sqnr_db=("simulator_sqnr_db", "mean"),
        single_sqnr_db=("single_sqnr_db", "min"),
        output=("output", "first"),
    )
    out["delta_db"] = out.emulator_sqnr_db - out.simulator_sqnr_db
    return out.reset_index()[_COLUMNS]


def compare_with_snapshot(
    emulator, sample: Sequence[Path], golden: Mapping[str, np.ndarray], simulated: Mapping[str, np.ndarray]
) -> FidelityReport:
    """The report for one sample, given the simulator's ``golden`` and ``simulated``
    tensors (toolkit names, as SimulatorRunner.analyse reads them)."""
    return _report(layer_table(emulator, sample, golden, simulated), emulator)


_COLUMNS = ["layer", "onnx", "emulator_sqnr_db", "simulator_sqnr_db", "delta_db", "single_sqnr_db", "output"]


def layer_table(
    emulator, sample: Sequence[Path], golden: Mapping[str, np.ndarray], simulated: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Per boundary of one sample: the emulator's and the simulator's SQNR against the
    golden tensor, their difference, and the single-layer agreement (teacher forcing)."""

    feeds = load_row(sample, emulator.model.inputs, emulator.config.preprocess)
    ours = emulator.run_arrays(feeds)
    forced = single_layer(emulator, feeds, simulated)
    outputs = emulator.output_names
    rows = []
    # the int8 boundaries, the float16 ops' own outputs and the model outputs
    for name in dict.fromkeys([*emulator.emulation.boundaries, *emulator.emulation.float16, *outputs]):
        ref, sim, emu = golden.get(name), simulated.get(name), ours.get(name)
        if ref is None or sim is None or emu is None or not (ref.size == sim.size == emu.size):
            continue
        emu = emu.reshape(sim.shape)
        e, s = tensor_metrics(ref, emu)["sqnr_db"], tensor_metrics(ref, sim)["sqnr_db"]
        one = forced.get(name)
        rows.append(
            {
                "layer": name,
                "onnx": emulator.names.get(name),
                "emulator_sqnr_db": e,
                "simulator_sqnr_db": s,
                "delta_db": e - s,
                "single_sqnr_db": tensor_metrics(sim, one.reshape(sim.shape))["sqnr_db"]
                if one is not None and one.size == sim.size
                else math.nan,
                "output": name in outputs,
            }
        )
    return pd.DataFrame(rows, columns=_COLUMNS)


def _report(table: pd.DataFrame, emulator) -> FidelityReport:
    within = (table.delta_db.abs() <= WITHIN_DB) if len(table) else pd.Series([], dtype=bool)
    share = float(within.mean()) if len(table) else 0.0
    spearman = _spearman(table.emulator_sqnr_db, table.simulator_sqnr_db)
    out = table[table.output]
    per_output = {r.layer: (float(r.emulator_sqnr_db), float(r.simulator_sqnr_db)) for r in out.itertuples()}
    delta = float(out.delta_db.abs().max()) if len(out) else math.nan
    mismatches = check_rules(emulator.emulation.unrounded(), emulator.step1.quant_tab)
    # A rule the toolkit's own table contradicts is wrong whatever this one sample shows.
    agree = not any(mismatches.values())
    ok = share >= MIN_SHARE and len(out) > 0 and delta <= OUTPUT_WITHIN_DB and agree
    return FidelityReport(table, share, spearman, delta, per_output, mismatches, bool(ok))


def _spearman(a: pd.Series, b: pd.Series) -> float:
    if len(a) < 3:
        return math.nan
    ra, rb = a.rank().to_numpy(), b.rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def single_layer(emulator, feeds: Mapping[str, np.ndarray], simulated: Mapping[str, np.ndarray]) -> dict:
    """Each emulated layer fed the simulator's values of its input boundaries ("teacher
    forcing"): ``{boundary: the emulator's output}``, in one onnxruntime run."""
    proto = onnx.ModelProto()
    proto.CopyFrom(emulator.emulation.proto)
    graph = proto.graph
    boundaries = [b for b in emulator.emulation.boundaries if b in simulated]
    forced = {b: f"{b}__forced" for b in boundaries}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue  # the boundary's own rounding reads the layer output
        for k, name in enumerate(node.input):
            if name in forced:
                node.input[k] = forced[name]
    shapes = {}
    for b in boundaries:
        value = np.asarray(simulated[b], np.float32)
        graph.input.append(onnx.helper.make_tensor_value_info(forced[b], onnx.TensorProto.FLOAT, None))
        shapes[b] = value

    fetch = [*boundaries, *(t for t in emulator.emulation.float16 if t not in forced)]
    try:
        session = _session(proto, fetch)
        inputs = {i.name: i for i in session.get_inputs()}
        run_feeds = dict(feeds)
        for b in boundaries:
            if forced[b] in inputs:
                run_feeds[forced[b]] = _fit(shapes[b], emulator, b)
        values = session.run(fetch, run_feeds)
    except Exception:  # shapes the simulator dumps in another layout: no single-layer view
        return {}
    return dict(zip(fetch, values))


def _fit(value: np.ndarray, emulator, name: str) -> np.ndarray:
    """The simulator's tensor in the emulator graph's shape (same element order)."""
    shape = emulator.shape_of(name)
    return value.reshape(shape) if shape is not None and value.size == int(np.prod(shape)) else value
