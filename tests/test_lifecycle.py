"""Interruption, process death, concurrency and leftovers (issue 13, items 10-17)."""

from __future__ import annotations

import multiprocessing
import warnings

import pandas as pd
import pytest

from workbench.compare import divergence as dv
from workbench.compare.divergence import COLUMNS, Divergence
from workbench.errors import WorkbenchError, WorkbenchWarning
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig


def _result(rows: int = 1, name: str = "m") -> Divergence:
    table = pd.DataFrame([dict.fromkeys(COLUMNS, 0)] * rows, columns=list(COLUMNS))
    return Divergence(table, {"model": {"name": name}})


# ------------------------------------------------------------------ 13: user files are kept
def test_saving_again_keeps_the_users_subfolders_and_files(tmp_path):
    run = _result().save(tmp_path / "run")
    (run / "my_plots").mkdir()
    (run / "my_plots" / "a.png").write_bytes(b"png")
    (run / "notes.txt").write_text("mine")
    _result(rows=3).save(run)
    assert (run / "my_plots" / "a.png").read_bytes() == b"png"
    assert (run / "notes.txt").read_text() == "mine"
    assert len(Divergence.load(run).table) == 3


def test_a_save_stopped_after_its_commit_point_is_finished_on_the_next_load(tmp_path):
    run = _result().save(tmp_path / "run")
    # what a stop between the commit rename and the file moves leaves: the journal folder
    journal = tmp_path / ".run.commit"
    journal.mkdir()
    _result(rows=2).table.to_parquet(journal / "divergence.parquet", index=False)
    assert len(Divergence.load(run).table) == 2
    assert not journal.exists()


# ---------------------------------------------------------------- 14: concurrent saves
def _save_and_load_many(folder: str, rows: int, times: int) -> None:
    for _ in range(times):
        _result(rows=rows).save(folder)
        assert len(Divergence.load(folder).table) in (2, 3)


def test_two_processes_saving_the_same_run_never_fail(tmp_path):
    folder = str(tmp_path / "run")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_save_and_load_many, args=(folder, rows, 50)) for rows in (2, 3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(Divergence.load(folder).table) in (2, 3)


# --------------------------------------------------------------------- 15: damaged runs
def test_a_damaged_run_is_a_clear_error(tmp_path):
    run = _result().save(tmp_path / "run")
    (run / "meta.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="damaged"):
        Divergence.load(run)
    _result().save(run)
    data = (run / "divergence.parquet").read_bytes()
    (run / "divergence.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="damaged"):
        Divergence.load(run)


def test_the_cache_key_changes_with_the_workbench_code(tiny_models, small_set, monkeypatch):
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig()
    monkeypatch.setattr(dv, "code_digest", lambda: "code-a")
    a = dv.run_key(model, config, small_set, small_set.head(1), "mark-all")
    monkeypatch.setattr(dv, "code_digest", lambda: "code-b")
    assert dv.run_key(model, config, small_set, small_set.head(1), "mark-all") != a


def test_code_digest_covers_the_package_sources():
    dv.code_digest.cache_clear()
    first = dv.code_digest()
    assert len(first) == 64 and dv.code_digest() == first


@pytest.mark.toolkit
def test_a_damaged_cache_entry_is_rebuilt(tiny_models, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = tiny_models["conv-relu-sigmoid"]
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    first = dv.compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    entry = tmp_path / "cache" / "runs" / first.meta["key"]
    data = (entry / "divergence.parquet").read_bytes()
    (entry / "divergence.parquet").write_bytes(data[:100])
    with pytest.warns(WorkbenchWarning, match="damaged cached run"):
        again = dv.compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    pd.testing.assert_frame_equal(again.table, first.table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry is whole: no second warning
        pd.testing.assert_frame_equal(Divergence.load(entry).table, first.table)
