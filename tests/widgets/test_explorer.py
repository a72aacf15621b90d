"""DivergenceExplorer: filters redraw the per-layer plot; a click shows the layer's
tensors and rings it in the graph; a run reopened from disk can be explored."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.compare.divergence import compute_divergence
from workbench.compare.metrics import tensor_metrics
from workbench.compare.result import Divergence
from workbench.errors import DatasetError
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.widgets.explorer import MEAN, DivergenceExplorer

from ..fix.conftest import CONFIG
from ..fix.test_ranges import images, outlier_model

pytestmark = pytest.mark.toolkit


@pytest.fixture(scope="module")
def explorer(tiny_models, small_set, tmp_path_factory):
    model = tiny_models["residual-add"]
    config = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})
    result = compute_divergence(model, config, small_set, small_set.head(2), progress=False)
    folder = result.save(tmp_path_factory.mktemp("runs") / "run")
    explorer = DivergenceExplorer(Divergence.load(folder), model)
    yield explorer
    explorer.close()


def click(explorer, layer):
    trace = explorer.layers.data[0]
    explorer._on_click(trace, SimpleNamespace(point_inds=[list(trace.customdata).index(layer)]), None)


def test_filters_redraw_the_plot(explorer):
    trace = explorer.layers.data[0]
    assert "relu1_out" in trace.customdata and explorer.sample.value == MEAN
    mean = list(trace.y)
    explorer.sample.value = "sample 1"
    assert list(trace.y) != mean and "sample 1" in explorer.layers.layout.title.text
    explorer.metric.value = "cosine"
    assert all(0.9 < v <= 1.0 for v in trace.y)
    explorer.sample.value, explorer.metric.value = MEAN, "sqnr_db"
    assert list(trace.y) == mean


def test_click_shows_the_tensors_and_rings_the_layer_in_the_graph(explorer):
    click(explorer, "relu1_out")
    assert explorer.selected == "relu1_out"
    kinds = [t.type for t in explorer.detail.data]
    assert kinds == ["scattergl", "scatter", "histogram", "histogram", "bar"]
    per_channel = explorer.detail.data[-1].y
    channels = {t.name: t.shape for t in explorer.model.tensors}["relu1_out"][1]
    assert len(per_channel) == channels > 1 and all(np.isfinite(per_channel))
    mark = explorer.layers.data[1]
    assert list(mark.x) == [explorer.rows().set_index("layer").at["relu1_out", "index"]]
    ring = explorer.graph.data[-1]
    assert ring.name == "selected" and len(ring.x) == 1
    assert "relu1_out" in explorer.status.value and "sqnr_db" in explorer.status.value


def test_sample_filter_follows_the_clicked_layer(explorer):
    click(explorer, "y")
    first = np.asarray(explorer.detail.data[0].y)
    explorer.sample.value = "sample 1"
    assert explorer.selected == "y" and "sample 1" in explorer.status.value
    assert not np.array_equal(first, np.asarray(explorer.detail.data[0].y))
    explorer.sample.value = MEAN


def _three_layer_run() -> Divergence:
    import pandas as pd

    rows = [
        {
            "index": i,
            "layer": name,
            "op_type": "Conv",
            "rknn_layer": name,
            "sample": 0,
            "backend": "simulator",
            "status": "compared",
            "flag": "",
            "sqnr_db": db,
            "cosine": 0.9,
            "toolkit_single_cos": float("nan"),
        }
        for i, (name, db) in enumerate([("a", 40.0), ("b", 12.0), ("y", 11.0)])
    ]
    return Divergence(
        pd.DataFrame(rows), {"model": {"outputs": {"y": [1, 8]}}, "parents": {"b": ["a"], "y": ["b"]}}
    )


def test_headline_leads_with_the_output_then_the_origins():
    from workbench.widgets.explorer import headline

    text = headline(_three_layer_run())
    assert "model output y: SQNR 11.0 dB mean" in text
    assert text.index("Verdict") < text.index("Where") < text.index("Next")
    assert "b (Conv" in text  # the layer that makes the error


def test_what_if_is_the_emulators_number_and_confirm_shows_the_toolkits(explorer, small_set):
    from workbench.emulate.runner import EmulatorRunner
    from workbench.fix.evaluate import prepare_job

    click(explorer, "relu1_out")
    assert explorer._whatif_box.layout.display is None and explorer.confirm_button.disabled
    explorer.what_if_button.click()
    assert explorer.whatifs.faithful, explorer.whatif_status.value
    shown = explorer._whatif["emulator"]
    assert shown.layers == ("conv1_out", "relu1_out")  # the whole conv + relu layer

    # the same numbers straight from the emulator runner
    model, config = explorer.model, explorer.whatifs.config
    samples = small_set.head(2)  # the run's samples (no answers given)
    job = prepare_job(model, config, small_set, samples)
    runner = EmulatorRunner(model, config, small_set)
    for layers, score in [(shown.layers, shown), ((), explorer._whatif["base"])]:
        variant = runner.variant(layers) if layers else runner
        db = [
            tensor_metrics(expected[0], variant.outputs(row)["y"])["sqnr_db"]
            for expected, row in zip(job.expected, samples.rows)
        ]
        assert score.sqnr_db == pytest.approx(np.mean(db), abs=1e-9)
        assert f"{score.sqnr_db:.1f} dB" in explorer.whatif_status.value
    assert not explorer.confirm_button.disabled

    explorer.confirm_button.click()
    toolkit = explorer._whatif["toolkit"]
    assert not toolkit.error and toolkit.cycles
    assert "toolkit" in explorer.whatif_status.value
    assert f"{toolkit.sqnr_db:.1f} dB" in explorer.whatif_status.value
    # the emulator is the toolkit's arithmetic on this model: the two numbers agree
    assert toolkit.sqnr_db == pytest.approx(shown.sqnr_db, abs=0.5)
    assert explorer.confirm_button.disabled  # built once

    click(explorer, "y")  # another layer: its own what-if, the emulator is not built again
    emulator = explorer.whatifs.emulator
    assert "toolkit" not in explorer._whatif and explorer.confirm_button.disabled
    explorer.what_if_button.click()
    assert explorer.whatifs.emulator is emulator and explorer._whatif["emulator"].layers[-1] == "y_int8"


def test_an_unfaithful_emulator_offers_only_the_toolkit(explorer, small_set):
    from workbench.emulate.quantize import RULES_2_5_0

    again = DivergenceExplorer(explorer.result, explorer.model)
    try:
        # no panel, no axes before the first click
        assert again._whatif_box.layout.display == "none" and again._detail_box.layout.display == "none"
        again.whatifs.rules = RULES_2_5_0.with_changes(fuse=frozenset())  # a wrong rule: nothing fuses
        again.selected = "relu1_out"
        assert again.what_if() is None
        assert not again.whatifs.faithful and "not faithful" in again.whatif_status.value
        assert again.what_if_button.disabled and not again.confirm_button.disabled
        score = again.confirm()
        assert score is not None and not score.error
        assert f"{score.sqnr_db:.1f} dB" in again.whatif_status.value and "emulator</td>" not in (
            again.whatif_status.value
        )
    finally:
        again.close()


def test_headline_leads_with_the_answers():
    import pandas as pd

    from workbench.task.evaluate import TaskResult
    from workbench.widgets.explorer import headline

    rows = [
        {"sample": i, "path": f"{i}.jpg", "backend": b, "status": "ok", "prediction": p, "label": None,
         "correct": None, "agree": None if b == "float" else p == "cat", "error": None}
        for i in range(4)
        for b, p in [("float", "cat"), ("simulator", "cat" if i else "dog")]
    ]  # fmt: skip
    answers = TaskResult(pd.DataFrame(rows), {"task": "classification"})
    result = _three_layer_run()
    text = headline(result, answers)
    assert "classification on 4 samples; simulator 1 of 4 answers differ from float" in text
    assert text.index("Verdict") < text.index("answers differ") < text.index("Where") < text.index("Next")
    assert "SQNR" not in text.split("Where")[0]  # the answers lead, not the output SQNR
    assert "what-if" in text.split("Next")[1]


def test_what_ifs_score_the_answers_samples_spread_evenly(tiny_models):
    import pandas as pd

    from workbench.task.evaluate import TaskResult
    from workbench.widgets.explorer import WHATIF_SAMPLES, _whatif_samples

    rows = [
        {"sample": i, "path": f"/d/{i}.jpg", "backend": b, "status": "ok", "prediction": "a", "label": None,
         "correct": None, "agree": None if b == "float" else True, "error": None}
        for i in range(40)
        for b in ("float", "simulator")
    ]  # fmt: skip
    answers = TaskResult(pd.DataFrame(rows), {"task": "classification"})
    model = tiny_models["residual-add"]
    samples, adapter = _whatif_samples(model, [("/run/0.jpg",)], answers, None)
    picked = [int(Path(r[0]).stem) for r in samples.rows]
    assert len(picked) == WHATIF_SAMPLES == len(set(picked)) and picked[0] == 0 and picked[-1] == 39
    assert adapter.name == "classification"
    samples, adapter = _whatif_samples(model, [("/run/0.jpg",)], None, None)
    assert samples.rows == [("/run/0.jpg",)] and adapter is None  # no answers: the run's samples


def test_the_what_if_table_puts_emulator_and_toolkit_side_by_side():
    from workbench.emulate.whatif import WhatIf
    from workbench.fix.evaluate import Score
    from workbench.widgets.explorer import whatif_html

    state = {
        "layer": "relu1_out",
        "unit": ("conv1_out", "relu1_out"),
        "base": WhatIf((), 20.04, 0.75, 0.1),
        "emulator": WhatIf(("conv1_out", "relu1_out"), 31.26, 1.0, 0.2),
        "toolkit": Score(("conv1_out", "relu1_out"), sqnr_db=31.2, agreement=1.0, cycles=100),
    }
    text = whatif_html(state, answers=True)
    cells = [row.split("</td><td>") for row in text.split("<tr><td>")[1:]]
    assert [c[:4] for c in cells] == [
        ["int8 now", "emulator", "20.0 dB", "75 %"],
        ["relu1_out in float16", "emulator", "31.3 dB", "100 %"],
        ["relu1_out in float16", "toolkit", "31.2 dB", "100 %"],
    ]
    assert "answers agree" in text and "conv1_out, relu1_out" in text
    assert "answers agree" not in whatif_html(state, answers=False)


def test_a_run_whose_calibration_list_is_gone_says_how_to_point_at_it(explorer, tmp_path):
    """A run shared from another machine names a dataset list that is not here."""
    meta = {**explorer.result.meta, "calibration": {"source": str(tmp_path / "gone.txt")}}
    result = Divergence(explorer.result.table, meta)
    with pytest.raises(DatasetError, match=r"gone\.txt.*calibration=CalibrationSet\.from_list"):
        DivergenceExplorer(result, explorer.model)


def test_fitting_a_layers_range_clips_the_outlier_and_the_toolkit_agrees(tmp_path):
    """A ReLU output stretched to 92 by one red patch in the calibration set: the range
    what-if clips it on the emulator, and one toolkit build confirms the gain."""
    model = OnnxModel.from_proto(outlier_model())
    calibration, samples = images(tmp_path / "cal", 8, 1, True), images(tmp_path / "samples", 2, 2, False)
    result = compute_divergence(model, CONFIG, calibration, samples, progress=False, cache=False)
    explorer = DivergenceExplorer(result, model, calibration=calibration)
    try:
        click(explorer, "r1")
        assert explorer.fit_range() is not None, explorer.whatif_status.value
        clip, base, emulated = (
            explorer._whatif["range"],
            explorer._whatif["base"],
            explorer._whatif["emulator"],
        )
        assert clip.kind == "clip" and clip.was[1] > 90 and clip.hi < 3
        assert emulated.sqnr_db > base.sqnr_db + 10
        assert "r1 range clipped to" in explorer.whatif_status.value
        assert "confirm it with one toolkit build" in explorer.whatif_status.value
        explorer.confirm_button.click()
        toolkit = explorer._whatif["toolkit"]
        assert not toolkit.error and toolkit.sqnr_db == pytest.approx(emulated.sqnr_db, abs=1.0)
        click(explorer, "y")  # the output: barely overflowed, widening it gains nothing
        explorer.fit_range()
        assert "too little to act on" in explorer.whatif_status.value
    finally:
        explorer.close()
