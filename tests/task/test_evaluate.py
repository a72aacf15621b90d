"""Answers per sample: float vs the real simulator, flips constructed by hand, the verdict,
the gate, saving, and the layers behind the flips."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

import workbench.task.evaluate as evaluation
from workbench.compare.result import Divergence
from workbench.datasets import CalibrationSet
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.rknn.config import BuildConfig
from workbench.task.adapters import CallableAdapter, get_adapter
from workbench.task.evaluate import TaskResult, evaluate
from workbench.task.explain import contrast_samples, flip_layers
from workbench.task.labels import LabelledSet


def _channel_mean_classifier() -> OnnxModel:
    """Three 'logits': the mean of each input channel (GlobalAveragePool + Flatten)."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["y"]),
        ],
        "channel_means",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return OnnxModel.from_proto(model)


def _samples(tmp_path, means: list[tuple[float, float, float]]) -> CalibrationSet:
    rows = []
    for i, m in enumerate(means):
        path = tmp_path / f"s{i}.npy"
        np.save(path, np.broadcast_to(np.array(m, np.float32)[None, :, None, None], (1, 3, 16, 16)).copy())
        rows.append((path,))
    return CalibrationSet(rows, tmp_path)


@pytest.fixture(scope="module")
def flipped_run(tmp_path_factory):
    """Channel means that int8 cannot tell apart (0.5 vs 0.5001: class 1 in float, a tie
    and so class 0 once quantized) and means that stay apart: flips by construction."""
    tmp = tmp_path_factory.mktemp("flips")
    means = [(0.5, 0.5001, 0.0), (0.2, 0.9, 0.1), (0.7, 0.70005, 0.3), (0.9, 0.1, 0.0)]
    samples = _samples(tmp, means)
    labels = ["1", "1", "1", "0"]
    model = _channel_mean_classifier()
    answers = evaluate(
        model,
        BuildConfig(),
        samples,
        LabelledSet(samples, labels, tmp, "csv"),
        get_adapter("classification", model=model),
        cache=False,
        progress=False,
    )
    return answers


@pytest.mark.toolkit
def test_constructed_flips_are_found(flipped_run):
    summary = flipped_run.summary().set_index("backend")
    assert summary.loc["float", "accuracy"] == 1.0
    flips = flipped_run.flips("simulator")
    assert sorted(flips["sample"]) == [0, 2]  # the near-ties, and only them
    assert summary.loc["simulator", "flips"] == 2
    assert summary.loc["simulator", "agreement"] == 0.5
    assert summary.loc["simulator", "accuracy"] == 0.5
    assert "float 100 % correct" in flipped_run.verdict()
    assert "2 of 4 answers differ from float" in flipped_run.verdict()


@pytest.mark.toolkit
def test_gate_and_save_round_trip(flipped_run, tmp_path):
    assert flipped_run.check(min_agreement=0.4) == []
    assert flipped_run.check(min_agreement=0.9) == ["simulator: agreement 50 % < 90 %"]
    assert flipped_run.check(max_drop=0.6) == []
    assert flipped_run.check(max_drop=0.1) == ["simulator: accuracy drop 50 % > 10 %"]
    run = flipped_run.save(tmp_path / "run")
    again = TaskResult.load(run)
    pd.testing.assert_frame_equal(again.summary(), flipped_run.summary())
    assert again.verdict() == flipped_run.verdict()


def _table(rows):
    base = {"status": "ok", "prediction_json": None, "error": None, "label": None, "correct": None}
    table = pd.DataFrame([{**base, **r} for r in rows])
    for col in ("correct", "agree"):
        table[col] = table[col].astype("boolean")
    return TaskResult(table, {"task": "classification"})


def test_unlabelled_verdict_and_max_drop_needs_labels():
    result = _table(
        [
            {"sample": 0, "path": "a", "backend": "float", "prediction": "1", "agree": None},
            {"sample": 1, "path": "b", "backend": "float", "prediction": "2", "agree": None},
            {"sample": 0, "path": "a", "backend": "simulator", "prediction": "1", "agree": True},
            {"sample": 1, "path": "b", "backend": "simulator", "prediction": "0", "agree": False},
        ]
    )
    assert not result.labelled
    assert result.verdict() == "classification on 2 samples; simulator 1 of 2 answers differ from float"
    assert result.check(max_drop=0.1) == ["--max-drop needs labels: give --data a labelled set"]
    flips = result.flips()
    assert flips[["path", "float", "simulator"]].values.tolist() == [["b", "2", "0"]]


def test_errors_are_rows_and_partial_never_passes():
    result = _table(
        [
            {"sample": 0, "path": "a", "backend": "float", "prediction": "1"},
            {"sample": 0, "path": "a", "backend": "simulator", "prediction": "1", "agree": True},
            {"sample": 0, "path": "a", "backend": "board:b", "status": "error", "error": "ValueError: x"},
        ]
    )
    result.meta["partial"] = {"error": "board b: connection lost"}
    summary = result.summary().set_index("backend")
    assert summary.loc["board:b", "errors"] == 1
    assert "board:b 0 of 0 answers differ from float (1 samples failed)" in result.verdict()
    assert result.check(min_agreement=0.0)[0] == "partial run: board b: connection lost"


@pytest.mark.toolkit
def test_adapter_failing_everywhere_is_a_clear_error(tmp_path):
    samples = _samples(tmp_path, [(0.1, 0.2, 0.3)])

    def broken(outputs):
        raise ValueError("no such head")

    with pytest.raises(WorkbenchError, match="failed on every sample.*no such head"):
        evaluate(
            _channel_mean_classifier(),
            BuildConfig(),
            samples,
            samples,
            CallableAdapter(decode=broken),
            progress=False,
        )


def test_flip_layers_ranks_the_layer_worse_on_flips():
    answers = _table(
        [
            {"sample": i, "path": p, "backend": b, "prediction": "x", "agree": a}
            for i, (p, a) in enumerate([("f1", False), ("k1", True), ("k2", True)])
            for b, a in (("float", None), ("simulator", a))
        ]
    )
    rows = []
    for s, path in enumerate(["f1", "k1", "k2"]):
        for index, layer, flipped_db, kept_db in ((1, "conv", 10.0, 30.0), (2, "relu", 25.0, 26.0)):
            rows.append(
                {
                    "index": index,
                    "layer": layer,
                    "op_type": "Conv",
                    "sample": s,
                    "backend": "simulator",
                    "status": "compared",
                    "sqnr_db": flipped_db if path == "f1" else kept_db,
                }
            )
    divergence = Divergence(pd.DataFrame(rows), {"samples": [["f1"], ["k1"], ["k2"]]})
    table = flip_layers(answers, divergence)
    assert table.layer.tolist() == ["conv", "relu"]
    assert table.gap_db.tolist() == [20.0, 1.0]
    samples = contrast_samples(answers, kept=1)
    assert [str(r[0]) for r in samples.rows][0].endswith("f1") and len(samples) == 2


@pytest.mark.toolkit
def test_fix_answers_searches_on_flips_and_checks_held_out(tmp_path):
    """Near-ties that int8 cannot separate in both halves: the search sees its half's flips
    (agreement 50 %), and the held-out half is judged before and after with the same adapter."""
    from workbench.fix.answers import fix_answers

    means = [(0.5, 0.502, 0.0), (0.5, 0.502, 0.05), (0.2, 0.9, 0.1), (0.9, 0.1, 0.0)] * 2
    samples = _samples(tmp_path, means)
    model = _channel_mean_classifier()
    data = LabelledSet(samples, ["1", "1", "1", "0"] * 2, tmp_path, "csv")
    adapter = get_adapter("classification", model=model)
    fixed = fix_answers(model, BuildConfig(), samples, data, adapter, 1.0, candidates=None, progress=False)
    assert fixed.search.baseline.agreement == 0.5
    assert fixed.search.trail.agreement.notna().all()
    before = fixed.before.summary().set_index("backend").loc["simulator"]
    assert (before.samples, before.flips) == (4, 2)
    assert fixed.search.met == (fixed.search.score.agreement >= 1.0)
    assert "Held-out check on 4 samples" in fixed.summary()


def test_task_target_needs_an_adapter():
    from workbench.fix.search import search_mixed_precision

    with pytest.raises(WorkbenchError, match="needs adapter="):
        search_mixed_precision(None, BuildConfig(), None, target_agreement=0.9)


def test_labels_that_do_not_fit_stop_before_any_build(tmp_path):
    samples = _samples(tmp_path, [(0.1, 0.2, 0.3), (0.3, 0.2, 0.1)])
    model = _channel_mean_classifier()
    adapter = get_adapter("classification", model=model, classes=["a", "b", "c"])
    data = LabelledSet(samples, ["a", "zebra"], tmp_path, "csv")
    with pytest.raises(WorkbenchError, match="'zebra' is not in the model's 3 classes"):
        evaluate(model, BuildConfig(), samples, data, adapter, cache=False, progress=False)
    coco_like = LabelledSet(samples, ["a", "b"], tmp_path, "coco")
    with pytest.raises(WorkbenchError, match="do not fit the 'classification' task"):
        evaluate(model, BuildConfig(), samples, coco_like, adapter, cache=False, progress=False)


@pytest.mark.toolkit
def test_the_emulator_gives_the_simulators_answers(flipped_run, tmp_path_factory):
    """Same samples, same build settings: the emulator's answers are the simulator's."""
    tmp = tmp_path_factory.mktemp("emulated")
    means = [(0.5, 0.5001, 0.0), (0.2, 0.9, 0.1), (0.7, 0.70005, 0.3), (0.9, 0.1, 0.0)]
    samples = _samples(tmp, means)
    model = _channel_mean_classifier()
    emulated = evaluate(
        model,
        BuildConfig(),
        samples,
        LabelledSet(samples, ["1", "1", "1", "0"], tmp, "csv"),
        get_adapter("classification", model=model),
        mode="emulator",
        cache=False,
        progress=False,
    )
    assert emulated.backends == ["emulator"]
    simulated = flipped_run.table[flipped_run.table.backend == "simulator"].prediction.tolist()
    assert emulated.table[emulated.table.backend == "emulator"].prediction.tolist() == simulated
    assert sorted(emulated.flips()["sample"]) == [0, 2]


def test_answers_save_beside_a_run_and_keep_the_users_files(tmp_path):
    result = _table([{"sample": 0, "path": "a", "backend": "float", "prediction": "1", "agree": None}])
    run = tmp_path / "run"
    (run / "my_plots").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    result.save(run)
    result.save(run)  # again: replaces only its own files
    assert (run / "notes.txt").read_text() == "mine" and (run / "my_plots").is_dir()
    assert TaskResult.load(run).verdict() == result.verdict()
    with pytest.raises(WorkbenchError, match="is a file"):
        result.save(run / "notes.txt")


@pytest.mark.toolkit
def test_toolkit_settings_swept_and_judged_by_the_answers(tmp_path):
    from workbench.fix.settings import settings_advice, sweep_settings

    means = [(0.5, 0.5001, 0.0), (0.2, 0.9, 0.1), (0.7, 0.70005, 0.3), (0.9, 0.1, 0.0)]
    samples = _samples(tmp_path, means)
    model = _channel_mean_classifier()
    data = LabelledSet(samples, ["1", "1", "1", "0"], tmp_path, "csv")
    table = sweep_settings(
        model, BuildConfig(), samples, data, get_adapter("classification", model=model),
        algorithms=("normal", "mmse"), methods=("channel",), progress=False,
    )  # fmt: skip
    assert sorted(table.algorithm) == ["mmse", "normal"] and table.current.sum() == 1
    assert table.agreement.between(0, 1).all() and (table.error == "").all()
    assert list(table.agreement) == sorted(table.agreement, reverse=True)  # best first
    advice = settings_advice(table)
    assert advice.startswith(("keep normal / channel", "switch to mmse / channel"))


def test_a_cache_hit_from_another_folder_names_its_files(tmp_path, monkeypatch):
    """The cache is keyed on content; the answers it returns name the caller's files."""
    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    model, means = _channel_mean_classifier(), [(0.2, 0.9, 0.1), (0.9, 0.1, 0.0)]

    def answers(folder):
        (tmp_path / folder).mkdir()
        samples = _samples(tmp_path / folder, means)
        data = LabelledSet(samples, ["1", "0"], tmp_path / folder, "csv")
        return samples, evaluate(
            model, BuildConfig(), samples, data, "classification", quantized=False, progress=False
        )

    answers("here")
    monkeypatch.setattr(
        evaluation, "FloatRunner", None
    )  # a second run would fail: it must come from the cache
    samples, hit = answers("there")
    assert hit.meta["data"]["source"] == hit.meta["calibration"]["source"] == str(tmp_path / "there")
    assert set(hit.table.path) == {str(row[0]) for row in samples.rows}
