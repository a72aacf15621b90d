"""Range clipping: candidate clips from a histogram, the edited step-2 cfg, and a ReLU output
with a rare huge outlier whose clipped range the simulator confirms."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from workbench.datasets import CalibrationSet
from workbench.emulate.quantize import TensorQuant
from workbench.errors import WorkbenchError
from workbench.fix.ranges import Clip, candidate_clips, write_cfg
from workbench.model import OnnxModel

from .conftest import CONFIG

#: The outlier channel's gain: it fires only where red > 249 (x = (R - 127.5) / 64 > 1.9),
#: up to (1.9921875 - 1.9) * 1000 = 92.19, while every other channel stays below ~3.
GAIN = 1000.0


def outlier_model() -> onnx.ModelProto:
    """Conv 1x1 3->8, ReLU, Conv 1x1 8->4; channel 0 of the ReLU output is 0 except on pure red
    pixels, where it reaches 92; the next conv reads it with weight 0.01 only."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (8, 3, 1, 1)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 8).astype(np.float32)
    w1[0], b1[0] = 0.0, -1.9 * GAIN
    w1[0, 0, 0, 0] = GAIN
    w2 = rng.normal(0, 0.5, (4, 8, 1, 1)).astype(np.float32)
    w2[:, 0] = 0.01
    return _conv_relu_conv("outlier", w1, b1, w2)


def brightness_model() -> onnx.ModelProto:
    """Conv 1x1 3->4 with positive weights (each channel grows with the brightness), ReLU,
    conv 1x1 4->2: on dark images every tensor stays small, on bright ones it is 4x larger."""
    rng = np.random.default_rng(1)
    w1 = rng.uniform(0.3, 0.6, (4, 3, 1, 1)).astype(np.float32)
    w2 = rng.uniform(0.2, 0.5, (2, 4, 1, 1)).astype(np.float32)
    return _conv_relu_conv("brightness", w1, np.full(4, 3.0, np.float32), w2)


def _conv_relu_conv(name: str, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x (1x3x32x32) -> Conv 1x1 (w1, b1) -> ReLU (r1) -> Conv 1x1 (w2, no bias) -> y."""
    inits = [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2")]]
    inits.append(numpy_helper.from_array(np.zeros(len(w2), np.float32), "b2"))
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, len(w2), 32, 32])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def images(
    folder: Path, n: int, seed: int, red_square: bool, levels: tuple[int, int] = (30, 220)
) -> CalibrationSet:
    """Smooth random images in ``levels``; with ``red_square`` the first has a 4x4 pure red patch."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(*levels, (8, 8, 3)).astype(np.uint8)
        img = cv2.resize(small, (32, 32), interpolation=cv2.INTER_LINEAR)
        if red_square and i == 0:
            img[4:8, 4:8] = (0, 0, 255)  # BGR
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return CalibrationSet.from_folder(folder)


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    root = tmp_path_factory.mktemp("outlier")
    model = OnnxModel.from_proto(outlier_model())
    return model, images(root / "cal", 8, 1, True), images(root / "samples", 3, 2, False)


def test_candidates_are_the_calibration_percentiles_inside_the_cfg_range():
    # 9999 values spread evenly over [0, 1) and one at 100: the cfg range is [0, 100].
    edges = np.linspace(0.0, 100.0, 2049)
    values = np.append(np.arange(9999) / 9999, 100.0)
    hist = (np.histogram(values, edges)[0], edges)
    entry = {"dtype": "int8", "min": [0.0], "max": [100.0], "scale": [100 / 255], "zero_point": [-128]}
    cfg = TensorQuant.from_cfg("r", entry)
    clips = candidate_clips("r", cfg, hist, percentiles=(100.0, 99.9))
    # 100 % keeps the outlier (no clip); 99.9 % ends at the first bin edge above 1.0
    assert [c.percentile for c in clips] == [99.9]
    assert clips[0].lo == 0.0 and clips[0].was == (0.0, 100.0)
    assert clips[0].hi == pytest.approx(edges[21])  # 1.025: the bin holding the values near 1


def test_write_cfg_edits_min_and_max_only(tmp_path):
    cfg = tmp_path / "model.quantization.cfg"
    entry = {"dtype": "int8", "min": [0.0], "max": [92.0], "scale": [0.36], "zero_point": [-128]}
    cfg.write_text(yaml.safe_dump({"custom_quantize_layers": {}, "quantize_parameters": {"r1": entry}}))
    out = write_cfg(cfg, [Clip("r1", 0.0, 2.5, (0.0, 92.0), 99.9)], tmp_path / "clipped.cfg")
    edited = yaml.safe_load(out.read_text())["quantize_parameters"]["r1"]
    # the toolkit refuses an edited scale; it recomputes it from min/max
    assert edited == {**entry, "min": [0.0], "max": [2.5]}
    with pytest.raises(WorkbenchError, match="no tensor 'nope'"):
        write_cfg(cfg, [Clip("nope", 0.0, 1.0, (0.0, 2.0), 99.9)], tmp_path / "x.cfg")


@pytest.mark.toolkit
def test_clipping_the_outlier_is_found_on_the_emulator_and_confirmed_on_the_simulator(outlier):
    from workbench.emulate.runner import EmulatorRunner
    from workbench.fix.evaluate import prepare_job, score_config
    from workbench.fix.ranges import score_clips, search_ranges

    model, calibration, samples = outlier
    emulator = EmulatorRunner(model, CONFIG, calibration, cache=False)
    search = search_ranges(emulator, calibration)
    clipped = {c.tensor: c for c in search.clips}
    # the ReLU output's range [0, 92.19] (the red patch) shrinks to the other channels' ~[0, 3]
    assert clipped["r1"].was == pytest.approx((0.0, 92.1875))
    assert clipped["r1"].hi < 3.0
    assert search.sqnr_db > search.int8_sqnr_db + 10
    job = prepare_job(model, CONFIG, calibration, samples)
    int8, clipped_score = score_config(job, CONFIG), score_clips(job, search.clips)
    # measured: 12.9 dB -> 30.7 dB on the simulator (one int8 step 0.36 -> ~0.01)
    assert int8.sqnr_db < 16
    assert clipped_score.sqnr_db > int8.sqnr_db + 10, (int8, clipped_score)


@pytest.mark.toolkit
def test_widening_what_the_samples_overflow_is_found_on_the_emulator_and_confirmed(tmp_path):
    """Calibrated on dark images, run on bright ones: the input's int8 copy (its range is the
    calibration set's) and every tensor after it saturate; widening them together (one alone
    gains nothing while the next still saturates) gives the answers back."""
    from workbench.emulate.runner import EmulatorRunner
    from workbench.fix.evaluate import prepare_job, score_config
    from workbench.fix.ranges import score_clips, search_ranges

    model = OnnxModel.from_proto(brightness_model())
    dark = images(tmp_path / "dark", 6, 1, False, levels=(20, 90))
    bright = images(tmp_path / "bright", 3, 2, False, levels=(170, 250))
    emulator = EmulatorRunner(model, CONFIG, dark, cache=False)
    search = search_ranges(emulator, dark, bright)
    widened = {c.tensor: c for c in search.clips if c.kind == "widen"}
    assert {"x_int8", "r1"} <= set(widened) and widened["r1"].hi > 2 * widened["r1"].was[1]
    assert widened["x_int8"].was[1] == 0.0 and widened["x_int8"].hi > 1.5  # x = (R - 127.5) / 64
    job = prepare_job(model, CONFIG, dark, bright)
    int8, wider = score_config(job, CONFIG), score_clips(job, search.clips)
    # measured: 4.9 dB -> 55.2 dB, the emulator and the simulator alike
    assert int8.sqnr_db == pytest.approx(search.int8_sqnr_db, abs=1.0) and int8.sqnr_db < 10
    assert wider.sqnr_db == pytest.approx(search.sqnr_db, abs=1.0) and wider.sqnr_db > int8.sqnr_db + 30
    # the calibration set itself overflows nothing: nothing to widen
    assert all(c.kind == "clip" for c in search_ranges(emulator, dark).clips)


@pytest.mark.toolkit
def test_the_kept_ranges_remedy_exports_a_deployable_rknn(outlier, tmp_path):
    """try_remedies keeps the clip; export writes the .rknn built with the edited step-2 cfg."""
    from workbench.fix.remedies import try_remedies

    model, calibration, samples = outlier
    found = try_remedies(model, CONFIG, calibration, samples, remedies=("ranges",), progress=False)
    assert found.best() == "ranges", found.table.to_string()
    folder = found.export("ranges", tmp_path / "fixed", model, calibration)
    names = {p.name for p in folder.iterdir()}
    assert {"outlier.rknn", "outlier.quantization.cfg", "outlier.model", "outlier.data"} <= names
    assert (folder / "outlier.rknn").stat().st_size > 0
    edited = yaml.safe_load((folder / "outlier.quantization.cfg").read_text())["quantize_parameters"]["r1"]
    assert edited["max"][0] < 3  # the clipped range, as the toolkit built it
    about = json.loads((folder / "remedy.json").read_text())
    assert about["remedy"] == "ranges" and about["kept"] is True and "Best remedy: ranges" in about["verdict"]
    with pytest.raises(WorkbenchError, match="No 'cle' to export"):
        found.export("cle", tmp_path / "other", model, calibration)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my work")
    with pytest.raises(WorkbenchError, match="holds no earlier export"):
        found.export("ranges", tmp_path / "mine", model, calibration)
