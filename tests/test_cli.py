import pytest

from workbench.cli import main


@pytest.mark.toolkit
@pytest.mark.zoo
def test_demo_writes_a_report_and_prints_worst_layers(tmp_path, capsys):
    assert main(["demo", "--samples", "1", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    report = runs[0] / "report.html"
    assert f"report: {report.resolve()}" in out
    html = report.read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # self-contained
    worst = out.split("mean over samples):")[1].strip().splitlines()
    assert len(worst) == 1 + 5  # header + five layers
    assert main(["report", str(runs[0]), "-o", str(tmp_path / "again.html")]) == 0


def test_zoo_list(capsys):
    assert main(["zoo", "list"]) == 0
    assert "lcnet-orientation" in capsys.readouterr().out


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no saved divergence run" in capsys.readouterr().err
    assert main(["demo", "--model", "nope"]) == 2
    assert "Known models" in capsys.readouterr().err


@pytest.mark.toolkit
def test_diverge_saves_a_run_and_prints_json(tiny_models, small_set, tmp_path, capsys, monkeypatch):
    import json

    from workbench.compare.divergence import Divergence

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
    assert len(Divergence.load(tmp_path / "run").table) == 5
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
