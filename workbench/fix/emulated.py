"""The mixed-precision search's emulator engine: whole compiled layers as candidates, scored
by the toolkit-faithful emulator (workbench.emulate) instead of one toolkit build each.

- ``compiled_layers``: the toolkit's compiled layers as candidates. A layer is every int8
  tensor the toolkit fuses into it (a conv's output and its activation's, a conv summed by
  its Add), so float16 for a layer is the whole ``custom_quantize_layers`` list it needs.
  The fusions are the emulator's own (``Emulation.fused``, from the rule table).
- ``EmulatorCheck``: the emulator built once from the toolkit's step 1, in a session kept
  open for the confirmations (hybrid step 2 on the same files: what ``build`` with
  float_layers runs after its own step 1); and one int8 toolkit build run meanwhile (in a
  thread) for its fidelity self-check against the simulator and the toolkit's int8 score.
- ``EmulatedScorer``: Scores of layer sets from emulator variants (0.05-0.4 s each on the
  zoo models), shaped like the toolkit's, so the search runs unchanged on either engine.
- ``confirm_choice``: the emulator's answer built by the toolkit, grown along the
  emulator's ranking (bounded) while the toolkit misses the target.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

import pandas as pd
from tqdm.auto import tqdm

from workbench.emulate.fidelity import FidelityReport, compare_with_snapshot
from workbench.emulate.model import Step1
from workbench.emulate.runner import EmulatorRunner
from workbench.errors import EmulatorError, ToolkitError, WorkbenchError
from workbench.fix.evaluate import Score, SweepJob, score_outputs, score_step2, step1_session
from workbench.fix.sensitivity import sensitivity_row
from workbench.runners.markall import infer_row
from workbench.runners.simulator import SimulatorRunner


@dataclass(frozen=True)
class Layer:
    """One compiled layer of the toolkit's graph, a float16 candidate."""

    name: str  #: its output tensor (the toolkit's name; the ONNX one for most layers)
    tensors: tuple[str, ...]  #: every int8 tensor fused into it, the custom_quantize_layers entries
    op_type: str  #: the fused ops, e.g. "Conv+exSwish"


def compiled_layers(emulator: EmulatorRunner) -> list[Layer]:
    """The toolkit graph's compiled layers that hold int8 tensors, in graph order.

    A tensor the rules fuse into the op reading it (``emulator.emulation.fused``) belongs to
    that op's layer; every other int8 tensor an op writes ends a layer of its own. The
    input/output conversions (exDataConvert) are no candidates.
    """
    step1, fused = emulator.step1, emulator.emulation.fused
    int8 = {n for n, t in step1.tensors.items() if t.params is not None and t.params.bits == 8}
    nodes = [n for n in step1.proto.graph.node if n.op_type != "exDataConvert"]
    readers: dict[str, list] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            readers[name].append(node)
    layer_of: dict[str, str] = {}
    for node in reversed(nodes):  # readers first: a fused tensor joins its reader's layer
        for t in node.output:
            if t in int8:
                inside = fused.get(t) and readers[t] and readers[t][0].output[0] in layer_of
                layer_of[t] = layer_of[readers[t][0].output[0]] if inside else t
    members: dict[str, list[str]] = defaultdict(list)
    ops: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        for t in node.output:
            if t in layer_of:
                members[layer_of[t]].append(t)
                ops[layer_of[t]].append(node.op_type)
    return [Layer(name, tuple(ts), "+".join(ops[name])) for name, ts in members.items()]


class EmulatorCheck:
    """The emulator of a sweep job, checked against the toolkit; a context manager.

    Construction starts one int8 toolkit build in a thread (simulator outputs on the job's
    samples, snapshot of the first) and, meanwhile, the toolkit's step 1 in a session kept
    for ``confirm`` and the emulator on its files, so emulated work can start before the
    check is done; ``result()`` waits for the build and compares.

    Raises:
        ToolkitError: step 1 failed. EmulatorError: the graph cannot be emulated.
    """

    def __init__(self, job: SweepJob, *, rules=None):
        self.job = job
        pool = ThreadPoolExecutor(1, thread_name_prefix="emulator-check")
        self._simulated = pool.submit(_simulate, job)
        pool.shutdown(wait=False)
        self._session = None
        try:
            self._session, self._files = step1_session(job)
            step1 = Step1.read(self._files)
            self.emulator = EmulatorRunner(job.model, job.config, step1=step1, rules=rules)
        except BaseException:
            self.close()
            raise
        self._result: tuple[FidelityReport, Score] | None = None

    def result(self) -> tuple[FidelityReport, Score]:
        """(the fidelity report of the first sample, the toolkit's all-int8 Score).

        Raises:
            ToolkitError: the int8 build or its simulator runs failed.
        """
        if self._result is None:
            snapshot, got, log = self._simulated.result()
            row = self.job.samples.rows[0]
            report = compare_with_snapshot(self.emulator, row, snapshot.golden, snapshot.simulator)
            self._result = report, score_outputs((), self.job.expected, got, log, self.job)
        return self._result

    def confirm(self, tensors: tuple[str, ...]) -> Score:
        """``tensors`` in float16 built by the toolkit (hybrid step 2 on step 1's files) and
        scored on the simulator like a sweep entry; a failure is in ``error``."""
        if self._session is None:
            return Score(tensors, error="toolkit: the step-1 session ended after an earlier failure")
        try:
            return score_step2(self._session, self._files, self.job, tensors)
        except ToolkitError as err:
            self._session.close()
            self._session = None
            return Score(tensors, error="toolkit: " + str(err).splitlines()[0][:300])

    def close(self) -> None:
        """End the step-1 session; wait for the check build (no toolkit process outlives us)."""
        if self._session is not None:
            self._session.close()
            self._session = None
        wait([self._simulated])

    def __enter__(self) -> EmulatorCheck:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _simulate(job: SweepJob) -> tuple:
    """The int8 model on the simulator: outputs per sample, snapshot of the first, build log."""

    with SimulatorRunner(job.model, job.config, job.calibration) as simulator:
        got = [infer_row(simulator.session, job.model, job.config, r) for r in job.samples.rows]
        return simulator.analyse(job.samples.rows[0]), got, simulator.build_log


class EmulatedScorer:
    """Scores of sets of layers (by ``Layer.name``) from emulator variants: the toolkit's
    Score shape (no cycles: the emulator compiles nothing), keyed by the sorted names."""

    def __init__(self, job: SweepJob, emulator: EmulatorRunner, layers: Sequence[Layer], progress=False):
        self.job, self.emulator, self.progress = job, emulator, progress
        self.layers = {layer.name: layer for layer in layers}

    def tensors(self, names) -> tuple[str, ...]:
        """The custom_quantize_layers entries of a set of layers, sorted."""
        return tuple(sorted({t for n in names for t in self.layers[n].tensors}))

    def __call__(self, sets: Sequence[Sequence[str]]) -> list[Score]:

        keys = list(dict.fromkeys(tuple(sorted(s)) for s in sets))
        quiet = not self.progress or len(keys) < 8
        return [self.score(key) for key in tqdm(keys, desc="emulated what-ifs", disable=quiet)]

    def score(self, names: tuple[str, ...]) -> Score:
        try:
            variant = self.emulator.variant(self.tensors(names))
            outputs = list(self.job.model.outputs)
            got = [[variant.outputs(row)[o] for o in outputs] for row in self.job.samples.rows]
        except (EmulatorError, KeyError, ValueError) as err:  # e.g. a layer not in the graph
            return Score(names, error=f"emulator: {err}")
        return score_outputs(names, self.job.expected, got, "", self.job)

    def ranking(self, singles: Sequence[Score], base: Score) -> pd.DataFrame:
        """The sensitivity table of single layers in float16 (emulated), best gain first,
        after a first row for the all-int8 model (layer None)."""
        rows = [_row(None, "(all int8)", (), base, base)]
        for s in singles:
            layer = self.layers[s.layers[0]]
            rows.append(_row(layer.name, layer.op_type, layer.tensors, s, base))
        table = pd.DataFrame(rows)
        table = pd.concat(
            [table.iloc[:1], table.iloc[1:].sort_values("gain_db", ascending=False)], ignore_index=True
        )
        table.attrs.update(engine="emulator")
        return table


def _row(layer, op_type, tensors, score: Score, base: Score) -> dict:
    return {**sensitivity_row(layer, op_type, score, base), "tensors": list(tensors)}


def candidate_layers(emulator: EmulatorRunner, candidates) -> list[Layer]:
    """The compiled layers a search takes: all (``candidates`` None or a count), or those
    holding the named tensors.

    Raises:
        WorkbenchError: a bad count, or a name that is no int8 tensor of the graph.
    """
    layers = compiled_layers(emulator)
    if candidates is None or isinstance(candidates, int):
        if isinstance(candidates, int) and candidates < 1:
            raise WorkbenchError(f"candidates={candidates}: give a positive count, a list of names, or None.")
        return layers
    known = {t for layer in layers for t in layer.tensors}
    unknown = [c for c in candidates if c not in known]
    if unknown:
        raise WorkbenchError(
            f"{unknown[:5]} are not int8 tensors of the toolkit's graph of {emulator.model.name}; "
            f"candidates are tensor names such as {sorted(known)[:3]} (see the ranking's tensors column)."
        )
    return [layer for layer in layers if set(layer.tensors) & set(candidates)]


def confirm_choice(check: EmulatorCheck, search, scorer, order, chosen, emulator_met, budget):
    """Build the emulator's choice (``chosen``, layer names) with the toolkit; while the
    toolkit misses a target the emulator met, grow the set by the next 1, 2, 4 ... layers of
    the emulator's ranking (``order``) and build again, ``budget`` builds in all. ``search``
    is the search's state (its scores by set, its trail). Returns (layers, toolkit score,
    notes)."""
    tried = []
    names = list(chosen)
    for attempt in range(max(1, budget)):
        if attempt:
            search.score([names], "extend")
        confirmed = check.confirm(scorer.tensors(names))
        search.trail.append(("confirm", replace(confirmed, layers=tuple(sorted(names)))))
        tried.append((list(names), confirmed))
        rest = [n for n in order if n not in names]
        if confirmed.meets(*search.goal) or not emulator_met or not rest:
            break
        names += rest[: 2**attempt]
    met = [t for t in tried if t[1].meets(*search.goal)]
    names, confirmed = met[0] if met else max(tried, key=lambda t: _rank_key(t[1], search.goal))
    first = search.known[tuple(sorted(chosen))]
    notes = []
    if not emulator_met:
        notes.append(
            f"No set of layers met the target on the emulator (best {said(first)}): its best "
            "was built with the toolkit"
        )
    elif len(tried) > 1 or not met:
        grown = f"grown along the emulator's ranking to {len(tried[-1][0])} layers in {len(tried)} builds"
        notes.append(
            f"The emulator's choice ({len(chosen)} layers, {said(first)} emulated) gave "
            f"{said(tried[0][1])} on the toolkit; "
            + (f"{grown}: met on the toolkit" if met else f"{grown}, still NOT met: best confirmed shown")
        )
    return names, confirmed, notes


def said(score: Score) -> str:
    """A score in words: its SQNR, and its agreement with float if judged."""
    agreeing = f", {score.agreement:.0%} agreeing" if score.agreement is not None else ""
    return f"{score.sqnr_db:.2f} dB{agreeing}"


def _rank_key(score: Score, goal: tuple) -> tuple:
    """Best first by the answers (a task target), then SQNR and cosine; failures last."""
    if score.error:
        return (-1, float("-inf"), float("-inf"))
    agreement = score.agreement if goal[2] is not None and score.agreement is not None else 0.0
    return (agreement, score.sqnr_db, score.cosine)
