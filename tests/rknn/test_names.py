from workbench.rknn.names import align, base_name


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


def test_origin_classifies_every_kind_of_toolkit_layer():
    from workbench.rknn.names import origin

    tensors, nodes = {"logits", "pool_out"}, {"GlobalAveragePool@0"}
    assert origin("logits_int8", tensors, nodes) == ("tensor", "logits")
    assert origin("logits-rs_sw", tensors, nodes) == ("derived", "logits")  # a fused op after it
    assert origin("logits_rs_sw__float16", tensors, nodes) == ("derived", "logits")
    assert origin("GlobalAveragePool@0_2conv1", tensors, nodes) == ("node", "GlobalAveragePool@0")
    assert origin("made_up", tensors, nodes) is None
    assert align(["logits-rs_sw"], tensors) == {}  # a derived layer never stands for the tensor
