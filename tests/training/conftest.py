"""Fixtures for training tests: a tiny shard dataset written per the contract."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_dataset import build_tiny_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A data root whose datasets/dataset.json is the tiny dataset."""
    root = tmp_path_factory.mktemp("tiny_root")
    build_tiny_dataset(root / "datasets")
    return root
