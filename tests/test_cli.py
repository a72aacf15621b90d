import re

import numpy as np
import pandas as pd
import pytest

from workbench.cli import _demo_next_step, main
from workbench.compare.divergence import COLUMNS, Divergence
from workbench.model import OnnxModel
from workbench.synthetic import conv_relu_sigmoid
from workbench.task.evaluate import TaskResult


@pytest.mark.toolkit
@pytest.mark.zoo
def test_demo_leads_with_the_answers_and_writes_a_report(tmp_path, capsys):
    assert main(["demo", "--samples", "2", "--no-board", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # .<run>.lock beside it
    assert len(runs) == 1
    report = runs[0] / "report.html"
    assert f"report: {report.resolve()}" in out
    steps = [line for line in out.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert [s[:2] for s in steps] == ["1.", "2.", "3."]  # answers, where, next step
    assert "classification on 56 samples; float 100 % correct" in out
    # every answer holds, but the output of the second photo is below 20 dB: a measured what-if
    step = next(line for line in out.splitlines() if line.startswith("3. next step: "))
    assert re.search(r"the output's SQNR from [\d.]+ to [\d.]+ dB on average", step), step
    assert "measured on the emulator" in step
    html = report.read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # self-contained
    assert html.index("Answers: did quantization change them?") < html.index("Per-layer divergence")
    assert (runs[0] / "answers.parquet").is_file()
    assert (runs[0] / "node_data_sqnr.json").is_file() and "model-explorer " in html  # the graph view
    assert main(["report", str(runs[0]), "-o", str(tmp_path / "again.html")]) == 0
    again = (tmp_path / "again.html").read_text()
    assert "Answers: did quantization change them?" in again and "Next step" in again  # kept in the run


def _kept_answers(n: int) -> TaskResult:
    rows = [
        {"sample": i, "path": f"{i}.png", "backend": backend, "status": "ok", "prediction": "a",
         "label": None, "correct": None, "agree": None if backend == "float" else True, "error": ""}
        for backend in ("float", "simulator") for i in range(n)
    ]  # fmt: skip
    return TaskResult(pd.DataFrame(rows), {"task": "classification"})


def _run(output_sqnr: list[float], single_cos: float) -> Divergence:
    """conv-relu-sigmoid's run: relu1_out 40 dB, conv2_out 35 dB, the output y as given."""
    rows = []
    for sample, y in enumerate(output_sqnr):
        for index, (layer, sqnr) in enumerate([("relu1_out", 40.0), ("conv2_out", 35.0), ("y", y)]):
            rows.append(
                {"index": index, "layer": layer, "op_type": "Conv", "rknn_layer": layer, "rknn_op": "Conv",
                 "sample": sample, "backend": "simulator", "status": "compared", "cosine": 0.99,
                 "sqnr_db": sqnr, "flag": "", "toolkit_single_cos": single_cos}
            )  # fmt: skip
    meta = {"parents": {"y": ["conv2_out"], "conv2_out": ["relu1_out"]}}
    return Divergence(pd.DataFrame(rows, columns=list(COLUMNS)), meta)


def _next_step(result: Divergence, small_set) -> str:
    model = OnnxModel.from_proto(conv_relu_sigmoid())
    samples = small_set.head(3)
    return _demo_next_step(
        model, None, small_set, None, None, _kept_answers(3), None, result, samples, "tiny"
    )


def test_demo_says_nothing_to_fix_when_answers_hold_and_the_output_is_clean(small_set):
    step = _next_step(_run([30.0, 25.0, 22.0], single_cos=np.nan), small_set)
    assert step.startswith(
        "nothing to fix: int8 keeps all 3 answers and the output's SQNR is 25.7 dB on average over 3 "
        "samples, every sample above the 20 dB rule (worst 22.0 dB)."
    )
    assert "rknn-workbench evaluate tiny --data DIR" in step


def test_demo_names_a_low_output_sample_even_without_an_origin(small_set):
    # the toolkit's single-layer cosine clears every layer: the 12 dB is inherited, no origin
    step = _next_step(_run([30.0, 25.0, 12.0], single_cos=0.999), small_set)
    assert "but the worst sample reaches only 12.0 dB (below the 20 dB rule)" in step
    assert "no layer is an origin" in step and "nothing to fix" not in step


def test_zoo_list(capsys):
    assert main(["zoo", "list"]) == 0
    assert "lcnet-orientation" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no saved divergence run" in capsys.readouterr().err
    assert main(["demo", "--model", "nope"]) == 2
    assert "Known models" in capsys.readouterr().err
    assert main(["support", "probe", "--ops", "Conv"]) == 2  # would replace the packaged matrix
    assert "--out" in capsys.readouterr().err
    assert main(["diverge", "lcnet-orientation", "--board", "b", "--mode", "snapshot"]) == 2
    assert "mark-all mode only" in capsys.readouterr().err


@pytest.mark.toolkit
def test_diverge_saves_a_run_and_prints_json(tiny_models, small_set, tmp_path, capsys, monkeypatch):
    import json

    from workbench.compare.result import Divergence

    monkeypatch.setenv("RKNN_WORKBENCH_CACHE", str(tmp_path / "cache"))
    model = tiny_models["conv-relu-sigmoid"].save(tmp_path / "m.onnx")
    args = [
        "diverge",
        str(model),
        "--dataset",
        str(small_set.source),
        "--samples",
        "1",
        "--mean",
        "127.5,127.5,127.5",
        "--std",
        "64,64,64",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"] == str(tmp_path / "run") and data["meta"]["mode"] == "mark-all"
    assert {r["layer"] for r in data["summary"]} >= {"relu1_out", "y"}
    table = Divergence.load(tmp_path / "run").table
    assert list(table[table.status != "unmapped"].layer) == ["x", "conv1_out", "relu1_out", "conv2_out", "y"]
    assert main(args) == 0
    assert "verdict" in capsys.readouterr().out


def test_diverge_bad_input(tmp_path, capsys, tiny_models):
    model = tiny_models["conv-relu-sigmoid"].save(tmp_path / "m.onnx")
    assert main(["diverge", str(model), "--mean", "1,x,3"]) == 2
    assert "numbers separated by commas" in capsys.readouterr().err
    assert main(["diverge", str(model), "--dataset", str(tmp_path / "none.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["diverge", str(model), "--input-shape", "x1,3,32,32"]) == 2
    assert "NAME:D,D" in capsys.readouterr().err


def _tiny_args(model_path, small_set):
    return ["--dataset", str(small_set.source), "--mean", "127.5,127.5,127.5", "--std", "64,64,64"]


@pytest.fixture
def residual_onnx(tiny_models, tmp_path):
    return str(tiny_models["residual-add"].save(tmp_path / "residual.onnx"))


@pytest.mark.toolkit
def test_thresholds_give_exit_codes_for_ci(residual_onnx, small_set, tmp_path, capsys):
    """diverge and report exit 1 when an output (or, with --per-layer, any layer) misses
    --min-sqnr / --min-cosine, and 0 when all meet them."""
    import json

    run = str(tmp_path / "run")
    base = ["diverge", residual_onnx, *_tiny_args(residual_onnx, small_set), "--samples", "1", "--out", run]
    assert main([*base, "--min-sqnr", "10", "--min-cosine", "0.99"]) == 0
    assert "PASS: 1 model outputs meet SQNR >= 10.0 and cosine >= 0.99" in capsys.readouterr().out
    assert main([*base, "--min-sqnr", "99", "--json"]) == 1
    gate = json.loads(capsys.readouterr().out)["gate"]
    assert not gate["passed"] and [r["layer"] for r in gate["failing"]] == ["y"]
    assert main(["report", run, "--min-sqnr", "10"]) == 0
    capsys.readouterr()
    assert main(["report", run, "--min-sqnr", "99", "--per-layer"]) == 1
    err = capsys.readouterr().err
    assert "FAIL: 2 of 3 every layer miss SQNR >= 99.0" in err and "relu1_out" in err


@pytest.mark.toolkit
def test_build_writes_the_rknn_and_its_compile_summary(residual_onnx, small_set, tmp_path, capsys):
    import json

    out = tmp_path / "out" / "residual.rknn"
    out.parent.mkdir()
    args = ["build", residual_onnx, *_tiny_args(residual_onnx, small_set), "-o", str(out), "--json"]
    assert main(args) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["rknn"] == str(out) and out.stat().st_size > 0
    assert facts["layers"] >= 2 and facts["cpu_layers"] == [] and facts["float16_layers"] == 0
    assert main([*args, "--float-layers", "conv1_out"]) == 0
    assert json.loads(capsys.readouterr().out)["float16_layers"] >= 1
    before = out.read_bytes()
    assert main([*args, "--float-layers", "ghost"]) == 2  # the toolkit refuses: earlier .rknn kept
    assert "ghost" in capsys.readouterr().err and out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["residual.rknn"]


@pytest.mark.toolkit
def test_fix_finds_exports_and_reports(residual_onnx, small_set, tmp_path, capsys):
    import json

    out = tmp_path / "fix"
    args = ["fix", residual_onnx, *_tiny_args(residual_onnx, small_set), "--samples", "1", "--out", str(out)]
    assert main([*args, "--target-sqnr", "99", "--json"]) == 1  # unmeetable: best found, exit 1
    best = json.loads(capsys.readouterr().out)
    assert not best["met"] and best["score"]["sqnr_db"] > best["baseline"]["sqnr_db"]
    target = (best["score"]["sqnr_db"] + best["baseline"]["sqnr_db"]) / 2
    assert main([*args, "--target-sqnr", f"{target:.3f}"]) == 0
    printed = capsys.readouterr().out
    assert "met with" in printed and "auto_hybrid" in printed and str(out) in printed
    assert (out / "report.html").exists() and len(list(out.glob("*.quantization.cfg"))) == 1
    assert main(["fix", residual_onnx, *_tiny_args(residual_onnx, small_set)]) == 2
    assert "needs a target" in capsys.readouterr().err


def test_board_doctor_json_without_a_board(tmp_path, capsys):
    import json

    missing = tmp_path / "no-adb"
    assert main(["board", "doctor", "--adb", str(missing), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ready"] is False and data["checks"][0]["ok"] is False and data["checks"][0]["fix"]


@pytest.mark.toolkit
def test_diverge_on_the_emulator_saves_emulator_rows(residual_onnx, small_set, tmp_path, capsys):
    from workbench.compare.result import Divergence

    out = tmp_path / "emulated"
    args = ["diverge", residual_onnx, *_tiny_args(residual_onnx, small_set), "--samples", "1"]
    assert main([*args, "--mode", "emulate", "--out", str(out), "--json"]) == 0
    run = Divergence.load(out)
    assert set(run.table.backend) == {"emulator"} and run.quantized_backend == "emulator"
    assert (run.summary().sqnr_db_mean > 20).all()  # the tiny model quantizes well
    assert main([*args, "--mode", "emulate", "--board", "b"]) == 2
    assert "mark-all mode only" in capsys.readouterr().err


@pytest.mark.toolkit
def test_remedies_prints_each_remedy_against_int8(residual_onnx, small_set, capsys, tmp_path):
    import json

    args = ["remedies", residual_onnx, *_tiny_args(residual_onnx, small_set), "--samples", "2"]
    assert main([*args, "--only", "cle,auto_hybrid", "--json"]) == 0
    rows = {r["remedy"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["int8", "cle", "auto_hybrid"]  # in the order asked
    assert rows["int8"]["builds"] == 1 and rows["int8"]["sqnr_db"] > 0
    assert rows["cle"]["kept"] is False  # residual-add has no conv -> relu -> conv pair
    assert main([*args, "--only", "cle"]) == 0
    printed = capsys.readouterr().out
    verdict = printed.splitlines()[0]  # the verdict first, answers before dB
    assert verdict.startswith("int8: 100 % of answers agree with float, outputs at ")
    assert "No remedy confirmed a gain" in verdict
    assert "cle: no conv pair to equalize" in printed
    assert main([*args, "--only", "cle", "--out", str(tmp_path / "fixed")]) == 0
    assert "fixed: no remedy confirmed" in capsys.readouterr().out  # nothing written
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my work")
    assert main([*args, "--only", "cle", "--out", str(tmp_path / "mine")]) == 2  # refused before any build
    assert "not an earlier run (no remedy.json)" in capsys.readouterr().err
    assert main([*args, "--only", "float16"]) == 2
    assert "unknown float16" in capsys.readouterr().err


@pytest.mark.toolkit
def test_evaluate_on_the_emulator_takes_either_spelling(residual_onnx, small_set, tmp_path, capsys):
    import json

    base = ["evaluate", residual_onnx, *_tiny_args(residual_onnx, small_set), "--task", "outputs"]
    base += ["--data", str(small_set.source), "--samples", "2", "--json"]
    for i, mode in enumerate(("emulate", "emulator")):
        assert main([*base, "--mode", mode, "--out", str(tmp_path / f"run{i}")]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert "emulator" in json.dumps(printed)
    assert main([*base, "--mode", "npu", "--out", str(tmp_path / "bad")]) == 2
