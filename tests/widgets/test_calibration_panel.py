import dataclasses

import pytest

from workbench.preprocess import Preprocess
from workbench.widgets.calibration import CalibrationPanel

pytestmark = pytest.mark.toolkit


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the tests share step 1 and the toolkit runs of a setting."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def panel(tiny_models, cache):
    panel = CalibrationPanel(tiny_models["conv-relu-sigmoid"], Preprocess((127.5,) * 3, (64.0,) * 3))
    for cell in panel.images.children[3:]:
        cell.children[1].value = False  # keep three images
    panel.samples.value = 1
    return panel


def test_thumbnails_for_the_bundled_photographs(panel):
    assert len(panel.images.children) >= 8
    assert all(bytes(cell.children[0].value)[:2] == b"\xff\xd8" for cell in panel.images.children)  # JPEG
    assert len(panel.selected()) == 3


def test_runs_keep_earlier_results_for_comparison(panel):
    panel.mode.value = "mark-all"
    first = panel.run()
    assert first is not None and panel.progress.value == panel.progress.max == 1
    panel.algorithm.value = "mmse"
    second = panel.run()
    assert second is not None and len(panel.results) == 2
    assert [t.name for t in panel.figure.data] == [label for label, _ in panel.results]
    assert "mmse" in panel.results[1][0] and "done" in panel.status.value


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: setattr(p.mean, "value", "1,2,x"), "numbers separated by commas"),
        (lambda p: setattr(p.dtype, "value", "w4a16"), "not available on rk3588"),
        (lambda p: [setattr(c.children[1], "value", False) for c in p.images.children], "Tick at least one"),
    ],
)
def test_bad_settings_show_a_message_not_a_traceback(panel, change, message):
    change(panel)
    assert panel.run() is None
    assert message in panel.status.value and not panel.run_button.disabled
    assert len(panel.figure.data) == 0


def test_folder_without_images(panel, tmp_path):
    panel.folder.value = str(tmp_path)
    panel.load_images()
    assert panel.images.children == () and "No images" in panel.status.value


def test_emulated_what_ifs_and_their_toolkit_confirmation(panel):
    """Emulate mode: a new setting costs one step 1, a float16 choice only onnxruntime; the
    numbers are the emulator runner's, and confirm adds the toolkit's beside them."""
    from workbench.compare.metrics import tensor_metrics
    from workbench.emulate.runner import EmulatorRunner
    from workbench.runners.float import FloatRunner

    assert panel.mode.value == "emulate"
    int8 = panel.run()
    assert int8 is not None and int8.quantized_backend == "emulator", panel.status.value
    assert "relu1_out" in dict(panel.float16.options).values()
    panel.float16.value = ("relu1_out",)
    hybrid = panel.run()
    assert hybrid is not None and len(panel._emulators) == 1  # no second step 1
    assert hybrid.meta["float16"] == ["conv1_out", "relu1_out"]  # the whole conv + relu layer
    assert "+ 2 float16" in panel.results[-1][0] and "done in" in panel.status.value

    # the per-layer and output numbers are the emulator runner's, against float
    config, calibration, samples, _ = panel._last
    variant = EmulatorRunner(panel.model, config, calibration)  # config.float_layers: the what-if
    row = samples.rows[0]
    expected = FloatRunner(panel.model, config.preprocess).run(row)
    got = variant.run(row)
    table = hybrid.table.set_index("layer")
    for layer in ("relu1_out", "y"):
        assert table.at[layer, "sqnr_db"] == pytest.approx(
            tensor_metrics(expected[layer], got[layer])["sqnr_db"]
        )
    assert f"y {table.at['y', 'sqnr_db']:.1f} dB" in panel.status.value
    assert table.at["y", "sqnr_db"] != pytest.approx(int8.table.set_index("layer").at["y", "sqnr_db"])

    confirmed = panel.confirm()
    assert confirmed is not None and confirmed.quantized_backend == "simulator"
    assert "(toolkit)" in panel.results[-1][0] and len(panel.timings) == 3
    toolkit_db = confirmed.summary().set_index("layer").at["y", "sqnr_db_mean"]
    text = panel.status.value
    assert f"emulator {table.at['y', 'sqnr_db']:.1f} dB, toolkit {toolkit_db:.1f} dB" in text
    assert toolkit_db == pytest.approx(table.at["y", "sqnr_db"], abs=0.5)  # tiny models: exact arithmetic


def test_per_layer_weights_are_emulated_and_other_dtypes_run_on_the_toolkit(panel):
    panel.method.value = "layer"
    result = panel.run()
    assert result is not None and result.quantized_backend == "emulator", panel.status.value
    assert "/layer" in panel.results[-1][0] and not panel.confirm_button.disabled
    panel.method.value = "channel"
    w16 = dataclasses.replace(panel.config(), quantized_dtype="w16a16i_dfp")
    assert panel._mode(w16) == ("mark-all", " on the toolkit (w16a16i_dfp: the emulator does w8a8)")


def test_a_setting_the_emulator_is_unfaithful_on_runs_on_the_toolkit(panel):
    from workbench.emulate.quantize import RULES_2_5_0

    panel.rules = RULES_2_5_0.with_changes(fuse=frozenset())  # a wrong rule: nothing fuses
    panel.float16.options = [("relu1_out", "relu1_out")]
    panel.float16.value = ("relu1_out",)
    result = panel.run()
    assert result is not None and result.quantized_backend == "simulator"
    assert "NOT faithful" in panel.status.value and "(mark-all)" in panel.results[-1][0]
    assert "relu1_out" in result.meta["config"]["float_layers"]  # the float16 choice, built
    assert panel.confirm_button.disabled  # already the toolkit's
