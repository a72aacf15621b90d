"""Every remedy beyond "keep it in float16", tried in one call and judged by the simulator.

:func:`try_remedies` scores the int8 model, then each remedy against it with toolkit builds
(``workbench.fix.evaluate.score_config``: the model outputs' SQNR against float, the
answers' agreement with float when a task adapter is given, the compile table's cycles):

- ``auto_hybrid``: the toolkit's own float16 choice (``build(auto_hybrid=True)``);
- ``settings``: the toolkit's calibration algorithms x per-channel / per-layer (the
  combinations of workbench.fix.settings), the best one;
- ``ranges``: activation clipping searched on the emulator (workbench.fix.ranges);
- ``cle`` and ``bias``: the ONNX rewrites of workbench.fix.rewrites.

A remedy is kept only when the simulator confirms a gain over int8 (:func:`confirmed`);
otherwise its row says "no gain, not applied". Whole-layer float16 search and split
outputs live in workbench.fix.search and workbench.fix.split_outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.datasets import CalibrationSet
from workbench.emulate.runner import EmulatorRunner
from workbench.errors import WorkbenchError
from workbench.fix.evaluate import Score, SweepJob, prepare_job, score_config
from workbench.fix.ranges import RangeSearch, build_clipped, score_clips, search_ranges
from workbench.fix.rewrites import correct_bias, equalize
from workbench.fix.settings import ALGORITHMS, METHODS
from workbench.model import OnnxModel
from workbench.rknn.build import build
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.storage import staged_files

REMEDIES = ("auto_hybrid", "settings", "ranges", "cle", "bias")
#: A remedy must raise the output SQNR by this much (at equal agreement) to be kept.
MIN_GAIN_DB = 0.5
#: ... plus this much per percent of cycles it adds: an SQNR gain alone must pay for the
#: time it costs (1 dB per 5 %); a gain in answers is kept whatever it costs.
DB_PER_COST_PERCENT = 0.2
COLUMNS = ["remedy", "agreement", "sqnr_db", "cycles", "builds", "wall_s", "kept", "note"]


@dataclass
class Remedies:
    """What :func:`try_remedies` measured, and what to apply."""

    table: pd.DataFrame  #: one row per remedy (COLUMNS), int8 first
    scores: dict[str, Score] = field(repr=False)  #: the simulator's Score of each row
    #: what each kept or tried remedy produced: a BuildConfig (auto_hybrid, settings), a
    #: RangeSearch (ranges; its clips go into the step-2 cfg with ranges.write_cfg) or an
    #: OnnxModel (cle, bias)
    results: dict[str, Any] = field(default_factory=dict, repr=False)
    config: BuildConfig | None = field(default=None, repr=False)  #: the int8 settings tried against

    def export(self, remedy: str, folder: str | Path, model: OnnxModel, calibration: CalibrationSet) -> Path:
        """Build ``remedy`` (a kept one, e.g. :meth:`best`) and write it into ``folder``: the
        ``.rknn`` to deploy, what it is made of (the rewritten ``.onnx``, the edited step-2
        ``.quantization.cfg``, or the build settings) and ``remedy.json`` (its row and the
        verdict). Staged: a failed build leaves an earlier export in ``folder`` as it was.

        Raises:
            WorkbenchError: ``remedy`` was not tried or produced nothing to apply.
            ToolkitError: the build failed.
        """
        made = self.results.get(remedy)
        if made is None:
            tried = ", ".join(r for r, result in self.results.items() if result is not None) or "none"
            raise WorkbenchError(f"No {remedy!r} to export: the remedies with something to apply: {tried}.")
        folder = Path(folder).resolve()  # the toolkit worker runs in its own folder
        if folder.exists() and any(folder.iterdir()) and not (folder / "remedy.json").exists():
            raise WorkbenchError(
                f"{folder} is not empty and holds no earlier export (remedy.json): give a new folder, "
                "so nothing of yours is replaced."
            )
        config = made if isinstance(made, BuildConfig) else self.config
        built = made if isinstance(made, OnnxModel) else model
        stem = built.name.replace(" ", "_")
        row = self.table.set_index("remedy").loc[remedy].to_dict()
        about = {"remedy": remedy, **row, "config": config.to_dict(), "verdict": self.verdict()}
        with staged_files(folder) as staging, ToolkitSession(timeout=1800) as session:
            if isinstance(made, RangeSearch):
                build_clipped(session, model, config, calibration, made.clips, staging)
            else:
                build(session, built, config, calibration, rknn_path=staging / f"{stem}.rknn", verbose=False)
            if isinstance(made, OnnxModel):
                made.save(staging / f"{stem}.onnx")
            (staging / "remedy.json").write_text(json.dumps(about, indent=1, default=str))
        return folder

    def best(self) -> str | None:
        """The kept remedy that gives back most answers, then the highest output SQNR."""
        kept = self.table.loc[self.table.kept, "remedy"].tolist()
        return max(kept, key=lambda name: _rank(self.scores[name]), default=None)

    def verdict(self) -> str:
        """Answers first: int8's, the best remedy's and its cost, then what else was kept."""
        base, best = self.scores["int8"], self.best()
        text = f"int8: {_outcome(base)}."
        if best is None:
            return (
                text
                + " No remedy confirmed a gain on the simulator: keep int8, or search float16 layers (fix)."
            )
        what = self.table.set_index("remedy").at[best, "note"].split(";")[0]
        cost = _cost_percent(self.scores[best], base)
        text += f" Best remedy: {best} ({what}): {_outcome(self.scores[best])}, cycles {cost:+.0f} %."
        others = [r for r in self.table.loc[self.table.kept, "remedy"] if r != best]
        if others:
            text += " Also confirmed: " + ", ".join(f"{r} ({_outcome(self.scores[r])})" for r in others) + "."
        return text


def try_remedies(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    samples: CalibrationSet,
    adapter=None,
    *,
    remedies: Sequence[str] = REMEDIES,
    progress: bool = True,
) -> Remedies:
    """Try each remedy on ``model`` and confirm it on the simulator.

    Args:
        model, config, calibration: the conversion as it stands (``config`` int8).
        samples: the samples every variant is judged on (outputs vs float).
        adapter: a task adapter (workbench.task.adapters); then ``agreement`` is the share of
            samples whose decoded answer equals float's, and it ranks before SQNR.
        remedies: which of REMEDIES to try, in that order.
    Returns:
        Remedies: ``table`` with per row the agreement, output SQNR (dB), cycles, toolkit
        builds (the emulator's step 1 counts once, in the first remedy that needs it, even
        when read back from the cache), wall time (s), kept (True when the simulator confirms
        a gain) and a note.
    Raises:
        WorkbenchError: an unknown remedy. ToolkitError: the int8 model itself cannot be built.
    """
    unknown = [r for r in remedies if r not in REMEDIES]
    if unknown:
        raise WorkbenchError(f"Unknown remedies {unknown}; the remedies are {list(REMEDIES)}.")

    job = prepare_job(model, config, calibration, samples, adapter)
    rows, scores, results = [], {}, {}
    start = time.perf_counter()
    base = score_config(job, config)
    scores["int8"] = base
    rows.append(_row("int8", base, 1, time.perf_counter() - start, False, config.variant))
    shared: dict[str, Any] = {}  # the emulator, built once for ranges and bias
    for name in tqdm(remedies, desc="remedies", disable=not progress):
        start = time.perf_counter()
        try:
            score, builds, note, result = _TRIES[name](job, shared)
        except WorkbenchError as err:
            score, builds, note, result = Score((), error=str(err).splitlines()[0]), 0, "", None
        wall = time.perf_counter() - start
        applied = score is not None
        score = score if applied else Score(())  # nothing to apply: no numbers, never kept
        kept = confirmed(score, base)
        if applied and not kept and not score.error:
            cost = _cost_percent(score, base)
            verdict = f"too little for +{cost:.0f} % cycles" if cost >= 1 else "no gain"
            note = f"{note}; {verdict}, not applied" if note else f"{verdict}, not applied"
        scores[name], results[name] = score, result
        rows.append(_row(name, score, builds, wall, kept, score.error or note))
    return Remedies(pd.DataFrame(rows, columns=COLUMNS), scores, results, config)


def confirmed(score: Score, base: Score, min_gain_db: float = MIN_GAIN_DB) -> bool:
    """The simulator confirms a gain over ``base``: more answers agree with float, or as
    many and the output SQNR is at least ``min_gain_db`` higher, plus
    ``DB_PER_COST_PERCENT`` for every percent of cycles the remedy adds."""
    if score.error or base.error:
        return not score.error and bool(base.error)
    if score.agreement is not None and base.agreement is not None and score.agreement != base.agreement:
        return score.agreement > base.agreement
    return score.sqnr_db >= base.sqnr_db + min_gain_db + DB_PER_COST_PERCENT * max(
        _cost_percent(score, base), 0
    )


def _cost_percent(score: Score, base: Score) -> float:
    """The cycles ``score`` adds over ``base``, in percent (0 when either is unknown)."""
    if not score.cycles or not base.cycles:
        return 0.0
    return 100.0 * (score.cycles - base.cycles) / base.cycles


def _rank(score: Score) -> tuple[float, float]:
    return (-1.0 if score.agreement is None else score.agreement, score.sqnr_db)


def _outcome(score: Score) -> str:
    """What a score says, answers first: '83 % of answers agree with float, outputs at 20.4 dB'."""
    answers = (
        "" if score.agreement is None else f"{100 * score.agreement:.0f} % of answers agree with float, "
    )
    return f"{answers}outputs at {score.sqnr_db:.1f} dB"


def _row(name: str, score: Score, builds: int, wall: float, kept: bool, note: str) -> dict:
    return {
        "remedy": name,
        "agreement": score.agreement,
        "sqnr_db": score.sqnr_db,
        "cycles": score.cycles,
        "builds": builds,
        "wall_s": round(wall, 1),
        "kept": kept,
        "note": note,
    }


def _auto_hybrid(job: SweepJob, shared: dict):
    variant = replace(job.config, auto_hybrid=True)
    score = score_config(job, variant)
    return score, 1, f"{len(score.layers)} tensors in float16", variant


def _settings(job: SweepJob, shared: dict):
    """Every other (algorithm, method) of workbench.fix.settings, one build each; the best."""
    now = (job.config.quantized_algorithm, job.config.quantized_method)
    best = None
    combos = [(a, m) for a in ALGORITHMS for m in METHODS if (a, m) != now]
    for algorithm, method in combos:
        variant = replace(job.config, quantized_algorithm=algorithm, quantized_method=method)
        score = score_config(job, variant)
        if not score.error and (best is None or _better(score, best[0])):
            best = (score, variant)
    if best is None:
        return Score((), error="the toolkit built none of the other settings"), len(combos), "", None
    score, variant = best
    note = f"best: {variant.quantized_algorithm} / {variant.quantized_method}"
    return score, len(combos), note, variant


def _better(a: Score, b: Score) -> bool:
    if a.agreement is not None and b.agreement is not None and a.agreement != b.agreement:
        return a.agreement > b.agreement
    return a.sqnr_db > b.sqnr_db


def _emulator(job: SweepJob, shared: dict) -> tuple[Any, int]:
    """The emulator of ``job``'s int8 model, built once (one toolkit step 1, unless cached)."""

    if "emulator" in shared:
        return shared["emulator"], 0
    shared["emulator"] = EmulatorRunner(job.model, job.config, job.calibration)
    return shared["emulator"], 1


def _ranges(job: SweepJob, shared: dict):

    emulator, builds = _emulator(job, shared)
    search = search_ranges(emulator, job.calibration, job.samples)
    if not search.clips:
        return None, builds, "the emulator found no range worth changing", search
    score = score_clips(job, search.clips)
    kinds = [c.kind for c in search.clips]
    note = (
        f"{kinds.count('clip')} tensors clipped, {kinds.count('widen')} widened; emulator "
        f"{search.int8_sqnr_db:.1f} -> {search.sqnr_db:.1f} dB on the samples "
        f"({search.emulator_runs} emulator runs)"
    )
    if kinds.count("widen"):
        note += "; the samples overflow ranges the calibration set gave: calibrate on data like them"
    return score, builds + 1, note, search


def _cle(job: SweepJob, shared: dict):

    equalized, pairs = equalize(job.model)
    if not pairs:
        return None, 0, "no conv pair to equalize", None
    score = score_config(replace(job, model=equalized), job.config)
    return score, 1, f"{len(pairs)} conv pairs equalized", equalized


def _bias(job: SweepJob, shared: dict):

    emulator, builds = _emulator(job, shared)
    corrected, shifts = correct_bias(job.model, job.config, job.calibration, emulator=emulator)
    if not shifts:
        return None, builds, "no conv of the model in the toolkit's graph", None
    changed = {t: s for t, s in shifts.items() if s.any()}
    if not changed:
        return None, builds, "no conv's mean error is significant on the calibration set", None
    score = score_config(replace(job, model=corrected), job.config)
    channels = sum(int((s != 0).sum()) for s in changed.values())
    worst = max(float(abs(s).max()) for s in changed.values())
    note = f"{channels} channels of {len(changed)} convs corrected (largest shift {worst:.3g})"
    return score, builds + 1, note, corrected


#: Each try takes (job, shared) and returns (its Score, or None when there is nothing to
#: apply; toolkit builds made; a note; what to apply).
_TRIES: dict[str, Callable] = {
    "auto_hybrid": _auto_hybrid,
    "settings": _settings,
    "ranges": _ranges,
    "cle": _cle,
    "bias": _bias,
}
