#!/usr/bin/env python3
"""rknn-workbench board-side runner. Runs ON THE BOARD with numpy and rknn-toolkit-lite2 only.

    python3 board_runner.py JOB_DIR

JOB_DIR holds ``job.json`` ({"samples": [...npz], "inputs": [...]}), ``model.rknn`` and the
samples (one .npz per sample, one array per model input, in the ONNX layout). For each
sample it writes ``out_<i>.npz`` (every model output, in order) and prints a JSON line, so
the PC sees progress and a partial run stays usable.

A *virtual board* (job.json "virtual": true) is a PC standing in for the board in tests:
the toolkit's simulator cannot run a .rknn loaded from a file, so it rebuilds the marked
ONNX model shipped next to the .rknn with the same settings, then runs the same loop.
"""

import json
import os
import sys

import numpy as np


def _runtime(job_dir: str, job: dict):
    if job.get("virtual"):
        from rknn.api import RKNN

        rknn = RKNN(verbose=False)
        _ok(rknn.config(**job["config"]), "config")
        _ok(rknn.load_onnx(model=os.path.join(job_dir, "marked.onnx")), "load_onnx")
        dataset = os.path.join(job_dir, "dataset.txt") if job["do_quantization"] else None
        _ok(rknn.build(do_quantization=job["do_quantization"], dataset=dataset), "build")
        _ok(rknn.init_runtime(), "init_runtime")
        return rknn
    from rknnlite.api import RKNNLite

    rknn = RKNNLite()
    _ok(rknn.load_rknn(os.path.join(job_dir, "model.rknn")), "load_rknn")
    _ok(rknn.init_runtime(), "init_runtime")
    return rknn


def _ok(ret, what: str) -> None:
    if ret != 0:
        raise SystemExit(f"board runner: {what} returned {ret}")


def main() -> None:
    job_dir = sys.argv[1]
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    rknn = _runtime(job_dir, job)
    for i, name in enumerate(job["samples"]):
        with np.load(os.path.join(job_dir, name)) as data:
            arrays = [data[k] for k in job["inputs"]]
        formats = ["nchw" if a.ndim == 4 else None for a in arrays]
        outputs = rknn.inference(inputs=arrays, data_format=formats)
        if outputs is None:
            raise SystemExit(f"board runner: inference returned nothing for {name}")
        np.savez(os.path.join(job_dir, f"out_{i}.npz"), *outputs)
        print(json.dumps({"sample": i, "outputs": len(outputs)}), flush=True)


if __name__ == "__main__":
    main()
