"""Metadata a person can read, from real materializations against the tiny demo world:
each crawl-cell partition carries its own place, bounds and counts (not its batch's), and the
merged manifest carries a column schema, a drop-reason table, a preview and a coverage map."""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np
import polars as pl
from PIL import Image

from geo_assets import layout
from geo_assets.cell_places import cell_places
from geo_assets.manifest import MANIFEST_SCHEMA
from geo_assets.storage import DataRoot
from pipeline.assets import ingest
from pipeline.partitions import crawl_cells
from tests.pipeline.conftest import tiny_resources

CHECKS = dg.load_asset_checks_from_modules([ingest])


def _inline_png(markdown: str) -> np.ndarray:
    data = base64.b64decode(markdown.split("base64,", 1)[1].rstrip(")"))
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_cell_partitions_and_manifest_read_well(demo_server, covered_cells, tmp_path):
    cells = sorted(covered_cells[:2])
    root = DataRoot(str(tmp_path / "data"))
    resources = tiny_resources(root.url)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(crawl_cells.name, cells)
        run = dg.materialize(
            [*ingest.CELL_ASSETS, ingest.image_manifest, *CHECKS], instance=instance,
            resources=resources, selection=[ingest.mapillary_images],
            tags={"dagster/asset_partition_range_start": cells[0],
                  "dagster/asset_partition_range_end": cells[-1]})
        assert run.success
        mats = {m.partition: m.metadata
                for m in run.asset_materializations_for_node("mapillary_images")}
        logs = [e.user_message or "" for e in instance.all_logs(run.run_id)]
        merged = dg.materialize([*ingest.CELL_ASSETS, ingest.image_manifest], instance=instance,
                                resources=resources, selection=[ingest.image_manifest])
        assert merged.success
        meta = merged.asset_materializations_for_node("image_manifest")[0].metadata

    table = pl.read_parquet(root.path(layout.IMAGE_MANIFEST))
    places = cell_places(cells)
    assert sorted(mats) == cells
    for cell in cells:  # each partition: its own counts, place and bounds
        own = table.filter((pl.col("cell_id") == cell) & (pl.col("source") == "mapillary"))
        assert mats[cell]["images_seen"].value == own.height
        assert mats[cell]["images_kept"].value == own["kept"].sum()
        assert mats[cell]["place"].value == places[cell]
        assert mats[cell]["bounds"].value.startswith("lat ")
    for cell in cells:  # the per-image fetch progress reached the run log, with a count
        own = table.filter((pl.col("cell_id") == cell) & (pl.col("source") == "mapillary"))
        lines = [m for m in logs if f"cell {cell} images:" in m]
        assert lines and f"/{own.height} [" in lines[-1], lines
    batch = table.filter(pl.col("source") == "mapillary").height
    assert all(0 < mats[c]["images_seen"].value < batch for c in cells)  # not the batch's

    schema = meta["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == MANIFEST_SCHEMA.names
    assert all(c.description for c in schema.columns)
    dropped = table.filter(~pl.col("kept"))
    reasons = {r.data["reason"]: r.data["images"] for r in meta["drop_reasons"].value.records}
    assert reasons == dict(dropped.group_by("drop_reason").len().iter_rows())
    assert table["image_id"][0] in meta["preview"].value
    pixels = _inline_png(meta["coverage_map"].value)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # land, sea and points drawn
    assert root.exists(layout.COVERAGE_MAP)
