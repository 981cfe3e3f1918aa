"""The dataset assets end to end on the demo world, in-process, with their checks."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from geo_assets import layout
from geo_assets.storage import DataRoot
from pipeline.assets import dataset as ds
from pipeline.resources import DatasetSettings, GeoscoutSettings
from tests.dataset.helpers import demo_world_rows, write_manifest
from training.data import load_dataset_descriptor, make_loader

LEVELS = [1, 3, 5]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _resources(root: DataRoot, **overrides) -> dict:
    settings = {"levels": LEVELS, "min_images": 8, "k_folds": 3, "test_fraction": 0.2,
                "image_size": 48, "shard_size": 64, **overrides}
    return {"settings": GeoscoutSettings(data_root=root.url),
            "dataset": DatasetSettings(**settings)}


def _assets(levels=LEVELS):
    return [ds.splits, ds.hierarchy, ds.shards, *ds.dataset_assets(levels)]


def _checks():
    return [ds.splits_no_leakage, ds.splits_proportions, ds.classes_have_min_train_images,
            ds.every_image_in_one_shard, ds.shards_read_back]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = DataRoot(str(tmp_path_factory.mktemp("data")))
    write_manifest(root, demo_world_rows(root))
    return root


def test_demo_world_dataset_materializes_with_passing_checks(demo_root):
    result = dg.materialize([*_assets(), *_checks()], resources=_resources(demo_root))
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 and all(c.passed for c in checks), [
        (c.check_name, c.metadata) for c in checks if not c.passed]
    out = demo_root.local_path(layout.DATASETS_DIR)
    desc = load_dataset_descriptor(out / layout.DESCRIPTOR)
    assert desc.levels == tuple(LEVELS) and desc.folds() == [0, 1, 2]
    kept = pq.read_table(demo_root.local_path(layout.IMAGE_MANIFEST)).to_pylist()
    assert sum(s.count for s in desc.shards) == sum(r["kept"] for r in kept)
    level3 = json.loads((out / layout.dataset_level(3)).read_text())
    assert sum(level3["class_counts"]["train"]) == level3["images"]["train"]
    reports = out / layout.DATASET_REPORTS_DIR
    assert (reports / layout.classes_map_file(5)).read_text().startswith("<!DOCTYPE html>")
    for figure in (layout.LEAKAGE_FIGURE_FILE, layout.CLASS_HISTOGRAM_FILE):
        assert (reports / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    batch = next(iter(make_loader(desc, "train", desc.train_folds(0), image_size=32,
                                  batch_size=8, num_workers=0, epoch_samples=8)))
    assert batch["labels"].shape == (8, 3)

    # a second run keeps splits and every shard (nothing new arrived)
    again = dg.materialize(_assets(), resources=_resources(demo_root))
    meta = again.asset_materializations_for_node("shards")[0].metadata
    assert meta["written"].value == 0 and meta["kept"].value == len(desc.shards)
    splits_meta = again.asset_materializations_for_node("splits")[0].metadata
    assert splits_meta["incremental"].value is True


def test_bad_inputs_fail_with_named_errors(tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    result = dg.materialize([ds.splits], resources=_resources(root), raise_on_error=False)
    assert not result.success
    assert "materialize image_manifest first" in str(result.all_events)
    write_manifest(root, [])
    result = dg.materialize([ds.splits], resources=_resources(root), raise_on_error=False)
    assert "has no kept images" in str(result.all_events)
