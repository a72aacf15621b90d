"""Per-layer divergence runs: float against any backend, sample by sample, cached by content.

``compute_divergence`` opens the backend by name (``runners.open_backend``) or takes a runner
it is given; it never knows which backend it runs: what a backend adds (the toolkit's error
table, a single-layer snapshot, the mark-all guard) comes in its measurements and meta.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from workbench.compare.result import COLUMNS, Divergence, load_cached
from workbench.compare.rows import compared_parents, constant_tensors, sample_rows
from workbench.datasets import cache_dir
from workbench.errors import BoardError
from workbench.runners import Runner, open_backend
from workbench.runners.float import FloatRunner
from workbench.support.static import static_check


def compute_divergence(
    model,
    config,
    calibration,
    samples=None,
    *,
    backend: str | Runner = "mark-all",
    workdir: str | Path | None = None,
    cache: bool = True,
    progress: bool = True,
    on_sample=None,
    single_layer: bool = True,
    floats: dict | None = None,
) -> Divergence:
    """Float (onnxruntime) vs a quantized backend per layer, over ``samples``.

    Args:
        model: OnnxModel to convert.
        config: BuildConfig (platform, quantization, preprocessing).
        calibration: CalibrationSet used to quantize.
        samples: CalibrationSet to compare on; the first 4 calibration samples by default.
        backend: a name in ``runners.BACKENDS`` (opened here and closed after), or a runner
            the caller owns (used, not closed). The toolkit's two: "mark-all" (layer
            boundaries as outputs, one inference per sample: fast, accumulated error) and
            "snapshot" (accuracy_analysis per sample: slower, adds the toolkit's single-layer
            error). Mark-all is guarded on the first sample (see
            workbench.runners.markall.build_checked): boundaries whose marking changes their
            quantization are left unmarked (flag ``left-unmarked``) or, if still changed,
            flagged ``marking-changed-quantization`` and left out of summaries and verdicts;
            if the marked model's outputs still differ from the plain model's, it measures in
            snapshot mode (with a warning). ``meta["guard"]`` says what was found.
        single_layer: mark-all only: also run the first sample through accuracy_analysis
            on the plain build (one snapshot sample: ~1 s on tiny models, ~8 s on yolov8n).
            Its rows get the toolkit's single-layer and entire cosines, and layers mark-all
            cannot see (fused inside a compiled layer, left unmarked) are measured from the
            snapshot there (flag ``snapshot``): origins come from local error, which a
            saturating activation fused after a conv hides at the boundary.
        workdir: scratch folder for the toolkit (temporary by default).
        cache: reuse the saved result of an identical earlier call (same model bytes,
            config, calibration and sample file contents, backend).
        progress: show a progress bar. ``on_sample(done, total)`` is called after each sample.
        floats: ``{sample row: float tensors}``, filled here and reused by later calls with
            the same model and preprocessing (a what-if loop: the float model does not change
            with the quantization, and on yolov8n it costs more than the emulator).

    Raises:
        ConfigError, DatasetError before any build; ToolkitError if the toolkit fails;
        BoardError if a board fails, with ``err.partial`` holding the samples done.
    """
    samples = samples if samples is not None else calibration.head(4)
    config.check_model(model)
    calibration.validate(model.inputs, config.preprocess)
    samples.validate(model.inputs, config.preprocess)
    name = backend if isinstance(backend, str) else f"runner:{backend.backend}"
    key = run_key(model, config, calibration, samples, f"{name}+single" if single_layer else name)
    cached = _cache_dir() / key
    if cache and (hit := load_cached(cached)) is not None:
        hit.meta.update(_inputs_meta(model, calibration, samples))  # same content, maybe another place
        return hit
    run = functools.partial(_measure, model, config, calibration, samples, key, progress, on_sample, floats)
    if isinstance(backend, str):
        options = {"workdir": workdir, "check_row": samples.rows[0], "single_layer": single_layer}
        with open_backend(backend, model, config, calibration, **options) as runner:
            result = run(runner, backend)
    else:
        result = run(backend, backend.backend)
    if cache:
        result.save(cached)
    return result


def _measure(
    model, config, calibration, samples, key, progress, on_sample, floats, runner, mode: str
) -> Divergence:
    """The per-layer rows of ``runner`` against float on every sample; a board failure raises
    BoardError with the samples done in ``err.partial``."""
    floats = {} if floats is None else floats
    reference, constants, rows = None, constant_tensors(model), []
    bar = tqdm(total=len(samples), desc=f"per-layer divergence ({mode})", disable=not progress)

    def result() -> Divergence:
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        meta = _run_meta(model, config, calibration, samples, table, key, mode)
        return Divergence(table, {**meta, **runner.meta})

    done = 0
    try:
        for i, measured in enumerate(runner.measure_many(samples.rows)):
            row = tuple(samples.rows[i])
            if row not in floats:
                reference = reference or FloatRunner(model, config.preprocess)
                floats[row] = reference.run(row)
            rows += sample_rows(
                model.tensors, floats[row], measured, sample=i, backend=runner.backend, constants=constants,
                guard=runner.guard,
            )  # fmt: skip
            done = i + 1
            bar.update()
            if on_sample:
                on_sample(done, len(samples))
    except BoardError as err:
        partial = result()
        partial.meta["partial"] = {
            "backend": runner.backend, "samples_done": done, "samples": len(samples), "error": str(err)
        }  # fmt: skip
        raise BoardError(
            f"{err}\nPartial result: {done} of {len(samples)} samples ran on {runner.backend}; "
            "it is in err.partial, marked partial.",
            partial=partial,
        ) from err
    finally:
        bar.close()
    return result()


def _run_meta(model, config, calibration, samples, table: pd.DataFrame, key: str, mode: str) -> dict:
    """What a per-layer run records beside its table."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": key,
        "mode": mode,
        "config": config.to_dict(),
        **_inputs_meta(model, calibration, samples),
        "toolkit_version": _toolkit_version(),
        "parents": compared_parents(model, set(table.loc[table.status == "compared", "layer"])),
        "support": support_summary(model, config.target_platform),
    }


def _inputs_meta(model, calibration, samples) -> dict:
    """Where this call's model, calibration and sample files are: a cached run keyed on their
    content may come from another checkout, and its paths must name this call's files."""
    return {
        "model": model.summary(),
        "calibration": {"source": str(calibration.source), "size": len(calibration)},
        "samples": [[str(p) for p in r] for r in samples.rows],
    }


def support_summary(model, platform: str) -> dict:
    """The static operator-support check, as plain data for the run's meta and report."""
    report = static_check(model, platform)
    problems = report.problems()[["node", "op_type", "status", "reason", "fix"]]
    return {"platform": platform, "counts": report.counts(), "problems": problems.to_dict("records")}


def run_key(model, config, calibration, samples, mode: str) -> str:
    """Content hash of everything a divergence run depends on, including the workbench's own
    code (an editable install keeps its version number while its code changes)."""
    h = hashlib.sha256()
    h.update(model.to_bytes())
    h.update(config.digest().encode())
    h.update(mode.encode())
    h.update(_toolkit_version().encode())
    h.update(_version("rknn-workbench").encode())  # a fixed workbench must not reuse old results
    h.update(code_digest().encode())
    for group in (calibration, samples):
        h.update(b"|")
        for row in group.rows:
            for path in row:
                h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()[:24]


@functools.cache
def code_digest() -> str:
    """sha256 of the workbench package's .py sources (computed once per process)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _cache_dir() -> Path:
    return cache_dir() / "runs"


def _toolkit_version() -> str:
    return _version("rknn-toolkit2")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
