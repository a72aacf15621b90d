"""Fix by the answers: the fewest float16 layers that bring the quantized model's answers
to a target agreement with float, searched on the samples whose answers flip and checked on
samples the search never saw."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.datasets import CalibrationSet
from workbench.errors import WorkbenchError
from workbench.fix.search import SearchResult, search_mixed_precision
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.task.evaluate import TaskResult, evaluate
from workbench.task.explain import contrast_samples
from workbench.task.labels import LabelledSet


@dataclass
class TaskFix:
    """A mixed-precision search to an agreement target on the samples whose answers flip,
    checked on held-out samples the search never saw."""

    search: SearchResult
    before: TaskResult  #: int8 answers on the held-out samples
    after: TaskResult  #: the chosen hybrid's answers on the same samples

    def summary(self) -> str:
        """The search's result, the held-out check, and what it means."""
        b = self.before.summary().set_index("backend").loc["simulator"]
        a = self.after.summary().set_index("backend").loc["simulator"]
        return (
            f"{self.search.summary()}. Held-out check on {int(a.samples)} samples the search did "
            f"not use: agreement with float {b.agreement:.0%} -> {a.agreement:.0%} "
            f"({int(b.flips)} -> {int(a.flips)} flips). {self.advice()}"
        )

    def advice(self) -> str:
        """Whether the fix carries over to samples the search did not see."""
        b = self.before.summary().set_index("backend").loc["simulator", "agreement"]
        a = self.after.summary().set_index("backend").loc["simulator", "agreement"]
        if a > b:
            return "The fix carries over to unseen samples."
        if a == b:
            return (
                "On unseen samples it changes nothing: search on more samples (more flips), or try the "
                "remedies that cost no cycles (rknn-workbench remedies: settings, ranges) before using it."
            )
        return (
            "On unseen samples it is WORSE: the config fits the search's few samples only. Search on "
            "more samples (more flips), or try another remedy (rknn-workbench remedies), before using it."
        )


def fix_answers(
    model: OnnxModel,
    config: BuildConfig,
    calibration: CalibrationSet,
    data: LabelledSet,
    adapter,
    target_agreement: float,
    *,
    kept: int = 4,
    candidates: int | None = 16,
    jobs: int = 2,
    progress: bool = True,
    engine: str = "emulator",
) -> TaskFix:
    """Search the fewest float16 layers that bring the answers to ``target_agreement`` with
    float. ``data`` is split alternately: the even samples drive the search (their flipped
    ones plus ``kept`` that keep their answer), the odd ones are held out to check the result.
    ``engine``: what scores the search's configs (see ``search_mixed_precision``).

    Raises:
        WorkbenchError: fewer than 2 samples, or no answer flips on the search half.
    """
    if len(data) < 2:
        raise WorkbenchError("A task-targeted fix needs at least 2 samples: half search, half check.")
    search_half, held_out = data.take(range(0, len(data), 2)), data.take(range(1, len(data), 2))
    answers = evaluate(model, config, calibration, search_half, adapter, progress=progress)
    samples = contrast_samples(answers, kept=kept)
    result = search_mixed_precision(
        model,
        config,
        calibration,
        samples,
        target_agreement=target_agreement,
        adapter=adapter,
        candidates=candidates,
        engine=engine,
        jobs=jobs,
        progress=progress,
    )
    before = evaluate(model, config, calibration, held_out, adapter, progress=progress)
    after = evaluate(model, result.config, calibration, held_out, adapter, progress=progress)
    return TaskFix(result, before, after)
