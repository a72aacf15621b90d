"""Where the static check and the compile check disagree, listed, never hidden."""

from __future__ import annotations

from workbench.support.compile import CompileReport
from workbench.support.static import SupportReport

_AS_TARGET = {"npu": "NPU", "cpu": "CPU"}


def disagreements(static: SupportReport, compiled: CompileReport) -> list[str]:
    """One line per node whose static verdict contradicts the compiled placement.

    A node fused into a neighbour layer counts where that layer runs, so a static "cpu"
    on a node the compiler fused onto the NPU is listed (and withdrawn); nodes folded away
    agree with a static "npu". A static "attention" or "rejected" is a disagreement when
    the build placed the node anyway (and vice versa).
    """
    if compiled.rejected:
        return [] if static.exit_code == 2 else ["the toolkit rejected the model; the static check did not"]
    lines = []
    for row in static.nodes.itertuples():
        placed = compiled.placements.get(row.node) or compiled.node_targets.get(row.node, "fused")
        if placed == "fused" or (placed == "removed" and row.status == "npu"):
            continue
        expected = _AS_TARGET.get(row.status)
        if expected != placed:
            where = "folded away (no layer)" if placed == "removed" else f"compiled on {placed}"
            lines.append(f"{row.node} ({row.op_type}): static {row.status}, {where}")
    return lines
