"""Compile check on the real toolkit: the authoritative placement, mapped to ONNX nodes."""

import os

import pytest

from workbench.cli import main
from workbench.support.compare_checks import disagreements
from workbench.support.compile import compile_check, parse_layer_table
from workbench.support.static import static_check

pytestmark = pytest.mark.toolkit


def test_layer_table_parser_reads_every_column(tiny_models):
    report = compile_check(tiny_models["cpu-fallback"], "rk3588")
    table = report.layers
    sin = table[table.op_type == "Sin"].iloc[0]
    assert (sin.target, sin.full_name, sin.onnx_node) == ("CPU", "Sin:sin", "sin")
    assert table.iloc[0].op_type == "InputOperator" and table.iloc[-1].op_type == "OutputOperator"
    assert (table.cycles_total >= 0).all() and table.id.is_monotonic_increasing
    assert report.transitions == 2 and report.exit_code == 1
    assert report.node_targets["sin"] == "CPU" and report.node_targets["conv1"] == "NPU"
    assert len(parse_layer_table(report.log)) == len(table)


def test_all_npu_model(tiny_models):
    report = compile_check(tiny_models["conv-relu-sigmoid"], "rk3588")
    assert report.exit_code == 0 and report.transitions == 0
    assert report.node_targets["relu1"] == "fused"  # Conv+Relu is one layer named after the Conv


def test_rejected_model_is_a_result_not_an_exception(tiny_models):
    report = compile_check(tiny_models["toolkit-rejects"], "rk3588")
    assert report.exit_code == 2 and "build failed" in report.rejected


def test_toolkit_crash_is_a_result_and_we_survive(tiny_models, monkeypatch):
    # A Resize in cubic mode segfaults toolkit 2.5.0's build (found by the probe).
    from onnx import helper

    from workbench.model import OnnxModel

    proto = tiny_models["concat-resize"].proto
    copy = type(proto)()
    copy.CopyFrom(proto)
    resize = next(n for n in copy.graph.node if n.op_type == "Resize")
    for a in resize.attribute:
        if a.name == "mode":
            a.CopyFrom(helper.make_attribute("mode", "cubic"))
    report = compile_check(OnnxModel.from_proto(copy), "rk3588")
    assert report.exit_code == 2 and "SIGSEGV" in report.rejected
    assert os.getpid()  # still here


@pytest.mark.zoo
def test_yolov8n_static_and_compile_agree_or_disagreements_are_listed(zoo):
    model = zoo("yolov8n")
    static = static_check(model, "rk3588")
    compiled = compile_check(model, "rk3588")
    assert compiled.rejected is None and len(compiled.layers) > 100
    assert compiled.layers.onnx_node.notna().mean() > 0.9
    listed = disagreements(static, compiled)
    for row in static.nodes.itertuples():
        placed = compiled.node_targets[row.node]
        if placed != "fused" and {"npu": "NPU", "cpu": "CPU"}.get(row.status) != placed:
            assert any(line.startswith(f"{row.node} (") for line in listed)
    # The Reshape the toolkit moves to the CPU is found by the compile check.
    assert "CPU" in set(compiled.cpu_layers.target)


@pytest.mark.zoo
def test_lcnet_compiles_on_the_npu(zoo):
    report = compile_check(zoo("lcnet-orientation"), "rk3588")
    assert report.rejected is None and report.exit_code in (0, 1)


def test_cli_check_exit_codes(tiny_models, tmp_path, capsys):
    paths = {n: tiny_models[n].save(tmp_path / f"{n}.onnx") for n in tiny_models}
    assert main(["check", str(paths["conv-relu-sigmoid"]), "--compile"]) == 0
    assert main(["check", str(paths["cpu-fallback"]), "--compile"]) == 1
    assert main(["check", str(paths["toolkit-rejects"]), "--compile"]) == 2
    out = capsys.readouterr().out
    assert "sin" in out and "verdict: rejected (exit 2)" in out


def test_cli_check_json_and_bad_input(tiny_models, tmp_path, capsys):
    import json

    path = tiny_models["cpu-fallback"].save(tmp_path / "m.onnx")
    assert main(["check", str(path), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["static"]["counts"]["cpu"] == 1 and data["exit_code"] == 1
    assert main(["check", str(path), "--platform", "rk9999"]) == 2
    assert "Valid platforms" in capsys.readouterr().err
    (tmp_path / "x.onnx").write_text("not a model")
    assert main(["check", str(tmp_path / "x.onnx")]) == 2
    assert "is not an ONNX model" in capsys.readouterr().err
