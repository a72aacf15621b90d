import pytest

from workbench.preprocess import Preprocess
from workbench.widgets.calibration import CalibrationPanel

pytestmark = pytest.mark.toolkit


@pytest.fixture
def panel(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
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
