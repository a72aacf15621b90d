"""Mixed-precision search: the fewest float16 layers that bring the model output to a
target SQNR or cosine, as a hybrid quantization config the toolkit accepts.

Layers are taken in sensitivity order (largest gain first). Prefixes of that order are
scored at doubling sizes in parallel (1, 2, 4, ...); bisection then finds the shortest
prefix meeting the target, and pruning drops blocks of chosen layers (halving the block
size) that the target does not need, within a budget of builds. Every scored
configuration is kept in ``trail``, the accuracy-vs-cost points.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from workbench.errors import WorkbenchError
from workbench.fix.evaluate import Score, SweepJob, evaluate, prepare_job
from workbench.fix.executor import as_executor
from workbench.fix.sensitivity import sensitivity
from workbench.rknn.config import BuildConfig
from workbench.storage import staged_files

#: files of the toolkit's hybrid flow (as the worker names them -> as exported)
_HYBRID_FILES = (("model", "model"), ("data", "data"), ("quantization.variant.cfg", "quantization.cfg"))


@dataclass
class SearchResult:
    """The search's answer and everything it scored on the way."""

    config: BuildConfig  #: the chosen hybrid config (float_layers set)
    score: Score  #: its output accuracy and cycles
    baseline: Score  #: all-int8
    met: bool  #: False: no config met the target; ``config`` is the best one found
    target: dict
    trail: pd.DataFrame  #: every scored config: stage, n_float16, sqnr_db, cosine, cycles, layers
    ranking: pd.DataFrame  #: the sensitivity table the order came from

    @property
    def layers(self) -> tuple[str, ...]:
        return self.config.float_layers

    @property
    def builds(self) -> int:
        """Configs built and scored, the sensitivity sweep's included (one build each)."""
        return len(self.trail)

    def summary(self) -> str:
        goal = " and ".join(f"{k} >= {v:.6g}" for k, v in self.target.items() if v is not None)
        verdict = "met" if self.met else "NOT met (best found shown)"
        return (
            f"target {goal}: {verdict} with {len(self.layers)} float16 layer(s); output SQNR "
            f"{self.baseline.sqnr_db:.2f} -> {self.score.sqnr_db:.2f} dB, cosine "
            f"{self.baseline.cosine:.5f} -> {self.score.cosine:.5f}, cycles "
            f"{self.baseline.cycles} -> {self.score.cycles}"
            + (
                f", answers agreeing with float {self.baseline.agreement:.0%} -> {self.score.agreement:.0%}"
                if self.target.get("agreement") is not None
                else ""
            )
        )

    def pareto(self, cost: str = "cycles") -> pd.DataFrame:
        """The trail's configs no other beats on both accuracy and ``cost``."""
        return pareto_front(self.trail[self.trail.error == ""], cost)

    def export(self, folder: str | Path, model, calibration) -> Path:
        """Build the chosen config and write what the toolkit's hybrid flow produces:
        ``<model>.quantization.cfg`` (custom_quantize_layers filled in), ``.model``,
        ``.data``, the built ``.rknn``, and ``search.json``. Written into a temporary
        folder first: an earlier export in ``folder`` survives a failed build."""
        from workbench.rknn.session import ToolkitSession

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
    ranking: pd.DataFrame | None = None,
    candidates: list[str] | int | None = None,
    executor=None,
    jobs: int = 2,
    progress: bool = True,
    cache: bool = True,
) -> SearchResult:
    """The fewest float16 layers meeting the target output SQNR (dB), cosine and/or agreement
    of the answers with float (``target_agreement``, 0-1, judged by the task ``adapter``:
    pass samples whose answers flip, e.g. ``task.explain.contrast_samples``, and check the
    result on other samples).

    ``ranking`` is a :func:`sensitivity` table (computed here from ``candidates`` if not
    given). If no config meets the target, the result has ``met=False`` and holds the best
    config scored.
    """
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
    samples = samples if samples is not None else calibration.head(2)
    executor = as_executor(executor, jobs)
    job = prepare_job(model, config, calibration, samples, adapter)
    search = _Search(job, executor, (target_sqnr_db, target_cosine, target_agreement), progress, cache)
    search.trail += [("sensitivity", s) for s in search.score([[]])]
    if search.known[()].error:
        raise WorkbenchError(
            f"The all-int8 model could not be built for the search: {search.known[()].error}"
        )
    if ranking is None and search.meets([]):  # int8 is good enough: no sweep needed
        ranking = pd.DataFrame(columns=["layer", "error"])
    if ranking is None:
        ranking = sensitivity(
            model,
            config,
            calibration,
            samples,
            candidates=candidates,
            executor=executor,
            progress=progress,
            cache=cache,
            adapter=adapter,
        )
    order = [r.layer for r in ranking.itertuples() if isinstance(r.layer, str) and not r.error]
    search.reuse(ranking)
    search.trail += [("sensitivity", s) for s in search.score([[layer] for layer in order])]
    order = [layer for layer in order if not search.known[(layer,)].error]  # failed alone: skipped
    chosen = [] if search.meets([]) else search.shortest_prefix(order)
    if chosen:
        chosen = search.prune(chosen)
    best = search.best(chosen)
    trail = search.table()
    return SearchResult(
        config=replace(config, float_layers=best.layers),
        score=best,
        baseline=search.known[()],
        met=best.meets(target_sqnr_db, target_cosine, target_agreement),
        target={"sqnr_db": target_sqnr_db, "cosine": target_cosine, "agreement": target_agreement},
        trail=trail,
        ranking=ranking,
    )


class _Search:
    def __init__(self, job: SweepJob, executor, goal: tuple, progress, cache):
        self.job, self.executor, self.progress, self.cache = job, executor, progress, cache
        self.goal = goal  #: (sqnr_db, cosine, agreement) targets, None where not set
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
            progress = self.progress and "search"
            for s in evaluate(self.job, todo, self.executor, progress=progress, cache=self.cache):
                if stage:
                    self.trail.append((stage, s))
                self.known[s.layers] = s
        return [self.known[tuple(sorted(s))] for s in sets]

    def meets(self, layers) -> bool:
        return self.known[tuple(sorted(layers))].meets(*self.goal)

    def shortest_prefix(self, order: list[str]) -> list[str] | None:
        """Doubling sizes in one parallel round, then bisection below the first that meets."""
        sizes = sorted({min(2**i, len(order)) for i in range(len(order).bit_length() + 1)} - {0})
        self.score([order[:k] for k in sizes], "prefix")
        hits = [k for k in sizes if self.meets(order[:k])]
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
