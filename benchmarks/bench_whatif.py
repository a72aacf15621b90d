"""One what-if on yolov8n (320x320): one layer in float16, answered by the emulator vs by
the toolkit (hybrid_quantization_step2 + a simulator inference per sample), measured side
by side in one run from the same step-1 files. Prints both times, their ratio and the
output SQNR (vs the float model) each one gives.

    .venv/bin/python benchmarks/bench_whatif.py [--layer /model.0/act/Mul_output_0] [--samples 4]

Target: time ratio (emulator / toolkit) <= 0.2, output SQNRs within 1 dB.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from workbench.compare.metrics import tensor_metrics
from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.emulate.model import Step1
from workbench.emulate.runner import EmulatorRunner
from workbench.rknn.build import hybrid_step1
from workbench.rknn.config import BuildConfig
from workbench.rknn.session import ToolkitSession
from workbench.runners.float import FloatRunner
from workbench.runners.markall import infer_row

GOAL = 0.2


def _sqnr(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Mean over samples of the output's SQNR against float."""
    return float(np.mean([tensor_metrics(e, g)["sqnr_db"] for e, g in zip(expected, got)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--layer", default="/model.0/act/Mul_output_0", help="tensor to run in float16")
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()

    entry = ZOO[args.model]
    model = load_zoo_model(args.model)
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    calibration = default_calibration_set()
    rows = calibration.rows[: args.samples]
    output = next(iter(model.outputs))
    reference = FloatRunner(model, config.preprocess, keep=[output])
    expected = [reference.run(row)[output] for row in rows]

    with ToolkitSession(timeout=1800) as session:
        start = time.perf_counter()
        files = hybrid_step1(session, model, config, calibration)
        step1_s = time.perf_counter() - start
        start = time.perf_counter()
        emulator = EmulatorRunner(model, config, step1=Step1.read(files))
        build_s = time.perf_counter() - start
        print(f"setup (once per config): step 1 {step1_s:.1f} s, emulator built in {build_s:.2f} s")

        # Warm both up on the plain int8 model (first calls pay one-off costs).
        session.call("hybrid_step2", **files, float_layers=[])
        toolkit_int8 = [infer_row(session, model, config, row)[0] for row in rows]
        emulator_int8 = [emulator.outputs(row)[output] for row in rows]

        start = time.perf_counter()
        session.call("hybrid_step2", **files, float_layers=[args.layer])
        toolkit_got = [infer_row(session, model, config, row)[0] for row in rows]
        toolkit_s = time.perf_counter() - start

    start = time.perf_counter()
    variant = emulator.variant([args.layer])
    emulator_got = [variant.outputs(row)[output] for row in rows]
    emulator_s = time.perf_counter() - start

    ratio = emulator_s / toolkit_s
    toolkit_db, emulator_db = _sqnr(expected, toolkit_got), _sqnr(expected, emulator_got)
    print(f"what-if: {args.layer} in float16, {args.model}, {len(rows)} samples")
    print(f"  toolkit  step2 + inference: {toolkit_s:6.2f} s   output SQNR {toolkit_db:6.2f} dB")
    print(f"  emulator variant + runs:    {emulator_s:6.2f} s   output SQNR {emulator_db:6.2f} dB")
    print(
        f"  int8 (no what-if):          toolkit {_sqnr(expected, toolkit_int8):6.2f} dB, "
        f"emulator {_sqnr(expected, emulator_int8):6.2f} dB"
    )
    print(f"ratio emulator/toolkit: {ratio:.3f} (goal <= {GOAL}) {'PASS' if ratio <= GOAL else 'FAIL'}")


if __name__ == "__main__":
    main()
