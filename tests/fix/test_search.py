"""Mixed-precision search on the tiny residual model: target met with the fewest layers,
an unmeetable target, bad input, and the export of the toolkit's hybrid files."""

import dataclasses

import pytest
import yaml

from workbench.errors import ToolkitError, WorkbenchError
from workbench.fix.search import search_mixed_precision
from workbench.viz.fix_plots import pareto_figure

from .conftest import CONFIG

pytestmark = pytest.mark.toolkit


def _search(residual, small_set, ranking, **target):
    return search_mixed_precision(
        residual, CONFIG, small_set, small_set.head(2), ranking=ranking, progress=False, **target
    )


def test_fewest_layers_meeting_the_target(residual, small_set, residual_ranking):
    singles = residual_ranking[residual_ranking.layer.notna()]
    int8 = residual_ranking.iloc[0].output_sqnr_db
    # A target above every single layer's result but below all-float16 needs two layers.
    target = singles.output_sqnr_db.max() + 0.5
    assert target < residual_ranking.iloc[1].output_sqnr_db
    result = _search(residual, small_set, residual_ranking, target_sqnr_db=target)
    assert result.met and result.score.sqnr_db >= target
    assert (
        len(result.layers) == 2
        and result.layers[0] == singles.layer.iloc[0]
        or singles.layer.iloc[0] in result.layers
    )
    assert result.baseline.sqnr_db == pytest.approx(int8)
    assert result.config.float_layers == result.layers and "hybrid (2 float16)" == result.config.variant
    assert set(result.trail.stage) >= {"sensitivity", "prefix"} and result.builds == len(result.trail)
    assert "met with 2 float16" in result.summary()


def test_a_target_already_met_needs_no_float16(residual, small_set, residual_ranking):
    result = _search(residual, small_set, residual_ranking, target_cosine=0.9)
    assert result.met and result.layers == ()


def test_an_unmeetable_target_reports_the_best_found(residual, small_set, residual_ranking):
    result = _search(residual, small_set, residual_ranking, target_sqnr_db=95.0)
    assert not result.met
    scored = result.trail[result.trail.error == ""]
    assert result.score.sqnr_db == pytest.approx(scored.sqnr_db.max())
    assert "NOT met (best found shown)" in result.summary()


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(residual, small_set, residual_ranking):
    ranking = residual_ranking.copy()
    ranking.loc[len(ranking)] = {"layer": "ghost_tensor", "op_type": "Conv", "gain_db": 99.0, "error": ""}
    ranking = ranking.sort_values(
        "gain_db", ascending=False, key=lambda g: g.where(ranking.layer.notna(), 1e9)
    )
    best_single = residual_ranking[residual_ranking.layer.notna()].output_sqnr_db.max()
    result = _search(residual, small_set, ranking, target_sqnr_db=best_single - 0.1)
    ghost = result.trail[result.trail.layers.map(lambda layers: layers == ["ghost_tensor"])]
    assert len(ghost) == 1 and ghost.error.iloc[0]
    assert result.met and "ghost_tensor" not in result.layers


@pytest.mark.parametrize(
    ("target", "message"),
    [({}, "Give a target"), ({"target_cosine": 1.5}, "cosine in")],
)
def test_bad_targets_are_refused(residual, small_set, residual_ranking, target, message):
    with pytest.raises(WorkbenchError, match=message):
        _search(residual, small_set, residual_ranking, **target)


def test_export_writes_the_toolkit_hybrid_files_and_keeps_an_earlier_export(
    residual, small_set, residual_ranking, tmp_path
):
    result = _search(residual, small_set, residual_ranking, target_sqnr_db=95.0)
    folder = result.export(tmp_path / "fix", residual, small_set)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "residual_add.data",
        "residual_add.model",
        "residual_add.quantization.cfg",
        "residual_add.rknn",
        "search.json",
        "trail.csv",
    ]
    cfg = yaml.safe_load((folder / "residual_add.quantization.cfg").read_text())
    assert cfg["custom_quantize_layers"] == {name: "float16" for name in result.layers}
    assert (folder / "residual_add.rknn").stat().st_size > 0
    broken = dataclasses.replace(result, config=dataclasses.replace(result.config, float_layers=("ghost",)))
    with pytest.raises(ToolkitError):
        broken.export(folder, residual, small_set)
    assert sorted(p.name for p in folder.iterdir()) == names  # the earlier export is intact


def test_pareto_figure_marks_the_front(residual, small_set, residual_ranking):
    result = _search(residual, small_set, residual_ranking, target_sqnr_db=95.0)
    fig = pareto_figure(
        result.trail, cost="rw_kb", target=95.0, marks={"found": (result.score.rw_kb, result.score.sqnr_db)}
    )
    names = [t.name for t in fig.data]
    assert "Pareto front" in names and "found" in names and "sensitivity" in names
    front = result.pareto("rw_kb")
    assert (
        list(front.sqnr_db) == sorted(front.sqnr_db) and front.sqnr_db.iloc[-1] == result.trail.sqnr_db.max()
    )


def test_int8_meeting_the_target_needs_no_sweep_and_still_reports(residual, small_set, tmp_path):
    from workbench.compare.divergence import compute_divergence
    from workbench.viz.report import write_report

    result = search_mixed_precision(
        residual, CONFIG, small_set, small_set.head(2), target_cosine=0.9, engine="toolkit", progress=False
    )
    assert result.met and result.layers == () and result.builds == 1  # the int8 build only
    run = compute_divergence(residual, CONFIG, small_set, small_set.head(1), progress=False)
    text = write_report(run, tmp_path / "r.html", search=result).read_text()
    assert "No sensitivity sweep was needed" in text


def test_export_never_replaces_a_folder_that_is_not_an_export(
    residual, small_set, residual_ranking, tmp_path
):
    result = _search(residual, small_set, residual_ranking, target_cosine=0.9)
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(WorkbenchError, match="not an earlier export"):
        result.export(mine, residual, small_set)
    assert (mine / "notes.txt").read_text() == "keep me"
