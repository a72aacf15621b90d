"""Float vs simulator vs board, in one Divergence table (backend column), and the
simulator-vs-board gap per layer."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from workbench.board.config import Board
from workbench.board.ssh import BoardError
from workbench.compare.divergence import COLUMNS, Divergence, compute_divergence, layer_rows
from workbench.errors import ToolkitError
from workbench.runners.board import backend_label, run_on_board


def board_divergence(
    model, config, calibration, board: Board, samples=None, *, progress: bool = True, batch: int = 4
) -> Divergence:
    """Per-layer divergence of the simulator and of ``board`` (SSH or adb) against float.

    Raises:
        BoardError: the board failed; ``err.partial`` holds the Divergence of the samples
            done so far, with ``meta["partial"]`` saying what is missing (never complete).
    """
    from tqdm.auto import tqdm

    from workbench.runners.float import FloatRunner

    samples = samples if samples is not None else calibration.head(4)
    simulator = compute_divergence(model, config, calibration, samples, progress=progress)
    reference = FloatRunner(model, config.preprocess)
    backend = backend_label(board)
    rows: list[dict] = []
    done, error = 0, None
    bar = tqdm(total=len(samples), desc=f"per-layer divergence ({backend})", disable=not progress)
    try:
        runs = run_on_board(model, config, calibration, board, samples.rows, batch=batch)
        for i, tensors in enumerate(runs):
            rows += layer_rows(
                model.tensors, reference.run(samples.rows[i]), tensors, sample=i, backend=backend
            )
            done = i + 1
            bar.update()
    except (BoardError, ToolkitError) as err:
        error = str(err)
    finally:
        bar.close()
    # No board rows (it failed before its first sample): concatenating an empty frame would
    # turn every column to object dtype, and the summaries would fail with a TypeError.
    board_rows = [pd.DataFrame(rows, columns=list(COLUMNS))] if rows else []
    table = pd.concat([simulator.table, *board_rows], ignore_index=True)
    meta = {
        **simulator.meta,
        "backends": ["simulator", backend],
        # name, platform and transport only: no key paths or user names in saved results
        "board": {
            k: v for k, v in asdict(board).items() if k in ("name", "platform", "transport", "virtual")
        },
    }
    result = Divergence(table, meta)
    if error is not None:
        meta["partial"] = {"backend": backend, "samples_done": done, "samples": len(samples), "error": error}
        raise BoardError(
            f"{error}\nPartial result: {done} of {len(samples)} samples ran on {board.name}; "
            "it is in err.partial, marked partial.",
            partial=result,
        )
    return result


def backend_gap(result: Divergence, a: str = "simulator", b: str | None = None) -> pd.DataFrame:
    """Per layer: mean SQNR and cosine of backends ``a`` and ``b`` (default: the board) and
    the gap b - a; where the board departs from the simulator shows here."""
    b = b or next(x for x in result.table.backend.unique() if x.startswith("board:"))
    left, right = result.summary(a), result.summary(b)
    cols = ["index", "layer", "op_type", "sqnr_db_mean", "cosine_mean"]
    both = left[cols].merge(right[cols], on=["index", "layer", "op_type"], suffixes=(f"_{a}", f"_{b}"))
    both["sqnr_db_gap"] = both[f"sqnr_db_mean_{b}"] - both[f"sqnr_db_mean_{a}"]
    both["cosine_gap"] = both[f"cosine_mean_{b}"] - both[f"cosine_mean_{a}"]
    return both.sort_values("index", ignore_index=True)
