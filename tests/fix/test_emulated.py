"""The search's emulator engine: whole compiled layers as candidates, a target met on the
emulator and confirmed by one toolkit build, and the fallback to the toolkit when the
emulator's self-check fails."""

import pytest

from tests.emulate.test_model import onnx_model, toolkit_step1
from workbench.emulate.quantize import RULES_2_5_0
from workbench.emulate.runner import EmulatorRunner
from workbench.errors import EmulatorError, WorkbenchError, WorkbenchWarning
from workbench.fix.emulated import Layer, compiled_layers
from workbench.fix.search import search_mixed_precision
from workbench.rknn.config import BuildConfig

from .conftest import CONFIG


def test_a_layer_is_every_tensor_the_toolkit_fuses_into_it():
    """The hand-made step-1 graph: pointwise conv + exSwish, depthwise conv + HardSwish
    (its pre-activation is requantized, but it is still inside the layer)."""
    emulator = EmulatorRunner(onnx_model(), BuildConfig(), step1=toolkit_step1())
    assert compiled_layers(emulator) == [
        Layer("s1", ("c1", "s1"), "Conv+exSwish"),
        Layer("y_int8", ("c2", "y_int8"), "Conv+HardSwish"),
    ]


def test_without_fusions_every_int8_tensor_is_a_layer():
    """Without the fusion rules every int8 tensor is a layer of its own."""
    unfused = RULES_2_5_0.with_changes(fuse=frozenset(), requantize=frozenset())
    emulator = EmulatorRunner(onnx_model(), BuildConfig(), step1=toolkit_step1(), rules=unfused)
    assert [layer.tensors for layer in compiled_layers(emulator)] == [("c1",), ("s1",), ("c2",), ("y_int8",)]


def test_the_emulator_refuses_a_toolkit_ranking():
    with pytest.raises(WorkbenchError, match="engine='toolkit'"):
        search_mixed_precision(
            onnx_model(), BuildConfig(), None, [], target_sqnr_db=30.0, engine="emulator", ranking=object()
        )


@pytest.mark.toolkit
def test_the_emulator_search_meets_a_target_the_toolkit_confirms(tiny_models, small_set):
    """conv-relu-sigmoid, measured on 2.5.0: int8 43.14 dB (toolkit and emulator alike), its
    first layer (Conv+Relu) in float16 47.33 dB, its second 43.70 dB: a 45 dB target takes
    the first whole layer, both of its tensors."""
    model = tiny_models["conv-relu-sigmoid"]
    result = search_mixed_precision(
        model, CONFIG, small_set, small_set.head(2), target_sqnr_db=45.0, progress=False
    )
    assert result.engine == "emulator" and result.met, result.summary()
    assert result.compiled == ("relu1_out",) and result.layers == ("conv1_out", "relu1_out")
    assert result.baseline.sqnr_db < 45.0 <= result.score.sqnr_db
    assert result.score.sqnr_db == pytest.approx(result.emulated.sqnr_db, abs=1.0)
    assert result.ranking.layer.iloc[1] == "relu1_out" and result.ranking.tensors.iloc[1] == [
        "conv1_out",
        "relu1_out",
    ]
    built = result.trail[result.trail.engine == "toolkit"]
    assert list(built.stage) == ["baseline", "confirm"] and built.cycles.notna().all()
    assert result.builds == 3  # step 1, the int8 check build, one confirmation
    assert "met with 1 whole layer(s) (2 float16 tensors)" in result.summary()
    assert "toolkit-confirmed" in result.summary()


@pytest.mark.toolkit
def test_an_unfaithful_emulator_falls_back_to_the_toolkit(tiny_models, small_set):
    """A deliberately wrong rule (no fusion at all) contradicts the toolkit's own table: the
    self-check fails, the search warns and runs on the toolkit (or refuses, if told to)."""
    model, wrong = tiny_models["conv-relu-sigmoid"], RULES_2_5_0.with_changes(fuse=frozenset())
    with pytest.warns(WorkbenchWarning, match="self-check against the simulator failed"):
        result = search_mixed_precision(
            model,
            CONFIG,
            small_set,
            small_set.head(2),
            target_cosine=0.9,
            emulator_rules=wrong,
            progress=False,
        )
    assert result.engine == "toolkit" and result.met and result.layers == ()
    assert "Searched with the toolkit instead" in result.summary()
    with pytest.raises(EmulatorError, match="engine='toolkit'"):
        search_mixed_precision(
            model,
            CONFIG,
            small_set,
            small_set.head(2),
            target_cosine=0.9,
            emulator_rules=wrong,
            fallback=False,
            progress=False,
        )


@pytest.mark.toolkit
def test_a_task_target_is_judged_by_the_adapter_on_both_engines(tmp_path):
    """Channel means as 'logits', two near-ties that int8 flips (the input's own rounding,
    no layer's): every emulated and toolkit score carries the agreement; no layer in float16
    brings it above int8's 50 %, so int8 is kept, with no confirmation build."""
    from tests.task.test_evaluate import _channel_mean_classifier, _samples
    from workbench.task.adapters import get_adapter

    samples = _samples(tmp_path, [(0.5, 0.502, 0.0), (0.5, 0.502, 0.05), (0.2, 0.9, 0.1), (0.9, 0.1, 0.0)])
    model = _channel_mean_classifier()
    adapter = get_adapter("classification", model=model)
    result = search_mixed_precision(
        model, BuildConfig(), samples, samples, target_agreement=1.0, adapter=adapter, progress=False
    )
    assert result.engine == "emulator" and not result.met and result.layers == ()
    assert result.trail.agreement.notna().all() and set(result.trail.engine) == {"toolkit", "emulator"}
    assert result.baseline.agreement == result.score.agreement == result.emulated.agreement == 0.5
    assert result.builds == 2  # step 1 and the int8 check build: int8 needs no confirmation
    assert "none beat int8 there" in result.summary()
