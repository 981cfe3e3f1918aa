"""Every filter threshold in the settings file: ``filter_*``, ``image_*`` and
``source_filters`` are fields of the ``settings`` resource generated from ``FilterSettings``
and ``ImageSettings``; bad keys and values are errors naming them; the values change what a
crawl keeps and are recorded in each cell's stats and in the manifest's metadata."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import dagster as dg
import polars as pl
import pytest

from geo_assets import layout
from geo_assets.cells import points_to_cells
from geo_assets.errors import InputError
from geo_assets.settings import FilterSettings, ImageSettings
from geo_assets.storage import DataRoot
from pipeline.assets import ingest
from pipeline.config_file import file_resources, load_overrides
from pipeline.partitions import crawl_cells
from pipeline.resources import GeoscoutSettings
from tests.conftest import shared_data_path

LEVEL = 7


def write(tmp_path, text: str):
    path = tmp_path / "geoscout.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_every_filter_and_image_field_is_a_setting():
    fields = GeoscoutSettings.model_fields
    for schema, prefix in ((FilterSettings, "filter_"), (ImageSettings, "image_")):
        for f in dataclasses.fields(schema):
            assert prefix + f.name in fields
            assert fields[prefix + f.name].description == f.metadata["description"]
    assert GeoscoutSettings(filter_max_brightness=200.0).ingest_settings().filters == \
        FilterSettings(max_brightness=200.0)


@pytest.mark.parametrize("text, message", [
    ("settings: {filter_min_brightness: 250}\n",
     r"settings: .*filter_\*.*0 <= min_brightness < max_brightness <= 255.*250"),
    ("settings: {filter_phash_max_distnce: 3}\n",
     (r"settings.filter_phash_max_distnce: unknown setting \(did you mean "
      r"'filter_phash_max_distance'\?\)")),
    ("settings: {filter_min_distance_m: -5}\n", r"min_distance_m must be >= 0.*-5"),
    ("settings: {source_filters: {flickr: {min_brightness: 3}}}\n",
     r"settings.source_filters: .*source 'flickr' is unknown; allowed: mapillary"),
    ("settings: {source_filters: {local: {min_brightnes: 3}}}\n",
     r"settings.source_filters: .*local: unknown filter setting\(s\) \['min_brightnes'\]"),
    ("settings: {source_filters: {local: {max_brightness: 10}}}\n",
     r"settings: .*min_brightness 40.0, max_brightness 10.0"),
    ("settings: {image_min_width: 0}\n", r"settings: .*ImageSettings.min_width must be at least 1"),
])
def test_bad_filter_settings_name_the_key_and_value(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        load_overrides(write(tmp_path, text))


def _crawl(tmp_path, name: str, extra: str):
    """One Croatia cell through local_images and image_manifest with the settings file."""
    folder = shared_data_path("real", "croatia_streetview")
    labels = pl.read_csv(folder / "labels.csv")
    cells = points_to_cells(labels["lat"].to_numpy(), labels["lon"].to_numpy(), LEVEL)
    cell = str(pl.Series(cells).value_counts(sort=True).row(2)[0])  # 116 photos
    root = tmp_path / name
    path = write(tmp_path, f"""
        settings: {{data_root: {root}, sources: [local], crawl_level: {LEVEL},
                    grid_max_level: {LEVEL}, download_workers: 2{extra}}}
        local_folder: {{folder: {folder}, sidecar: {folder / 'labels.csv'}}}
        """)
    resources = file_resources(path)
    assets = [*ingest.CELL_ASSETS, ingest.image_manifest]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(crawl_cells.name, [cell])
        assert dg.materialize(assets, instance=instance, resources=resources,
                              selection=[ingest.local_images], partition_key=cell).success
        merged = dg.materialize(assets, instance=instance, resources=resources,
                                selection=[ingest.image_manifest])
    assert merged.success
    meta = merged.asset_materializations_for_node("image_manifest")[0].metadata
    data = DataRoot(str(root))
    stats = json.loads(data.read_bytes(layout.cell_stats("local", cell)))
    table = pl.read_parquet(data.local_path(layout.IMAGE_MANIFEST)).filter(
        pl.col("cell_id") == cell)
    return table, stats, meta["filter_settings"].value


def test_filter_settings_change_what_the_crawl_keeps_and_are_recorded(tmp_path):
    default, default_stats, _ = _crawl(tmp_path, "default", "")
    table, stats, used = _crawl(tmp_path, "strict", ", filter_min_brightness: 110, "
                                "filter_phash_max_distance: 12")
    assert table.height == default.height > 0
    reasons = table["drop_reason"].value_counts()
    dark = dict(zip(reasons["drop_reason"], reasons["count"])).get("too_dark", 0)
    assert dark > 0 and "too_dark" not in set(default["drop_reason"].drop_nulls())
    assert table["kept"].sum() < default["kept"].sum()
    assert stats["filters"]["min_brightness"] == 110
    assert stats["filters"]["phash_max_distance"] == 12
    assert default_stats["filters"] == dataclasses.asdict(FilterSettings())
    assert stats["images"] == dataclasses.asdict(ImageSettings()) | {"formats": ["JPEG", "PNG",
                                                                               "WEBP"]}
    (cells_used,) = used["used_by_cells"]["local"]
    assert cells_used["filters"]["min_brightness"] == 110 and cells_used["cells"] == 1
    assert used["configured"]["local"]["phash_max_distance"] == 12
