"""Float16 what-ifs on the emulator: the unit is the whole compiled layer, and a score is
the model outputs' SQNR (and answers) of the variant the runner gives."""

import numpy as np
import pytest

from workbench.compare.metrics import tensor_metrics
from workbench.emulate.runner import EmulatorRunner
from workbench.emulate.whatif import layer_unit, score_variant
from workbench.errors import EmulatorError
from workbench.fix.evaluate import prepare_job
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.runners.float import FloatRunner
from workbench.task.adapters import CallableAdapter

pytestmark = pytest.mark.toolkit

CONFIG = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})


@pytest.fixture(scope="module")
def emulator(tiny_models, small_set):
    return EmulatorRunner(tiny_models["residual-add"], CONFIG, small_set)


def test_the_unit_is_the_whole_fused_layer(emulator):
    # conv1 + relu1 compile to one layer, conv2 + add to another (ConvAdd); relu2 is the output's
    assert layer_unit(emulator, "relu1_out") == ["conv1_out", "relu1_out"]
    assert layer_unit(emulator, "y") == ["add_out", "y_int8"]
    with pytest.raises(EmulatorError, match="conv1_out is no compiled layer's output"):
        layer_unit(emulator, "conv1_out")  # fused inside relu1's layer


def test_score_is_the_variants_outputs_against_float(emulator, tiny_models, small_set):
    model, samples = tiny_models["residual-add"], small_set.head(3)

    def brightest(outputs):  # the channel with the largest mean: a toy "class"
        return int(outputs["y"].mean(axis=(0, 2, 3)).argmax())

    job = prepare_job(model, CONFIG, small_set, samples, CallableAdapter(brightest))
    unit = ("conv1_out", "relu1_out")
    got = score_variant(emulator, job, unit)

    variant = emulator.variant(unit)
    reference = FloatRunner(model, CONFIG.preprocess, keep=["y"])
    floats = [reference.run(row)["y"] for row in samples.rows]
    quantized = [variant.outputs(row)["y"] for row in samples.rows]
    expected = np.mean([tensor_metrics(f, q)["sqnr_db"] for f, q in zip(floats, quantized)])
    agree = np.mean([brightest({"y": f}) == brightest({"y": q}) for f, q in zip(floats, quantized)])
    assert got.layers == unit and got.sqnr_db == pytest.approx(expected, abs=1e-9)
    assert got.agreement == pytest.approx(agree) and got.seconds > 0
    plain = score_variant(emulator, job)
    assert plain.layers == () and plain.sqnr_db != pytest.approx(got.sqnr_db)
