"""Parse what ``rknn.accuracy_analysis()`` writes into its ``output_dir``.

Layout (toolkit 2.5.0): ``golden/`` (float), ``simulator/`` (quantized), ``runtime/`` (board,
only with ``target=``), each with text dumps and an ``npy/`` folder holding the same tensors
with their shapes; ``map_name_to_file.txt`` (layer name -> file name) and
``error_analysis.txt`` (the toolkit's own cosine/euclidean table).
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_ROW = re.compile(r"^\[(?P<op>[^\]]+)\]\s+(?P<name>\S+)(?P<rest>.*)$")
#: error_analysis.txt column groups, in file order.
ERROR_COLUMNS = (
    "entire_cos",
    "entire_euc",
    "single_cos",
    "single_euc",
    "runtime_entire_cos",
    "runtime_entire_euc",
    "runtime_single_sim_cos",
    "runtime_single_sim_euc",
)


@dataclass
class ErrorRow:
    """One line of error_analysis.txt; a value is None where the toolkit left it blank."""

    op_type: str
    name: str
    values: dict[str, float | None] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  #: NaN/Inf tokens seen, e.g. "q_nan"

    @property
    def has_dump(self) -> bool:
        """False for layers fused into their neighbour (the toolkit prints no numbers)."""
        return any(v is not None for v in self.values.values())


def parse_error_analysis(text: str) -> list[ErrorRow]:
    """Rows of an error_analysis.txt, in the file's (execution) order.

    Values are read by position: cos, euc, cos, euc, ... as in :data:`ERROR_COLUMNS`. The
    toolkit pads columns to a fixed width and prints every value with :data:`DECIMALS`
    decimals; a value wider than its column runs into the next (``850.779910.99969`` is euc
    850.77991 then cos 0.99969), so such a run is split by the decimal count. Tokens such as
    ``q_nan``, ``rt_inf``, ``f_zero`` become NaN and are listed in ``flags``; a cosine outside
    [-1, 1] (a misread) becomes NaN and is flagged ``"<column>:out-of-range"``; a line whose
    values cannot be split is kept with every value NaN and the flag ``"unparsed"``.
    """
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        row = ErrorRow(match["op"], match["name"])
        tokens = _tokens(match["rest"])
        if tokens is None:
            row.values = dict.fromkeys(ERROR_COLUMNS, math.nan)
            row.flags.append("unparsed")
            rows.append(row)
            continue
        for column, token in zip(ERROR_COLUMNS, tokens):
            row.values[column] = _number(token, row.flags)
            if column.endswith("_cos") and abs(row.values[column]) > 1:
                row.values[column] = math.nan
                row.flags.append(f"{column}:out-of-range")
        for column in ERROR_COLUMNS[len(tokens) :]:
            row.values[column] = None
        rows.append(row)
    return rows


#: Decimals the toolkit prints for every cos and euc value (2.5.0: ``1.00000 | 0.43301``).
DECIMALS = 5
_FIXED = re.compile(rf"-?\d+\.\d{{{DECIMALS}}}|[A-Za-z][A-Za-z_]*")
_WORD = re.compile(r"[A-Za-z][A-Za-z_]*")


def _tokens(rest: str) -> list[str] | None:
    """The value tokens of a row (after its name); None when a run of characters cannot be
    split into values."""
    out = []
    for chunk in rest.replace("|", " ").split():
        if _is_float(chunk) or _WORD.fullmatch(chunk):
            out.append(chunk)  # one value; older toolkits print fewer decimals, never run together
            continue
        pieces = _FIXED.findall(chunk)
        if "".join(pieces) != chunk:
            return None
        out += pieces
    return out


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _number(token: str, flags: list[str]) -> float:
    value = float(token) if _is_float(token) else math.nan
    if not math.isfinite(value):  # q_nan, rt_inf, f_zero, inf: flagged, never a number
        flags.append(token)
        return math.nan
    return value


def parse_name_map(text: str) -> dict[str, str]:
    """layer name -> dump file name, from map_name_to_file.txt."""
    out = {}
    for line in text.splitlines()[2:]:  # header and rule
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


@dataclass
class Snapshot:
    """The tensors and error table of one accuracy_analysis() call (one sample)."""

    errors: list[ErrorRow]
    golden: dict[str, np.ndarray]
    simulator: dict[str, np.ndarray]
    runtime: dict[str, np.ndarray]


def read_snapshot(folder: str | Path, keep: set[str] | None = None) -> Snapshot:
    """Load a snapshot folder. ``keep`` limits which layer names are read (all by default)."""
    folder = Path(folder)
    errors = parse_error_analysis((folder / "error_analysis.txt").read_text())
    names = parse_name_map((folder / "map_name_to_file.txt").read_text())
    if keep is not None:
        names = {k: v for k, v in names.items() if k in keep}
    return Snapshot(
        errors,
        _read_tensors(folder / "golden", names),
        _read_tensors(folder / "simulator", names),
        _read_tensors(folder / "runtime", names),
    )


def _read_tensors(folder: Path, names: dict[str, str]) -> dict[str, np.ndarray]:
    out = {}
    if not folder.is_dir():
        return out
    for layer, filename in names.items():
        npy = folder / "npy" / (Path(filename).stem + ".npy")
        txt = folder / filename
        if npy.is_file():
            out[layer] = np.load(npy)
        elif txt.is_file():  # older toolkits: flattened NCHW text, no shape
            out[layer] = np.loadtxt(txt, dtype=np.float32, ndmin=1)
    return out


def analyse(session, row: Sequence[Path], **target) -> Snapshot:
    """``accuracy_analysis()`` of one sample on the session's model (``target=``,
    ``device_id=``: on a board): the dump folder is read, then deleted, so disk use stays at
    one sample."""
    out = session.workdir / "snapshot"
    shutil.rmtree(out, ignore_errors=True)
    try:
        session.call("accuracy_analysis", inputs=[str(p) for p in row], output_dir=str(out), **target)
        return read_snapshot(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
