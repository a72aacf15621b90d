"""Mixed-precision search vs the toolkit's build(auto_hybrid=True) on yolov8n (320x320),
side by side in one run: builds, wall time, the model output's SQNR (vs the float model,
on the same samples), float16 tensors and the compile table's cycles.

    .venv/bin/python benchmarks/bench_search.py [--candidates 24] [--samples 2] [--jobs 2]

The search's target is the output SQNR auto_hybrid reaches (or --target): the question is
what it costs each to get there. The sweep cache is bypassed so both start cold.
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
    parser.add_argument("--candidates", type=int, default=24, help="layers swept (largest local error)")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cos-thresh", type=float, default=0.98, help="auto_hybrid_cos_thresh")
    parser.add_argument("--target", type=float, help="output SQNR target (dB); default: auto_hybrid's")
    args = parser.parse_args()

    entry, model = zoo_entry(args.model), load_zoo_model(args.model)
    calibration = default_calibration_set()
    samples = calibration.head(args.samples)
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    job = prepare_job(model, config, calibration, samples)

    start = time.perf_counter()
    auto = score_config(job, replace(config, auto_hybrid=True, auto_hybrid_cos_thresh=args.cos_thresh))
    auto_s = time.perf_counter() - start
    target = args.target if args.target is not None else auto.sqnr_db

    start = time.perf_counter()
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
    result = search_mixed_precision(
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
    search_s = time.perf_counter() - start

    print(
        f"{args.model}: {args.samples} sample(s), {args.candidates} candidates, {args.jobs} jobs, "
        f"target {target:.2f} dB"
    )
    print(
        f"{'method':<28}{'builds':>8}{'wall s':>9}{'out SQNR dB':>13}{'cosine':>10}"
        f"{'float16':>9}{'cycles':>10}"
    )
    rows = [
        ("all int8", 1, None, result.baseline),
        (f"auto_hybrid (cos {args.cos_thresh})", 1, auto_s, auto),
        ("workbench search", result.builds + 1, search_s, result.score),  # +1: the divergence run
    ]
    for name, builds, wall, score in rows:
        wall_text = f"{wall:9.1f}" if wall is not None else f"{'-':>9}"
        print(
            f"{name:<28}{builds:>8}{wall_text}{score.sqnr_db:>13.2f}{score.cosine:>10.5f}"
            f"{len(score.layers):>9}{score.cycles:>10}"
        )
    print(f"search met target: {result.met}; float16 layers: {', '.join(result.layers) or '(none)'}")
    print(f"wall ratio search / auto_hybrid: {search_s / auto_s:.1f}")


if __name__ == "__main__":
    main()
