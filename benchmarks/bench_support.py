"""Operator-support checks on yolov8n: static check time, and the compile check vs a bare
toolkit build of the same model, measured side by side in one run.

    .venv/bin/python benchmarks/bench_support.py [--model yolov8n] [--runs 3]

The static check probes unseen variants and fused patterns on demand (cached): its first call
runs in an empty probe cache, so it pays them; the calls after it read the cache.
Targets: static check of a cached model under 1 s; compile check / bare build <= 1.2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench.datasets import cache_dir, load_zoo_model
from workbench.support.compile import _random_dataset, compile_check
from workbench.support.static import static_check

BARE_BUILD = """
import sys
from rknn.api import RKNN
rknn = RKNN(verbose=True)
rknn.config(target_platform="rk3588")
assert rknn.load_onnx(model=sys.argv[1]) == 0
assert rknn.build(do_quantization=True, dataset=sys.argv[2]) == 0
"""


def bare_build(model_path: Path, dataset: Path) -> float:
    """A fresh Python process running the toolkit directly, as a user script would."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", BARE_BUILD, str(model_path), str(dataset)], check=True, capture_output=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = load_zoo_model(args.model)

    with tempfile.TemporaryDirectory() as fresh:  # an empty probe cache, the zoo models kept
        (Path(fresh) / "models").symlink_to(cache_dir() / "models")
        before = os.environ.get("RKNN_WORKBENCH_CACHE")
        os.environ["RKNN_WORKBENCH_CACHE"] = fresh
        try:
            first = _timed(lambda: static_check(model))
            static = [_timed(lambda: static_check(model)) for _ in range(args.runs)]
        finally:
            if before is None:
                del os.environ["RKNN_WORKBENCH_CACHE"]
            else:
                os.environ["RKNN_WORKBENCH_CACHE"] = before

    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "model.onnx")
        dataset = _random_dataset(model.inputs, Path(tmp))
        for _ in range(args.runs):
            ours.append(_timed(lambda: compile_check(model, "rk3588")))
            bare.append(bare_build(path, dataset))
    s, o, b = statistics.median(static), statistics.median(ours), statistics.median(bare)
    print(f"model {args.model} ({len(model.proto.graph.node)} nodes), median of {args.runs} runs")
    print(f"{'static check, first call (on-demand probes)':44} {first:8.3f} s   (paid once)")
    print(f"{'static check, probes cached':44} {s:8.3f} s   (target < 1 s)")
    print(f"{'compile check (workbench, worker process)':44} {o:8.3f} s")
    print(f"{'bare toolkit build (python -c, same model)':44} {b:8.3f} s")
    print(f"{'ratio compile check / bare build':44} {o / b:8.2f}   (target <= 1.2)")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
