"""Fixtures for training tests: a tiny shard dataset written per the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_dataset import build_tiny_dataset  # tests/training is on sys.path (rootdir import)


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
    import torch

    from training.config import TrainConfig
    from training.train import main

    out = tmp_path_factory.mktemp("tiny_model")
    threads = torch.get_num_threads()
    main(TrainConfig(dataset=str(tiny_dataset / "datasets" / "dataset.json"),
                     output_dir=str(out), epochs=2, batch_size=8, workers=0, image_size=32,
                     device="cpu", threads=1, backbone="tiny", pretrained=False))
    torch.set_num_threads(threads)
    return out / "model.pt"
