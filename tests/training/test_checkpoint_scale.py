"""Checkpoints do not grow with the dataset; the training image ids come from the folds trained
on; a resume on another number of processes is refused with a message that says what to do."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from tiny_dataset import build_tiny_dataset  # tests/training is on sys.path

from geo_assets.errors import InputError
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.train import main


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def config(dataset, out, **overrides) -> TrainConfig:
    settings = {"dataset": str(dataset), "output_dir": str(out), "epochs": 1,
                "batch_size": 32, "workers": 0, "image_size": 32, "device": "cpu",
                "threads": 1, "backbone": "tiny", "pretrained": False, "seed": 1,
                "calibrate": False}
    return TrainConfig(**{**settings, **overrides})


def train_on(root, per_class: int):
    """One epoch on a tiny dataset of ``per_class`` images per class and shard part."""
    dataset = build_tiny_dataset(root / "datasets", per_class=per_class, size=32)
    card = main(config(dataset, root / "run"))
    return card, root / "run"


def test_checkpoint_size_does_not_grow_with_images(tmp_path, threads):
    small_card, small = train_on(tmp_path / "small", per_class=4)
    large_card, large = train_on(tmp_path / "large", per_class=40)  # 10x the images
    assert large_card["n_train_images"] == 10 * small_card["n_train_images"] == 320
    assert large_card["steps"] == 10 * small_card["steps"]
    size_small = (small / "checkpoint.pth").stat().st_size
    size_large = (large / "checkpoint.pth").stat().st_size
    # 288 more image ids would add several KiB; counters and RNG states are the same size
    assert abs(size_large - size_small) < 512, (size_small, size_large)
    saved = ckpt.load(large / "checkpoint.pth")
    assert saved["format"] == ckpt.FORMAT_VERSION and "seen_ids" not in saved
    assert "seen_ids" not in saved["state"] and len(saved["rng"]) == 1

    ids = pq.read_table(large / "train_image_ids.parquet").column("image_id").to_pylist()
    assert len(ids) == 320 and ids == sorted(ids)
    assert all(i.startswith("local:train1-") for i in ids)  # fold 0 validates


def test_resume_on_another_number_of_processes_is_refused(tmp_path, threads):
    dataset = build_tiny_dataset(tmp_path / "datasets", per_class=4, size=32)
    out = tmp_path / "run"
    assert main(config(dataset, out, epochs=2, stop_after_steps=1)) is None
    saved = ckpt.load(out / "checkpoint.pth")
    assert saved["world_size"] == 1
    saved["world_size"] = 2  # as if written by torchrun --nproc_per_node 2
    ckpt.atomic_save(saved, out / "checkpoint.pth")
    with pytest.raises(InputError, match=r"2 training process\(es\) and this run has 1.*"
                                         r"Resume with 2 process"):
        main(config(dataset, out, epochs=2, resume="auto"))
