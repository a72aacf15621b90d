"""Regenerate the support matrix with the installed toolkit.

Builds one tiny model per operator variant (probe_cases.py) for every platform family, in
parallel worker processes, and reads the probed node's target from the layer table.
Results are appended to a .jsonl file as they come, so an interrupted probe resumes where
it stopped. ``rknn-workbench support probe`` runs it from a shell.
"""

from __future__ import annotations

import json
import signal
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from workbench.errors import ToolkitError, WorkbenchError, WorkbenchWarning
from workbench.model import OnnxModel
from workbench.rknn.session import ToolkitSession, toolkit_errors
from workbench.storage import atomic_write
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


#: Signals a toolkit bug raises itself; a worker killed by one of them on the same case
#: twice is the toolkit's answer for that operator (Resize mode=cubic segfaults on 2.5.0).
_FAULTS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def probe(
    out: str | Path,
    *,
    ops: list[str] | None = None,
    platforms: list[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> SupportMatrix:
    """Probe ``ops`` (all by default) on ``platforms`` (every family) and write the matrix
    to ``out`` (never into the installed package: copy a reviewed matrix there by hand).

    Results go to ``out`` with suffix ``.partial.jsonl`` as they come; run again to resume.
    Only answers of the toolkit are stored: a Ctrl-C, a timeout or a worker killed from
    outside never is (a rerun retries those cases). A case that crashes the toolkit
    (SIGSEGV, SIGABRT, ...) is tried twice in fresh workers and stored as rejected only if
    it crashes both times.

    Raises:
        WorkbenchError: ``out`` is inside the installed workbench package.
    Warns:
        WorkbenchWarning: some cases got no answer; the partial file is kept for a rerun.
    """

    out = _checked_out(out)
    partial = out.with_suffix(".partial.jsonl")
    families = platforms or list(PLATFORM_FAMILIES)
    done = _read_partial(partial)
    tasks = [
        (case, family)
        for case in probe_cases(ops)
        for family in families
        if (case.op, case.variant, family) not in done
    ]
    lock, stop = threading.Lock(), threading.Event()
    local = threading.local()
    sessions: list[ToolkitSession] = []
    unanswered: list[str] = []

    def attempt(task: tuple[ProbeCase, str]) -> dict:
        if getattr(local, "session", None) is None:
            local.session = ToolkitSession(timeout=300)
            sessions.append(local.session)
        row = None
        try:
            row = _probe_one(local.session, *task)
        finally:
            # A rejection leaves the toolkit in a state that fails every later build in the
            # same process (measured on 2.5.0), so the next probe gets a fresh worker.
            if row is None or row["status"] == REJECTED:
                local.session.close()
                local.session = None
        return row

    def run(task: tuple[ProbeCase, str]) -> None:
        row = None
        for tries in (1, 2):
            if stop.is_set():
                return
            try:
                row = attempt(task)
                break
            except ToolkitError as err:
                if not _is_fault(err) or stop.is_set():
                    break
                if tries == 2:
                    row = _record(*task, REJECTED, f"crashes the toolkit twice: {_first_error(str(err))}")
        with lock:
            if stop.is_set():  # interrupted: what this task saw is not the toolkit's answer
                return
            if row is None:
                unanswered.append(f"{task[0].op} {task[0].variant} on {task[1]}")
                return
            with open(partial, "a") as f:
                f.write(json.dumps(row) + "\n")

    bar = tqdm(total=len(tasks), desc="probing operators", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for _ in pool.map(run, tasks):
            bar.update()
    except BaseException:  # Ctrl-C: stop now, store nothing more
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for session in list(sessions):
            session.kill()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
        for session in list(sessions):
            session.close()
    matrix = _assemble(_read_partial(partial).values())
    atomic_write(out, json.dumps(matrix, indent=1, sort_keys=True) + "\n")
    if unanswered:
        warnings.warn(
            f"{len(unanswered)} probes got no answer from the toolkit (timeout or worker killed), "
            f"so {out} lacks them: {', '.join(unanswered[:5])}. Run the same command again to "
            f"retry only those ({partial.name} is kept).",
            WorkbenchWarning,
            stacklevel=2,
        )
    else:
        partial.unlink(missing_ok=True)
    return SupportMatrix(matrix)


def _checked_out(out: str | Path) -> Path:
    """``out``, refused when inside the installed workbench package (it is replaced on
    reinstall, and every user of the install would silently get this machine's probe)."""
    out = Path(out).resolve()
    package = Path(__file__).resolve().parents[1]
    if out.is_relative_to(package):
        raise WorkbenchError(
            f"support probe writes only where you say, never into the installed package ({out}): "
            "give --out my_matrix.json (probe(out=...)). To ship a new matrix, review it and copy it "
            "to workbench/support/data/support_matrix.json in a source checkout."
        )
    return out


def _is_fault(err: ToolkitError) -> bool:
    return err.kind == "crash" and err.returncode is not None and -err.returncode in _FAULTS


def _record(case: ProbeCase, family: str, status: str, message: str) -> dict:
    return {"op": case.op, "variant": case.variant, "family": family, "status": status, "message": message}


def _probe_one(session: ToolkitSession, case: ProbeCase, family: str) -> dict:
    """Build one probe model; the result row.

    Raises:
        ToolkitError: the toolkit gave no answer (its worker crashed or timed out).
    """
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
        if err.kind != "toolkit":
            raise
        return _record(case, family, REJECTED, _first_error(str(err)))
    layers = parse_layer_table(log)
    mine = layers[_is_probe_layer(layers)]
    if mine.empty:
        return _record(case, family, REMOVED, "")
    status = CPU if "CPU" in set(mine.target) else NPU
    return _record(case, family, status, "/".join(mine.op_type))


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
