"""What-ifs at emulator speed: a compiled layer kept in float16, scored on the model's outputs.

The unit of a float16 what-if is the whole compiled layer (a conv and the activation or Add
fused after it), as the toolkit runs it: keeping only the layer's output tensor in float16
breaks the fusion and measures something else (see workbench.emulate.model). A score is the
one ``workbench.fix.evaluate.Score`` computes from a toolkit build (mean over samples of the
worst output's SQNR against float; the share of answers equal to float's with a task
adapter), so an emulator what-if and its toolkit confirmation read side by side.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from workbench.compare.metrics import tensor_metrics
from workbench.errors import EmulatorError


@dataclass(frozen=True)
class WhatIf:
    """The model outputs of one emulated variant against float."""

    layers: tuple[str, ...]  #: the tensors in float16 (toolkit names)
    sqnr_db: float  #: mean over samples of the worst output's SQNR (dB)
    agreement: float | None  #: share of answers equal to float's (None: no task adapter)
    seconds: float  #: wall time of the variant: graph edit, session and every sample


def layer_unit(emulator, layer: str) -> list[str]:
    """The tensors (toolkit names) of the compiled layer whose output is ``layer``: its
    output and the tensors fused inside it (e.g. the conv output before its activation),
    producers first. ``layer`` is an ONNX tensor name or a toolkit one.

    Raises:
        EmulatorError: ``layer`` is no layer boundary of the toolkit's graph (it is fused
            inside a layer, folded away, or not a tensor of the model).
    """
    toolkit = {onnx_name: name for name, onnx_name in emulator.names.items()}.get(layer, layer)
    emulation = emulator.emulation
    if toolkit not in set(emulation.boundaries) | set(emulator.output_names):
        raise EmulatorError(
            f"{layer} is no compiled layer's output in the toolkit's graph (fused inside a layer or "
            "folded away): pick the layer downstream that contains it."
        )
    producers = {o: n for n in emulator.step1.proto.graph.node for o in n.output}
    unit, todo = [], [toolkit]
    while todo:
        tensor = todo.pop()
        unit.insert(0, tensor)
        node = producers.get(tensor)
        # a fused input is computed inside this layer (emulation.fused: True when unrounded)
        todo += [i for i in (node.input if node is not None else []) if emulation.fused.get(i)]
    return unit


def score_variant(runner, job, layers: Sequence[str] = ()) -> WhatIf:
    """Score ``runner.variant(layers)`` (an EmulatorRunner) on a sweep job's samples.

    Args:
        runner: the EmulatorRunner of the job's model, config and calibration.
        job: a ``workbench.fix.evaluate.SweepJob`` (its samples, float outputs, adapter and
            float answers), as ``prepare_job`` makes it.
        layers: tensors (toolkit names) in float16; () scores the plain int8 model.
    Raises:
        EmulatorError: a layer is not a tensor of the toolkit's graph.
    """
    start = time.perf_counter()
    variant = runner.variant(layers) if layers else runner
    got = [variant.outputs(row) for row in job.samples.rows]
    sqnr = [
        min(tensor_metrics(e, out[name])["sqnr_db"] for name, e in zip(job.model.outputs, expected))
        for expected, out in zip(job.expected, got)
    ]
    agreement = _agreement(job, got) if job.adapter is not None else None
    seconds = time.perf_counter() - start
    return WhatIf(tuple(layers), float(np.mean(sqnr)) if sqnr else math.nan, agreement, seconds)


def _agreement(job, got: list[dict[str, np.ndarray]]) -> float:
    """Share of samples whose decoded answer is float's (an undecodable one disagrees)."""
    agree = []
    for reference, outputs in zip(job.answers, got):
        try:
            answer = job.adapter.decode({k: np.asarray(v, np.float32) for k, v in outputs.items()})
            agree.append(bool(job.adapter.agreement(reference, answer)["agree"]))
        except Exception:  # e.g. NaN outputs: a wrong answer, not a failed what-if
            agree.append(False)
    return float(np.mean(agree)) if agree else math.nan
