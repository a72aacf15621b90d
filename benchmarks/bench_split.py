"""Split yolov8n's mixed-range output (boxes 0-320 px and class scores 0-1 under one int8
scale) and measure what it gives back on the simulator: score SQNR, score levels, detection
agreement with float, cycles; plus the wall time of detection, rewrite and verification.

    .venv/bin/python benchmarks/bench_split.py [--samples 12] [--score-threshold 0.25] [--out DIR]

Expected: int8 scores take 2 values (0 and 1.262); split, tens of levels, max <= 1, score
SQNR up by 10+ dB, agreement not lower.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.fix.split_outputs import mixed_range_outputs, split_outputs, verify_split
from workbench.rknn.config import BuildConfig
from workbench.task.adapters.detection import DetectionAdapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12, help="samples of datasets/dataset.txt")
    parser.add_argument("--score-threshold", type=float, default=0.25)
    parser.add_argument("--out", help="write the split model.onnx and join_outputs.py here")
    args = parser.parse_args()

    entry = ZOO["yolov8n"]
    model = load_zoo_model("yolov8n")
    pre = {entry.input_name: entry.preprocess}
    calibration = default_calibration_set()
    start = time.perf_counter()
    (finding,) = mixed_range_outputs(model, calibration, pre)
    split = split_outputs(model, finding)
    rewrite_s = time.perf_counter() - start
    print(finding.explanation)
    if args.out:
        print("written:", split.save(args.out))
    adapter = DetectionAdapter(model, score_threshold=args.score_threshold)
    start = time.perf_counter()
    table = verify_split(
        model, split, BuildConfig(preprocess=pre), calibration, calibration.head(args.samples), adapter
    )
    verify_s = time.perf_counter() - start
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns="score_part").to_string(index=False))
    print(f"detect + rewrite {rewrite_s:.1f} s, verify (2 builds, {args.samples} samples) {verify_s:.1f} s")


if __name__ == "__main__":
    main()
