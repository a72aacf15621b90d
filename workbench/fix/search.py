"""Mixed-precision search: the fewest float16 layers that bring the model output to a
target SQNR, cosine or agreement of the answers, as a hybrid quantization config the
toolkit accepts.

Two engines score the configs. "emulator" (the default): candidates are whole compiled
layers, scored by the toolkit-faithful emulator in a fraction of a second each; the
answer is then built once with the toolkit and scored on the simulator (workbench.fix.
emulated). "toolkit": every config is one toolkit build (hybrid step 2 + simulator).

Layers are taken in sensitivity order (largest gain first). Prefixes of that order are
scored at doubling sizes in parallel (1, 2, 4, ...); bisection then finds the shortest
prefix meeting the target, and pruning drops blocks of chosen layers (halving the block
size) that the target does not need, within a budget of builds. Every scored
configuration is kept in ``trail``, the accuracy-vs-cost points.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from workbench.errors import EmulatorError, WorkbenchError, WorkbenchWarning
from workbench.fix.emulated import EmulatedScorer, EmulatorCheck, candidate_layers, confirm_choice, said
from workbench.fix.evaluate import Score, SweepJob, evaluate, prepare_job
from workbench.fix.executor import as_executor
from workbench.fix.sensitivity import sensitivity
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.storage import staged_files

#: files of the toolkit's hybrid flow (as the worker names them -> as exported)
_HYBRID_FILES = (("model", "model"), ("data", "data"), ("quantization.variant.cfg", "quantization.cfg"))
ENGINES = ("emulator", "toolkit")


@dataclass
class SearchResult:
    """The search's answer and everything it scored on the way."""

    config: BuildConfig  #: the chosen hybrid config (float_layers set)
    score: Score  #: its output accuracy and cycles
    baseline: Score  #: all-int8
    met: bool  #: False: no config met the target; ``config`` is the best one found
    target: dict
    #: every scored config: stage, engine, n_float16, sqnr_db, cosine, cycles, layers (the
    #: emulator engine's: compiled layer names; its "baseline" and "confirm" rows are toolkit builds)
    trail: pd.DataFrame
    ranking: pd.DataFrame  #: the sensitivity table the order came from
    engine: str = "toolkit"  #: what scored the search's configs: "toolkit" or "emulator"
    #: the emulator's score of the chosen config (engine "emulator"; ``score`` is the toolkit's)
    emulated: Score | None = None
    compiled: tuple[str, ...] = ()  #: the chosen compiled layers (engine "emulator")
    setup_builds: int = 0  #: toolkit runs outside the trail (the emulator's step 1)
    notes: list[str] = field(default_factory=list)  #: what happened on the way (a fallback, a miss)

    @property
    def layers(self) -> tuple[str, ...]:
        return self.config.float_layers

    @property
    def builds(self) -> int:
        """Toolkit builds: configs built and scored (the sensitivity sweep's included, one
        build each; with the emulator, the baseline and confirmations) and setup runs."""
        built = self.trail[self.trail.engine == "toolkit"] if "engine" in self.trail else self.trail
        return len(built) + self.setup_builds

    def summary(self) -> str:
        goal = " and ".join(f"{k} >= {v:.6g}" for k, v in self.target.items() if v is not None)
        verdict = "met" if self.met else "NOT met (best found shown)"
        unit = f"{len(self.layers)} float16 layer(s)"
        if self.engine == "emulator":
            unit = f"{len(self.compiled)} whole layer(s) ({len(self.layers)} float16 tensors)"
        return (
            f"target {goal}: {verdict} with {unit}; output SQNR "
            f"{self.baseline.sqnr_db:.2f} -> {self.score.sqnr_db:.2f} dB, cosine "
            f"{self.baseline.cosine:.5f} -> {self.score.cosine:.5f}, cycles "
            f"{self.baseline.cycles} -> {self.score.cycles}"
            + (
                f", answers agreeing with float {self.baseline.agreement:.0%} -> {self.score.agreement:.0%}"
                if self.target.get("agreement") is not None
                else ""
            )
            + (self._emulated() if self.emulated is not None else "")
            + "".join(f". {note}" for note in self.notes)
        )

    def _emulated(self) -> str:
        return (
            f" (toolkit-confirmed; the emulator said {said(self.emulated)}; {self.builds} toolkit build(s))"
        )

    def pareto(self, cost: str = "cycles") -> pd.DataFrame:
        """The trail's configs no other beats on both accuracy and ``cost``."""
        return pareto_front(self.trail[self.trail.error == ""], cost)

    def export(self, folder: str | Path, model, calibration) -> Path:
        """Build the chosen config and write what the toolkit's hybrid flow produces:
        ``<model>.quantization.cfg`` (custom_quantize_layers filled in), ``.model``,
        ``.data``, the built ``.rknn``, and ``search.json``. Written into a temporary
        folder first: an earlier export in ``folder`` survives a failed build."""

        folder = Path(folder).resolve()
        if folder.exists() and not (folder / "search.json").exists():
            raise WorkbenchError(
                f"{folder} exists and is not an earlier export (no search.json): give a new folder, "
                "so nothing of yours is replaced."
            )
        stem = model.name.replace(" ", "_")
        with staged_files(folder) as staging:  # replaces these files together; others are kept
            with ToolkitSession(timeout=1800) as session:
                dataset = calibration.write_list(session.workdir / "dataset.txt")
                session.call(
                    "build",
                    model_path=str(model.save(session.workdir / "model.onnx")),
                    rknn_path=str(staging / f"{stem}.rknn"),
                    verbose=False,
                    **self.config.build_args(model.inputs, dataset),
                )
                for made, kept in _HYBRID_FILES if self.layers else ():  # int8 needs no hybrid files
                    shutil.copy(session.workdir / f"model.{made}", staging / f"{stem}.{kept}")
            (staging / "search.json").write_text(json.dumps(self.to_dict(), indent=1))
            self.trail.to_csv(staging / "trail.csv", index=False)
        return folder

    def to_dict(self) -> dict:
        return {
            "met": self.met,
            "target": self.target,
            "float_layers": list(self.layers),
            "score": {**self.score.__dict__, "layers": list(self.score.layers)},
            "baseline": {**self.baseline.__dict__, "layers": []},
            "builds": self.builds,
            "config": self.config.to_dict(),
            "engine": self.engine,
            "emulated": None if self.emulated is None else {**self.emulated.__dict__, "layers": []},
            "compiled_layers": list(self.compiled),
            "notes": self.notes,
        }


def search_mixed_precision(
    model,
    config: BuildConfig,
    calibration,
    samples=None,
    *,
    target_sqnr_db: float | None = None,
    target_cosine: float | None = None,
    target_agreement: float | None = None,
    adapter=None,
    engine: str | None = None,
    ranking: pd.DataFrame | None = None,
    candidates: list[str] | int | None = None,
    confirm_builds: int = 3,
    fallback: bool = True,
    emulator_rules=None,
    executor=None,
    jobs: int = 2,
    progress: bool = True,
    cache: bool = True,
) -> SearchResult:
    """The fewest float16 layers meeting the target output SQNR (dB), cosine and/or agreement
    of the answers with float (``target_agreement``, 0-1, judged by the task ``adapter``:
    pass samples whose answers flip, e.g. ``task.explain.contrast_samples``, and check the
    result on other samples).

    Args:
        samples: rows scored per config (default: the first 2 of ``calibration``).
        engine: "emulator" (the default without ``ranking``): whole compiled layers ranked
            and searched on the emulator, the answer built once with the toolkit and scored
            on the simulator (``score``; the emulator's own in ``emulated``). If the toolkit misses the target
            the emulator met, the set grows along the emulator's ranking (1, 2, 4 more
            layers) and is built again, ``confirm_builds`` builds at most. When the emulator's
            self-check finds it not faithful to this model, the search falls back to
            "toolkit" with a WorkbenchWarning (``fallback=False``: raises EmulatorError).
            "toolkit" (the default with ``ranking``): single tensors as candidates, every
            config one toolkit build.
        ranking: (toolkit engine) a :func:`sensitivity` table, computed here if not given.
        candidates: tensor names (emulator: the layers holding them), or an int N: the
            toolkit sweeps the N layers of largest local error, the emulator searches its N
            best-ranked layers; None: all.
        emulator_rules: the emulator's rule table (default: the installed toolkit's).
        executor, jobs, cache: the toolkit engine's workers, and its reuse of earlier scores.

    Returns:
        SearchResult; ``met=False`` when no config met the target (the best one is held).
    Raises:
        WorkbenchError: bad targets or engine. EmulatorError: emulator not faithful and
        ``fallback=False``. ToolkitError: the all-int8 model cannot be built.
    """
    goal = (target_sqnr_db, target_cosine, target_agreement)
    engine = engine or ("toolkit" if ranking is not None else "emulator")
    _check_request(config, goal, adapter, engine, ranking)
    samples = samples if samples is not None else calibration.head(2)
    job = prepare_job(model, config, calibration, samples, adapter)
    note = ""
    if engine == "emulator":
        found = _emulated_search(job, goal, candidates, confirm_builds, emulator_rules, progress)
        if isinstance(found, SearchResult):
            return found
        note = _fall_back(job, found, fallback)
    result = _toolkit_search(job, goal, ranking, candidates, as_executor(executor, jobs), progress, cache)
    result.notes += [note] if note else []
    return result


def _check_request(config: BuildConfig, goal: tuple, adapter, engine: str, ranking) -> None:
    target_sqnr_db, target_cosine, target_agreement = goal
    if target_sqnr_db is None and target_cosine is None and target_agreement is None:
        raise WorkbenchError(
            "Give a target: target_sqnr_db (e.g. 30.0), target_cosine (e.g. 0.999) and/or "
            "target_agreement (e.g. 0.95, with a task adapter)."
        )
    if target_agreement is not None and (adapter is None or not 0 < target_agreement <= 1):
        raise WorkbenchError("target_agreement is a share in (0, 1] and needs adapter= (a task adapter).")
    if target_cosine is not None and not 0 < target_cosine <= 1:
        raise WorkbenchError(f"target_cosine is a cosine in (0, 1], not {target_cosine!r}.")
    if config.float_layers or config.auto_hybrid:
        raise WorkbenchError(
            "Start the search from a plain quantized config: no float_layers, no auto_hybrid."
        )
    if engine not in ENGINES:
        raise WorkbenchError(f"engine must be one of {ENGINES}, not {engine!r}.")
    if engine == "emulator" and ranking is not None:
        raise WorkbenchError(
            "ranking= is a toolkit sensitivity table (single tensors): pass it with engine='toolkit', "
            "or leave it out (the emulator ranks whole layers itself in seconds)."
        )


def _toolkit_search(job: SweepJob, goal, ranking, candidates, executor, progress, cache) -> SearchResult:
    """Every config one toolkit build (today's search)."""
    search = _Search(job, executor, goal, progress, cache)
    search.trail += [("sensitivity", s) for s in search.score([[]])]
    if search.known[()].error:
        raise WorkbenchError(
            f"The all-int8 model could not be built for the search: {search.known[()].error}"
        )
    if ranking is None and search.meets([]):  # int8 is good enough: no sweep needed
        ranking = pd.DataFrame(columns=["layer", "error"])
    if ranking is None:
        ranking = sensitivity(
            job.model,
            job.config,
            job.calibration,
            job.samples,
            candidates=candidates,
            executor=executor,
            progress=progress,
            cache=cache,
            adapter=job.adapter,
        )
    order = [r.layer for r in ranking.itertuples() if isinstance(r.layer, str) and not r.error]
    search.reuse(ranking)
    search.trail += [("sensitivity", s) for s in search.score([[layer] for layer in order])]
    order = [layer for layer in order if not search.known[(layer,)].error]  # failed alone: skipped
    chosen = [] if search.meets([]) else search.shortest_prefix(order)
    if chosen:
        chosen = search.prune(chosen)
    best = search.best(chosen)
    return SearchResult(
        config=replace(job.config, float_layers=best.layers),
        score=best,
        baseline=search.known[()],
        met=best.meets(*goal),
        target=_target(goal),
        trail=search.table(),
        ranking=ranking,
    )


def _target(goal: tuple) -> dict:
    return dict(zip(("sqnr_db", "cosine", "agreement"), goal))


def _fall_back(job: SweepJob, problem: str, fallback: bool) -> str:
    """Warn that the search falls back to the toolkit (or raise, without ``fallback``)."""
    message = f"The emulator cannot stand in for the toolkit on {job.model.name}: {problem}."
    if not fallback:
        raise EmulatorError(
            f"{message} Search with engine='toolkit' (one toolkit build per config: slower, no emulator)."
        )
    warnings.warn(
        f"{message} Searching with engine='toolkit' instead (one build per config: slower).",
        WorkbenchWarning,
        stacklevel=3,
    )
    return f"{message} Searched with the toolkit instead."


def _emulated_search(
    job: SweepJob, goal: tuple, candidates, confirm_builds: int, rules, progress
) -> SearchResult | str:
    """Rank and search whole layers on the emulator, then confirm with the toolkit; or why
    the emulator cannot stand in for the toolkit."""
    try:
        check = EmulatorCheck(job, rules=rules)
    except EmulatorError as err:
        return f"it cannot run this model ({err})"
    with check:
        return _on_the_emulator(job, check, goal, candidates, confirm_builds, progress)


def _on_the_emulator(
    job: SweepJob, check: EmulatorCheck, goal, candidates, confirm_builds, progress
) -> SearchResult | str:
    """The emulated sweep runs while the toolkit checks the emulator (in a thread)."""
    scorer = EmulatedScorer(job, check.emulator, candidate_layers(check.emulator, candidates), progress)
    search = _Search(job, None, goal, progress, False, scorer=scorer)
    search.trail += [("sensitivity", s) for s in search.score([[]])]
    ranking, order = scorer.ranking([], search.known[()]), []

    def sweep():  # every layer alone in float16, on the emulator
        singles = search.score([[name] for name in scorer.layers])
        search.trail.extend(("sensitivity", s) for s in singles)
        table = scorer.ranking(singles, search.known[()])
        ranked = [r.layer for r in table.itertuples() if isinstance(r.layer, str) and not r.error]
        return table, ranked[:candidates] if isinstance(candidates, int) else ranked

    if not search.meets([]):  # while the toolkit checks the emulator
        ranking, order = sweep()
    fidelity, baseline = check.result()
    if not fidelity.ok:
        return f"its self-check against the simulator failed ({fidelity.summary()})"
    search.trail.insert(0, ("baseline", baseline))
    notes = [f"Emulator check: {fidelity.summary()}"]
    if baseline.meets(*goal):  # int8 is good enough on the toolkit: nothing to confirm
        names, confirmed = [], baseline
    else:
        if not order:  # the emulator's int8 met the target, the toolkit's did not
            ranking, order = sweep()
        chosen = search.shortest_prefix(order) if order else None
        if chosen:
            chosen = search.prune(chosen)
        met = chosen is not None
        chosen = chosen if met else list(search.best(None).layers)
        if chosen:
            names, confirmed, said = confirm_choice(check, search, scorer, order, chosen, met, confirm_builds)
        else:  # no layer in float16 beats int8 on the emulator: int8, already built, it is
            names, confirmed = [], baseline
            said = ["No set of layers met the target on the emulator, and none beat int8 there"]
        notes += said
    tensors = scorer.tensors(names)
    return SearchResult(
        config=replace(job.config, float_layers=tensors),
        score=replace(confirmed, layers=tensors),
        baseline=baseline,
        met=confirmed.meets(*goal),
        target=_target(goal),
        trail=search.table(),
        ranking=ranking,
        engine="emulator",
        emulated=replace(search.known[tuple(sorted(names))], layers=tensors),
        compiled=tuple(names),
        setup_builds=1,  # step 1
        notes=notes,
    )


class _Search:
    """The search's state: every config scored so far, by the toolkit (a build each) or by
    ``scorer`` (a callable: sets -> Scores keyed by the sorted set, e.g. EmulatedScorer)."""

    def __init__(self, job: SweepJob, executor, goal: tuple, progress, cache, scorer=None):
        self.job, self.executor, self.progress, self.cache = job, executor, progress, cache
        self.goal = goal  #: (sqnr_db, cosine, agreement) targets, None where not set
        self.scorer = scorer or self._built
        self.engine = "toolkit" if scorer is None else "emulator"
        self.known: dict[tuple[str, ...], Score] = {}
        self.trail: list[tuple[str, Score]] = []

    def reuse(self, ranking: pd.DataFrame) -> None:
        """Take the single-layer scores a sensitivity table of the same sweep (same model,
        settings and samples) already holds: no rebuild."""
        if "output_sqnr_db" not in ranking or ranking.attrs.get("key") != self.job.key:
            return
        for r in ranking.itertuples():
            error = r.error if isinstance(r.error, str) else ""
            if isinstance(r.layer, str) and (error or pd.notna(r.output_sqnr_db)):
                cycles = None if pd.isna(r.cycles) else int(r.cycles)
                rw_kb = getattr(r, "rw_kb", None)
                agreement = getattr(r, "output_agreement", None)
                agreement = None if agreement is None or pd.isna(agreement) else float(agreement)
                self.known[(r.layer,)] = Score(
                    (r.layer,), r.output_sqnr_db, r.output_cosine, cycles, rw_kb, error, agreement
                )

    def score(self, sets, stage: str | None = None) -> list[Score]:
        """Scores of ``sets``: known ones as they are, the rest evaluated."""
        todo = [s for s in sets if tuple(sorted(s)) not in self.known]
        if todo:
            for s in self.scorer(todo):
                if stage:
                    self.trail.append((stage, s))
                self.known[s.layers] = s
        return [self.known[tuple(sorted(s))] for s in sets]

    def _built(self, sets) -> list[Score]:
        progress = self.progress and "search"
        return evaluate(self.job, sets, self.executor, progress=progress, cache=self.cache)

    def meets(self, layers) -> bool:
        return self.known[tuple(sorted(layers))].meets(*self.goal)

    def shortest_prefix(self, order: list[str]) -> list[str] | None:
        """Doubling sizes in one parallel round, then bisection below the first that meets."""
        sizes = sorted({min(2**i, len(order)) for i in range(len(order).bit_length() + 1)} - {0})
        if self.engine == "emulator":  # one at a time, up to the first that meets: no large ones
            for k in sizes:
                if self.score([order[:k]], "prefix") and self.meets(order[:k]):
                    break
        else:
            self.score([order[:k] for k in sizes], "prefix")
        hits = [k for k in sizes if tuple(sorted(order[:k])) in self.known and self.meets(order[:k])]
        if not hits:
            return None
        high = hits[0]
        low = max([k for k in sizes if k < high] or [0])
        while high - low > 1:  # invariant: prefix ``high`` meets, ``low`` does not
            mid = (low + high) // 2
            self.score([order[:mid]], "bisect")
            low, high = (low, mid) if self.meets(order[:mid]) else (mid, high)
        return order[:high]

    def prune(self, chosen: list[str], budget: int = 16) -> list[str]:
        """Drop what the target does not need: blocks of layers from the least useful end,
        halving the block size (all at once first, one layer at a time last), within
        ``budget`` builds, so a long prefix costs O(log n) builds, not one per layer."""
        block = max(1, len(chosen) // 2)
        while block and budget and len(chosen) > 1:
            end = len(chosen)
            while end > 0 and budget and len(chosen) > 1:
                start = max(0, end - block)
                trial = chosen[:start] + chosen[end:]
                if trial:
                    self.score([trial], "prune")
                    budget -= 1
                    if self.meets(trial):
                        chosen = trial
                end = start
            block //= 2
        return chosen

    def best(self, chosen: list[str] | None) -> Score:
        if chosen is not None:
            return self.known[tuple(sorted(chosen))]
        ok = [s for s in self.known.values() if not s.error and s.sqnr_db == s.sqnr_db]  # not NaN
        if self.goal[2] is not None:  # a task target: the answers first
            return max(ok, key=lambda s: (s.agreement, s.sqnr_db, -len(s.layers)))
        return max(ok, key=lambda s: (s.sqnr_db, s.cosine, -len(s.layers)))

    def table(self) -> pd.DataFrame:
        rows = [
            {
                "stage": stage,
                # the emulator engine's baseline and confirmations are toolkit builds
                "engine": "toolkit" if stage in ("baseline", "confirm") else self.engine,
                "n_float16": len(s.layers),
                "sqnr_db": s.sqnr_db,
                "cosine": s.cosine,
                "agreement": s.agreement,
                "cycles": s.cycles,
                "rw_kb": s.rw_kb,
                "meets": s.meets(*self.goal),
                "error": s.error,
                "layers": list(s.layers),
            }
            for stage, s in self.trail
        ]
        return pd.DataFrame(rows)


def pareto_front(points: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Points no other beats on both SQNR (higher) and ``cost`` (lower), cheapest first."""
    ordered = points.dropna(subset=[cost, "sqnr_db"]).sort_values([cost, "sqnr_db"], ascending=[True, False])
    keep, best = [], float("-inf")
    for i, row in ordered.iterrows():
        if row.sqnr_db > best:
            keep.append(i)
            best = row.sqnr_db
    return ordered.loc[keep]
