"""Answers only: the workbench's evaluate() vs a bare loop of the same work, side by side.

The bare loop is what a user would write by hand: one toolkit build in its worker, then
``inference()`` per sample, and onnxruntime on the same samples (preprocessed the same way).
evaluate() adds decoding every answer with the task adapter, the agreement and label
checks, and the per-sample table. Neither captures per-layer tensors. Runs alternate so both
see the same machine state; the build is included in both.

    .venv/bin/python benchmarks/bench_evaluate.py [--model lcnet-orientation] [--runs 3]

Target: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnxruntime as ort

from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.preprocess import load_row
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.runners.markall import infer_row
from workbench.task.defaults import task_adapter, task_data
from workbench.task.evaluate import evaluate


def bare_loop(model, config, calibration, rows) -> None:
    """Build once, then toolkit inference() and onnxruntime on every sample."""
    session = ort.InferenceSession(model.to_bytes(), providers=["CPUExecutionProvider"])
    with ToolkitSession() as toolkit:
        dataset = calibration.write_list(toolkit.workdir / "dataset.txt")
        model_path = model.save(toolkit.workdir / "model.onnx")
        toolkit.call("build", model_path=str(model_path), **config.build_args(model.inputs, dataset))
        for row in rows:
            infer_row(toolkit, model, config, row)
            session.run(None, load_row(row, model.inputs, config.preprocess))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lcnet-orientation")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    entry = ZOO[args.model]
    model = load_zoo_model(entry.name)
    config = BuildConfig(target_platform="rk3588", preprocess={entry.input_name: entry.preprocess})
    calibration = default_calibration_set()
    data, adapter = task_data(entry.name), task_adapter(entry.name, model)
    workbench_s, bare_s = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        evaluate(model, config, calibration, data, adapter, cache=False, progress=False)
        workbench_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_loop(model, config, calibration, data.samples.rows)
        bare_s.append(time.perf_counter() - start)
    w, b = statistics.median(workbench_s), statistics.median(bare_s)
    print(f"model {args.model}, {len(data)} samples, {args.runs} runs each (median):")
    print(f"| evaluate() | {w:.2f} s |")
    print(f"| bare build + inference() + onnxruntime loop | {b:.2f} s |")
    print(f"ratio evaluate / bare = {w / b:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
