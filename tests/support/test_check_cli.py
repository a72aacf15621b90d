"""`rknn-workbench check` on models the toolkit cannot take: every node listed, JSON always."""

import json
import re

import onnx
import pytest
from onnx import helper

from tests.test_dequantize import float_model, hand_quantized
from workbench.cli import main
from workbench.synthetic import conv_relu_sigmoid


def _custom_ops_model(tmp_path):
    proto = conv_relu_sigmoid()
    for node in proto.graph.node:
        if node.op_type in ("Relu", "Sigmoid"):
            node.domain = "com.microsoft"
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "custom.onnx"
    onnx.save(proto, path)
    return path


def _check_json(capsys, *argv) -> tuple[int, dict]:
    code = main(["check", *map(str, argv), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_every_custom_op_is_listed_not_just_the_first(tmp_path, capsys):
    code, data = _check_json(capsys, _custom_ops_model(tmp_path))
    rejected = {p["node"]: p["reason"] for p in data["static"]["problems"] if p["status"] == "rejected"}
    assert code == 2 and data["exit_code"] == 2
    assert set(rejected) == {"relu1", "sigmoid"}
    assert all("com.microsoft" in reason for reason in rejected.values())


def test_dynamically_quantized_model_is_recognised_with_the_fix(tmp_path, capsys):
    path = tmp_path / "dynamic.onnx"
    onnx.save(hand_quantized(float_model()), path)
    code, data = _check_json(capsys, path)
    assert code == 2
    (finding,) = [f for f in data["static"]["findings"] if "dynamically-quantized" in f]
    assert f"rknn-workbench dequantize {path} -o dynamic-float.onnx" in finding
    problems = {p["node"]: p for p in data["static"]["problems"]}
    for node in ("x_quantize", "conv_quant", "f_quantize", "mm_quant"):  # every integer op
        assert problems[node]["status"] == "rejected" and "rknn-workbench dequantize" in problems[node]["fix"]
    assert main(["check", str(path)]) == 2
    assert "dynamically-quantized" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.onnx"], "does not exist"),
        (["--platform", "rk9999"], "Valid platforms"),
    ],
)
def test_json_on_errors_too(tmp_path, capsys, argv, message):
    model = tmp_path / "m.onnx"
    onnx.save(conv_relu_sigmoid(), model)
    argv = [str(tmp_path / a) if a.endswith(".onnx") else a for a in argv]
    if argv[0].startswith("--"):
        argv = [str(model), *argv]
    code, data = _check_json(capsys, *argv)
    assert code == 2 and data["exit_code"] == 2 and message in data["error"]


def test_fix_texts_name_commands_and_flags_that_exist(tmp_path, capsys):
    path = tmp_path / "dynamic.onnx"
    onnx.save(hand_quantized(float_model()), path)
    _, data = _check_json(capsys, path)
    texts = [*data["static"]["findings"], *(p["fix"] for p in data["static"]["problems"])]
    named = re.findall(r"rknn-workbench (\w+)([^`,;()]*)", " ".join(texts))
    assert ("dequantize", f" {path} -o dynamic-float.onnx ") in named
    for command, rest in named:
        assert main([command, "--help"]) == 0
        usage = capsys.readouterr().out
        for flag in re.findall(r"(?<!\w)(-{1,2}[a-z][\w-]*)", rest):
            assert flag in usage, (command, flag)
