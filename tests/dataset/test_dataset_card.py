"""The dataset card and the dataset assets' figures, from a real materialization of the demo
world's dataset: the card's counts, licences and attribution agree with the shards and the
manifest, and the class maps and histograms are real images in the metadata."""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np
import polars as pl
import pytest
from PIL import Image

from geo_assets import layout
from geo_assets.storage import DataRoot
from pipeline.assets import dataset as ds
from pipeline.resources import DatasetSettings, GeoscoutSettings
from tests.dataset.helpers import demo_world_rows, write_manifest

LEVELS = [1, 3]
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _inline_png(markdown: str) -> np.ndarray:
    data = base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = DataRoot(str(tmp_path_factory.mktemp("data")))
    write_manifest(root, demo_world_rows(root))
    resources = {"settings": GeoscoutSettings(data_root=root.url),
                 "dataset": DatasetSettings(levels=LEVELS, min_images=8, k_folds=3,
                                            test_fraction=0.2, image_size=48, shard_size=64)}
    result = dg.materialize([ds.splits, ds.hierarchy, ds.shards, *ds.dataset_assets(LEVELS)],
                            resources=resources)
    assert result.success
    return root, result


def test_card_agrees_with_shards_and_manifest(built):
    root, result = built
    out = root.local_path(layout.DATASETS_DIR)
    card = (out / layout.DATASET_CARD).read_text()
    contents = pl.read_parquet(out / layout.SHARD_CONTENTS)
    kept = pl.read_parquet(root.local_path(layout.IMAGE_MANIFEST)).filter(pl.col("kept"))
    in_shards = kept.join(contents.select("image_id"), on="image_id")
    assert card.startswith("---\n") and "\n---\n" in card  # Hugging Face YAML header
    assert f"{contents.height} images in" in card
    for source, n in in_shards.group_by("source").len().iter_rows():
        assert f"| {source} |" in card
    credits = pl.read_csv(out / layout.ATTRIBUTION)
    assert credits["images"].sum() == contents.height
    assert set(credits["attribution"]) == set(in_shards["attribution"].fill_null("unknown"))
    for split, n in contents.group_by("split").len().iter_rows():
        shown = [line for line in card.splitlines() if line.startswith(f"| {split} |")]
        assert sum(int(line.rstrip(" |").rsplit("|", 1)[1]) for line in shown) == n
    assert "Coverage skew" in card and "Attribution" in card and "- Countries (" in card
    meta = result.asset_materializations_for_node("shards")[0].metadata
    assert meta["credit_lines"].value == credits.height
    assert "---" not in meta["dataset_card"].value.splitlines()[0]


def test_class_maps_and_histograms_are_images(built):
    _, result = built
    hierarchy = result.asset_materializations_for_node("hierarchy")[0].metadata
    for level in LEVELS:
        pixels = _inline_png(hierarchy[f"class_map_level_{level}"].value)
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
        level_meta = result.asset_materializations_for_node(f"dataset_level_{level}")[0].metadata
        for key in ("class_map", "class_histogram"):
            assert _inline_png(level_meta[key].value).std() > 0, key
        assert level_meta["class_map_file"].value.startswith("file://")
