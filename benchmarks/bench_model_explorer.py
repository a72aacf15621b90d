"""Model Explorer overlays on yolov8n (a real simulator run, 2 samples) and on a
1000-node chain of Conv/Relu/Add blocks (a divergence table made up in code): the time of
node_data + write_node_data, and whether the server converts the model and serves the
overlays the way its web app asks for them (convert command, read_text_file).

    .venv/bin/python benchmarks/bench_model_explorer.py [--blocks 333]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import COLUMNS, Divergence
from workbench.compare.rows import compared_parents
from workbench.datasets import ZOO, default_calibration_set, load_zoo_model
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.viz import model_explorer as me


def chain(blocks: int) -> onnx.ModelProto:
    """``blocks`` x (1x1 Conv, Relu, Add with the block's input): 3 nodes per block."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for b in range(blocks):
        w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 4, 1, 1)).astype(np.float32), f"w{b}")
        inits.append(w)
        nodes += [
            helper.make_node("Conv", [prev, w.name], [f"c{b}"], name=f"/block{b}/conv"),
            helper.make_node("Relu", [f"c{b}"], [f"r{b}"], name=f"/block{b}/relu"),
            helper.make_node("Add", [f"r{b}", prev], [f"a{b}"], name=f"/block{b}/add"),
        ]
        prev = f"a{b}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def made_up_run(model: OnnxModel, samples: int = 2) -> Divergence:
    """Every tensor compared; SQNR drifting down the chain from 45 to 5 dB, with noise."""
    rng = np.random.default_rng(1)
    tensors = [t for t in model.tensors if t.producer]
    rows = []
    for i, t in enumerate(tensors):
        for s in range(samples):
            rows.append(
                {
                    **dict.fromkeys(COLUMNS, np.nan),
                    "index": t.index,
                    "layer": t.name,
                    "op_type": t.op_type,
                    "rknn_layer": t.name,
                    "sample": s,
                    "backend": "simulator",
                    "status": "compared",
                    "cosine": 0.99,
                    "sqnr_db": 45 - 40 * i / len(tensors) + rng.normal(0, 3),
                    "flag": "",
                }
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    parents = compared_parents(model, {t.name for t in tensors})
    return Divergence(table, {"parents": parents, "config": {"target_platform": "rk3588"}})


def measure(name: str, model: OnnxModel, result: Divergence, folder: Path, port: int) -> None:
    t0 = time.perf_counter()
    data = me.node_data(result, model)
    t1 = time.perf_counter()
    paths = me.write_node_data(result, folder, model)
    t2 = time.perf_counter()
    served = me.model_file(model) or folder / "model.onnx"
    command = {
        "cmdId": "convert",
        "extensionId": me.ADAPTER_ID,
        "modelPath": str(served),
        "settings": {},
        "deleteAfterConversion": False,
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/apipost/v1/send_command",
        data=json.dumps(command).encode(),
        headers={"Content-Type": "application/json"},
    )
    t3 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as r:
        body = r.read()
        status = r.status
    t4 = time.perf_counter()
    ids = {n["id"] for n in json.loads(body)["graphs"][0]["nodes"]}
    print(f"\n{name}: {len(model.proto.graph.node)} nodes, {len(result.table)} table rows")
    print(f"  node_data        {1000 * (t1 - t0):8.1f} ms")
    print(f"  write_node_data  {1000 * (t2 - t1):8.1f} ms (node_data again + 3 files)")
    size = f"{len(body) / 1e6:.2f} MB"
    print(f"  convert (server) {1000 * (t4 - t3):8.1f} ms, HTTP {status}, {size}, {len(ids)} node ids")
    assert list(data) == [p.name[len("node_data_") : -len(".json")] for p in paths]
    for path in paths:
        url = f"http://127.0.0.1:{port}/api/v1/read_text_file?path={quote(str(path))}"
        with urllib.request.urlopen(url, timeout=60) as r:
            content = json.loads(json.loads(r.read())["content"])
        keys = set(content["results"])
        print(
            f"  {path.name:26s} {path.stat().st_size / 1e3:7.1f} kB, {len(keys)} nodes, "
            f"all ids of the converted graph: {keys <= ids}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=333)
    args = parser.parse_args()
    t = time.perf_counter()
    port = me.start_server()
    print(f"server started in {time.perf_counter() - t:.2f} s on 127.0.0.1:{port}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            entry = ZOO["yolov8n"]
            yolo = load_zoo_model("yolov8n")
            calibration = default_calibration_set()
            config = BuildConfig(target_platform="rk3588", preprocess={entry.input_name: entry.preprocess})
            run = compute_divergence(yolo, config, calibration, calibration.head(2), progress=False)
            measure("yolov8n (simulator, 2 samples)", yolo, run, Path(tmp) / "yolo", port)
            big = OnnxModel.from_proto(chain(args.blocks))
            name = f"chain of {args.blocks} Conv/Relu/Add blocks (made-up SQNR)"
            measure(name, big, made_up_run(big), Path(tmp) / "chain", port)
    finally:
        me.stop_server()


if __name__ == "__main__":
    main()
