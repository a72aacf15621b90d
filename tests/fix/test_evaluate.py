"""Scoring hybrid choices: per-set failures, the cache that makes sweeps resumable, and
the executor interface (local workers, a dask LocalCluster)."""

import pytest

from workbench.fix.evaluate import SweepStore, evaluate, prepare_job
from workbench.fix.executor import LocalExecutor, as_executor

from .conftest import CONFIG

pytestmark = pytest.mark.toolkit


class CountingExecutor(LocalExecutor):
    """Local workers that remember which layer sets were handed to them."""

    def __init__(self):
        super().__init__(jobs=2)
        self.submitted = []

    def map_unordered(self, fn, shared, items):
        items = list(items)
        self.submitted += [s for batch in items for s in batch]
        return super().map_unordered(fn, shared, items)


@pytest.fixture
def job(residual, small_set, tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path))
    return prepare_job(residual, CONFIG, small_set, small_set.head(1))


def test_a_failing_set_is_recorded_and_the_others_are_scored(job):
    good, bad, after = evaluate(job, [["conv1_out"], ["no_such_tensor"], ["add_out"]], progress=False)
    assert "no_such_tensor" in bad.error or "custom_quantize_layers" in bad.error, bad.error
    assert not good.error and not after.error
    assert good.sqnr_db > 20 and after.sqnr_db > 20 and good.cycles > 0


def test_an_interrupted_sweep_resumes_where_it_stopped(job):
    first = CountingExecutor()
    done = evaluate(job, [[], ["conv1_out"]], first, progress=False)
    store = SweepStore(job.key).path
    assert len(store.read_text().split()) > 1 and len(SweepStore(job.key).load()) == 2
    store.write_text(store.read_text() + '\n{"layers": ["add_')  # a record cut short
    again = CountingExecutor()
    scores = evaluate(job, [[], ["conv1_out"], ["add_out"]], again, progress=False)
    assert again.submitted == [("add_out",)]  # only what was not scored before
    assert scores[:2] == done
    nothing = CountingExecutor()
    evaluate(job, [["add_out"], []], nothing, progress=False)
    assert nothing.submitted == []


def test_dask_cluster_gives_the_local_scores(job):
    distributed = pytest.importorskip("distributed")
    sets = [[], ["conv1_out"], ["conv1_out", "add_out"]]
    local = evaluate(job, sets, progress=False, cache=False)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, host="127.0.0.1"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        executor = as_executor(client)
        assert type(executor).__name__ == "DaskExecutor" and executor.slots == 2
        remote = evaluate(job, sets, client, progress=False, cache=False)
    assert [s.layers for s in remote] == [s.layers for s in local]
    assert [round(s.sqnr_db, 6) for s in remote] == [round(s.sqnr_db, 6) for s in local]


def test_executor_must_be_known():
    with pytest.raises(TypeError, match="dask.distributed Client"):
        as_executor(object())
