"""Per-layer divergence on yolov8n (320x320): the workbench's default mode (mark-all) vs a
loop of the toolkit's own accuracy_analysis (one call per sample, then parsing its text
dumps), measured side by side in one run: time per sample, peak disk, peak RSS.

    .venv/bin/python benchmarks/bench_divergence.py [--samples 8]

Targets: time ratio <= 0.5; peak disk <= 50 MB in mark-all mode; peak RSS for 16 samples
within 1.2x of 2 samples.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from workbench.compare.divergence import compute_divergence
from workbench.datasets import ZOO, CalibrationSet, default_calibration_set, load_zoo_model
from workbench.rknn.config import BuildConfig

BASELINE = """
import glob, os, sys
import numpy as np
from rknn.api import RKNN
model, dataset, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [l.split()[0] for l in open(dataset).read().splitlines() if l.strip()]
rknn = RKNN(verbose=False)
rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform="rk3588")
assert rknn.load_onnx(model=model) == 0
assert rknn.build(do_quantization=True, dataset=dataset) == 0
for i in range(n):
    folder = os.path.join(out, f"snapshot_{i}")
    assert rknn.accuracy_analysis(inputs=[rows[i % len(rows)]], output_dir=folder) == 0
    tensors = {p: np.loadtxt(p) for p in glob.glob(os.path.join(folder, "simulator", "*.txt"))}
    golden = {p: np.loadtxt(p) for p in glob.glob(os.path.join(folder, "golden", "*.txt"))}
"""


class Monitor:
    """Samples peak RSS of a process tree and peak size of a folder every 0.2 s."""

    def __init__(self, pid: int, folder: Path):
        self.pid, self.folder = pid, folder
        self.rss = self.disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                self.rss = max(self.rss, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self.disk = max(self.disk, _folder_size(self.folder))
            time.sleep(0.2)


def _folder_size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            pass
    return total


def ours(model, config, calibration, samples: CalibrationSet) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp, Monitor(psutil.Process().pid, Path(tmp)) as mon:
        started = time.perf_counter()
        compute_divergence(model, config, calibration, samples, workdir=tmp, cache=False, progress=False)
        elapsed = time.perf_counter() - started
    return elapsed, mon.disk, mon.rss


def baseline(model, calibration, n: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = model.save(Path(tmp) / "model.onnx")
        dataset = calibration.write_list(Path(tmp) / "dataset.txt")
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", BASELINE, str(path), str(dataset), tmp, str(n)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )
        with Monitor(proc.pid, Path(tmp)) as mon:
            if proc.wait() != 0:
                raise SystemExit("baseline failed")
        elapsed = time.perf_counter() - started
    return elapsed, mon.disk, mon.rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    entry = ZOO["yolov8n"]
    model = load_zoo_model("yolov8n")
    calibration = default_calibration_set()
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    n = args.samples

    def rows(k: int) -> CalibrationSet:
        return CalibrationSet([calibration.rows[i % len(calibration)] for i in range(k)], calibration.source)

    t_ours, disk_ours, rss_ours = ours(model, config, calibration, rows(n))
    t_base, disk_base, rss_base = baseline(model, calibration, n)
    _, _, rss_2 = ours(model, config, calibration, rows(2))
    _, _, rss_16 = ours(model, config, calibration, rows(16))
    mb = 1e6
    print(f"yolov8n 320x320, {n} samples, wall time including the build(s); one run, same machine")
    print(f"{'':42} {'s/sample':>9} {'peak disk MB':>13} {'peak RSS MB':>12}")
    print(
        f"{'workbench (mark-all, default)':42} {t_ours / n:9.2f} {disk_ours / mb:13.1f} {rss_ours / mb:12.0f}"
    )
    label = "toolkit accuracy_analysis loop + parsing"
    print(f"{label:42} {t_base / n:9.2f} {disk_base / mb:13.1f} {rss_base / mb:12.0f}")
    print(f"time ratio workbench / toolkit loop: {t_ours / t_base:.2f}   (target <= 0.5)")
    print(f"peak disk, mark-all: {disk_ours / mb:.1f} MB   (target <= 50 MB)")
    ratio = rss_16 / rss_2
    print(f"peak RSS 16 / 2 samples: {ratio:.2f}   (target <= 1.2; {rss_16 / mb:.0f} / {rss_2 / mb:.0f} MB)")


if __name__ == "__main__":
    main()
