"""The training loader over real shards: streams, splitting by node and worker, batches."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings
from geo_assets.shards import build_shards
from tests.conftest import shared_data_path
from tests.dataset.helpers import croatia_table, with_fake_labels
from training.data import load_dataset_descriptor, make_loader

LEVELS = [1, 3]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@pytest.fixture(scope="module")
def dataset_json(tmp_path_factory):
    table = with_fake_labels(croatia_table(shared_data_path("real", "croatia_streetview"),
                                           limit=96), LEVELS)
    n = table.height
    table = table.with_columns(
        split=pl.Series(["test" if i % 6 == 0 else "train" for i in range(n)]),
        fold=pl.Series([-1 if i % 6 == 0 else i % 2 for i in range(n)]))
    out = tmp_path_factory.mktemp("ds")
    build_shards(table, LEVELS, out / layout.SHARDS_DIR,
                 ShardSettings(shard_size=10, image_size=64))
    path = out / layout.DESCRIPTOR
    path.write_text(json.dumps({"levels": LEVELS, "shard_index": layout.SHARD_INDEX,
                                "num_classes": {"1": 3, "3": 3}}))
    return path, table


def _ids(loader) -> list[str]:
    return [i for batch in loader for i in batch["image_ids"]]


def test_descriptor_selects_by_split_and_fold(dataset_json):
    path, table = dataset_json
    desc = load_dataset_descriptor(path)
    assert desc.folds() == [0, 1] and desc.train_folds(0) == [1]
    assert desc.count("train", [1]) == table.filter((pl.col("split") == "train")
                                                    & (pl.col("fold") == 1)).height
    assert desc.count("test") == table.filter(pl.col("split") == "test").height
    with pytest.raises(InputError, match="validation fold 7"):
        desc.train_folds(7)
    with pytest.raises(InputError, match="no shards selected"):
        make_loader(desc, "train", [5], image_size=32, batch_size=4, num_workers=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_stream_sees_each_sample_once(dataset_json, workers):
    path, table = dataset_json
    loader = make_loader(path, "train", [0], image_size=48, batch_size=8, num_workers=workers,
                         train=False)
    ids = _ids(loader)
    expected = table.filter((pl.col("split") == "train") & (pl.col("fold") == 0))["image_id"]
    assert sorted(ids) == sorted(expected.to_list())


def test_eval_stream_splits_by_node(dataset_json, monkeypatch):
    path, table = dataset_json
    per_node = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_node.append(set(_ids(make_loader(path, "train", None, image_size=32, batch_size=16,
                                             num_workers=0, train=False))))
    assert per_node[0] and per_node[1] and not per_node[0] & per_node[1]
    assert per_node[0] | per_node[1] == set(table.filter(pl.col("split") == "train")["image_id"])


def test_train_stream_batches(dataset_json):
    path, table = dataset_json
    loader = make_loader(path, "train", [0, 1], image_size=48, batch_size=8, num_workers=2,
                         train=True, epoch_samples=64, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 8
    b = batches[0]
    assert b["images"].shape == (8, 3, 48, 48) and b["images"].dtype == torch.float32
    assert b["labels"].shape == (8, 2) and torch.equal(b["labels"][:, 1], b["labels_by_level"][3])
    assert b["true_deg"].dtype == torch.float64 and ((b["true_deg"][:, 0] > 42) & (b["true_deg"][:, 0] < 47)).all()
    train_ids = set(table.filter(pl.col("split") == "train")["image_id"])
    assert set(_ids(batches)) <= train_ids


def test_train_stream_is_seeded_per_epoch(dataset_json):
    path, _ = dataset_json

    def epoch(seed, e):
        loader = make_loader(path, "train", None, image_size=32, batch_size=4, num_workers=0,
                             train=True, epoch_samples=16, seed=seed)
        loader.set_epoch(e)
        return _ids(loader)

    assert epoch(1, 0) == epoch(1, 0)
    assert epoch(1, 0) != epoch(1, 1)


def test_batches_fit_the_training_code(dataset_json):
    from training.batches import to_batch

    path, _ = dataset_json
    raw = next(iter(make_loader(path, "test", image_size=32, batch_size=4, num_workers=0,
                                train=False, normalize=False)))
    assert raw["images"].dtype == torch.uint8
    batch = to_batch(raw, LEVELS)
    assert batch.labels.shape == (4, 2) and batch.image_ids == raw["image_ids"]
