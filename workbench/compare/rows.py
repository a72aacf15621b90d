"""Rows of the Divergence table: one backend's tensors of one sample against the float
model's, laid out alike (the toolkit's layouts and names mapped back to ONNX), and the
marks a run adds to them (the single-layer snapshot, the mark-all guard's flags)."""

from __future__ import annotations

import itertools

import numpy as np

from workbench.compare.metrics import METRICS, tensor_metrics
from workbench.compare.result import MARKING_CHANGED
from workbench.rknn.names import align, base_name
from workbench.runners.base import Measurement

#: Flag of rows of a boundary left unmarked because marking it changed its quantization.
LEFT_UNMARKED = "left-unmarked"


def layer_rows(
    tensors,
    reference: dict[str, np.ndarray],
    quantized: dict[str, np.ndarray],
    toolkit_rows: dict | None = None,
    *,
    sample: int,
    backend: str,
    golden: dict[str, np.ndarray] | None = None,
    constants: set[str] | None = None,
) -> list[dict]:
    """Rows of the Divergence table for one sample of one backend.

    Args:
        tensors: the model's TensorInfo list (topological order).
        reference: float tensors by ONNX name.
        quantized: the backend's tensors by its own layer names.
        toolkit_rows: the toolkit's ErrorRow per layer name, when it gave them.
        golden: the toolkit's own float tensors by its layer names (snapshot mode): the
            layout (squeeze/unsqueeze + axis order) under which a layer's golden dump equals
            the float tensor is the one its quantized tensor is read in; a layer for which
            none does is "unaligned", never compared. Without it, only a layout the shapes
            alone make unique is used (see ``_layout``).
    """
    toolkit_rows = toolkit_rows or {}
    # Layers the toolkit lists without numbers were fused into a neighbour: their dumps
    # (if any) do not stand for the ONNX tensor.
    usable = [name for name in quantized if name not in toolkit_rows or toolkit_rows[name].has_dump]
    mapping = align(usable, reference)
    rows = []
    for t in tensors:
        if t.name not in reference:
            continue
        layer = mapping.get(t.name)
        row = {
            "index": t.index,
            "layer": t.name,
            "op_type": t.op_type or "Input",
            "rknn_layer": layer,
            "rknn_op": None,
            "sample": sample,
            "backend": backend,
            # no quantized counterpart: a graph input that was fed, not computed, a constant
            # the toolkit folded away, or a tensor fused inside an RKNN layer
            "status": _unmatched_status(t, constants or set()),
            **dict.fromkeys(METRICS, np.nan),
            "flag": "",
            "toolkit_entire_cos": np.nan,
            "toolkit_single_cos": np.nan,
        }
        if layer is not None:
            err = toolkit_rows.get(layer)
            if err is not None:
                row["rknn_op"] = err.op_type
                row["toolkit_entire_cos"] = _nan(err.values.get("entire_cos"))
                row["toolkit_single_cos"] = _nan(err.values.get("single_cos"))
            ref = reference[t.name]
            layout = _layout(quantized[layer].shape, ref, (golden or {}).get(layer))
            if isinstance(layout, str):  # no mapping that can be trusted: no number either
                rows.append({**row, "status": "unaligned", "flag": layout})
                continue
            test, how = _apply(quantized[layer], layout, ref.shape)
            row.update(tensor_metrics(ref, test))
            row["flag"] = ",".join(f for f in (row["flag"], how) if f)
            row["status"] = "compared"
        rows.append(row)
    extra = _unmapped_rows(toolkit_rows, rows, sample=sample, backend=backend)
    return sorted(rows + extra, key=lambda r: r["index"]) if extra else rows


def _unmatched_status(t, constants: set[str]) -> str:
    if t.producer is None:
        return "input"
    return "constant" if t.op_type == "Constant" or t.name in constants else "fused"


def _unmapped_rows(toolkit_rows: dict, rows: list[dict], *, sample: int, backend: str) -> list[dict]:
    """Rows for the toolkit's layers that no ONNX row stands for, placed after their nearest
    mapped predecessor in the toolkit's (execution) order."""
    at = {r["rknn_layer"]: r["index"] for r in rows if r["rknn_layer"] is not None}
    fused = {r["layer"] for r in rows if r["status"] == "fused"}
    groups: dict[float | None, list] = {}
    previous = None
    for name, err in toolkit_rows.items():
        if name in at:
            previous = at[name]
        elif err.has_dump or base_name(name, fused) is None:  # no-dump layers of fused tensors are listed
            groups.setdefault(previous, []).append(err)
    out = []
    last = max((r["index"] for r in rows), default=-1)
    for previous, errs in groups.items():
        for k, err in enumerate(errs, 1):
            index = last + k if previous is None else previous + k / (len(errs) + 1)
            out.append(
                {
                    "index": index,
                    "layer": err.name,
                    "op_type": err.op_type,
                    "rknn_layer": err.name,
                    "rknn_op": err.op_type,
                    "sample": sample,
                    "backend": backend,
                    "status": "unmapped",
                    **dict.fromkeys(METRICS, np.nan),
                    "flag": ",".join(err.flags),
                    "toolkit_entire_cos": _nan(err.values.get("entire_cos")),
                    "toolkit_single_cos": _nan(err.values.get("single_cos")),
                }
            )
    return out


def constant_tensors(model) -> set[str]:
    """Tensors of ``model`` the toolkit folds to constants: outputs of Constant nodes, Shape
    of a tensor whose shape is known, and outputs of nodes fed by constants and initializers
    only (e.g. the Shape -> Gather -> Concat chains that feed a Reshape)."""
    shapes = {t.name: t.shape for t in model.tensors}
    known = {i.name for i in model.proto.graph.initializer}
    for node in model.proto.graph.node:  # topological order
        inputs = [i for i in node.input if i]
        if (
            node.op_type == "Constant"
            or (node.op_type in ("Shape", "Size") and shapes.get(inputs[0]) is not None)
            or (inputs and all(i in known for i in inputs))
        ):
            known.update(o for o in node.output if o)
    return known - {i.name for i in model.proto.graph.initializer}


#: Cosine between the toolkit's golden dump, laid out by a candidate mapping, and
#: onnxruntime's tensor for the mapping to be trusted (measured: 1.0 under the right one,
#: ~0 under a wrong one).
GOLDEN_COSINE = 0.9999
#: Permutations are tried up to this rank (after squeezing size-1 axes): 5! = 120 at most.
_MAX_PERMUTED_RANK = 5

#: A layout mapping: the permutation of the toolkit tensor's non-1 axes, then a reshape to
#: the ONNX shape (which squeezes/unsqueezes size-1 axes, or merges/splits axes).
Layout = tuple[int, ...]


def _layout(shape: tuple[int, ...], ref: np.ndarray, golden: np.ndarray | None):
    """The mapping from the toolkit's ``shape`` to the ONNX layout of ``ref``, or the reason
    (a str) why none can be trusted.

    With the toolkit's golden dump of the layer, the first candidate under which it matches
    ``ref`` (cosine >= GOLDEN_COSINE) wins, trying the plain order first. Without one (mark-all,
    whose outputs are already in ONNX layout, a board run), a mapping is used only when it
    is the single squeeze/unsqueeze + permutation that gives the ONNX shape (or, for square
    maps, the toolkit's NHWC); any other case is left unaligned.
    """
    if int(np.prod(shape)) != ref.size:
        return f"size {shape} vs ONNX {ref.shape}"
    exact, merged = _candidates(shape, ref.shape)
    if golden is not None:
        if golden.size != ref.size:
            return f"golden dump size {golden.shape} vs ONNX {ref.shape}"
        best = -1.0
        for layout in (*exact, *merged):
            cos = _cosine(_apply(golden.reshape(shape), layout, ref.shape)[0], ref)
            if cos >= GOLDEN_COSINE:
                return layout
            best = max(best, cos)
        return (
            f"shape {shape} vs ONNX {ref.shape}: no squeeze/transpose makes the toolkit's golden dump "
            f"equal the float tensor (best cosine {best:.4f})"
        )
    if len(exact) == 1 or tuple(shape) == tuple(ref.shape):
        return exact[0]
    nhwc = _nhwc(shape)  # square maps: the toolkit's other 4-D layout, NHWC
    if nhwc in exact and len(shape) == len(ref.shape):
        return nhwc
    return f"shape {shape} vs ONNX {ref.shape}: axis order unknown and no golden dump to decide it"


def _candidates(shape, target) -> tuple[list[Layout], list[Layout]]:
    """Permutations of the non-1 axes of ``shape``, identity first: those that give
    ``target``'s non-1 axes exactly, then those that need a merge/split reshape."""
    dims = [d for d in shape if d != 1]
    want = [d for d in target if d != 1]
    identity = tuple(range(len(dims)))
    if len(dims) > _MAX_PERMUTED_RANK:
        perms = [identity]
    else:
        perms = list(itertools.permutations(identity))
    exact = [p for p in perms if [dims[i] for i in p] == want]
    return exact, [p for p in perms if p not in exact]


def _nhwc(shape) -> Layout | None:
    """The layout reading a 4-D NHWC tensor as NCHW, over the non-1 axes of ``shape``."""
    if len(shape) != 4:
        return None
    kept = [i for i in range(4) if shape[i] != 1]
    return tuple(kept.index(i) for i in (0, 3, 1, 2) if shape[i] != 1)


def _apply(tensor: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """``tensor`` in the ONNX ``shape`` under ``layout``, and a flag saying what was done."""
    if tensor.shape == tuple(shape) and layout == tuple(range(len(layout))):
        return tensor, ""
    dims = [d for d in tensor.shape if d != 1]
    out = tensor.reshape(dims).transpose(layout).reshape(shape)
    return out, "transposed" if layout != tuple(range(len(layout))) else "reshaped"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def with_single_layer(marked: list[dict], snapshot: list[dict]) -> list[dict]:
    """Mark-all rows of one sample, completed by a snapshot of the same sample: the toolkit's
    entire and single-layer cosines joined by layer; a layer mark-all has no number for (fused
    inside a compiled layer, or left unmarked) but the snapshot compared is taken from the
    snapshot (flag ``snapshot``); the snapshot's ``unmapped`` layers are added."""
    by_layer = {r["layer"]: r for r in snapshot}
    out = []
    for row in marked:
        snap = by_layer.get(row["layer"])
        if snap is None:
            out.append(row)
        elif row["status"] != "compared" and snap["status"] == "compared":
            out.append({**snap, "flag": _join(snap["flag"], "snapshot")})
        else:
            cosines = {k: snap[k] for k in ("toolkit_entire_cos", "toolkit_single_cos")}
            out.append({**row, **cosines, "rknn_op": row["rknn_op"] or snap["rknn_op"]})
    known = {r["layer"] for r in marked}
    out += [r for r in snapshot if r["status"] == "unmapped" and r["layer"] not in known]
    return sorted(out, key=lambda r: r["index"])


def flag_guarded(rows: list[dict], guard) -> list[dict]:
    """``rows`` with the mark-all guard's findings in their flags: ``left-unmarked`` for
    boundaries not marked because marking changed their quantization, and
    :data:`MARKING_CHANGED` for those still marked with a changed quantization (and for the
    former, on rows with no number)."""
    if guard is None or not (guard.unmarked or guard.changed):
        return rows
    out = []
    for row in rows:
        layer = row["layer"]
        measured_here = row["status"] == "compared" and "snapshot" not in row["flag"].split(",")
        if layer in guard.changed and measured_here:
            row = {**row, "flag": _join(row["flag"], MARKING_CHANGED)}
        elif layer in guard.unmarked:
            extra = LEFT_UNMARKED if row["status"] == "compared" else f"{LEFT_UNMARKED},{MARKING_CHANGED}"
            row = {**row, "flag": _join(row["flag"], extra)}
        out.append(row)
    return out


def _join(*flags: str) -> str:
    return ",".join(f for f in flags if f)


def compared_parents(model, compared: set[str]) -> dict[str, list[str]]:
    """For each compared tensor, the nearest compared tensors upstream of it (walking
    through fused ones), so error can be told apart: made here, or inherited."""
    producers = {o: n for n in model.proto.graph.node for o in n.output}
    memo: dict[str, set[str]] = {}

    def upstream(tensor: str) -> set[str]:
        if tensor not in memo:
            node = producers.get(tensor)
            found: set[str] = set()
            for i in node.input if node is not None else []:
                if i in compared:
                    found.add(i)
                elif i in producers:
                    found |= upstream(i)
            memo[tensor] = found
        return memo[tensor]

    order = [t.name for t in model.tensors]
    return {t: sorted(upstream(t), key=order.index) for t in order if t in compared}


def _nan(value) -> float:
    return np.nan if value is None else float(value)


def sample_rows(
    tensors, floats: dict[str, np.ndarray], measured: Measurement, *, sample: int, backend: str,
    constants: set[str], guard=None,
) -> list[dict]:  # fmt: skip
    """The rows of one backend's measurement of one sample: its tensors against ``floats``,
    completed by the single-layer snapshot it carries, flagged by the mark-all ``guard``."""
    rows = layer_rows(
        tensors, floats, measured.tensors, measured.errors, sample=sample, backend=backend,
        golden=measured.golden, constants=constants,
    )  # fmt: skip
    if measured.single is not None:
        single = sample_rows(
            tensors, floats, measured.single, sample=sample, backend=backend, constants=constants
        )
        rows = with_single_layer(rows, single)
    return flag_guarded(rows, guard)
