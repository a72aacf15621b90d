"""The accuracy fix end to end on real models, CI-sized (a few candidates, one sample):
sensitivity ranking, a config meeting a stated target, before/after plots and report."""

import pytest

from workbench.datasets import default_calibration_set, zoo_entry
from workbench.fix.before_after import compare_variants, variant_configs, variants_table
from workbench.fix.search import search_mixed_precision
from workbench.fix.sensitivity import sensitivity
from workbench.rknn.config import BuildConfig
from workbench.viz.fix_plots import variants_figure
from workbench.viz.report import write_report

pytestmark = [pytest.mark.toolkit, pytest.mark.zoo]

#: name -> output SQNR target (dB): above the all-int8 output on the first bundled photo
#: (lcnet-orientation 51.5 dB, yolov8n 36.1 dB with rknn-toolkit2 2.5.0 on rk3588).
TARGETS = {"lcnet-orientation": 53.0, "yolov8n": 36.5}


@pytest.mark.parametrize("name", list(TARGETS))
def test_fix_accuracy_end_to_end(zoo, name, tmp_path):
    model, entry = zoo(name), zoo_entry(name)
    calibration = default_calibration_set()
    samples = calibration.head(1)
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})

    ranking = sensitivity(model, config, calibration, samples, candidates=6, progress=False)
    ranked = ranking[ranking.layer.notna()]
    assert len(ranked) == 6 and list(ranked.gain_db) == sorted(ranked.gain_db, reverse=True)
    assert ranked.gain_db.iloc[0] > 0.3, ranking  # keeping the worst layer in float16 helps

    target = TARGETS[name]
    assert ranking.iloc[0].output_sqnr_db < target  # the int8 model misses it
    result = search_mixed_precision(
        model, config, calibration, samples, target_sqnr_db=target, ranking=ranking, progress=False
    )
    assert result.met, result.summary()
    assert 1 <= len(result.layers) <= 6 and result.score.sqnr_db >= target

    runs = compare_variants(
        model, variant_configs(config, result.layers), calibration, samples, progress=False
    )
    assert list(runs) == ["w8a8", "hybrid", "auto_hybrid"]
    table = variants_table(runs, list(model.outputs)).set_index("variant")
    assert table.loc["hybrid", "float16_layers"] == len(result.layers)
    # The per-layer run measures the same improvement the search's output scoring saw.
    assert table.loc["hybrid", "output_sqnr_db"] > table.loc["w8a8", "output_sqnr_db"]
    assert len(variants_figure(runs).data) == 3

    report = write_report(runs["w8a8"], tmp_path / "report.html", variants=runs, search=result)
    text = report.read_text()
    assert "Before/after: quantization variants" in text and "Mixed-precision search" in text
    assert text.count("plotly.js v") == 1  # plotly inlined once: the file opens offline
