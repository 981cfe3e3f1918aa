"""Fixtures for training tests: a tiny shard dataset written per the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_dataset import build_tiny_dataset, train_tiny_model  # tests/training on sys.path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A data root whose datasets/dataset.json is the tiny dataset."""
    root = tmp_path_factory.mktemp("tiny_root")
    build_tiny_dataset(root / "datasets")
    return root


def pytest_configure(config):
    # torchvision 0.29 warns on every decode_jpeg call (TorchCodec migration notice)
    config.addinivalue_line("filterwarnings",
                            "ignore:The image decoding and encoding:DeprecationWarning")


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> Path:
    """model.pt trained for two epochs on the tiny dataset."""
    return train_tiny_model(tiny_dataset, tmp_path_factory.mktemp("tiny_model"))
