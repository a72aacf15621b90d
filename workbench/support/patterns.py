"""Find the op patterns the toolkit's compiler fuses into one NPU layer.

HardSwish written out (x * clip(x + 3, 0, 6) / 6), LayerNorm written out (ReduceMean, Sub,
Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) and GELU written out (Div, Erf, Add, Mul, Mul) are
compiled onto the NPU as a whole, while some of their ops (Div, Pow, Sqrt, Erf), probed alone,
land on the CPU (measured with toolkit 2.5.0). The static check judges such a pattern as a
whole (see ``workbench.support.ondemand``), so it must first find it: this module is a small
structural matcher over the ONNX node graph, with no toolkit and no constant-value checks
(the probe of the matched nodes, with their own constants, is the judge).

A pattern is a list of steps. Each step names the op types it accepts and its inputs:
``"x"`` (the pattern's input), an earlier step's name, or ``"const"`` (an initializer or
Constant output). Inputs of Add and Mul match in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

_COMMUTATIVE = frozenset({"Add", "Mul"})


@dataclass(frozen=True)
class Step:
    """One node of a pattern: its name, accepted op types and input references."""

    name: str
    ops: tuple[str, ...]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Match:
    """One occurrence of a pattern: its name and the matched nodes in step order."""

    pattern: str
    nodes: tuple[onnx.NodeProto, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)


def _steps(*rows: tuple[str, str, str]) -> tuple[Step, ...]:
    """Steps from rows of (name, "Op1|Op2", "in1 in2")."""
    return tuple(Step(name, tuple(ops.split("|")), tuple(inputs.split())) for name, ops, inputs in rows)


_CLIP = ("clip", "Clip", "add")  # min and max may be inputs (opset >= 11) or attributes
_LAYERNORM_HEAD = (
    ("mean", "ReduceMean", "x"),
    ("sub", "Sub", "x mean"),
    ("sq", "Pow|Mul", "sub const"),  # Pow(d, 2)
    ("var", "ReduceMean", "sq"),
    ("eps", "Add", "var const"),
    ("std", "Sqrt", "eps"),
    ("norm", "Div", "sub std"),
)
_GELU_TAIL = (("erf", "Erf", "scaled"), ("plus1", "Add", "erf const"))

#: Patterns by name; each name has its alternatives (the orders exporters write).
PATTERNS: dict[str, tuple[tuple[Step, ...], ...]] = {
    "HardSwish": (
        _steps(("add", "Add", "x const"), _CLIP, ("mul", "Mul", "x clip"), ("scale", "Div|Mul", "mul const")),
        _steps(
            ("add", "Add", "x const"), _CLIP, ("scale", "Div|Mul", "clip const"), ("mul", "Mul", "x scale")
        ),
    ),
    "LayerNorm": (
        _steps(*_LAYERNORM_HEAD, ("gamma", "Mul", "norm const"), ("beta", "Add", "gamma const")),
        _steps(*_LAYERNORM_HEAD, ("gamma", "Mul", "norm const")),
        _steps(*_LAYERNORM_HEAD),
    ),
    "GELU": (
        # x * 0.5 * (1 + erf(x / sqrt(2))), in the two orders torch exports
        _steps(
            ("scaled", "Div|Mul", "x const"),
            *_GELU_TAIL,
            ("mul", "Mul", "x plus1"),
            ("half", "Mul", "mul const"),
        ),
        _steps(
            ("scaled", "Div|Mul", "x const"),
            *_GELU_TAIL,
            ("half", "Mul", "x const"),
            ("mul", "Mul", "half plus1"),
        ),
    ),
}
# LayerNorm's Pow(d, 2) may be Mul(d, d): that alternative reads "sub" twice
PATTERNS["LayerNorm"] += tuple(
    tuple(Step(s.name, ("Mul",), ("sub", "sub")) if s.name == "sq" else s for s in alt)
    for alt in PATTERNS["LayerNorm"]
)


def find_patterns(graph: onnx.GraphProto, patterns: dict | None = None) -> list[Match]:
    """Every occurrence of ``patterns`` (default: PATTERNS) in ``graph``, longest alternative
    first; a node belongs to at most one match.

    Inner tensors of a match may not be read outside it (else the nodes could not fuse),
    except the last step's output.
    """
    patterns = PATTERNS if patterns is None else patterns
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    taken: set[str] = set()
    found = []
    ordered = sorted(
        ((name, alt) for name, alts in patterns.items() for alt in alts), key=lambda p: -len(p[1])
    )
    for name, steps in ordered:
        for node in graph.node:
            if node.name in taken:
                continue
            nodes = _match_at(node, steps, consumers, constants)
            if nodes and not taken & {n.name for n in nodes} and _closed(nodes, consumers):
                found.append(Match(name, tuple(nodes)))
                taken |= {n.name for n in nodes}
    order = {n.name: i for i, n in enumerate(graph.node)}
    return sorted(found, key=lambda m: order[m.nodes[0].name])


def _match_at(first, steps: Sequence[Step], consumers, constants) -> list | None:
    """The nodes of ``steps`` with the first step bound to ``first``, or None."""
    if first.op_type not in steps[0].ops:
        return None
    for x in first.input:  # which input of the first node is the pattern's input
        if x in constants:
            continue
        bound = {"x": x}
        if not _inputs_fit(first, steps[0], bound, constants):
            continue
        bound[steps[0].name] = first.output[0]
        nodes = [first]
        for step in steps[1:]:
            node = _next_node(step, bound, consumers, constants, nodes)
            if node is None:
                break
            nodes.append(node)
            bound[step.name] = node.output[0]
        else:
            return nodes
    return None


def _next_node(step: Step, bound: dict, consumers, constants, used) -> onnx.NodeProto | None:
    sources = [bound[r] for r in step.inputs if r in bound]
    for candidate in consumers.get(sources[0], []) if sources else []:
        if (
            candidate.op_type in step.ops
            and candidate not in used
            and _inputs_fit(candidate, step, bound, constants)
        ):
            return candidate
    return None


def _inputs_fit(node, step: Step, bound: dict, constants) -> bool:
    given = [i for i in node.input if i]
    if node.op_type == "Clip":  # min/max: constant inputs, attributes or absent
        return (
            bool(given) and given[0] == bound.get(step.inputs[0]) and all(i in constants for i in given[1:])
        )
    if node.op_type in ("ReduceMean",):  # axes as an input (opset 18) is a constant
        given = [i for i in given if i not in constants] or given
    if len(given) != len(step.inputs):
        return False
    wanted = list(step.inputs)
    if node.op_type not in _COMMUTATIVE:
        return all(_fits(i, r, bound, constants) for i, r in zip(given, wanted))
    a, b = given
    ra, rb = wanted
    return (_fits(a, ra, bound, constants) and _fits(b, rb, bound, constants)) or (
        _fits(a, rb, bound, constants) and _fits(b, ra, bound, constants)
    )


def _fits(tensor: str, ref: str, bound: dict, constants) -> bool:
    if ref == "const":
        return tensor in constants
    return bound.get(ref) == tensor


def _closed(nodes, consumers) -> bool:
    """No tensor made inside the match except the last node's output is read outside it."""
    inside = {id(n) for n in nodes}
    for node in nodes[:-1]:
        for out in node.output:
            if any(id(c) not in inside for c in consumers.get(out, [])):
                return False
    return True


#: Ops whose output differs on every run: never folded.
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial"}
)


def folded_nodes(graph: onnx.GraphProto, shapes: dict[str, tuple[int, ...] | None]) -> set[str]:
    """Nodes computed from constants only (initializers, Constant nodes, the Shape/Size of a
    tensor whose shape is fixed): the toolkit folds them at build time, they run nowhere."""
    static = {t.name for t in graph.initializer} | {""}
    folded = set()
    for node in graph.node:  # topological order
        if node.op_type in RANDOM_OPS:
            continue
        if node.op_type in ("Shape", "Size"):
            fixed = shapes.get(node.input[0]) is not None
        else:
            fixed = all(i in static for i in node.input)
        if fixed:
            folded.add(node.name)
            static.update(node.output)
    return folded
