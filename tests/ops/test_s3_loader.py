"""The training loader streams shards from object storage (moto's S3 server on loopback): a
dataset uploaded to the bucket reads back through ``make_loader`` exactly as from disk."""

from __future__ import annotations

import uuid

import pytest

from geo_assets.errors import InputError
from tests.training.tiny_dataset import build_tiny_dataset
from training.data import load_dataset_descriptor, make_loader

pytestmark = pytest.mark.slow


def read_all(descriptor, **kw) -> list[tuple[str, list[int]]]:
    loader = make_loader(descriptor, image_size=32, batch_size=16, num_workers=0, **kw)
    return [(i, labels.tolist()) for batch in loader
            for i, labels in zip(batch["image_ids"], batch["labels"])]


def test_loader_reads_shards_from_the_bucket(s3_env, tmp_path):
    import fsspec

    local = build_tiny_dataset(tmp_path / "datasets", per_class=2, size=32)
    url = f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/datasets"
    fs = fsspec.filesystem("s3")
    fs.put(str(local.parent) + "/", url, recursive=True)

    remote = load_dataset_descriptor(url)  # the folder URL; dataset.json inside
    assert remote.shards[0].url.startswith(f"{url}/shards/")
    assert [s.name for s in remote.shards] == [s.name for s in load_dataset_descriptor(
        local).shards]
    for split, folds in (("train", [0, 1]), ("test", None)):
        expected = read_all(local, split=split, folds=folds, train=False)
        assert read_all(f"{url}/dataset.json", split=split, folds=folds, train=False) == \
            expected and expected
    train = read_all(url, split="train", folds=[1], train=True, epoch_samples=32)
    assert len(train) == 32 and all(i.startswith("local:train1-") for i, _ in train)

    with pytest.raises(InputError, match="not found"):
        load_dataset_descriptor(f"s3://{s3_env.bucket}/nothing-here/datasets")


def test_training_on_a_bucket_dataset_matches_the_local_run(s3_env, tmp_path):
    import fsspec
    import torch

    from training.config import TrainConfig
    from training.train import main

    local = build_tiny_dataset(tmp_path / "datasets", per_class=4, size=32)
    url = f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/datasets"
    fsspec.filesystem("s3").put(str(local.parent) + "/", url, recursive=True)
    threads = torch.get_num_threads()
    try:
        cards = [main(TrainConfig(dataset=str(dataset), output_dir=str(tmp_path / name),
                                  epochs=2, batch_size=16, workers=0, image_size=32,
                                  device="cpu", threads=1, deterministic=True, seed=2,
                                  backbone="tiny", pretrained=False))
                 for name, dataset in (("local", local), ("bucket", f"{url}/dataset.json"))]
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    local_card, bucket_card = cards
    for key in ("validation", "history", "temperatures", "shards", "n_train_images"):
        assert bucket_card[key] == local_card[key], key
    assert bucket_card["dataset"] == f"{url}/dataset.json" and bucket_card["shards"]
