"""Score hybrid-quantization choices: the model's output accuracy (vs the float model) and
its compiled cost, for many sets of float16 layers, in parallel, cached and resumable.

Each task runs ``hybrid_quantization_step1`` once in its own toolkit process, then one
``hybrid_quantization_step2`` (with the set in ``custom_quantize_layers``) and one
simulator inference per sample for each set of its batch. Every finished score is appended
to a JSON-lines file under the cache, keyed by the content of everything it depends on, so
an interrupted sweep resumes where it stopped and a repeated one costs nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm.auto import tqdm

from workbench.compare.divergence import run_key
from workbench.compare.metrics import tensor_metrics
from workbench.datasets import CalibrationSet, cache_dir
from workbench.errors import ToolkitError
from workbench.fix.executor import Executor, as_executor
from workbench.model import OnnxModel
from workbench.rknn.build import build, hybrid_step1
from workbench.rknn.buildlog import parse_layer_table
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession, clean_log
from workbench.runners.float import FloatRunner
from workbench.runners.markall import infer_row
from workbench.storage import atomic_write


@dataclass(frozen=True)
class Score:
    """Output accuracy and compiled cost of one set of float16 layers."""

    layers: tuple[str, ...]
    sqnr_db: float = math.nan  #: mean over samples of the worst output's SQNR
    cosine: float = math.nan  #: mean over samples of the worst output's cosine
    cycles: int | None = None  #: the compile table's estimated total cycles
    rw_kb: float | None = None  #: the compile table's total memory traffic (KB)
    error: str = ""  #: the toolkit's failure, if this set could not be built or run
    #: share of samples whose decoded answer equals float's (None: the job has no task adapter)
    agreement: float | None = None

    def meets(self, sqnr_db: float | None, cosine: float | None, agreement: float | None = None) -> bool:
        ok = not self.error
        if sqnr_db is not None:
            ok &= self.sqnr_db >= sqnr_db
        if cosine is not None:
            ok &= self.cosine >= cosine
        if agreement is not None:
            ok &= self.agreement is not None and self.agreement >= agreement
        return bool(ok)


@dataclass
class SweepJob:
    """What every task needs: the model, settings, calibration, samples and float outputs."""

    model: OnnxModel
    config: BuildConfig
    calibration: CalibrationSet
    samples: CalibrationSet
    expected: list[list[np.ndarray]] = field(repr=False)
    key: str = ""
    adapter: Any = None  #: a task adapter: scores then carry the agreement of the answers
    answers: list = field(default_factory=list, repr=False)  #: float's decoded answers


def prepare_job(model, config, calibration, samples, adapter=None) -> SweepJob:
    """The float reference outputs (and answers, with a task ``adapter``) and the content
    key of a sweep."""

    config.check_model(model)
    reference = FloatRunner(model, config.preprocess, keep=list(model.outputs))
    expected = [[reference.run(row)[name] for name in model.outputs] for row in samples.rows]
    answers = [adapter.decode(_named(model, out)) for out in expected] if adapter is not None else []
    mode = "sweep" if adapter is None else f"sweep|{adapter!r}"
    key = run_key(model, config, calibration, samples, mode)
    return SweepJob(model, config, calibration, samples, expected, key, adapter, answers)


def _named(model: OnnxModel, outputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    shapes = {t.name: t.shape for t in model.tensors}
    return {
        name: np.asarray(o, np.float32).reshape(shapes[name])
        if shapes.get(name)
        else np.asarray(o, np.float32)
        for name, o in zip(model.outputs, outputs)
    }


def score_batch(job: SweepJob, layer_sets: Sequence[Sequence[str]]) -> list[Score]:
    """One task: step1 once, then each set scored. A toolkit failure on one set is recorded
    in its Score and the task goes on in a fresh toolkit process."""
    scores: list[Score] = []
    session = None
    try:
        for layers in layer_sets:
            if session is None:
                try:
                    session, files = step1_session(job)
                except ToolkitError as err:  # nothing in this batch can be built
                    error = "step1: " + first_line(err)
                    return scores + [Score(tuple(s), error=error) for s in layer_sets[len(scores) :]]
            try:
                scores.append(score_step2(session, files, job, layers))
            except ToolkitError as err:
                if session is not None:
                    session.close()
                session = None
                scores.append(Score(tuple(layers), error=first_line(err)))
    finally:
        if session is not None:
            session.close()
    return scores


def score_step2(session: ToolkitSession, files: dict, job: SweepJob, layers: Sequence[str]) -> Score:
    """One set scored in a session where step 1 ran (``files``: what it wrote): hybrid step
    2 with ``layers`` in float16 (what ``build`` with float_layers runs after its own step 1),
    then the simulator on the job's samples.

    Raises:
        ToolkitError: the toolkit refused the set, crashed or timed out.
    """

    _, log = session.call("hybrid_step2", **files, float_layers=list(layers), verbose=True)
    got = [infer_row(session, job.model, job.config, row) for row in job.samples.rows]
    return score_outputs(tuple(layers), job.expected, got, log, job)


def evaluate(
    job: SweepJob,
    layer_sets: Iterable[Sequence[str]],
    executor: Executor | None = None,
    *,
    progress: bool | str = True,
    cache: bool = True,
) -> list[Score]:
    """Scores of ``layer_sets`` in the given order; cached ones are read back, the others
    run on ``executor`` (local workers by default) in batches."""

    executor = as_executor(executor)
    wanted = [tuple(sorted(s)) for s in layer_sets]
    store = SweepStore(job.key) if cache else None
    known = store.load() if store else {}
    missing = list(dict.fromkeys(s for s in wanted if s not in known))
    if missing:
        desc = progress if isinstance(progress, str) else "hybrid builds"
        bar = tqdm(total=len(missing), desc=desc, disable=not progress)
        try:
            for scores in executor.map_unordered(score_batch, job, _batches(missing, executor.slots)):
                for score in scores:
                    known[score.layers] = score
                    if store and not _transient(score.error):
                        store.append(score)
                bar.update(len(scores))
        finally:
            bar.close()
    return [known[s] for s in wanted]


def score_config(job: SweepJob, config: BuildConfig) -> Score:
    """Build any config (e.g. the toolkit's auto_hybrid) and score it like a sweep entry;
    ``layers`` are the tensors the build log says it kept in float16 (the toolkit's
    internal names, which may carry suffixes such as ``__float16``)."""

    with ToolkitSession(timeout=1800) as session:
        log = build(session, job.model, config, job.calibration)
        got = [infer_row(session, job.model, config, row) for row in job.samples.rows]
    return score_outputs(tuple(float16_tensors(log)), job.expected, got, log, job)


def float16_tensors(build_log: str) -> list[str]:
    """Tensors a hybrid build kept in float16 ("Meet hybrid type, dtype: float16" lines;
    the toolkit's internal names, e.g. with __float16 suffixes)."""
    return re.findall(r"Meet hybrid type, dtype: float16, tensor: (\S+)", clean_log(build_log))


def quantized_tensors(cfg_path: str | Path, model: OnnxModel) -> list[str]:
    """Candidates for float16: ONNX node outputs the toolkit quantizes to the config's
    activation type (the most common one in the .quantization.cfg), in graph order.
    Tensors the toolkit folded into constants or keeps wider are left out: step2 refuses
    them in custom_quantize_layers."""
    params = yaml.safe_load(Path(cfg_path).read_text()).get("quantize_parameters") or {}
    known = {t.name for t in model.tensors if t.producer}
    dtypes = [p.get("dtype") for name, p in params.items() if name in known and p.get("scale")]
    if not dtypes:
        return []
    activation = max(set(dtypes), key=dtypes.count)
    found = {n for n, p in params.items() if n in known and p.get("scale") and p.get("dtype") == activation}
    return [t.name for t in model.tensors if t.name in found]


def quantized_candidates(job: SweepJob) -> list[str]:
    """The model's float16 candidates, read from one step1 run (kept with the sweep's cache)."""
    saved = SweepStore(job.key).path.with_suffix(".candidates.json")
    if saved.exists():
        return json.loads(saved.read_text())
    session, files = step1_session(job)
    try:
        found = quantized_tensors(files["cfg"], job.model)
    finally:
        session.close()
    atomic_write(saved, json.dumps(found))
    return found


class SweepStore:
    """Append-only JSON lines of Scores for one sweep key, under the cache."""

    VERSION = 3  #: bump when Score changes, so older records are not read as incomplete ones

    def __init__(self, key: str):

        self.path = cache_dir() / "sweeps" / f"{key}.v{self.VERSION}.jsonl"

    def load(self) -> dict[tuple[str, ...], Score]:
        found: dict[tuple[str, ...], Score] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption
                continue
            score = Score(**{**record, "layers": tuple(record["layers"])})
            found[score.layers] = score
        return found

    def append(self, score: Score) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {**score.__dict__, "layers": list(score.layers)}
        # Each record starts a new line, so one cut short by an interruption spoils only itself.
        with open(self.path, "a") as f:
            f.write("\n" + json.dumps(record))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def step1_session(job: SweepJob) -> tuple[ToolkitSession, dict]:
    """A toolkit session in which step 1 ran for ``job``, and the paths of the files it
    wrote (keys model, data, cfg). The caller closes the session.

    Raises:
        ToolkitError: step 1 failed (the session is closed then).
    """
    session = ToolkitSession(timeout=1800)
    try:
        files = hybrid_step1(session, job.model, job.config, job.calibration)
    except BaseException:
        session.close()
        raise
    return session, files


def score_outputs(layers: tuple[str, ...], expected, got, log: str, job: SweepJob | None = None) -> Score:
    """The Score of outputs ``got`` (per sample, in the model's output order) against float's
    ``expected``; cycles from the build ``log``'s layer table ("" for none), the agreement of
    the answers with the job's task adapter."""
    per_sample = [[tensor_metrics(e, g) for e, g in zip(exp, out)] for exp, out in zip(expected, got)]
    flags = {m["flag"] for s in per_sample for m in s} & {"nonfinite", "size-mismatch"}
    if flags:  # NaN/Inf or a wrong-sized output: not a score to rank or to meet a target with
        return Score(layers, error=f"the model output is {' and '.join(sorted(flags))}")
    table = parse_layer_table(log)
    return Score(
        layers,
        sqnr_db=float(np.mean([min(m["sqnr_db"] for m in s) for s in per_sample])),
        cosine=float(np.mean([min(m["cosine"] for m in s) for s in per_sample])),
        cycles=int(table.cycles_total.sum()) if len(table) else None,
        rw_kb=float(table.rw_kb.sum()) if len(table) else None,
        agreement=_agreement(job, got) if job is not None and job.adapter is not None else None,
    )


def _agreement(job: SweepJob, got) -> float:
    """Share of samples whose answer is float's; an answer the adapter cannot decode disagrees."""
    agree = []
    for reference, outputs in zip(job.answers, got):
        try:
            test = job.adapter.decode(_named(job.model, outputs))
            agree.append(bool(job.adapter.agreement(reference, test)["agree"]))
        except Exception:  # e.g. NaN outputs: a wrong answer, not a crash of the sweep
            agree.append(False)
    return float(np.mean(agree))


def _batches(items: list, slots: int) -> list[list]:
    """Enough batches to keep every slot busy and the progress bar moving, each large
    enough that its step1 run is worth it."""
    size = min(16, max(1, math.ceil(len(items) / (slots * 3))))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _transient(error: str) -> bool:
    """A crash, a timeout or a step1 failure may not happen again: not kept in the cache."""
    return error.startswith(("crash: ", "timeout: ", "step1: "))


def first_line(err: Exception) -> str:
    """The toolkit's own words for a failure (its "E ..." line), else the exception line;
    a crash or a timeout (no answer of the toolkit) is marked so, and is never cached."""
    text = str(err)
    kind = getattr(err, "kind", "toolkit")
    if kind in ("crash", "timeout"):
        return f"{kind}: " + text.splitlines()[0][:300]
    lines = text.splitlines()
    said = [x for x in lines if x.startswith("E ") and "version:" not in x and "Traceback" not in x]
    said += [x for x in lines if "Error:" in x and "Traceback" not in x]
    return (said[0] if said else lines[0])[:300]
