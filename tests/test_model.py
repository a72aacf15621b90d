import warnings

import onnx
import pytest
from onnx import TensorProto, helper

from workbench.errors import InputShapeError, ModelError, UnsupportedModelError, WorkbenchWarning
from workbench.model import OnnxModel
from workbench.synthetic import conv_relu_sigmoid


def _save(tmp_path, proto, name="m.onnx"):
    path = tmp_path / name
    onnx.save(proto, path)
    return path


def _dynamic_model():
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "dyn", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ModelError, match="nope.onnx.*does not exist"):
        OnnxModel.load(tmp_path / "nope.onnx")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ModelError, match="is a folder"):
        OnnxModel.load(tmp_path)


def test_not_onnx(tmp_path):
    path = tmp_path / "photo.onnx"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is a jpeg, not a model" * 10)
    with pytest.raises(ModelError, match="photo.onnx.*is not an ONNX model"):
        OnnxModel.load(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="empty.onnx.*empty"):
        OnnxModel.load(path)


def test_truncated_file(tmp_path):
    data = conv_relu_sigmoid().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.onnx.*truncated or corrupted"):
        OnnxModel.load(path)


def test_external_data_missing(tmp_path):
    proto = conv_relu_sigmoid()
    onnx.save(
        proto,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.weights",
        size_threshold=0,
    )
    OnnxModel.load(tmp_path / "ext.onnx")  # loads while the weights are there
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelError, match="ext.weights.*not in"):
        OnnxModel.load(tmp_path / "ext.onnx")


def test_dynamic_input_without_shape_names_input_and_fix(tmp_path):
    path = _save(tmp_path, _dynamic_model())
    with pytest.raises(InputShapeError) as err:
        OnnxModel.load(path)
    assert "'images'" in str(err.value) and "input_shapes={'images'" in str(err.value)


def test_dynamic_input_with_shape_infers_everything(tmp_path):
    model = OnnxModel.load(_save(tmp_path, _dynamic_model()), {"images": [1, 3, 64, 48]})
    assert model.inputs == {"images": (1, 3, 64, 48)}
    assert model.tensor("y").shape == (1, 3, 64, 48)


@pytest.mark.parametrize(
    "shapes, match",
    [
        ({"image": [1, 3, 8, 8]}, "has the inputs \\['images'\\]"),
        ({"images": [1, 3, 8]}, "rank 4"),
        ({"images": [2, 4, 8, 8]}, "contradicts"),
    ],
)
def test_wrong_shapes_are_explained(tmp_path, shapes, match):
    proto = _dynamic_model()
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
    with pytest.raises(InputShapeError, match=match):
        OnnxModel.load(_save(tmp_path, proto), shapes)


def test_custom_domain_ops_are_refused_with_the_op_named(tmp_path):
    proto = conv_relu_sigmoid()
    proto.graph.node[1].domain = "com.microsoft"
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = _save(tmp_path, proto)
    with pytest.raises(UnsupportedModelError, match="com.microsoft::Relu"):
        OnnxModel.load(path)
    assert OnnxModel.load(path, allow_custom_ops=True).proto.graph.node[1].domain == "com.microsoft"


def test_opset_above_19_warns_with_consequence(tmp_path):
    proto = conv_relu_sigmoid()
    proto.opset_import[0].version = 21
    proto.ir_version = 10
    with pytest.warns(WorkbenchWarning, match="opset 21.*up to 19.*opset_version=19"):
        OnnxModel.load(_save(tmp_path, proto))


def test_opset_19_does_not_warn(tmp_path):
    proto = conv_relu_sigmoid()
    proto.opset_import[0].version = 19
    with warnings.catch_warnings():
        warnings.simplefilter("error", WorkbenchWarning)
        OnnxModel.load(_save(tmp_path, proto))


def test_tensors_in_topological_order_even_if_file_is_not(tmp_path):
    proto = conv_relu_sigmoid()
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    model = OnnxModel.from_proto(proto)
    names = [t.name for t in model.tensors]
    assert names == ["x", "conv1_out", "relu1_out", "conv2_out", "y"]
    relu = model.tensor("relu1_out")
    assert (relu.producer, relu.op_type, relu.shape, relu.dtype) == (
        "relu1",
        "Relu",
        (1, 8, 32, 32),
        "float32",
    )


def test_unnamed_nodes_get_names():
    proto = conv_relu_sigmoid()
    for node in proto.graph.node:
        node.name = ""
    model = OnnxModel.from_proto(proto)
    assert all(n.name for n in model.proto.graph.node)
    assert len({n.name for n in model.proto.graph.node}) == len(model.proto.graph.node)


def test_caller_proto_is_not_modified():
    proto = conv_relu_sigmoid()
    before = proto.SerializeToString()
    OnnxModel.from_proto(proto)
    assert proto.SerializeToString() == before


@pytest.mark.zoo
@pytest.mark.parametrize("name, n_inputs", [("yolov8n", 1), ("ppocr-cls", 1), ("lcnet-orientation", 1)])
def test_zoo_models_load_with_fixed_shapes(zoo, name, n_inputs):
    from workbench.datasets import ZOO

    model = zoo(name)
    entry = ZOO[name]
    assert model.inputs == {entry.input_name: entry.input_shape}
    assert all(shape is not None for shape in model.outputs.values())
    assert len(model.tensors) > len(model.proto.graph.node) * 0.9
    summary = model.summary()
    assert summary["nodes"] == len(model.proto.graph.node) and summary["parameters"] > 10_000
