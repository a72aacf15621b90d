"""compute_divergence end to end: modes, cache, bad calibration, two inputs, interruption."""

import functools
import shutil

import numpy as np
import onnx
import pytest

import workbench.compare.divergence as divergence
from workbench.compare.divergence import compute_divergence
from workbench.compare.result import Divergence
from workbench.datasets import ZOO, CalibrationSet
from workbench.errors import DatasetError
from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig

pytestmark = pytest.mark.toolkit
PRE = {"x": Preprocess((127.5,) * 3, (64.0,) * 3)}


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_modes_agree_on_a_tiny_model(tiny_models, small_set, isolated_cache):
    model, config = tiny_models["residual-add"], BuildConfig(preprocess=PRE)
    fast = compute_divergence(model, config, small_set, small_set.head(2), progress=False)
    slow = compute_divergence(model, config, small_set, small_set.head(2), backend="snapshot", progress=False)
    a, b = fast.summary().set_index("layer"), slow.summary().set_index("layer")
    common = a.index.intersection(b.index)
    assert len(common) >= 2  # mark-all sees boundaries only; the snapshot also some fused tensors
    np.testing.assert_allclose(a.loc[common, "cosine_mean"], b.loc[common, "cosine_mean"], atol=1e-4)
    # mark-all has the toolkit's single-layer cosine from its snapshot sample (the first)
    assert b.single_cos_mean.notna().any() and a.single_cos_mean.notna().any()
    with_single = fast.table[fast.table.toolkit_single_cos.notna()]
    assert set(with_single["sample"]) == {0}


def test_rerun_comes_from_the_cache(tiny_models, small_set, isolated_cache, monkeypatch):
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE)
    first = compute_divergence(model, config, small_set, small_set.head(1), progress=False)

    import workbench.runners.markall as markall

    def no_toolkit(*args, **kwargs):
        raise AssertionError("the toolkit ran again")

    monkeypatch.setattr(markall, "MarkAllRunner", no_toolkit)
    again = compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    assert again.meta["key"] == first.meta["key"]
    changed = BuildConfig(quantized_algorithm="mmse", preprocess=PRE)
    with pytest.raises(AssertionError, match="ran again"):
        compute_divergence(model, changed, small_set, small_set.head(1), progress=False)


def test_a_cache_hit_from_another_checkout_names_its_files(tiny_models, small_set, tmp_path, isolated_cache):
    """The cache is keyed on file contents; the run it returns must point at the caller's
    files, not at a checkout that may be gone (the explorer reopens the calibration list)."""
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE)
    first = compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    moved = tmp_path / "elsewhere"
    shutil.copytree(small_set.source.parent, moved)
    there = CalibrationSet.from_list(moved / small_set.source.name)
    onnx.save(model.proto, tmp_path / "copy.onnx")
    model = OnnxModel.load(tmp_path / "copy.onnx")
    hit = compute_divergence(model, config, there, there.head(1), progress=False)
    assert hit.meta["created"] == first.meta["created"]  # from the cache, not a new run
    assert hit.meta["model"]["path"] == str(tmp_path / "copy.onnx")
    assert hit.meta["calibration"]["source"] == str(there.source)
    assert hit.meta["samples"] == [[str(p) for p in row] for row in there.head(1).rows]


def test_float_tensors_are_reused_across_calls(tiny_models, small_set, monkeypatch):
    """A what-if loop passes ``floats``: the float model runs once per sample, not per call."""
    model, config, floats = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE), {}
    run = functools.partial(
        compute_divergence, model, config, small_set, small_set.head(2), backend="float", floats=floats,
        cache=False, progress=False,
    )  # fmt: skip
    first = run()
    assert set(floats) == {tuple(r) for r in small_set.head(2).rows}
    monkeypatch.setattr(divergence, "FloatRunner", None)  # float again would fail
    again = run()
    assert again.table.equals(first.table)


def test_broken_calibration_shows_in_the_first_layer(tiny_models, small_set, tmp_path, isolated_cache):
    """Calibrating on blank images (a classic mistake) clips the first layer's range."""
    for i in range(4):
        np.save(tmp_path / f"blank{i}.npy", np.full((1, 3, 32, 32), 127.0, np.float32))
    (tmp_path / "blank.txt").write_text("".join(f"blank{i}.npy\n" for i in range(4)))
    blank = CalibrationSet.from_list(tmp_path / "blank.txt")
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE)
    good = compute_divergence(model, config, small_set, small_set.head(2), progress=False)
    bad = compute_divergence(model, config, blank, small_set.head(2), progress=False)
    first = "relu1_out"  # the first computed layer (Conv+Relu)
    good_db = good.summary().set_index("layer").loc[first, "sqnr_db_mean"]
    bad_db = bad.summary().set_index("layer").loc[first, "sqnr_db_mean"]
    assert bad_db < good_db - 10, (good_db, bad_db)
    verdicts = bad.first_divergence().set_index("layer").verdict
    assert verdicts[first] == "origin"


def test_two_inputs_image_and_npy(tiny_models, small_set, tmp_path, isolated_cache):
    rng = np.random.default_rng(0)
    lines = []
    for i, (image,) in enumerate(small_set.rows[:3]):
        np.save(tmp_path / f"aux{i}.npy", rng.normal(0, 1, (1, 8, 1, 1)).astype(np.float32))
        lines.append(f"{image} aux{i}.npy")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    pairs = CalibrationSet.from_list(tmp_path / "pairs.txt")
    result = compute_divergence(tiny_models["two-inputs"], BuildConfig(preprocess=PRE), pairs, progress=False)
    summary = result.summary().set_index("layer")
    assert {"pooled", "mixed", "y"} <= set(summary.index)
    assert (summary.cosine_mean > 0.99).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: (d / "gone.jpg", None), "line 2 names .*gone.jpg"),
        (lambda d: (d / "bad.jpg", b"\xff\xd8 broken"), "line 2.*(cannot decode|truncated JPEG)"),
        (lambda d: (d / "gray.png", "gray"), "line 2.*grayscale"),
        (
            lambda d: (d / "small.npy", np.zeros((1, 3, 8, 8), np.float32)),
            "line 2.*small.npy.*\\(1, 3, 8, 8\\)",
        ),
    ],
)
def test_bad_calibration_files_name_file_and_line(
    tiny_models, small_set, tmp_path, make, match, isolated_cache
):
    import cv2

    path, content = make(tmp_path)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    elif content == "gray":
        cv2.imwrite(str(path), np.full((40, 40), 100, np.uint8))
    (tmp_path / "list.txt").write_text(f"{small_set.rows[0][0]}\n{path.name}\n")
    with pytest.raises(DatasetError, match=match):
        calibration = CalibrationSet.from_list(tmp_path / "list.txt")
        compute_divergence(
            tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE), calibration, progress=False
        )


def test_empty_set_refused(tiny_models, small_set):
    with pytest.raises(DatasetError, match="empty"):
        compute_divergence(
            tiny_models["conv-relu-sigmoid"],
            BuildConfig(preprocess=PRE),
            small_set,
            small_set.head(0),
            progress=False,
        )


def test_interrupted_run_leaves_earlier_runs_intact(tiny_models, small_set, tmp_path, isolated_cache):
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE)
    earlier = compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    earlier.save(tmp_path / "run")
    cached = sorted(p.name for p in (isolated_cache / "runs").iterdir())

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compute_divergence(model, config, small_set, small_set.head(3), progress=False, on_sample=interrupt)
    assert Divergence.load(tmp_path / "run").table.equals(earlier.table)
    assert sorted(p.name for p in (isolated_cache / "runs").iterdir()) == cached  # nothing half-written


@pytest.mark.zoo
def test_yolov8n_divergence_and_first_divergence(zoo, small_set, isolated_cache):
    entry = ZOO["yolov8n"]
    config = BuildConfig(preprocess={entry.input_name: entry.preprocess})
    result = compute_divergence(zoo("yolov8n"), config, small_set, small_set.head(2), progress=False)
    table = result.first_divergence()
    assert len(table) > 80 and set(table.verdict) <= {"ok", "inherited", "origin"}
    assert (result.table.status == "fused").any()  # fused tensors are listed, not dropped
    tensors = {t.name for t in zoo("yolov8n").tensors}
    assert tensors <= set(result.table.layer)
    extra = result.table[~result.table.layer.isin(tensors)]  # compiled layers with no ONNX tensor
    assert len(extra) and set(extra.status) == {"unmapped"} and set(extra["sample"]) == {0}
    logits = result.table[result.table.layer == "/model.22/cv3.0/cv3.0.2/Conv_output_0"].set_index("sample")
    assert "left-unmarked" in logits.flag[0] and logits.sqnr_db[0] < 15  # the plain model's clipping
    assert logits.status[1] == "fused" and "marking-changed-quantization" in logits.flag[1]


def test_marked_outputs_that_differ_fall_back_to_snapshot(
    tiny_models, small_set, isolated_cache, monkeypatch
):
    """When the guard cannot make the marked model's outputs equal the plain model's, no
    mark-all number is reported: the run is measured in snapshot mode, with a warning."""
    import workbench.runners.markall as markall

    class Differs:
        def __init__(self, *args, **kwargs):
            self.guard = markall.MarkGuard(outputs_cosine=0.99, rounds=3)
            self.closed = False

        def close(self):
            self.closed = True

    monkeypatch.setattr(markall, "MarkAllRunner", Differs)
    model, config = tiny_models["conv-relu-sigmoid"], BuildConfig(preprocess=PRE)
    with pytest.warns(UserWarning, match="changed the model's outputs.*snapshot"):
        result = compute_divergence(model, config, small_set, small_set.head(1), progress=False)
    assert result.meta["mode"] == "snapshot" and result.meta["guard"]["fallback"] == "snapshot"
    assert result.meta["guard"]["outputs_cosine"] == 0.99 and not result.meta["guard"]["same_outputs"]
    assert result.table.toolkit_single_cos.notna().any()  # a snapshot run's table
