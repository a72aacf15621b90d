import numpy as np
import pandas as pd
import pytest

from workbench.compare.divergence import compute_divergence
from workbench.compare.result import COLUMNS, Divergence
from workbench.errors import WorkbenchError
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig


@pytest.fixture(scope="session")
def tiny_run(tiny_models, small_set) -> Divergence:
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    return compute_divergence(
        tiny_models["conv-relu-sigmoid"],
        config,
        small_set,
        small_set.head(2),
        backend="snapshot",
        cache=False,
        progress=False,
    )


@pytest.mark.toolkit
def test_table_covers_every_tensor_in_topological_order(tiny_run):
    table = tiny_run.table
    assert list(table.columns) == list(COLUMNS)
    first = table[table["sample"] == 0]
    unmapped = first[first.status == "unmapped"]  # the toolkit's own layers, e.g. x_int8
    assert set(unmapped.rknn_layer) == set(unmapped.layer) and unmapped.toolkit_entire_cos.notna().all()
    first = first[first.status != "unmapped"]
    assert list(first.layer) == ["x", "conv1_out", "relu1_out", "conv2_out", "y"]
    assert set(table["sample"]) == {0, 1} and set(table.backend) == {"simulator"}
    # Conv+Relu fuse into one NPU layer: the Conv output has no RKNN tensor and says so.
    assert dict(zip(first.layer, first.status)) == {
        "x": "compared",
        "conv1_out": "fused",
        "relu1_out": "compared",
        "conv2_out": "compared",
        "y": "compared",
    }


@pytest.mark.toolkit
def test_our_cosine_agrees_with_the_toolkits_entire_cosine(tiny_run):
    compared = tiny_run.table[tiny_run.table.status == "compared"]
    np.testing.assert_allclose(compared.cosine, compared.toolkit_entire_cos, atol=2e-5)
    assert (compared[compared.layer != "x"].sqnr_db < 100).all()  # quantization is not free


@pytest.mark.toolkit
def test_summary_and_worst(tiny_run):
    summary = tiny_run.summary()
    assert list(summary.layer) == ["x", "relu1_out", "conv2_out", "y"]
    assert (summary.samples == 2).all()
    assert (summary.sqnr_db_worst <= summary.sqnr_db_mean).all()
    assert tiny_run.worst(1).layer.iloc[0] == summary.loc[summary.sqnr_db_mean.idxmin(), "layer"]


@pytest.mark.toolkit
def test_save_load_round_trip(tiny_run, tmp_path):
    folder = tiny_run.save(tmp_path / "run")
    loaded = Divergence.load(folder)
    pd.testing.assert_frame_equal(loaded.table, tiny_run.table)
    assert loaded.meta["model"]["name"] == tiny_run.meta["model"]["name"]
    assert loaded.meta["toolkit_version"] == "2.5.0"


@pytest.mark.toolkit
def test_failed_save_keeps_the_earlier_run(tiny_run, tmp_path, monkeypatch):
    folder = tiny_run.save(tmp_path / "run")
    before = (folder / "divergence.parquet").read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError):
        Divergence(tiny_run.table.head(1), {}).save(folder)
    assert (folder / "divergence.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run"]  # no debris but the lock


def test_loading_a_folder_without_a_run(tmp_path):
    with pytest.raises(WorkbenchError, match="no saved divergence run"):
        Divergence.load(tmp_path)


def _tiny_result() -> Divergence:
    table = pd.DataFrame([dict.fromkeys(COLUMNS, 0)], columns=list(COLUMNS))
    return Divergence(table, {"model": {"name": "m"}})


def test_save_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="not empty and holds no saved run"):
        _tiny_result().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resave_keeps_the_runs_other_files(tmp_path):
    folder = _tiny_result().save(tmp_path / "run")
    (folder / "report.html").write_text("<html>")
    _tiny_result().save(folder)
    assert (folder / "report.html").read_text() == "<html>"


def test_a_save_stopped_between_the_two_renames_is_recovered(tmp_path):
    folder = _tiny_result().save(tmp_path / "run")
    folder.rename(tmp_path / ".run.old")  # what a stop between os.replace calls leaves
    assert len(Divergence.load(tmp_path / "run").table) == 1
