"""Per-layer sensitivity: how much of the model output's accuracy each quantized layer
costs, through the toolkit's hybrid quantization.

Two views, each one hybrid build per candidate:
- "float16": only that layer kept in float16, the rest int8 (gain over all-int8);
- "quantized": only that layer quantized, the rest float16 (loss from all-float16).
"""

from __future__ import annotations

import pandas as pd

from workbench.compare.divergence import compute_divergence
from workbench.compare.metrics import MAX_SQNR_DB
from workbench.errors import WorkbenchError
from workbench.fix.evaluate import Score, SweepJob, evaluate, prepare_job, quantized_candidates
from workbench.fix.executor import as_executor

VIEWS = ("float16", "quantized", "both")


def sensitivity(
    model,
    config,
    calibration,
    samples=None,
    *,
    candidates: list[str] | int | None = None,
    view: str = "float16",
    executor=None,
    jobs: int = 2,
    progress: bool = True,
    cache: bool = True,
    adapter=None,
) -> pd.DataFrame:
    """Ranked table of the candidates' effect on the model output (vs the float model).

    Args:
        samples: rows scored per build (default: the first 2 of ``calibration``).
        candidates: tensor names; an int N picks the N layers where the float-vs-int8
            divergence run sees the largest local SQNR drop; None takes every quantized one.
        view: "float16", "quantized" or "both" (see the module doc).
        executor: None (``jobs`` local toolkit processes) or a dask.distributed Client.
        cache: reuse and keep scores under the cache (an interrupted sweep resumes).
        adapter: a task adapter: each score also carries the agreement of the answers.

    Returns columns layer, op_type, output_sqnr_db, output_cosine, gain_db, cycles, rw_kb, error
    (and, with the "quantized" view, quantized_sqnr_db, loss_db), ranked by the gain (or the
    loss); the first rows are the baselines (layer None): all int8, and all float16 for the
    "quantized" view. ``table.attrs`` holds the target layers and the sweep key.
    """
    if view not in VIEWS:
        raise WorkbenchError(f"view must be one of {VIEWS}, not {view!r}.")
    samples = samples if samples is not None else calibration.head(2)
    job = prepare_job(model, config, calibration, samples, adapter)
    known = quantized_candidates(job)
    chosen = pick_candidates(job, known, candidates)
    if not chosen:
        raise WorkbenchError(
            f"No candidate layers: {job.model.name} has no quantized tensor to keep in float16."
        )
    all_fp16 = tuple(sorted(known))
    sets: list[tuple[str, ...]] = [()]
    if view in ("float16", "both"):
        sets += [(c,) for c in chosen]
    if view in ("quantized", "both"):
        sets += [all_fp16, *[_all_but(known, c) for c in chosen]]
    executor = as_executor(executor, jobs)
    scores = dict(zip(sets, evaluate(job, sets, executor, progress=progress and "sensitivity", cache=cache)))
    base = scores[()]
    if base.error:
        raise WorkbenchError(f"The all-int8 model could not be built for the sensitivity sweep: {base.error}")
    ops = {t.name: t.op_type for t in model.tensors}
    rows = [sensitivity_row(None, "(all int8)", base, base)]
    if view in ("quantized", "both"):
        rows.append(sensitivity_row(None, "(all float16)", scores[all_fp16], base))
    for c in chosen:
        row = sensitivity_row(c, ops.get(c), scores.get((c,), Score((c,))), base)  # NaN: not in this view
        if view in ("quantized", "both"):
            only = scores[_all_but(known, c)]
            row["quantized_sqnr_db"] = only.sqnr_db
            row["loss_db"] = scores[all_fp16].sqnr_db - only.sqnr_db
            row["error"] = row["error"] or only.error
        rows.append(row)
    table = pd.DataFrame(rows)
    rank = "gain_db" if view != "quantized" else "loss_db"
    table = pd.concat(
        [table[table.layer.isna()], table[table.layer.notna()].sort_values(rank, ascending=False)],
        ignore_index=True,
    )
    table.attrs.update(key=job.key, view=view, quantized=known)
    return table


def pick_candidates(job: SweepJob, known: list[str], candidates: list[str] | int | None) -> list[str]:
    """Validate the user's candidates (names or a count) against the quantized tensors."""
    if candidates is None:
        return list(known)
    if isinstance(candidates, int):
        if candidates < 1:
            raise WorkbenchError(f"candidates={candidates}: give a positive count, a list of names, or None.")
        return largest_local_drop(job, known, candidates)
    unknown = [c for c in candidates if c not in known]
    if unknown:
        raise WorkbenchError(
            f"Layers {unknown[:5]} are not quantized tensors of {job.model.name}; candidates "
            f"are tensor names such as {known[:3]} (see table.attrs['quantized'] or "
            "workbench.fix.evaluate.quantized_candidates)."
        )
    return list(dict.fromkeys(candidates))


def largest_local_drop(job: SweepJob, known: list[str], count: int) -> list[str]:
    """The ``count`` quantized tensors with the largest local SQNR drop (below their inputs')
    in one float-vs-int8 divergence run: where error is made, not where it is inherited.
    A tensor fused inside a compiled layer takes the drop of the layer boundary it feeds."""

    if count >= len(known):
        return list(known)
    run = compute_divergence(job.model, job.config, job.calibration, job.samples, progress=False)
    table = run.first_divergence()
    drop = dict(zip(table.layer, table.upstream_sqnr_db.clip(upper=MAX_SQNR_DB) - table.sqnr_db_mean))
    boundary = _boundary_of(job.model, set(drop))
    ranked = sorted(known, key=lambda t: -drop.get(boundary.get(t, ""), float("-inf")))
    return ranked[:count]


def _boundary_of(model, compared: set[str]) -> dict[str, str]:
    """Tensor -> the first compared tensor at or downstream of it (its layer's output)."""
    consumers: dict[str, list[str]] = {}
    for node in model.proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).extend(node.output)
    found: dict[str, str] = {}
    for tensor in reversed([t.name for t in model.tensors]):  # downstream first
        if tensor in compared:
            found[tensor] = tensor
        else:
            below = [found[c] for c in consumers.get(tensor, []) if c in found]
            if below:
                found[tensor] = below[0]
    return found


def sensitivity_row(layer, op_type, score: Score, base: Score) -> dict:
    """One row of a sensitivity table: a config's output scores and its gain over ``base``."""
    return {
        "layer": layer,
        "op_type": op_type,
        "output_sqnr_db": score.sqnr_db,
        "output_cosine": score.cosine,
        "gain_db": score.sqnr_db - base.sqnr_db,
        "cycles": score.cycles,
        "rw_kb": score.rw_kb,
        "error": score.error,
        "output_agreement": score.agreement,
    }


def _all_but(known: list[str], layer: str) -> tuple[str, ...]:
    return tuple(sorted(k for k in known if k != layer))
