"""Per-layer sensitivity: how much of the model output's accuracy each quantized layer
costs, measured by keeping only that layer in float16 (the toolkit's hybrid quantization).

One ``hybrid_quantization_step1`` gives the quantized tensors and their parameters; each
candidate is then one ``hybrid_quantization_step2`` with that tensor in
``custom_quantize_layers`` and one simulator inference per sample. Candidates run in
parallel toolkit workers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workbench.compare.metrics import tensor_metrics
from workbench.errors import ToolkitError, WorkbenchError
from workbench.rknn.session import ToolkitSession
from workbench.runners.float import FloatRunner
from workbench.runners.markall import infer_row


class _Worker:
    """One toolkit session that has run step1 and can score any float16 layer set."""

    def __init__(self, model, config, calibration):
        self.session = ToolkitSession(timeout=1800)
        folder = self.session.workdir
        dataset = calibration.write_list(folder / "dataset.txt")
        self.files, _ = self.session.call(
            "hybrid_step1",
            model_path=str(model.save(folder / "model.onnx")),
            config=config.toolkit_kwargs(model.inputs),
            dataset=str(dataset),
        )

    def outputs(self, model, config, rows, float_layers: list[str]) -> list[list[np.ndarray]]:
        self.session.call("hybrid_step2", **self.files, float_layers=float_layers)
        return [infer_row(self.session, model, config, row) for row in rows]


def quantized_tensors(cfg_path: str | Path, model) -> list[str]:
    """ONNX tensors the toolkit quantizes (int8 in the .quantization.cfg), in graph order."""
    params = yaml.safe_load(Path(cfg_path).read_text()).get("quantize_parameters") or {}
    known = {t.name for t in model.tensors if t.producer}
    found = {name for name, p in params.items() if p.get("scale") and name in known}
    return [t.name for t in model.tensors if t.name in found]


def sensitivity(
    model,
    config,
    calibration,
    samples=None,
    *,
    candidates: list[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> pd.DataFrame:
    """Output SQNR with each candidate tensor alone kept in float16, ranked by the gain over
    the all-int8 model. A candidate the toolkit fails on is recorded with its error.

    Returns columns: layer, op_type, output_sqnr_db, gain_db, error; the first row is the
    all-int8 baseline (layer None).
    """
    from tqdm.auto import tqdm

    samples = samples if samples is not None else calibration.head(2)
    reference = FloatRunner(model, config.preprocess, keep=list(model.outputs))
    expected = [[reference.run(row)[name] for name in model.outputs] for row in samples.rows]
    local = threading.local()
    workers: list[_Worker] = []
    lock = threading.Lock()

    def worker() -> _Worker:
        if getattr(local, "worker", None) is None:
            local.worker = _Worker(model, config, calibration)
            with lock:
                workers.append(local.worker)
        return local.worker

    def score(layers: list[str]) -> tuple[float, str]:
        try:
            got = worker().outputs(model, config, samples.rows, layers)
        except ToolkitError as err:
            local.worker = None  # a failed step2 may leave the toolkit unusable: fresh worker next
            return float("nan"), str(err).splitlines()[0]
        sqnr = [
            min(tensor_metrics(e, g)["sqnr_db"] for e, g in zip(exp, out)) for exp, out in zip(expected, got)
        ]
        return float(np.mean(sqnr)), ""

    try:
        baseline, error = score([])
        if error:
            raise WorkbenchError(f"The all-int8 model could not be built for the sensitivity sweep: {error}")
        known = quantized_tensors(workers[0].files["cfg"], model)
        if candidates is None:
            candidates = known
        unknown = [c for c in candidates if c not in known]
        if unknown:
            raise WorkbenchError(
                f"Layers {unknown[:5]} are not quantized tensors of {model.name}; candidates "
                f"are tensor names such as {known[:3]}."
            )
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            scores = list(
                tqdm(
                    pool.map(lambda c: score([c]), candidates),
                    total=len(candidates),
                    desc="sensitivity",
                    disable=not progress,
                )
            )
    finally:
        for w in workers:
            w.session.close()
    ops = {t.name: t.op_type for t in model.tensors}
    rows = [{"layer": None, "op_type": "(all int8)", "output_sqnr_db": baseline, "gain_db": 0.0, "error": ""}]
    for layer, (value, err) in zip(candidates, scores):
        rows.append(
            {
                "layer": layer,
                "op_type": ops.get(layer),
                "output_sqnr_db": value,
                "gain_db": value - baseline,
                "error": err,
            }
        )
    table = pd.DataFrame(rows)
    return pd.concat(
        [table.iloc[:1], table.iloc[1:].sort_values("gain_db", ascending=False)], ignore_index=True
    )
