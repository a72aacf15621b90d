"""Map the toolkit's layer names back to ONNX tensor names.

The toolkit names a layer after the ONNX tensor it writes, sometimes with a suffix
(``_int8``, ``-rs``, ``_rs``, ``_conv``, ``_tp``, ``__float16``) for tensors it inserts; a
fused layer keeps the name of its last tensor. ONNX tensors with no counterpart were fused
into a neighbour and are reported as such, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

_SUFFIXES = ("__float16", "_float16", "_int8", "_int16", "-rs", "_rs", "_conv", "_tp")


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
