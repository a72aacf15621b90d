"""Shared pieces of the accuracy-fix tests: the tiny residual model's settings and a
sensitivity table computed once."""

import pytest

from workbench.preprocess import Preprocess
from workbench.rknn.config import BuildConfig

CONFIG = BuildConfig(preprocess={"x": Preprocess((127.5,) * 3, (64.0,) * 3)})


@pytest.fixture(scope="session")
def residual(tiny_models):
    return tiny_models["residual-add"]


@pytest.fixture(scope="session")
def residual_ranking(residual, small_set):
    """Both sensitivity views of the tiny residual model (3 quantized tensors)."""
    from workbench.fix.sensitivity import sensitivity

    return sensitivity(residual, CONFIG, small_set, small_set.head(2), view="both", progress=False)
