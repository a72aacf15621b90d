"""Shared fixtures. Zoo models are fetched once (then cached); toolkit builds are shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.board.conftest import fake_adb_board, sshd  # noqa: F401 - virtual boards, shared with tests/runners
from workbench.datasets import CalibrationSet, datasets_dir, load_zoo_model
from workbench.model import OnnxModel
from workbench.synthetic import SYNTHETIC

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def small_set() -> CalibrationSet:
    """Four real photographs (datasets/dataset_small.txt)."""
    return CalibrationSet.from_list(datasets_dir() / "dataset_small.txt")


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, OnnxModel]:
    return {name: OnnxModel.from_proto(build()) for name, build in SYNTHETIC.items()}


@pytest.fixture(scope="session")
def zoo():
    """Zoo models by name, loaded once per session."""
    cache: dict[str, OnnxModel] = {}

    def get(name: str) -> OnnxModel:
        if name not in cache:
            cache[name] = load_zoo_model(name)
        return cache[name]

    return get
