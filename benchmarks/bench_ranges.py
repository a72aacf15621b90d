"""Range setting on held-out samples: ranges chosen on the emulator with half of each zoo
model's labelled samples, judged by the simulator on the other half (the remedies table
chooses and judges on the same samples; this says whether the ranges carry over).

    .venv/bin/python benchmarks/bench_ranges.py [--models ppocr-cls lcnet-orientation] [--samples 16]

Calibration: the bundled calibration photos.
"""

from __future__ import annotations

import argparse
import time

from workbench.datasets import ZOO, CalibrationSet, default_calibration_set, load_zoo_model
from workbench.emulate.runner import EmulatorRunner
from workbench.fix.evaluate import prepare_job, score_config
from workbench.fix.ranges import score_clips, search_ranges
from workbench.rknn.config import BuildConfig
from workbench.task.defaults import task_adapter, task_data

MODELS = ("ppocr-cls", "lcnet-orientation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[m for m in MODELS if m in ZOO])
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    calibration = default_calibration_set()
    for name in args.models:
        entry, model = ZOO[name], load_zoo_model(name)
        config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
        rows = task_data(name).samples.rows[: args.samples]
        half = len(rows) // 2
        chosen_on, judged_on = CalibrationSet(rows[:half]), CalibrationSet(rows[half:])
        start = time.perf_counter()
        search = search_ranges(EmulatorRunner(model, config, calibration), calibration, chosen_on)
        seconds = time.perf_counter() - start
        job = prepare_job(model, config, calibration, judged_on, task_adapter(name, model))
        int8, ranged = score_config(job, config), score_clips(job, search.clips)
        kinds = [c.kind for c in search.clips]
        print(
            f"{name}: chosen on samples 0-{half - 1} ({kinds.count('clip')} clipped, {kinds.count('widen')} "
            f"widened; emulator {search.int8_sqnr_db:.2f} -> {search.sqnr_db:.2f} dB; {seconds:.1f} s); "
            f"judged by the simulator on samples {half}-{len(rows) - 1}: int8 {int8.sqnr_db:.2f} dB, "
            f"agreement {int8.agreement:.0%} -> {ranged.sqnr_db:.2f} dB, agreement {ranged.agreement:.0%}"
        )


if __name__ == "__main__":
    main()
