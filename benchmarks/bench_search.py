"""Mixed-precision search on yolov8n (320x320), to the same target by both engines, side by
side in one run: today's toolkit search (a toolkit build per config) and the emulator search
(whole layers ranked and searched on the emulator, the answer built with the toolkit),
next to the toolkit's build(auto_hybrid=True).

    .venv/bin/python benchmarks/bench_search.py [--quick] [--candidates N] [--samples 2] [--jobs 2]

The target is 1 dB above the int8 output SQNR (or --target). Per method: toolkit builds,
wall time, the output SQNR and cosine (vs the float model, on the same samples) on the
simulator (the emulator search's: the toolkit's confirmation, not the emulator's own),
float16 tensors and the compile table's cycles. Each search's final config is built once
more after the timing (build with float_layers) and scored on the simulator ("confirmed").
The sweep cache is bypassed and the emulator search runs its own step 1, so both start
cold. Goal: emulator / toolkit wall time <= 0.1. ``--quick``: the toolkit search sweeps 16
candidates and there are no auto_hybrid rows.
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

GOAL = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument(
        "--quick", action="store_true", help="toolkit search on 16 candidates, no auto_hybrid"
    )
    parser.add_argument(
        "--candidates", type=int, default=None, help="toolkit search: layers swept, largest local error first"
    )
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--cos-thresh", type=float, nargs="*", default=[0.98, 0.999], help="auto_hybrid_cos_thresh values"
    )
    parser.add_argument("--target", type=float, help="output SQNR target (dB); default: int8 + 1 dB")
    args = parser.parse_args()
    candidates = 16 if args.quick and args.candidates is None else args.candidates

    entry, model = zoo_entry(args.model), load_zoo_model(args.model)
    calibration = default_calibration_set()
    samples = calibration.head(args.samples)
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    job = prepare_job(model, config, calibration, samples)

    rows = [("all int8", 1, *_timed(lambda: score_config(job, config)))]
    for thresh in [] if args.quick else args.cos_thresh:
        variant = replace(config, auto_hybrid=True, auto_hybrid_cos_thresh=thresh)
        rows.append((f"auto_hybrid (cos {thresh})", 1, *_timed(lambda v=variant: score_config(job, v))))
    target = args.target if args.target is not None else rows[0][3].sqnr_db + 1.0

    def toolkit():
        ranking = sensitivity(
            model,
            config,
            calibration,
            samples,
            candidates=candidates,
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
            engine="toolkit",
            ranking=ranking,
            jobs=args.jobs,
            cache=False,
            progress=False,
        )

    def emulator():
        return search_mixed_precision(
            model,
            config,
            calibration,
            samples,
            target_sqnr_db=target,
            engine="emulator",
            cache=False,
            progress=False,
        )

    searches = {}
    for name, run in (("toolkit search", toolkit), ("emulator search", emulator)):
        wall, result = _timed(run)
        searches[name] = (wall, result)
        extra = 1 if name == "toolkit search" and candidates is not None else 0  # the divergence run
        rows.append((name, result.builds + extra, wall, result.score))

    print(f"{args.model}: {args.samples} sample(s), {args.jobs} jobs, target {target:.2f} dB")
    print(
        f"{'method':<28}{'builds':>8}{'wall s':>9}{'out SQNR dB':>13}{'cosine':>10}"
        f"{'float16':>9}{'cycles':>10}{'rw KB':>9}"
    )
    for name, builds, wall, score in rows:
        print(
            f"{name:<28}{builds:>8}{wall:9.1f}{score.sqnr_db:>13.2f}{score.cosine:>10.5f}"
            f"{len(score.layers):>9}{_int(score.cycles):>10}{_int(score.rw_kb):>9}"
        )
    for name, (_wall, result) in searches.items():
        confirmed = score_config(job, result.config)
        said = f", the emulator said {result.emulated.sqnr_db:.2f} dB" if result.emulated else ""
        print(
            f"{name}: met {result.met} ({result.engine}); confirmed on the simulator after the run: "
            f"{confirmed.sqnr_db:.2f} dB, meets target {confirmed.sqnr_db >= target}{said}; "
            f"{len(result.layers)} float16 tensors: {', '.join(result.layers) or '(none)'}"
        )
        for note in result.notes:
            print(f"  note: {note}")
    ratio = searches["emulator search"][0] / searches["toolkit search"][0]
    print(
        f"wall ratio emulator / toolkit search: {ratio:.3f} (goal <= {GOAL}) "
        + ("PASS" if ratio <= GOAL else "FAIL")
    )


def _int(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


if __name__ == "__main__":
    main()
