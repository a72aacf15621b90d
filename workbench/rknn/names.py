"""Map the toolkit's layer names back to ONNX tensor names.

The toolkit names a layer after the ONNX tensor it writes, sometimes with a suffix
(``_int8``, ``-rs``, ``_rs``, ``_conv``, ``_tp``, ``__float16``) for tensors it inserts; a
fused layer keeps the name of its last tensor. ONNX tensors with no counterpart were fused
into a neighbour and are reported as such, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SUFFIXES = ("__float16", "_float16", "_int8", "_int16", "-rs", "_rs", "_conv", "_tp")
#: Layers the toolkit derives from a tensor with a layout swap ("linear_1.tmp_1-rs_sw" is
#: the Softmax it fused after that tensor): related to the tensor, but not its value.
_DERIVED_SUFFIXES = ("_sw",)
#: Suffixes the toolkit gives the pieces of an op it decomposes ("GlobalAveragePool@0_2conv1",
#: "/model.22/Div_1_2mul", "/model.22/Slice_2sp"): these stand for an ONNX node, not a tensor.
_NODE_SUFFIX = re.compile(r"(_2[A-Za-z]+\d*|sp\d*)$")


def base_name(layer: str, known: set[str]) -> str | None:
    """The ONNX tensor a toolkit layer name stands for, or None."""
    name = layer
    while True:
        if name in known:
            return name
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        else:
            return None


def align(layers: Iterable[str], onnx_tensors: Iterable[str]) -> dict[str, str]:
    """``{onnx tensor: toolkit layer}``; an exact name match wins over a suffixed one."""
    known = set(onnx_tensors)
    out: dict[str, str] = {}
    for layer in layers:
        target = base_name(layer, known)
        if target is not None and (target not in out or layer == target):
            out[target] = layer
    return out


def origin(layer: str, tensors: set[str], nodes: set[str]) -> tuple[str, str] | None:
    """What a toolkit layer stands for: ("tensor", t) when it holds ONNX tensor t's value,
    ("derived", t) for a layer built around t (a layout swap), ("node", n) for a piece of
    a node the toolkit decomposed; None if nothing is found."""
    name, derived = layer, False
    while True:
        if name in tensors:
            return ("derived" if derived else "tensor", name)
        suffix = next((x for x in (*_SUFFIXES, *_DERIVED_SUFFIXES) if name.endswith(x)), None)
        if suffix is None:
            break
        derived = derived or suffix in _DERIVED_SUFFIXES
        name = name[: -len(suffix)]
    name = layer
    for _ in range(4):
        if name in nodes:
            return ("node", name)
        stripped = _NODE_SUFFIX.sub("", name)
        for suffix in _SUFFIXES:
            if stripped.endswith(suffix):
                stripped = stripped[: -len(suffix)]
        if stripped == name:
            return None
        name = stripped
    return None
