"""Every remedy beyond float16 on the zoo models, each confirmed on the simulator: int8, the
toolkit's auto_hybrid, its settings (algorithm x per-channel/per-layer), range clipping
found on the emulator, cross-layer equalization and bias correction. Per model one table:
task agreement with float (the zoo entry's adapter), output SQNR, cycles, toolkit builds,
wall time, kept.

    .venv/bin/python benchmarks/bench_remedies.py [--models lcnet-orientation yolov8n] [--samples 16]

Calibration: the bundled calibration set; samples: the zoo entry's labelled set (first N).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.fix.remedies import REMEDIES, try_remedies
from workbench.rknn.config import BuildConfig
from workbench.task.defaults import task_adapter, task_data

MODELS = ("lcnet-orientation", "ppocr-cls", "yolov8n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[m for m in MODELS if m in ZOO])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=REMEDIES)
    args = parser.parse_args()

    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)
    calibration = default_calibration_set()
    for name in args.models:
        entry, model = ZOO[name], load_zoo_model(name)
        config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
        samples = task_data(name).samples.head(args.samples)
        adapter = task_adapter(name, model)
        start = time.perf_counter()
        result = try_remedies(model, config, calibration, samples, adapter, remedies=args.remedies)
        total = time.perf_counter() - start
        print(
            f"\n{name}: {len(samples)} samples ({adapter!r}), calibration {len(calibration)} images, "
            f"total {total:.0f} s"
        )
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
