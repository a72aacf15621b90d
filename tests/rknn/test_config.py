import pytest

from workbench.model import OnnxModel
from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig, ConfigError
from workbench.synthetic import two_inputs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"quantized_dtype": "w4a16"}, "w4a16.*not available on rk3588.*rk3576"),
        ({"quantized_dtype": "w8a16", "target_platform": "rk3576"}, "rk3562"),
        ({"target_platform": "rk2118"}, "float16 models only"),
        ({"quantized_algorithm": "kl"}, "kl_divergence"),
        ({"quantized_method": "tensor"}, "channel, layer"),
        ({"optimization_level": 5}, "0-3"),
        ({"target_platform": "rk9999"}, "rk3588"),
    ],
)
def test_invalid_combinations_fail_before_any_build(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildConfig(**kwargs)


def test_valid_special_dtypes():
    BuildConfig(target_platform="rk3576", quantized_dtype="w4a16")
    BuildConfig(target_platform="rk2118", do_quantization=False)


def test_mean_length_checked_against_the_model():
    model = OnnxModel.from_proto(two_inputs())
    with pytest.raises(ConfigError, match="2 mean values for input 'x' with 3 channels"):
        BuildConfig(preprocess={"x": Preprocess(mean=(1, 2))}).check_model(model)
    with pytest.raises(ConfigError, match="inputs are"):
        BuildConfig(preprocess={"images": Preprocess()}).check_model(model)


def test_toolkit_kwargs_give_every_input_a_full_channel_list():
    model = OnnxModel.from_proto(two_inputs())
    kwargs = BuildConfig(preprocess={"x": Preprocess((1, 2, 3), (4,), rgb2bgr=True)}).toolkit_kwargs(
        model.inputs
    )
    assert kwargs["mean_values"] == [[1, 2, 3], [0.0] * 8]
    assert kwargs["std_values"] == [[4, 4, 4], [1.0] * 8]
    assert kwargs["quant_img_RGB2BGR"] is True


def test_round_trip_and_digest():
    config = BuildConfig(quantized_algorithm="mmse", preprocess={"x": Preprocess((1, 2, 3), (4, 5, 6))})
    again = BuildConfig.from_dict(config.to_dict())
    assert again == config and again.digest() == config.digest()
    assert BuildConfig().digest() != config.digest()


def test_float_layers_are_names_kept_as_a_sorted_set():
    from workbench.rknn.config import BuildConfig, ConfigError

    config = BuildConfig(float_layers=["b", "a", "b"])
    assert config.float_layers == ("a", "b") and config.variant == "hybrid (2 float16)"
    assert config.digest() == BuildConfig(float_layers=("a", "b")).digest()
    with pytest.raises(ConfigError, match="list of tensor names"):
        BuildConfig(float_layers="conv1_out")
    with pytest.raises(ConfigError, match="not both"):
        BuildConfig(float_layers=["a"], auto_hybrid=True)
    with pytest.raises(ConfigError, match="do_quantization=True"):
        BuildConfig(do_quantization=False, auto_hybrid=True)


def test_preprocess_of_the_wrong_type_gets_the_friendly_error():
    from workbench.rknn.config import BuildConfig, ConfigError

    with pytest.raises(ConfigError, match="maps input names to Preprocess"):
        BuildConfig(preprocess={"x": (0, 0, 0)})
    with pytest.raises(ConfigError, match="maps input names to Preprocess"):
        BuildConfig(preprocess=[1, 2])
