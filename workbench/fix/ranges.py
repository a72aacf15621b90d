"""Range setting: clip activation ranges that a rare outlier stretched, or widen ranges the
samples overflow, found on the emulator, exported through the toolkit's own hybrid step-2 cfg
and confirmed on the simulator.

The toolkit's calibration ("normal") takes each activation's full calibration range: one
rare outlier (a ReLU output of 92 where the rest stays below 3) makes the int8 step 30 times
coarser for every other value. Here each layer boundary's float values over the calibration
set go into a histogram; its percentiles are the candidate clips. The other way round, a
calibration set darker or narrower than the data the model will see leaves ranges the samples
overflow: every value beyond them saturates; the samples' own range is the candidate widening.
A greedy search on the emulator keeps, tensor by tensor, the range that raises the model
outputs' SQNR on the samples most.

Measured on rknn-toolkit2 2.5.0: ``hybrid_quantization_step2`` honours edited ``min``/``max``
of a tensor in the ``.quantization.cfg`` (and recomputes its scale from them), but refuses an
edited ``scale`` ("is not allowed to be modified"): :func:`write_cfg` edits min/max only.
Editing the boundary alone is enough (a conv + ReLU's pre-activation shares its range).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workbench.compare.metrics import tensor_metrics
from workbench.datasets import CalibrationSet
from workbench.emulate.model import Step1
from workbench.emulate.quantize import QParams, TensorQuant
from workbench.emulate.runner import EmulatorRunner
from workbench.errors import ToolkitError, WorkbenchError
from workbench.fix.evaluate import Score, first_line, score_outputs, step1_session
from workbench.preprocess import load_row
from workbench.rknn.build import hybrid_step1
from workbench.runners.markall import infer_row

#: Candidate clips: the calibration values' percentiles (upper end; the lower end at 100 - p).
PERCENTILES = (99.999, 99.99, 99.9, 99.5)
#: Histogram bins per tensor over its calibration range (TensorRT's calibrators use 2048).
BINS = 2048
#: A clip is kept on the emulator only if it raises the output SQNR by at least this much.
MIN_GAIN_DB = 0.1


@dataclass(frozen=True)
class Clip:
    """One tensor's new range: clipped to a calibration percentile, or widened to the samples'."""

    tensor: str  #: the toolkit's name (the .quantization.cfg key)
    lo: float  #: new min
    hi: float  #: new max
    was: tuple[float, float]  #: the cfg's (min, max)
    percentile: float  #: the percentile it came from: of the calibration values, or 100 (samples')
    kind: str = "clip"  #: "clip" (narrower than the cfg's) or "widen" (wider)


@dataclass
class RangeSearch:
    """The clips the emulator kept, and what it measured."""

    clips: list[Clip]
    int8_sqnr_db: float  #: emulator output SQNR with the toolkit's ranges
    sqnr_db: float  #: emulator output SQNR with the clips
    tried: pd.DataFrame = field(repr=False)  #: every (tensor, percentile) tried and its SQNR
    emulator_runs: int = 0  #: emulator variants built

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.clips])


def range_histograms(emulator: EmulatorRunner, calibration: CalibrationSet, tensors: Sequence[str]) -> dict:
    """``{tensor: (counts, edges)}``: float values of the toolkit graph's ``tensors`` over the
    calibration set, binned over each tensor's calibration range (the cfg's ori_min/ori_max)."""
    plain = EmulatorRunner(
        emulator.model, emulator.config, rules=emulator.rules, step1=emulator.step1, quantize=False
    )
    edges = {}
    for t in tensors:
        entry = emulator.step1.tensors[t].extra
        lo, hi = _first(entry.get("ori_min")), _first(entry.get("ori_max"))
        if lo is None or hi is None or not hi > lo:
            continue
        edges[t] = np.linspace(lo, hi, BINS + 1)
    counts = {t: np.zeros(BINS, np.int64) for t in edges}
    for row in calibration.rows:
        feeds = load_row(row, emulator.model.inputs, emulator.config.preprocess)
        got = plain.run_arrays(feeds, list(edges))
        for t, value in got.items():
            counts[t] += np.histogram(np.clip(value, edges[t][0], edges[t][-1]), edges[t])[0]
    return {t: (counts[t], edges[t]) for t in edges}


def candidate_clips(name: str, cfg: TensorQuant, histogram, percentiles=PERCENTILES) -> list[Clip]:
    """Clips of ``name``'s cfg range at the calibration ``percentiles`` that are narrower than
    the cfg's by at least one int8 step (zero stays inside: the toolkit's ranges hold it)."""
    counts, edges = histogram
    lo, hi = _first(cfg.extra.get("min")), _first(cfg.extra.get("max"))
    cum = np.cumsum(counts) / max(int(counts.sum()), 1)
    step = (max(hi, 0.0) - min(lo, 0.0)) / 255
    out = []
    for p in percentiles:
        top = float(edges[1:][np.searchsorted(cum, p / 100)])
        bottom = float(edges[:-1][np.searchsorted(cum, 1 - p / 100)])
        new_lo, new_hi = min(max(lo, bottom), 0.0) if lo < 0 else lo, max(min(hi, top), 0.0)
        if (hi - new_hi) + (new_lo - lo) >= step and new_hi > new_lo:
            out.append(Clip(name, new_lo, new_hi, (lo, hi), p))
    return out


def candidate_widening(name: str, cfg: TensorQuant, seen: tuple[float, float]) -> list[Clip]:
    """The cfg range joined with ``seen`` (the samples' min and max) when the samples overflow
    it by at least one int8 step; an empty list otherwise."""
    lo, hi = _first(cfg.extra.get("min")), _first(cfg.extra.get("max"))
    step = (max(hi, 0.0) - min(lo, 0.0)) / 255
    new_lo, new_hi = min(lo, seen[0]), max(hi, seen[1])
    if (new_hi - hi) + (lo - new_lo) < step:
        return []
    return [Clip(name, new_lo, new_hi, (lo, hi), 100.0, "widen")]


class RangeCandidates:
    """Every layer boundary's candidate ranges, computed once (one float pass over the
    calibration set and one over the samples, in onnxruntime): the clips at the calibration
    histogram's percentiles and the widening the samples' own range asks for.

    Args:
        emulator: the EmulatorRunner of the int8 model.
        calibration: where the clips' histograms come from.
        samples: the data the ranges must fit (and ``expected``, its float outputs).
    """

    def __init__(
        self,
        emulator: EmulatorRunner,
        calibration: CalibrationSet,
        samples: CalibrationSet,
        percentiles: Sequence[float] = PERCENTILES,
    ):
        self.emulator, self.percentiles = emulator, percentiles
        self.feeds = [load_row(r, emulator.model.inputs, emulator.config.preprocess) for r in samples.rows]
        plain = EmulatorRunner(
            emulator.model, emulator.config, rules=emulator.rules, step1=emulator.step1, quantize=False
        )
        clippable = _clippable(emulator)
        #: the tensors whose range may change (toolkit names): the inputs' int8 copies first
        self.tensors = [*_input_copies(emulator), *clippable]
        self.expected, self.seen = _float_outputs_and_ranges(plain, self.feeds, self.tensors)
        self.histograms = range_histograms(emulator, calibration, clippable)

    def tensor_of(self, name: str) -> str | None:
        """The tensor whose range stands for ``name`` (a toolkit name): itself, or for a
        model output's float copy the int8 tensor behind it; None if it has no range."""
        if name in self.tensors:
            return name
        convert = next(
            (
                n
                for n in self.emulator.step1.proto.graph.node
                if name in n.output and n.op_type == "exDataConvert"
            ),
            None,
        )
        return convert.input[0] if convert is not None and convert.input[0] in self.tensors else None

    def of(self, tensor: str) -> list[Clip]:
        """``tensor``'s candidate ranges: clips (narrowest last), then the widening."""
        cfg = self.emulator.step1.tensors[tensor]
        hist = self.histograms.get(tensor)
        clips = candidate_clips(tensor, cfg, hist, self.percentiles) if hist is not None else []
        return [*clips, *candidate_widening(tensor, cfg, self.seen[tensor])]


def search_ranges(
    emulator: EmulatorRunner,
    calibration: CalibrationSet,
    samples: CalibrationSet | None = None,
    *,
    percentiles: Sequence[float] = PERCENTILES,
    max_tensors: int = 24,
    min_gain_db: float = MIN_GAIN_DB,
) -> RangeSearch:
    """Greedy per-tensor range setting on the emulator: clips and widenings.

    The layer boundaries whose range is furthest from the data come first (at most
    ``max_tensors``): the cfg range widest against its calibration 99.99th percentile, or
    most overflowed by the samples. For each, every candidate range is emulated and the best
    one kept if it raises the mean (over ``samples``, the calibration set by default) of the
    worst output's SQNR against float by ``min_gain_db``. No toolkit build: confirm the
    result with :func:`score_clips`.
    """
    ranges = RangeCandidates(emulator, calibration, samples or calibration, percentiles)
    feeds, expected = ranges.feeds, ranges.expected
    candidates = {t: ranges.of(t) for t in ranges.tensors}
    order = sorted((t for t in candidates if candidates[t]), key=lambda t: -_stretch(candidates[t]))
    chosen: dict[str, Clip] = {}
    best = _sqnr(emulator, feeds, expected)
    start, tried, runs = best, [], 0
    # Data the calibration did not cover overflows a chain of tensors: widening one of them
    # alone gains nothing while the next still saturates, so first try them all at once.
    widen = [c for t in order for c in candidates[t] if c.kind == "widen"]
    if widen:
        got, runs = _sqnr(with_clips(emulator, widen), feeds, expected), 1
        tried.append(
            {
                "tensor": f"{len(widen)} overflowed tensors",
                "percentile": 100.0,
                "hi": math.nan,
                "sqnr_db": got,
            }
        )
        if got >= best + min_gain_db:
            chosen, best = {c.tensor: c for c in widen}, got
    for tensor in order[:max_tensors]:
        results = []
        for clip in candidates[tensor]:
            got = _sqnr(with_clips(emulator, [*chosen.values(), clip]), feeds, expected)
            runs += 1
            tried.append({"tensor": tensor, "percentile": clip.percentile, "hi": clip.hi, "sqnr_db": got})
            results.append((got, clip))
        got, clip = max(results, key=lambda r: r[0])
        if got >= best + min_gain_db:
            chosen[tensor], best = clip, got
    return RangeSearch(list(chosen.values()), start, best, pd.DataFrame(tried), runs)


def with_clips(emulator: EmulatorRunner, clips: Sequence[Clip]) -> EmulatorRunner:
    """The emulator with ``clips`` applied to its step-1 ranges (no toolkit call). The int8
    weights of convs that read an untouched tensor are shared with ``emulator``; a conv
    reading a clipped tensor gets its bias re-rounded to the new input scale."""
    tensors = dict(emulator.step1.tensors)
    for c in clips:
        old = tensors[c.tensor]
        extra = {**old.extra, "min": [c.lo], "max": [c.hi]}
        tensors[c.tensor] = replace(old, params=QParams.from_range(c.lo, c.hi, old.params.bits), extra=extra)
    clipped = {c.tensor for c in clips}
    readers = {n.name for n in emulator.step1.proto.graph.node if n.input and n.input[0] in clipped}
    cache = {k: {n: v for n, v in d.items() if n not in readers} for k, d in emulator.step1.cache.items()}
    step1 = Step1(emulator.step1.proto, tensors, emulator.step1.quant_tab, cache)
    return EmulatorRunner(emulator.model, emulator.config, rules=emulator.rules, step1=step1)


def write_cfg(cfg: str | Path, clips: Sequence[Clip], out: str | Path) -> Path:
    """The step-1 ``.quantization.cfg`` with the clipped tensors' min/max edited, written to
    ``out``: pass it to ``hybrid_quantization_step2(model_input=<step-1 .model>,
    data_input=<step-1 .data>, model_quantization_cfg=out)`` to build the clipped model.

    Raises:
        WorkbenchError: a clip names a tensor the cfg does not hold.
    """
    settings = yaml.safe_load(Path(cfg).read_text())
    params = settings.get("quantize_parameters") or {}
    for c in clips:
        if c.tensor not in params:
            raise WorkbenchError(
                f"{cfg} has no tensor {c.tensor!r} to clip: the clips come from another model or "
                "config; search again with this config's step-1 files."
            )
        params[c.tensor]["min"], params[c.tensor]["max"] = [float(c.lo)], [float(c.hi)]
    Path(out).write_text(yaml.safe_dump(settings, sort_keys=False))
    return Path(out)


def build_clipped(
    session, model, config, calibration: CalibrationSet, clips: Sequence[Clip], into: Path
) -> None:
    """Build ``model`` with ``clips`` in ``session`` and write what the toolkit's hybrid flow
    produces into ``into``: ``<model>.quantization.cfg`` (the clipped min/max), ``.model``,
    ``.data``, the built ``.rknn`` and ``ranges.json`` (the clips).

    Raises:
        ToolkitError: the toolkit refused the edited cfg or failed.
    """
    stem = model.name.replace(" ", "_")
    files = hybrid_step1(session, model, config, calibration)
    _step2_with_clips(
        session, files, clips, into / f"{stem}.quantization.cfg", rknn_path=into / f"{stem}.rknn"
    )
    for kind in ("model", "data"):
        shutil.copy(files[kind], into / f"{stem}.{kind}")
    (into / "ranges.json").write_text(json.dumps([asdict(c) for c in clips], indent=1))


def score_clips(job, clips: Sequence[Clip]):
    """The simulator's Score of ``job``'s model with ``clips``: step 1, the edited cfg, step 2
    and one inference per sample (the sweep's scoring, workbench.fix.evaluate).

    Raises:
        ToolkitError: step 1 failed (a refused cfg or a failed step 2 is a Score with its error).
    """
    session, files = step1_session(job)
    try:
        try:
            log = _step2_with_clips(session, files, clips, Path(files["cfg"]).with_suffix(".clipped.cfg"))
            got = [infer_row(session, job.model, job.config, row) for row in job.samples.rows]
        except ToolkitError as err:
            return Score((), error=first_line(err))
    finally:
        session.close()
    return score_outputs((), job.expected, got, log, job)


def _step2_with_clips(
    session, files: dict, clips: Sequence[Clip], cfg: Path, rknn_path: Path | None = None
) -> str:
    """Step 2 on step 1's ``files`` with the clipped cfg written to ``cfg`` (exported to
    ``rknn_path`` when given); the build log, with its layer table."""
    write_cfg(files["cfg"], clips, cfg)
    extra = {"rknn_path": str(rknn_path)} if rknn_path else {}
    _, log = session.call(
        "hybrid_step2", model=files["model"], data=files["data"], cfg=str(cfg), float_layers=[],
        verbose=True, **extra,
    )  # fmt: skip
    return log


def _clippable(emulator: EmulatorRunner) -> list[str]:
    """Int8 boundaries an op writes: not the model inputs nor their int8 copies (see
    :func:`_input_copies`), nor float16 copies."""
    graph = emulator.step1.proto.graph
    produced = {o for n in graph.node if n.op_type != "exDataConvert" for o in n.output}
    return [
        b
        for b in emulator.emulation.boundaries
        if b in produced and b in emulator.step1.tensors and emulator.step1.tensors[b].params
    ]


def _input_copies(emulator: EmulatorRunner) -> list[str]:
    """The model inputs' int8 copies. Their range is the calibration set's, after the mean and
    std (measured on 2.5.0: calibrated on dark images, a bright one saturates at the input,
    4.9 dB; widened through the step-2 cfg, 55 dB): they may be widened, never clipped."""
    graph = emulator.step1.proto.graph
    inputs = {i.name for i in graph.input}
    return [
        o
        for n in graph.node
        if n.op_type == "exDataConvert" and n.input and n.input[0] in inputs
        for o in n.output
        if o in emulator.step1.tensors and emulator.step1.tensors[o].params
    ]


def _float_outputs_and_ranges(plain: EmulatorRunner, feeds, names: Sequence[str]) -> tuple[list, dict]:
    """The float outputs per sample, and each of ``names``' (min, max) over the samples."""
    expected, seen = [], {}
    for f in feeds:
        got = plain.run_arrays(f, list(dict.fromkeys([*plain.output_names, *names])))
        expected.append({n: got[n] for n in plain.output_names})
        for t in names:
            lo, hi = seen.get(t, (math.inf, -math.inf))
            seen[t] = (min(lo, float(got[t].min())), max(hi, float(got[t].max())))
    return expected, seen


def _stretch(clips: Sequence[Clip]) -> float:
    """How far the cfg range is from the data (the search order): how much wider it is than
    the narrowest clip, or how much narrower than the widening."""
    widths = [c.hi - c.lo for c in clips]
    was = clips[0].was[1] - clips[0].was[0]
    return max(was / max(min(widths), 1e-12), max(widths) / max(was, 1e-12))


def _sqnr(emulator: EmulatorRunner, feeds: Sequence[Mapping], expected: Sequence[Mapping]) -> float:
    """Mean over samples of the worst output's SQNR against float (the sweeps' score)."""
    per_sample = []
    for f, exp in zip(feeds, expected):
        got = emulator.run_arrays(f, emulator.output_names)
        per_sample.append(min(tensor_metrics(exp[n], got[n])["sqnr_db"] for n in emulator.output_names))
    return float(np.mean(per_sample)) if per_sample else math.nan


def _first(values) -> float | None:
    return float(values[0]) if values else None
