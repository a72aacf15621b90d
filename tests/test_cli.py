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
