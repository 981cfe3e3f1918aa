"""Shards: real JPEGs in, WebDataset tars out; read back with webdataset's own readers."""

from __future__ import annotations

import io
import json

import polars as pl
import pytest
import webdataset as wds
from PIL import Image

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.settings import ShardSettings
from geo_assets.shards import build_shards, resize_image, verify_shards
from tests.conftest import shared_data_path
from tests.dataset.helpers import croatia_table, with_fake_labels

LEVELS = [1, 3]


@pytest.fixture(scope="module")
def croatia():
    return croatia_table(shared_data_path("real", "croatia_streetview"), limit=120)


def _split_table(table: pl.DataFrame) -> pl.DataFrame:
    """Half train fold 0/1 by place, a quarter test: enough for several shard names."""
    t = with_fake_labels(table, LEVELS)
    place = t["group_id"].rank("dense").to_numpy()
    return t.with_columns(split=pl.Series(["test" if p % 4 == 0 else "train" for p in place]),
                          fold=pl.Series([-1 if p % 4 == 0 else int(p % 2) for p in place]))


def test_resize_uses_shorter_side_and_orientation():
    im = Image.new("RGB", (640, 480), (10, 200, 30))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    im.save(buf, "JPEG", exif=exif)
    out = Image.open(io.BytesIO(resize_image(buf.getvalue(), 256, 90)))
    assert out.size == (256, 341)  # 480 -> 256, then the EXIF rotation swaps the sides


def test_shards_read_back_with_webdataset(croatia, tmp_path):
    table = _split_table(croatia)
    build = build_shards(table, LEVELS, tmp_path, ShardSettings(shard_size=25))
    names = [s["name"] for s in build.index["shards"]]
    assert {n.rsplit("-", 1)[0] for n in names} == {"train-0", "train-1", "test-t"}
    assert build.index["total_count"] == table.height
    ds = wds.WebDataset([str(tmp_path / layout.shard_file(n)) for n in names], shardshuffle=False,
                        nodesplitter=wds.split_by_node, empty_check=True).decode("pil")
    seen = {}
    for sample in ds:
        record = sample["json"]
        assert min(sample["jpg"].size) == 256 and "." not in sample["__key__"]
        assert set(record) >= {"image_id", "lat_deg", "lon_deg", "source", "group_id",
                               "license", "attribution", "split", "fold", "cells", "labels"}
        assert set(record["labels"]) == {"1", "3"} and len(record["cells"]["3"]) == 3
        seen[record["image_id"]] = (record["split"], record["fold"])
    expected = dict(zip(table["image_id"], zip(table["split"], table["fold"])))
    assert seen == expected  # every image exactly once, with its split and fold
    assert verify_shards(tmp_path, build.index)["problems"] == []
    assert not list(tmp_path.glob("*.tmp-*"))
    for name in names:  # stats written for every shard
        assert json.loads((tmp_path / layout.shard_stats_file(name)).read_text())["failed"] == 0


def test_shards_are_byte_reproducible_and_order_independent(croatia, tmp_path):
    table = _split_table(croatia)
    a = build_shards(table, LEVELS, tmp_path / "a", ShardSettings(shard_size=40))
    b = build_shards(table.reverse(), LEVELS, tmp_path / "b",
                     ShardSettings(shard_size=40, workers=1))
    assert a.index["shards"] == b.index["shards"]  # names, counts and sha256
    c = build_shards(table, LEVELS, tmp_path / "c", ShardSettings(shard_size=40, seed=1))
    assert [s["sha256"] for s in c.index["shards"]] != [s["sha256"] for s in a.index["shards"]]


def test_incremental_build_keeps_old_shards_and_adds_new(croatia, tmp_path):
    table = _split_table(croatia)
    old_rows = table.head(80)
    first = build_shards(old_rows, LEVELS, tmp_path, ShardSettings(shard_size=30))
    again = build_shards(old_rows, LEVELS, tmp_path, ShardSettings(shard_size=30))
    assert again.written == [] and again.kept == [s["name"] for s in first.index["shards"]]
    grown = build_shards(table, LEVELS, tmp_path, ShardSettings(shard_size=30))
    old_entries = {s["name"]: s for s in first.index["shards"]}
    assert all(old_entries[n] in grown.index["shards"] for n in old_entries)  # untouched
    assert {s["name"] for s in grown.written}.isdisjoint(old_entries)  # new shards only
    assert grown.index["total_count"] == table.height
    relabeled = table.with_columns(label_3=pl.col("label_3") + 1)
    rebuilt = build_shards(relabeled, LEVELS, tmp_path, ShardSettings(shard_size=30))
    assert all(s["rewritten"] for s in rebuilt.written) and rebuilt.kept == []
    assert verify_shards(tmp_path, rebuilt.index)["problems"] == []


def test_failed_images_are_reported_not_raised(croatia, tmp_path):
    table = _split_table(croatia.head(12))
    table = table.with_columns(source_path=pl.when(pl.col("image_id") == table["image_id"][3])
                               .then(pl.lit(str(tmp_path / "missing.jpg")))
                               .otherwise("source_path"))
    build = build_shards(table, LEVELS, tmp_path / "out", ShardSettings(workers=1))
    assert build.failed_image_ids == [table["image_id"][3]]
    assert build.index["total_count"] == 11
    assert table["image_id"][3] not in build.contents["image_id"].to_list()


def test_bad_shard_input_is_named(croatia, tmp_path):
    table = _split_table(croatia.head(4))
    with pytest.raises(InputError, match="label_5"):
        build_shards(table, [1, 5], tmp_path, ShardSettings())
    with pytest.raises(InputError, match="empty"):
        build_shards(table.head(0), LEVELS, tmp_path, ShardSettings())
    with pytest.raises(InputError, match="image_size"):
        ShardSettings(image_size=4)


def test_full_rebuild_removes_stale_shards(croatia, tmp_path):
    table = _split_table(croatia.head(60))
    build_shards(table, LEVELS, tmp_path, ShardSettings(shard_size=10, workers=1))
    full = build_shards(table, LEVELS, tmp_path, ShardSettings(shard_size=100, workers=1),
                        incremental=False)
    on_disk = sorted(p.name.removesuffix(".tar") for p in tmp_path.glob(layout.shard_file("*")))
    assert on_disk == [s["name"] for s in full.index["shards"]] and len(on_disk) == 3
    assert full.deleted and full.kept == []
