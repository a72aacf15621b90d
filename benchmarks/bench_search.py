"""Mixed-precision search vs the toolkit's build(auto_hybrid=True) on yolov8n (320x320),
side by side in one run: builds, wall time, the model output's SQNR (vs the float model,
on the same samples), float16 tensors and the compile table's cycles.

    .venv/bin/python benchmarks/bench_search.py [--candidates N] [--samples 2] [--jobs 2]

The search's target is 1 dB above the int8 output (or --target); auto_hybrid runs at each
--cos-thresh. "float16" counts the tensors each kept in float16 (auto_hybrid: as its build
log names them). The sweep cache is bypassed so every method starts cold.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from workbench.datasets import default_calibration_set, load_zoo_model, zoo_entry
from workbench.fix.evaluate import prepare_job, score_config
from workbench.fix.search import search_mixed_precision
from workbench.fix.sensitivity import sensitivity
from workbench.rknn.config import BuildConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument(
        "--candidates", type=int, default=None, help="layers swept, largest local error first (default: all)"
    )
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cos-thresh", type=float, nargs="+", default=[0.98, 0.999], help="auto_hybrid_cos_thresh values"
    )
    parser.add_argument("--target", type=float, help="output SQNR target (dB); default: int8 + 1 dB")
    args = parser.parse_args()

    entry, model = zoo_entry(args.model), load_zoo_model(args.model)
    calibration = default_calibration_set()
    samples = calibration.head(args.samples)
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    job = prepare_job(model, config, calibration, samples)

    rows = [("all int8", 1, *_timed(lambda: score_config(job, config)))]
    for thresh in args.cos_thresh:
        variant = replace(config, auto_hybrid=True, auto_hybrid_cos_thresh=thresh)
        rows.append((f"auto_hybrid (cos {thresh})", 1, *_timed(lambda v=variant: score_config(job, v))))
    target = args.target if args.target is not None else rows[0][3].sqnr_db + 1.0

    def search():
        ranking = sensitivity(
            model,
            config,
            calibration,
            samples,
            candidates=args.candidates,
            jobs=args.jobs,
            cache=False,
            progress=False,
        )
        return search_mixed_precision(
            model,
            config,
            calibration,
            samples,
            target_sqnr_db=target,
            ranking=ranking,
            jobs=args.jobs,
            cache=False,
            progress=False,
        )

    wall, result = _timed(search)
    rows.append(("workbench search", result.builds + 1, wall, result.score))  # +1: the divergence run

    print(
        f"{args.model}: {args.samples} sample(s), {len(result.ranking) - 1} candidates, {args.jobs} jobs, "
        f"target {target:.2f} dB"
    )
    print(
        f"{'method':<28}{'builds':>8}{'wall s':>9}{'out SQNR dB':>13}{'cosine':>10}"
        f"{'float16':>9}{'cycles':>10}{'rw KB':>9}"
    )
    for name, builds, wall, score in rows:
        print(
            f"{name:<28}{builds:>8}{wall:9.1f}{score.sqnr_db:>13.2f}{score.cosine:>10.5f}"
            f"{len(score.layers):>9}{score.cycles:>10}{score.rw_kb:>9.0f}"
        )
    print(f"search met target: {result.met}; float16 layers: {', '.join(result.layers) or '(none)'}")
    auto = rows[1]
    print(f"wall ratio search / {auto[0]}: {wall / auto[2]:.1f}")


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


if __name__ == "__main__":
    main()
