"""Snapshot vs guarded mark-all on one sample: agreement of per-layer cosine, guard findings, origins.

.venv/bin/python benchmarks/snapshot_vs_markall.py MODEL   # a zoo name or a workbench.synthetic name
"""

import json
import sys
import time

from workbench.compare.divergence import compute_divergence
from workbench.datasets import ZOO, CalibrationSet, datasets_dir, load_zoo_model
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.synthetic import SYNTHETIC

name = sys.argv[1]
if name in ZOO:
    model, pre = load_zoo_model(name), {ZOO[name].input_name: ZOO[name].preprocess}
else:
    model, pre = OnnxModel.from_proto(SYNTHETIC[name]()), {"x": Preprocess((127.5,) * 3, (64.0,) * 3)}
config = BuildConfig(preprocess=pre)
calibration = CalibrationSet.from_list(datasets_dir() / "dataset_small.txt")
runs, seconds = {}, {}
for mode in ("snapshot", "mark-all"):
    start = time.time()
    runs[mode] = compute_divergence(
        model, config, calibration, calibration.head(1), backend=mode, cache=False, progress=False
    )
    seconds[mode] = round(time.time() - start, 1)
snap, mark = (
    runs[m].table[runs[m].table.status == "compared"].set_index("layer") for m in ("snapshot", "mark-all")
)
own = mark[
    [
        ("snapshot" not in f.split(",")) and ("marking-changed-quantization" not in f.split(","))
        for f in mark.flag
    ]
]
common = own.index.intersection(snap.index)
diff = (own.loc[common, "cosine"] - snap.loc[common, "cosine"]).abs()
guard = runs["mark-all"].meta["guard"]
print(
    json.dumps(
        {
            "model": name,
            "seconds": seconds,
            "common_layers": len(common),
            "within_1e-4": int((diff < 1e-4).sum()),
            "fraction": round(float((diff < 1e-4).mean()), 4),
            "max_diff": float(diff.max()),
            "worst": diff.sort_values().tail(3).round(6).to_dict(),
            "from_snapshot_in_markall": int(sum("snapshot" in f.split(",") for f in mark.flag)),
            "guard": {k: (v if not isinstance(v, dict) else sorted(v)) for k, v in guard.items()},
            "origins_markall": runs["mark-all"]
            .origins(5)[["layer", "share", "single_cos_mean"]]
            .round(4)
            .to_dict("records"),
            "origins_snapshot": runs["snapshot"]
            .origins(5)[["layer", "share", "single_cos_mean"]]
            .round(4)
            .to_dict("records"),
        },
        indent=1,
        default=str,
    )
)
if name == "yolov8n":
    logits = [f"/model.22/cv3.{i}/cv3.{i}.2/Conv_output_0" for i in range(3)]
    for mode, t in (("snapshot", snap), ("mark-all", mark)):
        print(
            mode,
            {
                layer: (round(float(t.loc[layer, "sqnr_db"]), 2), t.loc[layer, "flag"])
                if layer in t.index
                else "absent"
                for layer in logits
            },
        )
    print(json.dumps(guard, indent=1, default=str))
