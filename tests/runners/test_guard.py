"""The mark-all guard: marking a boundary must not change the model it measures."""

import pytest

from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig
from workbench.runners.markall import SAME_OUTPUTS_COSINE, MarkAllRunner, changed_ranges
from workbench.synthetic import logit_head, residual_add

CONFIG = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})


def _entry(lo, hi, scale=(0.1,)):
    zero_point = [0] if scale else []
    return {"qtype": "asym", "min": [lo], "max": [hi], "scale": list(scale), "zero_point": zero_point}


def test_a_clipped_range_that_marking_removes_is_a_change():
    """yolov8n's class logits: [-7, 0] in the plain build; marked, the float output holds the
    raw range (no scale) and its int8 copy the range its consumers read."""
    plain = {"logits": _entry(-7.0, 0.0), "feat": _entry(0.0, 6.0)}
    marked = {
        "logits": _entry(-26.3, -1.88, scale=()),
        "logits_int8": _entry(-26.3, -1.88),
        "feat": _entry(0.0, 6.0, scale=()),  # marked too, same range: no change
        "feat_int8": _entry(0.0, 6.0),
    }
    assert changed_ranges(plain, marked) == {"logits": "[-7, 0] -> [-26.3, 0]"}


def test_ranges_are_compared_as_int8_uses_them():
    """Asymmetric int8 always holds 0: a raw output range [0.26, 5] is the plain [0, 5]. An
    end moving by less than half a step (of 255 over the plain range) is no change (ppocr-cls:
    a HardSwish floor -0.3737 -> -0.375); tensors only one cfg has are skipped."""
    plain = {"a": _entry(0.0, 5.0), "b": _entry(-1.0, 1.0), "c": _entry(-1.0, 1.0)}
    plain["h"] = _entry(-0.3737, 4.689)
    marked = {
        "a": _entry(0.26, 5.0, scale=()),
        "b": _entry(-1.0, 1.003),  # 0.38 steps of 2/255
        "d": _entry(-9.0, 9.0),
        "h_int8": _entry(-0.375, 4.689),
    }
    assert changed_ranges(plain, marked) == {}
    assert changed_ranges(plain, {"b": _entry(-1.0, 1.005)}) == {"b": "[-1, 1] -> [-1, 1.005]"}  # 0.64 steps


@pytest.mark.toolkit
def test_a_boundary_whose_marking_changes_its_clipping_is_left_unmarked(small_set):
    """Marked, logit_head's class logits lose the [-7.3, 7.9] range the plain build clips them
    to (measured: [-53.5, 18.7]) and ``y`` changes (cosine 0.99934): those boundaries are
    left unmarked, after which the marked build's output equals the plain build's."""
    with MarkAllRunner(OnnxModel.from_proto(logit_head()), CONFIG, small_set) as runner:
        guard = runner.guard
        names = runner.output_names
    assert {"cls_out", "both"} <= set(guard.unmarked)
    assert guard.unmarked["cls_out"].startswith("[-7.3") and "-53" in guard.unmarked["cls_out"]
    assert "box_out" not in guard.unmarked and "box_out" in names  # its range is the same
    assert not set(guard.unmarked) & set(names)
    assert guard.changed == {} and guard.rounds == 2
    assert guard.outputs_cosine >= SAME_OUTPUTS_COSINE and guard.same_outputs


@pytest.mark.toolkit
def test_the_guard_is_silent_when_marking_changes_nothing(small_set):
    with MarkAllRunner(OnnxModel.from_proto(residual_add()), CONFIG, small_set) as runner:
        guard = runner.guard
        assert "relu1_out" in runner.output_names  # every boundary marked
        assert set(runner.output_names) == set(runner.boundaries) | {"y"}
    assert (guard.unmarked, guard.changed, guard.other, guard.rounds) == ({}, {}, {}, 1)
    assert guard.checked and guard.outputs_cosine == pytest.approx(1.0, abs=1e-9)
