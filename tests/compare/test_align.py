from workbench.compare.align import align, base_name


def test_suffixes_map_back_to_onnx_names():
    known = {"x", "conv_out", "/model.0/act/Mul_output_0", "y"}
    assert base_name("x_int8", known) == "x"
    assert base_name("conv_out-rs", known) == "conv_out"
    assert base_name("/model.0/act/Mul_output_0_rs_tp", known) == "/model.0/act/Mul_output_0"
    assert base_name("y__float16", known) == "y"
    assert base_name("exSwish_inserted", known) is None


def test_exact_name_wins_over_suffixed():
    layers = ["x", "x_int8", "r", "y_int8", "y"]
    assert align(layers, ["x", "c", "r", "y"]) == {"x": "x", "r": "r", "y": "y"}


def test_suffixed_layer_used_when_no_exact_one():
    assert align(["c_int8"], ["c"]) == {"c": "c_int8"}
