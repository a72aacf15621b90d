"""Regenerate the support matrix with the installed toolkit.

Builds one tiny model per operator variant (probe_cases.py) for every platform family, in
parallel worker processes, and reads the probed node's target from the layer table.
Results are appended to a .jsonl file as they come, so an interrupted probe resumes where
it stopped. ``rknn-workbench support probe`` runs it from a shell.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from workbench.errors import ToolkitError
from workbench.model import OnnxModel
from workbench.rknn.session import ToolkitSession, toolkit_errors
from workbench.support.compile import parse_layer_table
from workbench.support.matrix import (
    CPU,
    NPU,
    PLATFORM_FAMILIES,
    REJECTED,
    REMOVED,
    SupportMatrix,
)
from workbench.support.probe_cases import PROBE_INPUT_SHAPE, PUBLISHED_OPS, ProbeCase, probe_cases

PACKAGED_MATRIX = Path(__file__).parent / "data" / "support_matrix.json"


def probe(
    out: str | Path = PACKAGED_MATRIX,
    *,
    ops: list[str] | None = None,
    platforms: list[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> SupportMatrix:
    """Probe ``ops`` (all by default) on ``platforms`` (every family) and write the matrix.

    Partial results go to ``out`` with suffix ``.partial.jsonl``; run again to resume.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    partial = out.with_suffix(".partial.jsonl")
    families = platforms or list(PLATFORM_FAMILIES)
    done = _read_partial(partial)
    tasks = [
        (case, family)
        for case in probe_cases(ops)
        for family in families
        if (case.op, case.variant, family) not in done
    ]
    lock = threading.Lock()
    local = threading.local()
    sessions: list[ToolkitSession] = []

    def run(task: tuple[ProbeCase, str]) -> None:
        if getattr(local, "session", None) is None:
            local.session = ToolkitSession(timeout=300)
            sessions.append(local.session)
        result, session = _probe_one(local.session, *task)
        if session is not local.session:  # replaced after a rejection: close it at the end too
            local.session = session
            sessions.append(session)
        with lock, open(partial, "a") as f:
            f.write(json.dumps(result) + "\n")

    bar = tqdm(total=len(tasks), desc="probing operators", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for _ in pool.map(run, tasks):
                bar.update()
    finally:
        bar.close()
        for session in sessions:
            session.close()
    matrix = _assemble(_read_partial(partial).values())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(matrix, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    partial.unlink(missing_ok=True)
    return SupportMatrix(matrix)


def _probe_one(session: ToolkitSession, case: ProbeCase, family: str) -> tuple[dict, ToolkitSession]:
    """Build one probe model; returns the result row and a live session."""
    record = {"op": case.op, "variant": case.variant, "family": family}
    folder = session.workdir
    model = OnnxModel.from_proto(case.build())
    path = model.save(folder / "probe.onnx")
    quantize = family != "rk2118"  # rk2118 builds fp16 only
    dataset = folder / "probe_dataset.txt"
    if not dataset.exists():
        sample = np.random.default_rng(0).uniform(0, 255, PROBE_INPUT_SHAPE).astype(np.float32)
        np.save(folder / "probe_input.npy", sample)
        dataset.write_text(f"{folder / 'probe_input.npy'}\n")
    try:
        _, log = session.call(
            "build",
            model_path=str(path),
            config={"target_platform": family},
            dataset=str(dataset) if quantize else None,
            do_quantization=quantize,
        )
    except ToolkitError as err:
        # A rejection leaves the toolkit in a state that fails every later build in the
        # same process (measured on 2.5.0), so the next probe gets a fresh worker.
        session.close()
        return {**record, "status": REJECTED, "message": _first_error(str(err))}, ToolkitSession(timeout=300)
    layers = parse_layer_table(log)
    mine = layers[_is_probe_layer(layers)]
    if mine.empty:
        return {**record, "status": REMOVED, "message": ""}, session
    targets = set(mine.target)
    status = CPU if "CPU" in targets else NPU
    return {**record, "status": status, "message": "/".join(mine.op_type)}, session


def _is_probe_layer(layers):
    """Layers made from the probed node: named "probe", or after its tensors ("probe#1",
    "probe_in0_tp", "probe_2deconv"); the Input/OutputOperator rows are not the op."""
    names = layers.full_name.str.split(":", n=1).str[-1]
    named = (names == "probe") | names.str.startswith("probe#") | names.str.startswith("probe_")
    return named & ~layers.op_type.str.endswith("Operator")


def _first_error(message: str) -> str:
    said = toolkit_errors(message)
    line = said[0] if said else message.splitlines()[0]
    return line[:300]


def _read_partial(path: Path) -> dict[tuple[str, str, str], dict]:
    if not path.is_file():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by an interruption
            continue
        rows[(row["op"], row["variant"], row["family"])] = row
    return rows


def _assemble(rows) -> dict:
    from importlib.metadata import version

    ops: dict = {}
    for row in rows:
        entry = ops.setdefault(row["op"], {"published": PUBLISHED_OPS.get(row["op"]), "variants": {}})
        entry["variants"].setdefault(row["variant"], {})[row["family"]] = {
            "status": row["status"],
            "message": row["message"],
        }
    matrix = {
        "toolkit_version": version("rknn-toolkit2"),
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform_families": {k: list(v) for k, v in PLATFORM_FAMILIES.items()},
        "ops": ops,
    }
    disagreements = SupportMatrix(matrix).disagreements("rk3588")
    for op, text in disagreements.items():
        ops[op]["disagrees_with_published"] = text
    return matrix
