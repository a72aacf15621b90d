"""Float vs simulator vs board, in one Divergence table (backend column), and the
simulator-vs-board gap per layer."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from workbench.board.config import Board
from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.errors import BoardError
from workbench.runners.board import open_board


def board_divergence(
    model, config, calibration, board: Board, samples=None, *, progress: bool = True, batch: int = 4
) -> Divergence:
    """Per-layer divergence of the simulator and of ``board`` (any transport) against float.

    Raises:
        BoardError: the board failed; ``err.partial`` holds the Divergence of the samples
            done so far, with ``meta["partial"]`` saying what is missing (never complete).
    """
    samples = samples if samples is not None else calibration.head(4)
    simulator = compute_divergence(model, config, calibration, samples, progress=progress)
    board_run, error = None, None
    try:
        with open_board(model, config, calibration, board=board, batch=batch) as runner:
            board_run = compute_divergence(
                model, config, calibration, samples, backend=runner, cache=False, progress=progress
            )
    except BoardError as err:
        board_run, error = err.partial, err
    # No board rows (it failed before its first sample): concatenating an empty frame would
    # turn every column to object dtype, and the summaries would fail with a TypeError.
    board_tables = [board_run.table] if board_run is not None and len(board_run.table) else []
    meta = {
        **simulator.meta,
        "backends": ["simulator", f"board:{board.name}"],
        # name, platform and transport only: no key paths or user names in saved results
        "board": {
            k: v for k, v in asdict(board).items() if k in ("name", "platform", "transport", "virtual")
        },
    }
    result = Divergence(pd.concat([simulator.table, *board_tables], ignore_index=True), meta)
    if error is not None:
        done = board_run.meta["partial"]["samples_done"] if board_run is not None else 0
        original = error.__cause__ or error  # compute_divergence wraps the board's own error
        meta["partial"] = {"backend": meta["backends"][1], "samples_done": done, "samples": len(samples)}
        meta["partial"]["error"] = str(original)
        raise BoardError(
            f"{original}\nPartial result: {done} of {len(samples)} samples ran on {board.name}; "
            "it is in err.partial, marked partial.",
            partial=result,
        ) from error
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
