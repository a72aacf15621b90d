"""Per-sample time of the workbench's float capture vs bare onnxruntime, side by side.

Both run yolov8n (320x320) with every intermediate tensor as an output and graph
optimisation off; the workbench adds sample loading (decode, resize, normalise) and the
name-keyed result dict. Runs alternate so both see the same machine state.

    .venv/bin/python benchmarks/bench_float_capture.py [--model yolov8n] [--runs 20]

Target: ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort

from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.preprocess import load_sample
from workbench.runners.float import FloatRunner, _with_outputs


def bare_session(model) -> tuple[ort.InferenceSession, list[str]]:
    """onnxruntime alone, all node outputs marked, as a user would write it by hand."""
    known = {t.name: t for t in model.tensors}
    names = [t.name for t in model.tensors if t.producer and t.dtype]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    proto = _with_outputs(model, names, known)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    entry = ZOO[args.model]
    model = load_zoo_model(args.model)
    rows = default_calibration_set().rows
    runner = FloatRunner(model, entry.preprocess)
    session, names = bare_session(model)
    feeds = [{entry.input_name: load_sample(r[0], entry.input_shape, entry.preprocess)} for r in rows]
    # Warm-up both (first runs allocate).
    runner.run(rows[0])
    session.run(names, feeds[0])

    ours, bare = [], []
    for i in range(args.runs):
        k = i % len(rows)
        t = time.perf_counter()
        captured = runner.run(rows[k])
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        session.run(names, feeds[k])
        bare.append(time.perf_counter() - t)
    megabytes = sum(v.nbytes for v in captured.values()) / 1e6
    o, b = statistics.median(ours), statistics.median(bare)
    print(
        f"model {args.model}: {len(captured)} tensors captured, {megabytes:.0f} MB per sample, "
        f"{args.runs} runs each, median seconds per sample"
    )
    print(f"{'workbench FloatRunner.run (file -> tensors)':48} {o:8.3f} s")
    print(f"{'bare onnxruntime, all outputs marked':48} {b:8.3f} s")
    print(f"{'ratio workbench / bare':48} {o / b:8.2f}   (target <= 1.3)")
    assert np.isfinite(o / b)


if __name__ == "__main__":
    main()
